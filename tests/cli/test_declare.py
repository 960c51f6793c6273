"""``intercede serve`` (the service, no sample jobs) and ``intercede declare FILE`` into it, on the embedded default;
local jobs there cannot reach the journal by a relative path (issue 14 item 3)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import (
    Result,
    Service,
    assert_user_error,
    condor_config,
    intercede,
    running,
)
from tests.contract.cases_htcondor import CondorSetup

pytestmark = pytest.mark.cli


def serving(folder: Path, *args: str | Path) -> contextlib.AbstractContextManager[Service]:
    """``intercede serve --address local ARGS`` in ``folder``, its job directories under a private state dir."""
    return running(folder, ["serve", "--address", "local", *map(str, args)], 120,
                   XDG_STATE_HOME=str(folder / "state"))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The service on the embedded default."""
    with serving(tmp_path_factory.mktemp("serve")) as service:
        yield service


def _rows(service: Service, *keys: str) -> list[dict[str, object]]:
    result = service.run("status", "--address", service.address, "--json", *keys)
    assert result.code == 0, result
    return list(json.loads(result.out)["rows"])


def _until_collected(service: Service, *keys: str, timeout: float = 120) -> list[dict[str, object]]:
    deadline = time.monotonic() + timeout
    rows: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        rows = _rows(service, *keys)
        if len(rows) == len(keys) and all(r["collected"] for r in rows):
            return rows
        time.sleep(0.5)
    raise AssertionError(f"not collected within {timeout} s: {rows}")


def test_serve_runs_the_service_without_sample_jobs(served: Service) -> None:
    out = served.stdout.read_text()
    assert "no sample jobs" in out and f"attach with `intercede status --address {served.address}`" in out
    assert _rows(served) == []


def test_declare_from_a_toml_file_runs_and_collects_the_jobs(served: Service, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.toml"
    jobs.write_text("""
[[job]]
key = "toml-hello"
ce = "local"
phase = "collected"
destination = "out/toml-hello"
[job.spec]
executable = "/bin/sh"
arguments = ["-c", "echo hello > r.txt"]
output_files = [{ name = "r.txt" }]
""")
    result = served.run("declare", jobs, "--address", served.address)
    assert result.code == 0, result
    assert "declared 1 key(s) on local" in result.out
    (row,) = _until_collected(served, "toml-hello")
    assert row["state"] == "Done"
    assert (tmp_path / "out/toml-hello/r.txt").read_text() == "hello\n"  # destination relative to the file


def test_declare_from_a_json_list(served: Service, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps([{"key": f"json-{i}", "ce": "local", "phase": "collected",
                                 "destination": str(tmp_path / f"json-{i}"),
                                 "spec": {"executable": "/bin/echo", "arguments": [str(i)]}} for i in range(3)]))
    result = served.run("declare", jobs, "--address", served.address)
    assert result.code == 0, result
    rows = _until_collected(served, "json-0", "json-1", "json-2")
    assert sorted(str(r["state"]) for r in rows) == ["Done"] * 3
    assert (tmp_path / "json-2/stdout.txt").read_text() == "2\n"


@pytest.mark.hostile
def test_a_local_job_cannot_reach_the_journal_by_a_relative_path(served: Service, tmp_path: Path) -> None:
    # On the embedded default the job directories were <data_dir>/jobs/<id>: "../../journal.sqlite" was the journal.
    probe = ("pwd -P > where.txt; for p in ../journal.sqlite ../../journal.sqlite ../../../journal.sqlite "
             "../intercede-data/journal.sqlite ../../intercede-data/journal.sqlite; do "
             "if [ -e \"$p\" ]; then echo \"$p\"; fi; done > found.txt")
    jobs = tmp_path / "probe.toml"
    jobs.write_text(f"""
[[job]]
key = "journal-probe"
ce = "local"
phase = "collected"
destination = "{tmp_path / 'probe'}"
[job.spec]
executable = "/bin/sh"
arguments = ["-c", {json.dumps(probe)}]
output_files = [{{ name = "where.txt" }}, {{ name = "found.txt" }}]
""")
    result = served.run("declare", jobs, "--address", served.address)
    assert result.code == 0, result
    (row,) = _until_collected(served, "journal-probe")
    assert row["state"] == "Done", row
    data = (served.folder / "intercede-data").resolve()
    assert (data / "journal.sqlite").is_file()
    where = Path((tmp_path / "probe/where.txt").read_text().strip())
    assert data not in where.parents, f"the job ran inside the data directory: {where}"
    assert where.is_relative_to((served.folder / "state").resolve())
    assert (tmp_path / "probe/found.txt").read_text() == "", "a relative path from the job reached the journal"


def test_a_bad_jobs_file_names_the_job_and_the_field_and_declares_nothing(served: Service, tmp_path: Path) -> None:
    jobs = tmp_path / "bad.toml"
    jobs.write_text('[[job]]\nkey = "fine"\nce = "local"\n[job.spec]\nexecutable = "/bin/true"\n'
                    '[[job]]\nkey = "broken"\nce = "local"\n[job.spec]\narguments = ["x"]\n'
                    'copies = [{ secrets = { token = "s3cr3t-value" } }]\n')
    result: Result = served.run("declare", jobs, "--address", served.address)
    assert_user_error(result, f"jobs file {jobs} is invalid", "[[job]] #2 ('broken'), spec.executable",
                      "fix the file")
    assert "s3cr3t-value" not in result.both
    status = served.run("status", "--address", served.address, "--json", "fine")
    assert status.code == 2 and "not declared in this intercede: fine" in status.err, status  # nothing declared


def test_declare_of_a_file_that_does_not_exist_is_a_user_error(tmp_path: Path) -> None:
    result = intercede("declare", tmp_path / "nope.toml", "--address", "127.0.0.1:1", cwd=tmp_path, timeout=60)
    assert_user_error(result, f"cannot read jobs file {tmp_path}/nope.toml")


@pytest.mark.htcondor
def test_the_service_runs_an_htcondor_kind_from_its_toml(condor: tuple[str, CondorSetup], tmp_path: Path) -> None:
    kind, setup = condor
    config = condor_config(tmp_path, kind, setup)
    config.write_text(f'data_dir = "{tmp_path}/data"\n' + config.read_text())
    jobs = tmp_path / "jobs.toml"
    jobs.write_text(f"""
[[job]]
key = "condor-1"
ce = "condor"
phase = "collected"
destination = "{tmp_path / 'out'}"
[job.spec]
executable = "/bin/sh"
arguments = ["-c", "echo from-{kind} > r.txt"]
output_files = [{{ name = "r.txt" }}]
""")
    with serving(tmp_path, "--config", config) as service:
        assert "CEs: condor" in service.stdout.read_text()
        result = service.run("declare", jobs, "--address", service.address)
        assert result.code == 0, result
        (row,) = _until_collected(service, "condor-1", timeout=240)
    assert row["state"] == "Done", row
    assert (tmp_path / "out/r.txt").read_text() == f"from-{kind}\n"
