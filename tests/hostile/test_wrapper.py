"""Hostile specs against the job wrapper: reserved names, a spec's own PATH/PWD/huge values, CR LF and every character.

The wrapper must not depend on anything a spec sets, and every value must reach the payload byte for byte however it
is written into the script (Slurm refuses a script holding CR LF). Real resources: direct over Local and SSH, and
Slurm 24.11 over SSH (stacks from the contract suite's fixtures, started once per session).
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intercede.backends.batch import BatchBackend
from intercede.backends.jobscript import render
from intercede.backends.schedulers.direct import DirectScheduler
from intercede.backends.schedulers.slurm import SlurmScheduler
from intercede.backends.transports.local import LocalTransport
from intercede.backends.transports.ssh import SSHEndpoint, SSHTransport
from intercede.errors import InvalidSpecError
from intercede.model import Copy, InputFile, JobSpec, JobState, OutputFile, parse_spec
from stacks.ssh_stack import SSHStack
from tests.contract.conftest import SlurmStacks, local_root, slurm_stacks, sshd_stack  # noqa: F401
from tests.contract.waiting import until_terminal

pytestmark = pytest.mark.hostile

# Written out, not imported: the test pins the layout the wrapper and the schedulers rely on.
RESERVED = ["job.sh", ".tag", ".secrets", ".exitcode", ".exitcode.tmp", ".pid", ".cancelled", ".claim"]

#: Every character 1..255, CR LF in all its forms, trailing newlines, multi-byte UTF-8, and what looks like options,
#: printf conversions and shell syntax.
VALUES = ["a\r\nb", "\r", "\r\n", "\r\r\n\n", "x\n\n", "\n", "", "".join(chr(i) for i in range(1, 256)),
          "é漢🚀\r\n", "-é", "%s%%\\n\\", "'\"$(id)`id`\r", "tail\t\n\n\n", "ends with CR\r"]

SECRET = "s3cr3t-value"


def _environ(block: bytes) -> dict[bytes, bytes]:
    """A NUL-separated environment block (``/proc/<pid>/environ``) as a mapping."""
    return dict(e.split(b"=", 1) for e in block.split(b"\0")[:-1])


# -- validation (pure) ---------------------------------------------------------------------------------------------

def _with_name(field: str, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"executable": "true"}
    if field == "stdout":
        spec["stdout"] = name
    elif field == "stderr":
        spec["stderr"] = name
    elif field == "output_files":
        spec["output_files"] = [{"name": name}]
    else:
        spec["input_files"] = [{"source": "/etc/hostname", "name": name}]
    return spec


@pytest.mark.parametrize("field", ["stdout", "stderr", "output_files", "input_files"])
@pytest.mark.parametrize("name", [*RESERVED, "./.tag", ".secrets/TOKEN", "job.sh/x", ".claim/"])
def test_a_file_name_that_is_one_of_intercedes_own_is_refused_naming_the_field(field: str, name: str) -> None:
    with pytest.raises(InvalidSpecError) as err:
        parse_spec(_with_name(field, name))
    assert field in str(err.value) and "reserved" in str(err.value)


@pytest.mark.parametrize("name", [".tagged", "sub/.tag", "job.sh.txt", "x/.secrets/y", ".exitcode2"])
def test_names_that_only_resemble_intercedes_own_are_accepted(name: str) -> None:
    for field in ("stdout", "output_files", "input_files"):
        parse_spec(_with_name(field, name))


def test_an_output_may_be_fetched_to_a_local_destination_of_any_name() -> None:
    # The destination is relative to the caller's directory, not the job's: nothing of intercede's lives there.
    parse_spec({"executable": "true", "output_files": [{"name": "a", "destination": ".tag"}]})


def test_the_wrappers_own_variable_cannot_be_set_by_a_spec() -> None:
    for spec in ({"executable": "true", "environment": {"INTERCEDE_JOB": "x"}},
                 {"executable": "true", "copies": [{"variables": {"INTERCEDE_JOB": "x"}}]}):
        with pytest.raises(InvalidSpecError, match="INTERCEDE_JOB"):
            parse_spec(spec)


# -- the script itself, run by sh on this machine (property) -------------------------------------------------------

text = st.text(st.characters(min_codepoint=1, max_codepoint=0x10FFFF, exclude_categories=("Cs",)), max_size=20)
# Names a wrapper could trip over if it ever ran in the spec's environment, and ordinary ones.
env_names = st.sampled_from(["PATH", "PWD", "HOME", "IFS", "CDPATH", "ENV", "LANG", "LC_ALL", "OLDPWD", "SHELL",
                             "TMPDIR", "TOKEN_FILE", "V1", "x_y"])


@settings(max_examples=60, deadline=None)
@given(args=st.lists(text, max_size=5), env=st.dictionaries(env_names, text, max_size=6),
       code=st.integers(0, 255))
def test_any_arguments_and_environment_reach_the_payload_byte_exact_and_the_exit_status_is_kept(
        tmp_path_factory: pytest.TempPathFactory, args: list[str], env: dict[str, str], code: int) -> None:
    work = tmp_path_factory.mktemp("job") / "0123456789abcdef"
    (work / ".secrets").mkdir(parents=True)
    (work / ".secrets" / "TOKEN").write_text(SECRET)
    # /proc/$$/environ is the environment the payload was started with (sh re-exports PWD its own way).
    script = ('printf "%s\\0" "$@" >args; /bin/cat /proc/$$/environ >env; t=$(/bin/cat "$TOKEN_FILE"); '
              f'printf %s "$t" >secret; exit {code}')
    spec = JobSpec(executable="/bin/sh", arguments=["-c", script, "sh", "first", *args], environment=env,
                   copies=[Copy(secrets={"TOKEN": SECRET})])
    rendered = render(spec, spec.copies[0], str(work))
    assert all(c == "\n" or " " <= c <= "~" for c in rendered), "the script is printable ASCII and newlines only"
    (work / "job.sh").write_text(rendered)
    result = subprocess.run(["sh", "job.sh"], cwd=work, env={"PATH": "/usr/bin:/bin"}, check=False)
    assert result.returncode == code and (work / ".exitcode").read_text() == f"{code}\n"
    assert (work / "args").read_bytes().split(b"\0")[:-1] == [b"first", *(a.encode() for a in args)]
    seen = _environ((work / "env").read_bytes())
    # Later entries win: the secret's TOKEN_FILE (the literal path, whatever PWD the spec set) over the spec's.
    expected = {**env, "TOKEN_FILE": f"{work}/.secrets/TOKEN"}
    assert {k: seen.get(k.encode()) for k in expected} == {k: v.encode() for k, v in expected.items()}
    assert (work / "secret").read_text() == SECRET
    assert seen[b"INTERCEDE_JOB"] == b"0123456789abcdef"


def test_a_staged_executable_runs_even_with_a_path_that_has_no_chmod(tmp_path: Path) -> None:
    work = tmp_path / "0123456789abcdef"
    work.mkdir()
    (work / "run.sh").write_text("#!/bin/sh\nexit 4\n")
    spec = JobSpec(executable="run.sh", environment={"PATH": "/nonexistent"},
                   input_files=[InputFile(source=tmp_path / "x", name="run.sh")])
    (work / "job.sh").write_text(render(spec, spec.copies[0], str(work)))
    assert subprocess.run(["sh", "job.sh"], cwd=work, check=False).returncode == 4
    assert (work / ".exitcode").read_text() == "4\n"


# -- the real resources --------------------------------------------------------------------------------------------

def _local(root: Path) -> BatchBackend:
    return BatchBackend(LocalTransport(), DirectScheduler(str(root)), str(root), name="direct-local")


def _ssh(stack: SSHStack) -> BatchBackend:
    root = "/home/tester/jobs"
    return BatchBackend(SSHTransport(stack.endpoint()), DirectScheduler(root), root, name="direct-ssh")


def _slurm_24_11(stacks: SlurmStacks) -> BatchBackend:
    stack = stacks.get("24.11")
    endpoint = SSHEndpoint(host=stack.host, port=stack.port, username=stack.username,
                           client_keys=[stack.client_key], known_hosts=stack.known_hosts)
    return BatchBackend(SSHTransport(endpoint), SlurmScheduler(), "/home/tester/jobs", name="slurm-24.11")


BACKENDS: dict[str, tuple[str, Callable[[Any], BatchBackend]]] = {
    "direct-Local": ("local_root", _local),
    "direct-SSH": ("sshd_stack", _ssh),
    "slurm-24.11": ("slurm_stacks", _slurm_24_11),
}


@pytest.fixture(params=list(BACKENDS))
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[BatchBackend]:
    fixture, build = BACKENDS[request.param]
    async with build(request.getfixturevalue(fixture)) as be:
        yield be


async def _run_to_end(backend: BatchBackend, spec: JobSpec, into: Path) -> tuple[JobState, int | None]:
    (job_id,) = (await backend.submit(spec)).job_ids
    (status,) = await until_terminal(backend, [job_id])
    await backend.fetch(job_id, spec, into)
    await backend.purge([job_id])
    return status.state, status.exit_code


async def test_a_spec_setting_path_and_pwd_keeps_its_exit_status_and_its_secrets(
        backend: BatchBackend, tmp_path: Path) -> None:
    script = 't=$(/bin/cat "$TOKEN_FILE") && [ "$t" = "$1" ] || exit 9; /bin/cat /proc/$$/environ; exit 7'
    spec = JobSpec(executable="/bin/sh", arguments=["-c", script, "sh", SECRET],
                   environment={"PATH": "/nonexistent", "PWD": "/nowhere"}, copies=[Copy(secrets={"TOKEN": SECRET})])
    assert await _run_to_end(backend, spec, tmp_path) == (JobState.FAILED, 7)
    seen = _environ((tmp_path / "stdout.txt").read_bytes())
    assert (seen[b"PATH"], seen[b"PWD"]) == (b"/nonexistent", b"/nowhere")


async def test_a_value_too_big_to_exec_fails_the_payload_and_the_exit_status_is_kept(
        backend: BatchBackend, tmp_path: Path) -> None:
    # Linux refuses any single environment string over 128 KiB (E2BIG): the payload cannot start, the wrapper can.
    spec = JobSpec(executable="/bin/sh", arguments=["-c", "exit 0"], environment={"BIG": "x" * 140_000})
    assert await _run_to_end(backend, spec, tmp_path) == (JobState.FAILED, 126)
    assert "Argument list too long" in (tmp_path / "stderr.txt").read_text()


async def test_cr_lf_trailing_newlines_and_every_character_reach_the_payload_byte_exact(
        backend: BatchBackend, tmp_path: Path) -> None:
    env = {f"V{i}": v for i, v in enumerate(VALUES)}
    script = 'printf "%s\\0" "$@"; /bin/cat /proc/$$/environ >env'
    spec = JobSpec(executable="/bin/sh", arguments=["-c", script, "sh", *VALUES],
                   environment=env, output_files=[OutputFile(name="env")])
    assert await _run_to_end(backend, spec, tmp_path) == (JobState.DONE, 0)
    assert (tmp_path / "stdout.txt").read_bytes().split(b"\0")[:-1] == [v.encode() for v in VALUES]
    seen = _environ((tmp_path / "env").read_bytes())
    assert {k: seen.get(k.encode()) for k in env} == {k: v.encode() for k, v in env.items()}
