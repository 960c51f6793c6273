"""The DIRAC plug-in called the way DIRAC's SiteDirector calls a ComputingElement, against real resources:
submitJob with a pilot wrapper file and numberOfJobs N, getJobStatus with the returned references, the pilot
stamps (found at the resource by their tag), getJobOutput, getJobLog, getCEStatus/available, killJob, cleanJob.

Most cases run in this interpreter, where DIRAC is not installed (the plug-in's stand-in base). The
``on_diracs_own_base`` cases run the same sequence in the DIRAC venv (stacks/dirac_venv.py: DIRAC 9 and the closure its
ComputingElement imports), on DIRAC's real ``ComputingElement``, with the CE made by DIRAC's ``ComputingElementFactory``
(tests/dirac/sitedirector_on_dirac.py).

Ids name the resource and its version. Each case runs in its contract case's xdist group, so it shares that
worker's stack."""

from __future__ import annotations

import json
import os
import subprocess
import sysconfig
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from intercede.dirac import IntercedeComputingElement
from intercede.dirac.pilots import MAX_STAMP, parse_reference
from intercede.model import JobState
from stacks import dirac_venv
from tests.contract.cases_htcondor import CondorSetup
from tests.contract.conftest import SlurmStacks

pytestmark = pytest.mark.dirac

DIRAC_STATES = {s.value for s in JobState}
ROOT = Path(__file__).parents[2]


def _slurm(stacks: SlurmStacks) -> dict[str, Any]:
    stack = stacks.get("24.11")
    return {"kind": "batch", "name": "slurm-dirac", "scheduler": "slurm", "root": "/home/tester/dirac-pilots",
            "transport": "ssh", "poll_interval": 1.0,
            "transport_options": {"endpoint": {"host": stack.host, "port": stack.port, "username": stack.username,
                                               "client_keys": [str(stack.client_key)],
                                               "known_hosts": str(stack.known_hosts)}}}


def _condor_ce(setup: CondorSetup) -> dict[str, Any]:
    return {"kind": "htcondor-ce", "name": "condor-ce-dirac", "ce": setup.stack.host, "token_file": str(setup.token),
            "staging": str(setup.staging)}


def _local(root: Path) -> dict[str, Any]:
    return {"kind": "batch", "name": "direct-dirac", "scheduler": "direct", "root": str(root / "dirac-pilots")}


RESOURCES = [
    pytest.param(("local_root", _local), id="direct-Local", marks=pytest.mark.xdist_group("case-direct-Local")),
    pytest.param(("slurm_stacks", _slurm), id="slurm-24.11", marks=pytest.mark.xdist_group("case-slurm-24.11")),
    pytest.param(("condor_ce_25", _condor_ce), id="HTCondor-CE-25.x",
                 marks=pytest.mark.xdist_group("case-HTCondor-CE-25.x")),
]


@pytest.fixture(params=RESOURCES)
def dirac_ce(request: pytest.FixtureRequest) -> Iterator[IntercedeComputingElement]:
    fixture, config = request.param
    ce = IntercedeComputingElement("intercede-test-ce")
    answer = ce.setParameters({"IntercedeCEConfig": json.dumps(config(request.getfixturevalue(fixture))),
                               "MaxTotalJobs": 20, "MaxWaitingJobs": 10})
    assert answer["OK"]
    yield ce
    ce.close()


@pytest.fixture(params=RESOURCES)
def ce_config(request: pytest.FixtureRequest) -> dict[str, Any]:
    fixture, config = request.param
    return config(request.getfixturevalue(fixture))  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def dirac_python() -> Path:
    """The DIRAC venv's interpreter (built once per machine and recipe, then cached: stacks/dirac_venv.py)."""
    return dirac_venv.python()


def _wrapper(tmp_path: Path, body: str) -> Path:
    """A pilot wrapper as SiteDirector writes one: an executable bash script."""
    path = tmp_path / "pilotwrapper.sh"
    path.write_text(f"#!/bin/bash\n{body}\n")
    path.chmod(0o755)
    return path


def _until(ce: IntercedeComputingElement, refs: Sequence[str], states: set[str],
           timeout: float = 180) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        answer = ce.getJobStatus(refs)
        assert answer["OK"], answer
        assert set(answer["Value"]) == set(refs) and set(answer["Value"].values()) <= DIRAC_STATES
        if set(answer["Value"].values()) <= states:
            return answer["Value"]  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise AssertionError(f"pilots still {answer['Value']}")
        time.sleep(1)  # SiteDirector's own cadence is minutes; a second is enough here


def test_sitedirector_submits_monitors_reads_and_cleans_pilots(dirac_ce: IntercedeComputingElement,
                                                               tmp_path: Path) -> None:
    ce = dirac_ce
    wrapper = _wrapper(tmp_path, 'echo "pilot wrapper ran in $PWD"; echo "to stderr" >&2')
    submitted = ce.submitJob(str(wrapper), None, numberOfJobs=3)
    assert submitted["OK"], submitted
    refs: list[str] = submitted["Value"]
    stamps: dict[str, str] = submitted["PilotStampDict"]
    assert len(refs) == 3 and set(stamps) == set(refs) and len(set(stamps.values())) == 3
    assert all(len(s) <= MAX_STAMP for s in stamps.values())
    assert {parse_reference(r)[0] for r in refs} == {json.loads(ce.ceParameters["IntercedeCEConfig"])["name"]}

    assert set(_until(ce, refs, {"Done"}).values()) == {"Done"}
    # The stamps are the copies' tags at the resource: DIRAC's stamp finds its pilot there.
    assert ce._loop is not None and ce._backend is not None
    backend: Any = ce._backend
    found = ce._loop.run(lambda: backend.find_by_tag(list(stamps.values())))
    assert {stamp: ids for stamp, ids in found.items()} == {s: [parse_reference(r)[1]] for r, s in stamps.items()}

    output = ce.getJobOutput(f"{refs[0]}:::{stamps[refs[0]]}")  # DIRAC passes "<reference>:::<stamp>"
    assert output["OK"], output
    out, err = output["Value"]
    assert "pilot wrapper ran in" in out and err.strip() == "to stderr"
    log = ce.getJobLog(refs[1])
    assert log["OK"] and "Done" in log["Value"] and "exit code: 0" in log["Value"]
    status = ce.getCEStatus()
    assert status["OK"] and status["SubmittedJobs"] == 3 and status["RunningJobs"] >= 0
    assert ce.available()["OK"]

    assert ce.cleanJob(refs)["OK"]


def test_sitedirector_kills_running_pilots(dirac_ce: IntercedeComputingElement, tmp_path: Path) -> None:
    ce = dirac_ce
    submitted = ce.submitJob(str(_wrapper(tmp_path, "sleep 600")), None, numberOfJobs=2)
    assert submitted["OK"], submitted
    refs = submitted["Value"]
    _until(ce, refs, {"Submitted", "Waiting", "Running"})
    assert ce.killJob(refs)["OK"]
    assert set(_until(ce, refs, {"Aborted"}, timeout=120).values()) == {"Aborted"}
    assert ce.cleanJob(refs)["OK"]


def test_references_of_another_ce_are_refused_without_raising(local_root: Path) -> None:
    dirac_ce = IntercedeComputingElement("local")
    dirac_ce.setParameters({"IntercedeCEConfig": _local(local_root)})
    answer = dirac_ce.getJobStatus(["intercede://some-other-ce/123"])
    assert answer["OK"] is False and "some-other-ce" in answer["Message"]
    assert dirac_ce.killJob(["not-a-reference"])["OK"] is False
    assert dirac_ce.submitJob("/nonexistent/wrapper", None, numberOfJobs=0)["OK"] is False
    dirac_ce.close()


def test_sitedirector_sequence_on_diracs_own_base(dirac_python: Path, ce_config: dict[str, Any],
                                                  tmp_path: Path) -> None:
    report_file = tmp_path / "report.json"
    env = {**os.environ, dirac_venv.BASE_SITE_ENV: sysconfig.get_paths()["purelib"]}
    done = subprocess.run([str(dirac_python), "-m", "tests.dirac.sitedirector_on_dirac", json.dumps(ce_config),
                           str(tmp_path), str(report_file)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=400, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(report_file.read_text())
    assert report["have_dirac"] is True and report["is_dirac_ce"] and report["is_intercede_ce"]
    assert report["bases"][1] == "DIRAC.Resources.Computing.ComputingElement.ComputingElement"
    assert report["ce_type"] == "Intercede"  # DIRAC's base names the type from the class, as the factory found it
    assert all(report["return_structures"].values()), report["return_structures"]
    answers = report["answers"]
    assert answers["available"]["OK"] and answers["available"]["Value"] == 10  # MaxWaitingJobs, nothing waiting
    assert answers["available"]["CEInfoDict"]["MaxTotalJobs"] == 20
    refs = answers["submitJob"]["Value"]
    assert len(refs) == 2 and set(answers["submitJob"]["PilotStampDict"]) == set(refs)
    assert answers["getJobStatus"]["Value"] == {ref: "Done" for ref in refs}
    out, err = answers["getJobOutput"]["Value"]
    assert "pilot wrapper ran in" in out and err.strip() == "to stderr"
    assert "exit code: 0" in answers["getJobLog"]["Value"]
    assert answers["getCEStatus"]["OK"] and answers["getCEStatus"]["SubmittedJobs"] == 2
    for refused in ("getJobStatus of another CE", "killJob of a non-reference"):
        # DIRAC's own S_ERROR: it carries Errno and the CallStack that DIRAC's error helpers read
        assert answers[refused]["OK"] is False and {"Errno", "CallStack", "Message"} <= set(answers[refused])
    assert answers["cleanJob"] == {"OK": True, "Value": None}
