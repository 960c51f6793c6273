"""Native bulk submission on real resources: several copies of one spec are ONE job array (Slurm), ONE cluster
(HTCondor, bindings and CLI) or one command (Direct), and every copy still works on its own.

The cases are the contract suite's own (same builders, same session-scoped stacks, same xdist group), under ids that
name the bulk path: ``bulk-slurm-24.11``, ``bulk-htcondor-25-bindings``, ``bulk-htcondor-23.9-cli``, ...
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import tempfile
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from intercede.backends.batch import BatchBackend
from intercede.backends.capabilities import AttemptTaggable, Cancellable, JobBackend, OutputRetriever, Taggable
from intercede.backends.schedulers.direct import DirectScheduler
from intercede.backends.transports.base import CommandResult
from intercede.backends.transports.local import LocalTransport
from intercede.model import Copy, JobSpec, JobState, Resources
from tests.contract.cases import Case, slurm_refused
from tests.contract.conftest import CASES
from tests.contract.test_contract import tag
from tests.contract.waiting import until_state, until_terminal

_IDS = {"direct-Local": "bulk-direct-local", "slurm-22.05": "bulk-slurm-22.05", "slurm-24.11": "bulk-slurm-24.11",
        "slurm-26.05": "bulk-slurm-26.05", "HTCondor-schedd-23.9": "bulk-htcondor-23.9-bindings",
        "HTCondor-schedd-25.x": "bulk-htcondor-25-bindings", "HTCondor-SSH-23.9": "bulk-htcondor-23.9-cli",
        "HTCondor-SSH-25.x": "bulk-htcondor-25-cli", "sge-8.1.9": "bulk-sge-8.1.9", "oar-2.5.9": "bulk-oar-2.5.9"}
_CONDOR_REFUSED = (JobSpec(executable="true", resources=Resources(native=["requirements = (((("])), "")


def _bulk(case: Case) -> Case:
    refused = _CONDOR_REFUSED if case.id.startswith("HTCondor") else case.refused
    if case.id.startswith("slurm"):
        refused = slurm_refused()
    return dataclasses.replace(case, refused=refused)


BULK = [pytest.param(_bulk(c), id=_IDS[c.id], marks=(*c.marks, pytest.mark.bulk)) for c in CASES if c.id in _IDS]
COPIES = 3


def _native(job_id: str) -> str:
    return job_id.partition("@")[0]


def _one_submission(case: Case, job_ids: list[str]) -> None:
    """The copies' native ids come from one array / one cluster."""
    natives = [_native(j) for j in job_ids]
    if case.id.startswith("slurm"):
        assert len({n.partition("_")[0] for n in natives}) == 1 and [n.partition("_")[2] for n in natives] == \
            [str(k) for k in range(len(natives))], natives
    elif case.id.startswith("sge"):  # one array job, tasks numbered from 1
        assert len({n.partition(".")[0] for n in natives}) == 1 and [n.partition(".")[2] for n in natives] == \
            [str(k) for k in range(1, len(natives) + 1)], natives
    elif case.id.startswith("oar"):  # one array: OAR gives its tasks consecutive job ids (and one array id)
        assert [int(n) for n in natives] == list(range(int(natives[0]), int(natives[0]) + len(natives))), natives
    elif case.id.startswith("HTCondor"):
        assert len({n.partition(".")[0] for n in natives}) == 1 and [n.partition(".")[2] for n in natives] == \
            [str(k) for k in range(len(natives))], natives


@pytest.mark.parametrize("case", BULK)
async def test_copies_are_one_native_submission_each_with_its_own_variables_and_secret(
        case: Case, backend: JobBackend, tmp_path: Path) -> None:
    assert isinstance(backend, OutputRetriever)
    spec = JobSpec(executable="/bin/sh", arguments=["-c", 'printf %s "$COPY"; cat "$TOKEN_FILE" >&2'], tag=tag(),
                   copies=[Copy(variables={"COPY": str(i)}, secrets={"TOKEN": f"secret-{i}"}) for i in range(COPIES)])
    result = await backend.submit(spec)
    assert not result.failures and [s.tag for s in result.submissions] == [f"{spec.tag}.{i}" for i in range(COPIES)]
    _one_submission(case, result.job_ids)
    statuses = await until_terminal(backend, result.job_ids)
    assert [(s.state, s.exit_code) for s in statuses] == [(JobState.DONE, 0)] * COPIES
    for i, job_id in enumerate(result.job_ids):
        manifest = await backend.fetch(job_id, spec, tmp_path / str(i))
        assert (manifest.destination / "stdout.txt").read_text() == str(i)
        assert (manifest.destination / "stderr.txt").read_text() == f"secret-{i}"


@pytest.mark.parametrize("case", BULK)
async def test_every_copy_is_found_by_its_tag_after_a_restart_and_one_copy_can_be_cancelled(
        case: Case, backend: JobBackend, request: pytest.FixtureRequest) -> None:
    assert isinstance(backend, Taggable) and isinstance(backend, Cancellable)
    spec = JobSpec(executable="sleep", arguments=["300"], tag=tag(), copies=[Copy() for _ in range(COPIES)])
    result = await backend.submit(spec)
    tags = [s.tag for s in result.submissions]
    assert None not in tags and len(result.job_ids) == COPIES
    # A new backend instance knows nothing of the submit: what a restarted client has.
    async with case.build(request.getfixturevalue(case.stack) if case.stack else None) as fresh:
        assert isinstance(fresh, Taggable)
        found = await fresh.find_by_tag(tags)  # type: ignore[arg-type]
        assert found == {t: [j] for t, j in zip(tags, result.job_ids, strict=True)}
        if isinstance(fresh, AttemptTaggable):
            attempts = await fresh.find_attempts(tags)  # type: ignore[arg-type]
            assert {t: list(a) for t, a in attempts.items()} == found
            if case.id.startswith(("slurm", "direct", "sge")):  # BatchBackend: the attempt is the copy's own directory
                assert [a[j] for a, j in zip(attempts.values(), result.job_ids, strict=True)] == \
                    [j.rpartition("@")[2] for j in result.job_ids]
    first, middle, last = result.job_ids
    await until_state(backend, middle, {JobState.WAITING, JobState.RUNNING})
    (outcome,) = await backend.cancel([middle])
    assert outcome.ok, outcome
    (cancelled,) = await until_terminal(backend, [middle])
    assert cancelled.state is JobState.ABORTED
    assert all(not s.state.is_terminal for s in await backend.status([first, last]))
    assert all(o.ok for o in await backend.cancel([first, last]))
    assert [s.state for s in await until_terminal(backend, [first, last])] == [JobState.ABORTED] * 2


@pytest.mark.parametrize("case", BULK)
async def test_a_refused_bulk_submission_fails_every_copy_with_the_reason(case: Case, backend: JobBackend) -> None:
    refused, word = case.refused
    spec = refused.model_copy(update={"copies": [Copy() for _ in range(COPIES)], "tag": tag()})
    result = await backend.submit(spec)
    assert result.job_ids == [] and len(result.failures) == COPIES
    assert [f.copy_index for f in result.failures] == list(range(COPIES))
    assert all(word in f.error.lower() and f.error and not f.temporary for f in result.failures), result.failures


NOBODY = 65534


class _Nobody(LocalTransport):
    """This machine, as the account ``nobody``, whose bulk launcher (``sh -c <launch many>``) may leave at most
    ``room`` more processes of that account than there are when the command starts (``prlimit``): a real account at
    its process limit, where the shell cannot fork every copy's launch (root is exempt from the limit, and staging
    is not limited, so only launches fail). ``room`` None: no limit."""

    def __init__(self, room: int | None) -> None:
        super().__init__()
        self.room = room

    async def run(self, argv: Sequence[str], *, stdin: bytes | None = None,
                  timeout: float | None = None) -> CommandResult:
        argv = list(argv)
        if self.room is not None and "-c" in argv:
            at = argv.index("-c") - 1  # the launcher's "sh"
            argv[at:at] = ["prlimit", f"--nproc={_nobody_processes() + self.room}", "--"]
        return await super().run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv],
                                 stdin=stdin, timeout=timeout)


def _nobody_processes() -> int:
    return len(subprocess.run(["ps", "-u", str(NOBODY), "--no-headers", "-o", "pid"], capture_output=True,
                              text=True).stdout.split())  # exit status 1: none


@pytest.fixture
async def nobody_root() -> AsyncIterator[str]:
    # The limit counts every process of the account, zombies too: wait (bounded) for those of an earlier run to be
    # reaped, so the room the test leaves is the room the launcher gets.
    for _ in range(100):
        if not _nobody_processes():
            break
        await asyncio.sleep(0.1)
    with tempfile.TemporaryDirectory(prefix="intercede-nobody-") as root:
        os.chmod(root, 0o777)
        yield root


@pytest.mark.direct
@pytest.mark.bulk
@pytest.mark.parametrize("case", ["bulk-direct-local"])
async def test_copies_a_direct_bulk_launch_could_not_start_fail_on_their_own(case: str, nobody_root: str) -> None:
    # The staging shell, `timeout` and the launcher (3), `id -un` (1), one launch's subshell (1), then each started
    # copy's job shell and `sleep` (2): room for about three of twelve copies; the shell cannot fork the others'
    # launches, and says so per copy (which copies depends on when the launches' subshells are reaped).
    transport = _Nobody(3 + 1 + 1 + 2 * 3)
    backend = BatchBackend(transport, DirectScheduler(nobody_root), nobody_root, name="direct-nobody")
    spec = JobSpec(executable="sleep", arguments=["60"], tag=tag(), copies=[Copy() for _ in range(12)])
    result = await backend.submit(spec)
    transport.room = None  # status and purge may fork freely
    try:
        started, failed = [s for s in result.submissions if s.ok], result.failures
        assert started and failed, result.submissions
        assert sorted(s.copy_index for s in [*started, *failed]) == list(range(12))
        assert all(f.temporary and "was not started" in f.error and "fork" in f.error for f in failed), failed
        assert [s.tag for s in result.submissions] == [f"{spec.tag}.{i}" for i in range(12)]
        statuses = await backend.status([s.job_id for s in started if s.job_id])
        # Each started copy is a job of its own (running, or failed: its payload could not fork `sleep` either).
        assert all(s.state in (JobState.RUNNING, JobState.FAILED) for s in statuses), statuses
        # Only the copies that did not start lost their directories.
        assert len(os.listdir(nobody_root)) == len(started)
    finally:
        assert all(o.ok for o in await backend.purge(result.job_ids))
    assert os.listdir(nobody_root) == []
