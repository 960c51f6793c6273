"""The sample workload the main job declares: some jobs succeed, some fail, some get cancelled. Pure data."""

from __future__ import annotations

from intercede.model import JobSpec, OutputFile

__all__ = ["sample_jobs"]


def sample_jobs(run_id: str, count: int = 8) -> dict[str, tuple[JobSpec, str]]:
    """``count`` keys -> (spec, what should happen to it: "done", "failed" or "cancelled")."""
    jobs: dict[str, tuple[JobSpec, str]] = {}
    for i in range(count):
        key = f"demo-{run_id}-{i:03d}"
        kind = ("done", "done", "failed", "done", "cancelled", "done", "failed", "cancelled")[i % 8]
        if kind == "done":
            script = f'echo "job {i} on $(hostname)"; echo {i} > result.txt; sleep 1'
        elif kind == "failed":
            script = f'echo "job {i} fails on purpose" >&2; exit {10 + i % 5}'
        else:
            script = "echo waiting to be cancelled; sleep 600"
        spec = JobSpec(executable="/bin/sh", arguments=["-c", script],
                       output_files=[OutputFile(name="result.txt")] if kind == "done" else [], tag=key)
        jobs[key] = (spec, kind)
    return jobs
