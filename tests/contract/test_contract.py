"""The backend contract, run against every real backend x stack x version (see ``cases.py``).

Tests are driven by capabilities: where a backend lacks one, the test asserts it is really absent, then skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import secrets
import uuid
from pathlib import Path

import pytest

from intercede.backends.capabilities import (
    AttemptTaggable,
    Cancellable,
    Diagnosable,
    JobBackend,
    LoadReporter,
    OutputRetriever,
    Purgeable,
    Taggable,
)
from intercede.errors import CommandError, TransferError
from intercede.model import Copy, JobSpec, JobState, OutputFile
from tests.contract.cases import Case
from tests.contract.waiting import until_state, until_terminal

HOSTILE = ["a b", "'", '"', "$(touch /tmp/pwned)", "`id`", "x\ny", ";|&", "*?[a]", "-rf", "--", "é ü 漢字 🚀", "\\", "",
           "$HOME", "a\tb"]


def capability(backend: JobBackend, protocol: type) -> None:
    """Skip the test if ``backend`` lacks ``protocol`` — after asserting it really lacks it."""
    if not isinstance(backend, protocol):
        assert not hasattr(backend, _method_of(protocol)), f"{backend} has the method but not the protocol"
        pytest.skip(f"{type(backend).__name__} is not {protocol.__name__} (capability skip)")


def _method_of(protocol: type) -> str:
    return {Cancellable: "cancel", OutputRetriever: "fetch", Purgeable: "purge", LoadReporter: "load",
            Diagnosable: "peek", Taggable: "find_by_tag", AttemptTaggable: "find_attempts"}[protocol]


def tag() -> str:
    return f"ct-{uuid.uuid4().hex[:12]}"


async def test_one_job_reaches_done_with_its_exit_code(backend: JobBackend) -> None:
    result = await backend.submit(JobSpec(executable="/bin/sh", arguments=["-c", "exit 0"]))
    assert not result.failures and len(result.job_ids) == 1
    (status,) = await until_terminal(backend, result.job_ids)
    assert (status.state, status.exit_code) == (JobState.DONE, 0)


async def test_a_failing_job_reaches_failed_with_its_exit_code(backend: JobBackend) -> None:
    result = await backend.submit(JobSpec(executable="/bin/sh", arguments=["-c", "exit 7"]))
    (status,) = await until_terminal(backend, result.job_ids)
    assert (status.state, status.exit_code) == (JobState.FAILED, 7)


async def test_many_copies_run_each_with_its_own_variables(backend: JobBackend, tmp_path: Path) -> None:
    capability(backend, OutputRetriever)
    spec = JobSpec(executable="/bin/sh", arguments=["-c", 'printf %s "$COPY"'],
                   copies=[Copy(variables={"COPY": str(i)}) for i in range(3)], tag=tag())
    result = await backend.submit(spec)
    assert len(result.job_ids) == 3 and not result.failures
    assert [s.tag for s in result.submissions] == [f"{spec.tag}.{i}" for i in range(3)]
    statuses = await until_terminal(backend, result.job_ids)
    assert {s.state for s in statuses} == {JobState.DONE}
    for i, job_id in enumerate(result.job_ids):
        manifest = await backend.fetch(job_id, spec, tmp_path / str(i))  # type: ignore[attr-defined]
        assert (manifest.destination / "stdout.txt").read_text() == str(i)


async def test_secrets_are_staged_as_private_files_never_in_the_environment(
        backend: JobBackend, tmp_path: Path) -> None:
    capability(backend, OutputRetriever)
    spec = JobSpec(executable="/bin/sh",
                   arguments=["-c", 'cat "$TOKEN_FILE"; ls -l "$TOKEN_FILE" | cut -c1-10 >&2; '
                              'env | grep -c -- "$(cat "$TOKEN_FILE")"'],
                   copies=[Copy(secrets={"TOKEN": "s3cr3t-value"})])
    result = await backend.submit(spec)
    await until_terminal(backend, result.job_ids)
    manifest = await backend.fetch(result.job_ids[0], spec, tmp_path)  # type: ignore[attr-defined]
    out = (manifest.destination / "stdout.txt").read_text()
    assert out.startswith("s3cr3t-value") and out.endswith("0\n")  # readable by the job, absent from its env
    assert (manifest.destination / "stderr.txt").read_text().strip() == "-rw-------"
    assert "s3cr3t-value" not in repr(spec)


async def test_cancel_reaches_aborted(backend: JobBackend) -> None:
    capability(backend, Cancellable)
    result = await backend.submit(JobSpec(executable="sleep", arguments=["300"]))
    await until_state(backend, result.job_ids[0], {JobState.WAITING, JobState.RUNNING})
    (outcome,) = await backend.cancel(result.job_ids)  # type: ignore[attr-defined]
    assert outcome.ok, outcome
    (status,) = await until_terminal(backend, result.job_ids)
    assert status.state is JobState.ABORTED


async def test_outputs_are_fetched_into_a_manifest_and_fetching_twice_follows_the_declared_semantics(
        backend: JobBackend, tmp_path: Path) -> None:
    capability(backend, OutputRetriever)
    script = "echo out; echo err >&2; mkdir -p d; printf '\\000\\377' > d/bin; echo data > plain.txt"
    spec = JobSpec(executable="/bin/sh", arguments=["-c", script],
                   output_files=[OutputFile(name="d/bin", destination="nested/b.bin"), OutputFile(name="plain.txt"),
                                 OutputFile(name="never-written")])
    result = await backend.submit(spec)
    await until_terminal(backend, result.job_ids)
    manifest = await backend.fetch(result.job_ids[0], spec, tmp_path / "first")  # type: ignore[attr-defined]
    got = {f.name: f for f in manifest.files}
    assert set(got) == {"stdout.txt", "stderr.txt", "nested/b.bin", "plain.txt"}
    assert manifest.missing == ["never-written"]
    assert (tmp_path / "first/stdout.txt").read_text() == "out\n"
    assert (tmp_path / "first/stderr.txt").read_text() == "err\n"
    assert (tmp_path / "first/nested/b.bin").read_bytes() == b"\x00\xff"
    assert got["nested/b.bin"].sha256 == hashlib.sha256(b"\x00\xff").hexdigest()
    if backend.fetch_is_destructive:  # type: ignore[attr-defined]
        with pytest.raises(Exception):  # noqa: B017 - any error: the outputs must be gone
            await backend.fetch(result.job_ids[0], spec, tmp_path / "second")  # type: ignore[attr-defined]
    else:
        again = await backend.fetch(result.job_ids[0], spec, tmp_path / "second")  # type: ignore[attr-defined]
        assert [(f.name, f.sha256) for f in again.files] == [(f.name, f.sha256) for f in manifest.files]


async def test_purge_removes_the_job_and_is_idempotent(backend: JobBackend, tmp_path: Path) -> None:
    capability(backend, Purgeable)
    spec = JobSpec(executable="/bin/sh", arguments=["-c", "echo bye"])
    result = await backend.submit(spec)
    await until_terminal(backend, result.job_ids)
    assert [o.ok for o in await backend.purge(result.job_ids)] == [True]  # type: ignore[attr-defined]
    assert [o.ok for o in await backend.purge(result.job_ids)] == [True]  # type: ignore[attr-defined]
    if isinstance(backend, OutputRetriever):
        with pytest.raises(TransferError, match="gone"):
            await backend.fetch(result.job_ids[0], spec, tmp_path)


async def test_jobs_are_found_by_their_tag(backend: JobBackend) -> None:
    capability(backend, Taggable)
    mine, other = tag(), tag()
    result = await backend.submit(JobSpec(executable="/bin/sh", arguments=["-c", "exit 0"], tag=mine))
    found = await backend.find_by_tag([mine, other])  # type: ignore[attr-defined]
    assert found == {mine: result.job_ids, other: []}
    await until_terminal(backend, result.job_ids)
    assert (await backend.find_by_tag([mine]))[mine] == result.job_ids  # type: ignore[attr-defined]


async def test_jobs_found_by_their_tag_say_which_submit_attempt_made_them(backend: JobBackend) -> None:
    capability(backend, AttemptTaggable)
    mine, attempt = tag(), secrets.token_hex(8)
    result = await backend.submit(JobSpec(executable="/bin/sh", arguments=["-c", "exit 0"], tag=mine, attempt=attempt))
    (job_id,) = result.job_ids
    assert await backend.find_attempts([mine]) == {mine: {job_id: attempt}}  # type: ignore[attr-defined]
    await until_terminal(backend, result.job_ids)
    assert await backend.find_attempts([mine]) == {mine: {job_id: attempt}}  # type: ignore[attr-defined]


async def test_a_batch_mixing_known_and_unknown_ids_answers_per_id(backend: JobBackend) -> None:
    result = await backend.submit(JobSpec(executable="/bin/sh", arguments=["-c", "exit 0"]))
    (known,) = result.job_ids
    await until_terminal(backend, [known])
    unknown = ["not-an-id", "999999@0123456789abcdef"]
    statuses = await backend.status([unknown[0], known, unknown[1]])
    assert [s.job_id for s in statuses] == [unknown[0], known, unknown[1]]
    assert statuses[1].state is JobState.DONE
    assert statuses[0].state is JobState.UNKNOWN and statuses[0].reason
    assert statuses[2].state in (JobState.UNKNOWN, JobState.SUBMITTED)  # grace period: not yet declared lost
    if isinstance(backend, Cancellable):
        outcomes = await backend.cancel([unknown[0], known, unknown[1]])
        assert [o.job_id for o in outcomes] == [unknown[0], known, unknown[1]]
        assert not outcomes[0].ok and not outcomes[2].ok and outcomes[0].detail and outcomes[2].detail


async def test_a_job_that_left_the_queue_is_still_reported(backend: JobBackend, case: Case,
                                                            request: pytest.FixtureRequest) -> None:
    result = await backend.submit(JobSpec(executable="/bin/sh", arguments=["-c", "exit 3"]))
    (first,) = await until_terminal(backend, result.job_ids)
    if case.left_queue is not None:
        await case.left_queue(request.getfixturevalue(case.stack) if case.stack else None, result.job_ids[0])
    (again,) = await backend.status(result.job_ids)
    assert (again.state, again.exit_code) == (first.state, first.exit_code) == (JobState.FAILED, 3)


async def test_hostile_arguments_environment_and_file_names_arrive_unchanged(
        backend: JobBackend, tmp_path: Path) -> None:
    capability(backend, OutputRetriever)
    names = ["sp ace.txt", "q'uote.txt", "$(x).txt", "-dash.txt", "é漢.txt", "semi;colon&.txt"]
    # The job writes each argument NUL-terminated to stdout, the environment value to stderr, and touches every name.
    script = 'printf "%s\\0" "$@"; printf "%s" "$HOSTILE" >&2; for n in ' + " ".join(
        f"'{n}'" if "'" not in n else '"q\'uote.txt"' for n in names) + '; do echo "$n" > "./$n"; done'
    spec = JobSpec(executable="/bin/sh", arguments=["-c", script, "sh", *HOSTILE],
                   environment={"HOSTILE": "".join(HOSTILE)}, output_files=[OutputFile(name=n) for n in names])
    result = await backend.submit(spec)
    (status,) = await until_terminal(backend, result.job_ids)
    assert status.state is JobState.DONE, status
    manifest = await backend.fetch(result.job_ids[0], spec, tmp_path)  # type: ignore[attr-defined]
    assert (tmp_path / "stdout.txt").read_bytes().decode().split("\0")[:-1] == HOSTILE
    assert (tmp_path / "stderr.txt").read_text() == "".join(HOSTILE)
    assert sorted(f.name for f in manifest.files) == sorted(["stdout.txt", "stderr.txt", *names])
    for n in names:
        assert (tmp_path / n).read_text() == n + "\n"


async def test_a_spec_the_resource_refuses_fails_that_copy_with_the_reason(backend: JobBackend, case: Case) -> None:
    spec, word = case.refused
    result = await backend.submit(spec)
    (failure,) = result.failures
    assert result.job_ids == [] and word in failure.error.lower() and not failure.temporary


async def test_load_reports_capacity_or_is_really_absent(backend: JobBackend) -> None:
    capability(backend, LoadReporter)
    load = await backend.load()  # type: ignore[attr-defined]
    assert load.running >= 0 and load.queued >= 0
    assert load.total_cores is None or load.total_cores >= 1


async def test_a_running_job_can_be_peeked_at(backend: JobBackend) -> None:
    capability(backend, Diagnosable)
    spec = JobSpec(executable="/bin/sh", arguments=["-c", "echo started; sleep 300"])
    result = await backend.submit(spec)
    job_id = result.job_ids[0]
    await until_state(backend, job_id, {JobState.RUNNING})
    for _ in range(150):  # RUNNING can be reported a moment before the payload has created its stdout
        with contextlib.suppress(CommandError):
            if (await backend.peek(job_id, "stdout.txt")) == b"started\n":  # type: ignore[attr-defined]
                break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("stdout of the running job never showed 'started'")
    if isinstance(backend, Cancellable):
        await backend.cancel([job_id])
