"""Bad configurations and bad arguments: one clear message saying what is wrong and what to do, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import assert_user_error, intercede

pytestmark = pytest.mark.cli


def _config(folder: Path, body: str) -> Path:
    path = folder / "intercede.toml"
    path.write_text(body)
    return path


def test_an_unknown_ce_kind_is_named_with_the_kinds_there_are(tmp_path: Path) -> None:
    config = _config(tmp_path, '[[ce]]\nname = "batch"\nscheduler = "pbs"\nroot = "/tmp/x"\n')
    for args in (["run", "--config", config], ["ce", "check", "batch", "--config", config],
                 ["status", "--config", config]):
        result = intercede(*args, cwd=tmp_path, timeout=60)
        assert_user_error(result, f"config {config} is invalid", "[[ce]] #1 ('batch'), scheduler",
                          "'direct', 'slurm' or 'htcondor'", "(got 'pbs')", "fix the file")


def test_an_unknown_transport_lists_the_installed_ones(tmp_path: Path) -> None:
    config = _config(tmp_path, '[[ce]]\nname = "far"\nscheduler = "slurm"\nroot = "/tmp/x"\ntransport = "carrier"\n')
    result = intercede("run", "--config", config, cwd=tmp_path, timeout=60)
    assert_user_error(result, "unknown transport 'carrier'", "installed transports: local, ssh")


def test_a_missing_credential_file_stops_run_before_anything_starts(tmp_path: Path) -> None:
    config = _config(tmp_path, f"""
[[ce]]
name = "cluster"
scheduler = "slurm"
root = "/home/alice/intercede"
transport = "ssh"
[ce.transport_options.endpoint]
host = "127.0.0.1"
username = "alice"
client_keys = ["{tmp_path}/no-such-key"]
known_hosts = "{tmp_path}/known_hosts"
""")
    (tmp_path / "known_hosts").write_text("")
    result = intercede("run", "--config", config, cwd=tmp_path, timeout=60)
    assert_user_error(result, "CE 'cluster'", f"{tmp_path}/no-such-key does not exist",
                      "intercede ce check cluster")
    assert not (tmp_path / "intercede-data").exists()


def test_a_config_that_is_not_toml_says_where(tmp_path: Path) -> None:
    config = _config(tmp_path, "[[ce]\nname=")
    result = intercede("run", "--config", config, cwd=tmp_path, timeout=60)
    assert_user_error(result, f"config {config} is not valid TOML")


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    result = intercede("ce", "check", "x", "--config", tmp_path / "nope.toml", cwd=tmp_path, timeout=60)
    assert_user_error(result, f"cannot read config {tmp_path}/nope.toml")


def test_ce_check_of_a_ce_the_config_lacks_lists_those_it_has(tmp_path: Path) -> None:
    config = _config(tmp_path, '[[ce]]\nname = "here"\nscheduler = "direct"\nroot = "/tmp/x"\n')
    result = intercede("ce", "check", "there", "--config", config, cwd=tmp_path, timeout=60)
    assert_user_error(result, "no CE named 'there'", "(have: here)")
