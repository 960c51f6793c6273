"""``intercede run``: the main job on the embedded default, exactly as ``scripts/run.sh`` invokes it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.cli.conftest import intercede

pytestmark = pytest.mark.cli


def test_run_declares_cancels_and_collects_the_sample_jobs(tmp_path: Path) -> None:
    # RAY_ADDRESS=local: a private Ray cluster even when another one runs on this machine (the command is unchanged).
    result = intercede("run", cwd=tmp_path, RAY_ADDRESS="local", XDG_STATE_HOME=str(tmp_path / "state"))
    assert result.code == 0, result
    assert "Traceback" not in result.both
    rows = re.findall(r"^(demo-\w+-\d{3})\s+(\w+)\s+(\w+)\s+(\S+)\s+(True|False)\s+(\S+)$", result.out, re.M)
    assert len(rows) == 8, result.out
    expected = {"done": "Done", "failed": "Failed", "cancelled": "Aborted"}
    assert all(state == expected[wanted] and collected == "True" for _, wanted, state, _, collected, _ in rows)
    data = tmp_path / "intercede-data"
    for key, wanted, *_ in rows:
        assert (data / "outputs" / key / "stdout.txt").is_file()
        if wanted == "done":
            assert (data / "outputs" / key / "result.txt").read_text().strip().isdigit()
    assert (data / "journal.sqlite").is_file()
    (jobs,) = (tmp_path / "state/intercede/jobs").iterdir()  # the job directories live outside the data directory
    assert not list(jobs.iterdir())  # every job purged at the CE after its outputs were collected
    assert re.search(r"Ray cluster at \S+, namespace 'intercede'", result.out)


def test_run_with_no_jobs_only_starts_the_service(tmp_path: Path) -> None:
    result = intercede("run", "--jobs", "0", "--address", "local", cwd=tmp_path)
    assert result.code == 0, result
    assert "no sample jobs (--jobs 0)" in result.out
