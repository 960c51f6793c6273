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
                          "'direct', 'slurm', 'htcondor', 'sge' or 'oar'", "(got 'pbs')", "fix the file")


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


# -- one bad field per CE kind: the file, the CE and the field ----------------------------------------------------

_SSH = """
[ce.transport_options.endpoint]
host = "login.example.org"
username = "alice"
client_keys = ["/k"]
known_hosts = "/kh"
"""

BAD_FIELD_PER_KIND = {
    "batch-local": ('[[ce]]\nkind = "batch"\nname = "here"\nscheduler = "direct"\nroot = "relative/jobs"\n',
                    "[[ce]] #1 ('here'), root", "(got 'relative/jobs')"),
    "batch-ssh-slurm": ('[[ce]]\nname = "far"\nscheduler = "slurm"\nroot = "/home/alice/j"\ntransport = "ssh"\n'
                        + _SSH.replace('username = "alice"\n', ""),
                        "[[ce]] #1 ('far'), transport_options.endpoint.username", "Field required"),
    "htcondor": ('[[ce]]\nkind = "htcondor"\nname = "pool"\npool = "cm.example.org:9618"\nworkers = 0\n',
                 "[[ce]] #1 ('pool'), workers", "(got 0)"),
    "htcondor-ce": ('[[ce]]\nkind = "htcondor-ce"\nname = "grid"\nce = "ce.example.org"\ntoken_file = "/t"\n'
                    'prot = 9619\n', "[[ce]] #1 ('grid'), prot", "Extra inputs are not permitted"),
    "unknown-kind": ('[[ce]]\nkind = "pbs"\nname = "old"\n', "[[ce]] #1 ('old')",
                     "unknown CE kind 'pbs'; installed kinds: 'arc', 'batch', 'htcondor', 'htcondor-ce'"),
}


@pytest.mark.parametrize("kind", BAD_FIELD_PER_KIND)
def test_one_bad_field_is_one_message_naming_the_file_the_ce_and_the_field(tmp_path: Path, kind: str) -> None:
    body, where, what = BAD_FIELD_PER_KIND[kind]
    config = _config(tmp_path, body)
    result = intercede("ce", "check", "x", "--config", config, cwd=tmp_path, timeout=60)
    assert_user_error(result, f"config {config} is invalid:\n  {where}", what, "fix the file")
    assert result.err.count("\n  [[ce]]") == 1, result.err  # one mistake, one line


def test_a_ce_without_kind_or_scheduler_is_told_to_say_its_kind(tmp_path: Path) -> None:
    config = _config(tmp_path, '[[ce]]\nname = "what"\nroot = "/tmp/x"\n')
    result = intercede("ce", "check", "what", "--config", config, cwd=tmp_path, timeout=60)
    assert_user_error(result, "[[ce]] #1 ('what'): no `kind`", "an entry with `scheduler` is a 'batch' one")


def test_a_config_with_one_ce_of_each_kind_loads(tmp_path: Path) -> None:
    from intercede.actors.settings import load_settings
    from intercede.backends.registry import BatchConfig, HTCondorCEConfig, HTCondorConfig, build_backend

    config = _config(tmp_path, f"""
data_dir = "{tmp_path}/data"
[[ce]]
name = "local"
scheduler = "direct"
root = "{tmp_path}/jobs"
[[ce]]
kind = "batch"
name = "cluster"
scheduler = "slurm"
root = "/home/alice/intercede"
transport = "ssh"
{_SSH}
[[ce]]
kind = "htcondor"
name = "pool"
pool = "cm.example.org:9618"
token_file = "/etc/intercede/pool.token"
[[ce]]
kind = "htcondor-ce"
name = "grid"
ce = "ce.example.org"
scitoken_file = "/etc/intercede/scitoken"
""")
    settings = load_settings(config)
    assert [type(c) for c in settings.ce] == [BatchConfig, BatchConfig, HTCondorConfig, HTCondorCEConfig]
    backends = [build_backend(c) for c in settings.ce]  # no I/O: nothing is reached
    assert [type(b).__name__ for b in backends] == ["BatchBackend", "BatchBackend", "HTCondorBackend",
                                                    "HTCondorCEBackend"]
    assert settings.ce[1].transport_options.endpoint.host == "login.example.org"  # type: ignore[attr-defined]


# -- config that cannot work: refused at load, typed, naming the file and the field (issue 14 item 5) ----------

_LOCAL = '[[ce]]\nname = "here"\nscheduler = "direct"\nroot = "/tmp/intercede-x"\n'
_FAR = '[[ce]]\nname = "far"\nscheduler = "slurm"\nroot = "/home/alice/j"\ntransport = "ssh"\n'

CANNOT_WORK = {
    "tick-inf": ("tick_interval = inf\n" + _LOCAL, "tick_interval: Input should be a finite number"),
    "tick-nan": ("tick_interval = nan\n" + _LOCAL, "tick_interval: Input should be a finite number"),
    "poll-inf": (_LOCAL + "poll_interval = inf\n", "[[ce]] #1 ('here'), poll_interval: Input should be a finite"),
    "nul-root": (_LOCAL.replace('"/tmp/intercede-x"', '"/tmp/a\\u0000b"'), "[[ce]] #1 ('here'), root"),
    "nul-data-dir": ('data_dir = "/tmp/d\\u0000x"\n' + _LOCAL, "data_dir: must not contain a NUL character"),
    "port-70000": (_FAR + _SSH + "port = 70000\n",
                   "[[ce]] #1 ('far'), transport_options.endpoint.port: Input should be less than or equal to 65535"),
    "port-negative": (_FAR + _SSH + "port = -22\n",
                      "[[ce]] #1 ('far'), transport_options.endpoint.port: Input should be greater than or equal"),
    "max-sessions-0": (_FAR + "[ce.transport_options]\nmax_sessions = 0\n" + _SSH,
                       "[[ce]] #1 ('far'), transport_options.max_sessions: Input should be greater than or equal"),
    "connect-timeout-negative": (_FAR + "[ce.transport_options]\nconnect_timeout = -5\n" + _SSH,
                                 "[[ce]] #1 ('far'), transport_options.connect_timeout: Input should be greater"),
}


@pytest.mark.hostile
@pytest.mark.parametrize("case", CANNOT_WORK)
def test_config_that_cannot_work_is_refused_at_load(tmp_path: Path, case: str) -> None:
    body, phrase = CANNOT_WORK[case]
    config = _config(tmp_path, body)
    result = intercede("ce", "check", "here", "--config", config, cwd=tmp_path, timeout=60)
    assert_user_error(result, f"config {config} is invalid", phrase)
    assert "unexpected error" not in result.both


@pytest.mark.hostile
def test_a_config_that_is_not_utf8_is_a_user_error_not_an_unexpected_one(tmp_path: Path) -> None:
    config = tmp_path / "latin1.toml"
    config.write_bytes('# caf\u00e9\n'.encode("latin-1") + _LOCAL.encode())
    result = intercede("ce", "check", "here", "--config", config, cwd=tmp_path, timeout=60)
    assert_user_error(result, f"config {config} is not UTF-8 text (byte 0xe9 at offset 5)")
    assert "unexpected error" not in result.both


@pytest.mark.hostile
@pytest.mark.parametrize("where", ["inside", "containing", "equal"])
def test_a_local_ce_whose_root_is_inside_or_contains_the_data_dir_is_refused(tmp_path: Path, where: str) -> None:
    root = {"inside": tmp_path / "data" / "jobs", "containing": tmp_path, "equal": tmp_path / "data"}[where]
    config = _config(tmp_path, f'data_dir = "{tmp_path}/data"\n[[ce]]\nname = "here"\nscheduler = "direct"\n'
                               f'root = "{root}"\n')
    result = intercede("serve", "--config", config, cwd=tmp_path, timeout=60)
    assert_user_error(result, f"config {config} is invalid", f"CE 'here': root {root} is a local job directory",
                      "local jobs must not reach the journal")
    assert not (tmp_path / "data").exists()


def test_a_remote_ce_may_use_any_root(tmp_path: Path) -> None:
    from intercede.actors.settings import load_settings

    config = _config(tmp_path, f'data_dir = "{tmp_path}/data"\n' + _FAR.replace("/home/alice/j", f"{tmp_path}/data")
                     + _SSH)
    assert load_settings(config).ce[0].name == "far"  # another machine's filesystem: not the journal's


def test_intercede_version(tmp_path: Path) -> None:
    from importlib.metadata import version

    result = intercede("--version", cwd=tmp_path, timeout=60)
    assert result.code == 0 and result.out.strip() == f"intercede {version('intercede')}", result


def test_a_service_command_without_the_service_extra_says_which_extra(tmp_path: Path) -> None:
    import subprocess
    import sys

    script = "import sys; sys.modules['ray'] = None; from intercede.cli import main; sys.exit(main(['serve']))"
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc
    assert "`intercede serve` needs the service extra" in proc.stderr and "pip install 'intercede[service]'" in \
        proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
