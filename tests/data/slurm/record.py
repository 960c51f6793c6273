"""Record real Slurm outputs for the parser tests: ``.venv/bin/python -m tests.data.slurm.record [22.05 24.11 ...]``.

For each version it starts the real stack (``stacks/slurm_stack.py``), submits a fixed set of jobs as ``tester`` with
the argv :class:`~intercede.backends.schedulers.slurm.SlurmScheduler` builds, drives them into every state it can
provoke (completed, failed, running, held, pending for resources, cancelled running/pending, timeout, deadline, launch
failure, refused at submit), and writes what each command printed under ``tests/data/slurm/<version>/``:

* ``<capture>.txt`` stdout and ``<capture>.stderr`` stderr (only when non-empty),
* ``captures.json``: the Slurm version, ``jobs`` (role -> job id, ``tags`` role -> tag) and, per capture, the argv and
  exit status.

Versions run in parallel; one takes about three minutes (a TIMEOUT needs the one-minute limit to pass).
``--usage`` records only the usage fields (``sacct_usage.txt``, ``usage.json``), in under a minute.
"""

from __future__ import annotations

import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

from intercede.backends.schedulers.base import BatchJob, SubmitRequest
from intercede.backends.schedulers.slurm import SlurmScheduler, usage_argv
from intercede.model import Resources
from stacks.slurm_stack import SLURM_VERSIONS, SlurmStack, slurm_stack
from tests.data.recordings import write_capture

HERE = Path(__file__).resolve().parent
HOME = "/home/tester"
UNKNOWN = "999999"  # an id no stack reaches while recording

SCRIPTS = {"ok.sh": "exit 0", "fail.sh": "exit 3", "sleep.sh": "sleep 600"}


class Recorder:
    def __init__(self, stack: SlurmStack, version: str) -> None:
        self.stack, self.version, self.slurm = stack, version, SlurmScheduler()
        self.out = HERE / version
        self.captures: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, str] = {}
        self.tags: dict[str, str] = {}

    def run(self, argv: list[str]) -> tuple[int, str, str]:
        res = self.stack.exec(argv, user="tester", workdir=HOME)
        return res.exit_code, res.stdout, res.stderr

    def capture(self, name: str, argv: list[str]) -> tuple[int, str, str]:
        result = self.run(argv)
        write_capture(self.out, self.captures, name, argv, result, label=self.version)
        return result

    def submit(self, role: str, script: str, capture: str | None = None, workdir: str | None = None,
               **resources: Any) -> str | None:
        tag = f"rec-{role}"
        workdir = workdir or f"{HOME}/jobs/{role}"
        request = SubmitRequest(f"{HOME}/{script}", workdir, tag, Resources(**resources))
        argv = self.slurm.submit_argv(request)
        code, out, _ = self.capture(capture, argv) if capture else self.run(argv)
        if code != 0:
            return None
        if not out.strip():  # seen once (26.05, under load): exit 0 and no output through podman's exec; rerun
            raise RuntimeError(f"[{self.version}] sbatch for {role} printed no job id")
        self.jobs[role], self.tags[role] = out.strip(), tag
        return out.strip()

    def jobs_of(self, *roles: str) -> list[BatchJob]:
        return [BatchJob(self.jobs[r], f"{HOME}/jobs/{r}") for r in roles if r in self.jobs]

    def state(self, role: str) -> str:
        return self.run(["squeue", "-h", "--states=all", f"--jobs={self.jobs[role]}", "--format=%T"])[1].strip()

    def wait(self, what: str, predicate: Any, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError(f"[{self.version}] gave up waiting for {what}")
            time.sleep(1)

    def record(self) -> None:
        self.out.mkdir(exist_ok=True)
        for name, body in SCRIPTS.items():
            self.stack.check(["sh", "-c", f"printf '#!/bin/sh\\n{body}\\n' > {HOME}/{name} && chmod 755 {HOME}/{name}"],
                             user="tester")
        self.stack.check(["mkdir", "-p", *(f"{HOME}/jobs/{r}" for r in (
            "completed", "failed", "running", "held", "wide", "cancel_running", "cancel_pending", "timeout",
            "deadline"))], user="tester")
        # -- submissions (a refused one may still use a job id: see the slurm module's docstring) --
        self.submit("completed", "ok.sh", capture="sbatch_ok")
        self.submit("failed", "fail.sh")
        self.submit("running", "sleep.sh")
        self.submit("cancel_running", "sleep.sh")
        self.submit("timeout", "sleep.sh", wall_time=timedelta(minutes=1))
        self.submit("held", "sleep.sh", native=["--hold"])
        self.submit("cancel_pending", "sleep.sh", native=["--hold"])
        self.submit("deadline", "sleep.sh", wall_time=timedelta(minutes=1),
                    native=["--hold", "--deadline=now+65seconds"])
        self.submit("launch_failure", "ok.sh", workdir="/nonexistent")
        self.submit("bad_partition", "ok.sh", capture="sbatch_bad_partition", queue="no-such-partition")
        self.submit("too_many_cpus", "ok.sh", capture="sbatch_too_many_cpus", cores=64)
        self.submit("too_much_memory", "ok.sh", capture="sbatch_too_much_memory", memory_mb=10**6)
        self.wait("the first jobs to end and start",
                  lambda: self.state("completed") == "COMPLETED" and self.state("running") == "RUNNING"
                  and self.state("cancel_running") == "RUNNING" and self.state("timeout") == "RUNNING")
        self.submit("wide", "sleep.sh", cores=4)  # pends: the node's 4 CPUs are partly taken
        time.sleep(2)
        everyone = [*self.jobs_of(*self.jobs), BatchJob(UNKNOWN, "/nowhere")]
        self.capture("squeue_mixed", self.slurm.status_argv(everyone))
        self.capture("squeue_unknown_one", self.slurm.status_argv([BatchJob(UNKNOWN, "/nowhere")]))
        self.capture("squeue_unknown_two", self.slurm.status_argv(
            [BatchJob(UNKNOWN, "/nowhere"), BatchJob("999998", "/nowhere")]))
        self.capture("load", self.slurm.load_argv() or [])
        self.capture("scancel_mixed", self.slurm.cancel_argv(
            [*self.jobs_of("cancel_running", "cancel_pending", "completed"), BatchJob(UNKNOWN, "/nowhere")]))
        self.capture("scancel_unknown", self.slurm.cancel_argv([BatchJob(UNKNOWN, "/nowhere")]))
        # 22.05 leaves a held job past its deadline alone; releasing it lets every version end it with DEADLINE.
        time.sleep(8)
        self.run(["scontrol", "release", self.jobs["deadline"]])
        self.wait("DEADLINE", lambda: self.state("deadline") == "DEADLINE")
        self.wait("TIMEOUT", lambda: self.state("timeout") == "TIMEOUT")
        self.run(["scancel", self.jobs["wide"]])
        time.sleep(2)
        self.capture("squeue_final", self.slurm.status_argv(everyone))
        self.capture("sacct_final", self.slurm.history_argv(everyone) or [])
        # Let slurmctld forget finished jobs (MinJobAge=2 s, purged within seconds): now only accounting knows them.
        self.stack.check("sed -i 's/^MinJobAge=.*/MinJobAge=2/' /etc/slurm/slurm.conf && scontrol reconfigure")
        self.wait("the purge", lambda: self.run(self.slurm.status_argv(self.jobs_of("completed")))[0] != 0, 120)
        self.capture("squeue_after_purge", self.slurm.status_argv(everyone))
        self.capture("sacct_after_purge", self.slurm.history_argv(everyone) or [])
        # sacct matches names case-insensitively (hence the upper-case tag); a refused submission may leave a job.
        tags = [self.tags["completed"], self.tags["running"], self.tags["failed"].upper(), "rec-too_much_memory",
                "rec-absent"]
        for name, argv in zip(("find_squeue", "find_sacct"), self.slurm.find_argvs(tags), strict=True):
            self.capture(name, argv)
        # slurmctld down: every client command retries for ~10 s, then fails; sacct still answers (slurmdbd).
        self.stack.stop_slurmctld()
        self.capture("squeue_ctld_down", self.slurm.status_argv(self.jobs_of("running", "held")))
        self.capture("scancel_ctld_down", self.slurm.cancel_argv(self.jobs_of("running", "held")))
        self.capture("load_ctld_down", self.slurm.load_argv() or [])
        self.submit("ctld_down", "ok.sh", capture="sbatch_ctld_down")
        self.stack.start_slurmctld()
        meta = {"slurm_version": self.stack.version, "jobs": self.jobs, "tags": self.tags, "unknown": UNKNOWN,
                "find_tags": tags, "captures": self.captures}
        (self.out / "captures.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def record(version: str) -> None:
    with slurm_stack(version, min_job_age=600) as stack:
        Recorder(stack, version).record()


# Usage records (``--usage``): written to their own files, so the captures above stay as they are.
USAGE_SCRIPTS = {
    # ~40 MB held for longer than JobAcctGatherFrequency (5 s), so MaxRSS has a sample; some CPU time.
    "busy.sh": "x=$(head -c 40000000 /dev/zero | tr '\\0' a); i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; "
               "sleep 7; echo ${#x}",
    "ok.sh": "exit 0", "fail.sh": "exit 3", "sleep.sh": "sleep 600",
}


def record_usage(version: str) -> None:
    """``sacct_usage.txt`` (:meth:`SlurmScheduler.usage_argv` over a busy, a completed, a failed and a running job)
    and ``usage.json`` (their ids and what each did)."""
    with slurm_stack(version, min_job_age=600) as stack:
        rec = Recorder(stack, version)
        for name, body in USAGE_SCRIPTS.items():
            stack.check(["sh", "-c", f"printf '#!/bin/sh\\n%s\\n' \"$1\" >{HOME}/{name} && chmod 755 {HOME}/{name} && "
                         f"chown tester {HOME}/{name}", "sh", body])
        for role, script in (("busy", "busy.sh"), ("completed", "ok.sh"), ("failed", "fail.sh"),
                             ("running", "sleep.sh")):
            rec.run(["mkdir", "-p", f"{HOME}/jobs/{role}"])
            rec.submit(role, script)
        rec.wait("the finished jobs", lambda: all(rec.state(r) in ("COMPLETED", "FAILED")
                                                  for r in ("busy", "completed", "failed")), 120)
        rec.wait("accounting of the finished jobs", lambda: rec.run(
            ["sacct", "-n", "-X", "-P", f"--jobs={rec.jobs['busy']}", "--format=End"])[1].strip()[:2] == "20", 60)
        rec.capture("sacct_usage", usage_argv(rec.jobs_of("busy", "completed", "failed", "running")))
        meta = {"slurm_version": stack.version, "jobs": rec.jobs, "scripts": USAGE_SCRIPTS,
                "captures": rec.captures}
        (rec.out / "usage.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def main(argv: list[str]) -> None:
    usage = "--usage" in argv
    versions = [a for a in argv if a != "--usage"] or list(SLURM_VERSIONS)
    with ThreadPoolExecutor(len(versions)) as pool:
        for version, _ in zip(versions, pool.map(record_usage if usage else record, versions), strict=True):
            print(f"[{version}] recorded under {HERE / version}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
