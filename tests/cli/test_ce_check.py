"""``intercede ce check``: the local CE, a real Slurm 24.11 reached over SSH (good config, and each way it fails), and
the HTCondor kinds (a schedd through the bindings, the CE stand-in), 25.x.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest

from stacks.slurm_stack import SlurmStack, slurm_stack
from tests.cli.conftest import Result, assert_user_error, condor_config, intercede
from tests.contract.cases_htcondor import CondorSetup

pytestmark = pytest.mark.cli


_STEP = re.compile(r"^  (ok|FAIL|skip)\s+(configuration|credentials|reach|authenticate|scheduler|test job|outputs|"
                   r"clean up)\s", re.M)


def _steps(result: Result) -> dict[str, str]:
    """Each step's verdict as printed: {"reach": "ok", ...}."""
    return {name: verdict for verdict, name in _STEP.findall(result.out)}


def test_the_embedded_local_ce_passes_every_step(tmp_path: Path) -> None:
    result = intercede("ce", "check", "local", cwd=tmp_path, timeout=120, XDG_STATE_HOME=str(tmp_path / "state"))
    assert result.code == 0, result
    assert "OK: CE 'local' is usable" in result.out
    assert _steps(result) == {"configuration": "ok", "credentials": "ok", "reach": "skip", "authenticate": "ok",
                              "scheduler": "ok", "test job": "ok", "outputs": "ok", "clean up": "ok"}
    (jobs,) = (tmp_path / "state/intercede/jobs").iterdir()  # outside the data directory
    assert list(jobs.iterdir()) == []  # the test job left nothing behind
    assert (tmp_path / "state/intercede").stat().st_mode & 0o777 == 0o700  # private to this user


def test_a_local_ce_whose_root_cannot_be_created_fails_at_the_test_job(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[[ce]]\nname = "bad"\nscheduler = "direct"\nroot = "/proc/intercede-nowhere"\n')
    result = intercede("ce", "check", "bad", "--config", config, cwd=tmp_path, timeout=120)
    assert_user_error(result, "FAILED: CE 'bad' failed the test job step", "what to do:", code=1)
    assert _steps(result)["outputs"] == "skip"


# -- a real Slurm over SSH ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slurm() -> Iterator[SlurmStack]:
    with slurm_stack("24.11") as stack:
        yield stack


def _slurm_config(folder: Path, stack: SlurmStack, *, port: int | None = None, key: Path | None = None,
                  known_hosts: Path | None = None) -> Path:
    path = folder / "slurm.toml"
    path.write_text(f"""
[[ce]]
name = "slurm"
scheduler = "slurm"
root = "/home/{stack.username}/ce-check"
transport = "ssh"
[ce.transport_options.endpoint]
host = "{stack.host}"
port = {port or stack.port}
username = "{stack.username}"
client_keys = ["{key or stack.client_key}"]
known_hosts = "{known_hosts or stack.known_hosts}"
""")
    return path


def test_slurm_over_ssh_passes_every_step(slurm: SlurmStack, tmp_path: Path) -> None:
    result = intercede("ce", "check", "slurm", "--config", _slurm_config(tmp_path, slurm), cwd=tmp_path,
                       timeout=300)
    assert result.code == 0, result
    assert "OK: CE 'slurm' is usable" in result.out
    assert set(_steps(result).values()) == {"ok"}, result.out
    assert re.search(r"test job\s+job \d+@\w+: Done, exit 0 \(native COMPLETED\)", result.out), result.out
    assert slurm.exec("ls -A /home/tester/ce-check").stdout.strip() == ""  # purged


def test_slurm_at_a_wrong_port_fails_at_reach(slurm: SlurmStack, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    result = intercede("ce", "check", "slurm", "--config", _slurm_config(tmp_path, slurm, port=closed),
                       cwd=tmp_path, timeout=120)
    assert_user_error(result, f"FAILED: CE 'slurm' failed the reach step: cannot connect to 127.0.0.1:{closed}",
                      "what to do: check `host` and `port` under [ce.transport_options.endpoint]", code=1)


def test_slurm_with_a_missing_key_file_fails_at_credentials(slurm: SlurmStack, tmp_path: Path) -> None:
    missing = tmp_path / "id_missing"
    result = intercede("ce", "check", "slurm", "--config", _slurm_config(tmp_path, slurm, key=missing),
                       cwd=tmp_path, timeout=120)
    assert_user_error(result, "FAILED: CE 'slurm' failed the credentials step",
                      f"endpoint.client_keys file {missing} does not exist", "what to do:", code=1)
    assert _steps(result)["reach"] == "skip"


def test_slurm_with_a_key_it_does_not_know_fails_at_authenticate(slurm: SlurmStack, tmp_path: Path) -> None:
    stranger = tmp_path / "id_stranger"
    asyncssh.generate_private_key("ssh-ed25519").write_private_key(stranger)
    result = intercede("ce", "check", "slurm", "--config", _slurm_config(tmp_path, slurm, key=stranger),
                       cwd=tmp_path, timeout=120)
    assert_user_error(result, "FAILED: CE 'slurm' failed the authenticate step", "authorized_keys", code=1)
    assert _steps(result)["reach"] == "ok"


def test_slurm_with_an_unpinned_host_key_fails_at_authenticate(slurm: SlurmStack, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    result = intercede("ce", "check", "slurm", "--config", _slurm_config(tmp_path, slurm, known_hosts=empty),
                       cwd=tmp_path, timeout=120)
    assert_user_error(result, "FAILED: CE 'slurm' failed the authenticate step", "ssh-keyscan", code=1)


# -- the HTCondor kinds: a real schedd (bindings) and the CE stand-in, 25.x ----------------------------------------


@pytest.mark.htcondor
def test_an_htcondor_kind_passes_every_step(condor: tuple[str, CondorSetup], tmp_path: Path) -> None:
    kind, setup = condor
    result = intercede("ce", "check", "condor", "--config", condor_config(tmp_path, kind, setup), cwd=tmp_path,
                       timeout=300)
    assert result.code == 0, result
    assert "OK: CE 'condor' is usable" in result.out
    steps = _steps(result)
    # A CE does not expose its site's slots: no LoadReporter, so the scheduler step is skipped.
    assert steps.pop("scheduler") == ("ok" if kind == "htcondor" else "skip"), result.out
    assert set(steps.values()) == {"ok"}, result.out
    assert re.search(r"authenticate\s+authenticated; the schedd runs \$CondorVersion: 25\.", result.out), result.out
    assert re.search(r"test job\s+job \S+: Done, exit 0", result.out), result.out


@pytest.mark.htcondor
def test_an_htcondor_kind_with_a_missing_token_fails_at_credentials(condor: tuple[str, CondorSetup],
                                                                    tmp_path: Path) -> None:
    kind, setup = condor
    config = condor_config(tmp_path, kind, setup)
    config.write_text(config.read_text().replace(str(setup.token), str(tmp_path / "no-token")))
    result = intercede("ce", "check", "condor", "--config", config, cwd=tmp_path, timeout=120)
    assert_user_error(result, "FAILED: CE 'condor' failed the credentials step",
                      f"token_file file {tmp_path}/no-token does not exist", "its [[ce]] entry", code=1)
