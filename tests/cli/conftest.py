"""Helpers of the command-line suite: run ``intercede`` as a user would (the venv's console script, a subprocess), and
one ``intercede run --serve`` kept alive in the background for the commands that attach to it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.contract.cases_htcondor import CondorSetup, _setup

INTERCEDE = str(Path(sys.executable).with_name("intercede"))
HELPER = Path(__file__).with_name("declare_jobs.py")


@dataclass
class Result:
    code: int
    out: str
    err: str

    @property
    def both(self) -> str:
        return self.out + self.err


def environment(**extra: str) -> dict[str, str]:
    """This process's environment without a Ray address (each test says where to go), unbuffered output."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def intercede(*args: str | Path, cwd: Path, timeout: float = 300, **env: str) -> Result:
    """Run ``intercede ARGS`` in ``cwd`` and wait for it."""
    proc = subprocess.run([INTERCEDE, *map(str, args)], cwd=cwd, env=environment(**env), capture_output=True,
                          text=True, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_user_error(result: Result, *phrases: str, code: int = 2) -> None:
    """A user error: the exit code, each phrase in the message, and never a traceback."""
    assert result.code == code, result
    assert "Traceback" not in result.both, result.both
    for phrase in phrases:
        assert phrase in result.both, (phrase, result.both)


@dataclass
class Service:
    """A background ``intercede run --serve`` in its own local Ray cluster."""

    process: subprocess.Popen[bytes]
    folder: Path
    address: str
    stdout: Path
    stderr: Path

    def run(self, *args: str | Path, timeout: float = 300) -> Result:
        return intercede(*args, cwd=self.folder, timeout=timeout)

    def declare(self, *jobs: str) -> None:
        """Declare ``KEY=SHELL-COMMAND`` jobs through the Python API (the command line has no declare)."""
        subprocess.run([sys.executable, str(HELPER), self.address, *jobs], env=environment(), check=True,
                       timeout=120, capture_output=True)


def _wait_for_line(path: Path, pattern: str, process: subprocess.Popen[bytes], timeout: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, path.read_text())
        if found:
            return found
        if process.poll() is not None:
            break
        time.sleep(0.2)
    raise AssertionError(f"no {pattern!r} from intercede run (exit {process.poll()}):\n{path.read_text()}")


@contextlib.contextmanager
def running(folder: Path, argv: list[str], ready_timeout: float, **env: str) -> Iterator[Service]:
    """``intercede ARGV`` started in ``folder`` until it says it is serving (output in stdout.txt / stderr.txt);
    SIGTERM at the end."""
    out, err = folder / "stdout.txt", folder / "stderr.txt"
    with out.open("wb") as o, err.open("wb") as e:
        process = subprocess.Popen([INTERCEDE, *argv], cwd=folder, env=environment(**env), stdout=o, stderr=e)
    try:
        address = _wait_for_line(out, r"Ray cluster at (\S+),", process, 120).group(1)
        _wait_for_line(out, r"serving; Ctrl-C to stop", process, ready_timeout)
        yield Service(process, folder, address, out, err)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """``intercede run --serve --jobs 4 --address local``, started in a temporary folder; SIGTERM at the end."""
    with running(tmp_path_factory.mktemp("serve"), ["run", "--serve", "--jobs", "4", "--address", "local"], 300) as s:
        yield s


# -- the HTCondor kinds' stacks (25.x) ---------------------------------------------------------------------------


def condor_config(folder: Path, kind: str, setup: CondorSetup) -> Path:
    """A config with one CE named ``condor`` of ``kind`` (htcondor | htcondor-ce) on ``setup``'s stack."""
    stack = setup.stack
    if kind == "htcondor":
        body = f'kind = "htcondor"\npool = "{stack.pool}"\n'
    else:  # the stand-in is reached by address: HTCondor cannot check its certificate's host name
        body = (f'kind = "htcondor-ce"\nce = "{stack.host}"\nport = {stack.port}\nca_file = "{stack.ca_file()}"\n'
                'config = { SSL_SKIP_HOST_CHECK = "true" }\n')
    path = folder / "condor.toml"
    path.write_text(f'[[ce]]\nname = "condor"\n{body}token_file = "{setup.token}"\nstaging = "{folder}/staging"\n')
    return path


@pytest.fixture(scope="module", params=["htcondor", "htcondor-ce"], ids=["htcondor-25.x", "htcondor-ce-25.x"])
def condor(request: pytest.FixtureRequest) -> Iterator[tuple[str, CondorSetup]]:
    """(kind, a running 25.x stack of that kind): the schedd through the bindings, or the CE stand-in."""
    kind = str(request.param)
    for setup in _setup("25", "condor" if kind == "htcondor" else "condor_ce"):
        yield kind, setup
