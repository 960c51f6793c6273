"""Hostile jobs against output retrieval (issue 14, item 2): outputs must never escape the destination or the bounds.

Each test runs a real job on a real resource (direct over Local and SSH, Slurm 24.11 over SSH) that tries to make a
fetch or a peek read outside its directory, write outside the destination, lose a file, or fail untyped. Attacks
that happen "between the listing and the transfer" are made deterministic by :class:`AfterListing`: the backend's
own transport, which runs the attack on the resource right after the fetch's first command (its listing) returns.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from intercede.backends.batch import BatchBackend
from intercede.backends.schedulers.direct import DirectScheduler
from intercede.backends.transports.base import CommandResult, Transport
from intercede.backends.transports.local import LocalTransport
from intercede.backends.transports.ssh import SSHTransport
from intercede.errors import InvalidSpecError, OutputBoundError, TransferError
from intercede.model import JobSpec, JobState, OutputBounds, OutputFile, parse_spec
from stacks.ssh_stack import SSHStack
from tests.contract.waiting import until_terminal
from tests.hostile.conftest import HOSTILE_CASES

pytestmark = pytest.mark.hostile


class AfterListing(Transport):
    """``inner``, which runs ``attack`` on the resource right after its first ``run`` (a fetch's listing) returns."""

    def __init__(self, inner: Transport, attack: Sequence[str]) -> None:
        self.inner, self.attack, self.name = inner, list(attack), inner.name

    async def run(self, argv: Sequence[str], *, stdin: bytes | None = None,
                  timeout: float | None = None) -> CommandResult:
        result = await self.inner.run(argv, stdin=stdin, timeout=timeout)
        if self.attack:
            attack, self.attack = self.attack, []
            (await self.inner.run(attack)).check()
        return result

    async def stream(self, argv: Sequence[str], sink: Callable[[bytes], None], *,
                     timeout: float | None = None) -> CommandResult:
        return await self.inner.stream(argv, sink, timeout=timeout)

    async def put(self, local: Path, remote: str, *, timeout: float | None = None) -> None:
        await self.inner.put(local, remote, timeout=timeout)

    async def get(self, remote: str, local: Path, *, timeout: float | None = None) -> None:
        await self.inner.get(remote, local, timeout=timeout)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _sh(script: str, *args: str) -> list[str]:
    return ["sh", "-c", script, "sh", *args]


async def _outside(backend: BatchBackend) -> tuple[str, bytes]:
    """A directory outside every job's (beside them under the backend's root, so it goes with the stack's or the
    session's files), holding ``secret`` and ``f`` (the same secret text): what must never arrive."""
    where = f"{backend.root}/outside-{secrets.token_hex(6)}"
    secret = f"SECRET-{secrets.token_hex(8)}\n"
    (await backend.transport.run(_sh('mkdir -p "$1" && printf %s "$2" >"$1/secret" && cp "$1/secret" "$1/f"',
                                     where, secret))).check()
    return where, secret.encode()


async def _finished(backend: BatchBackend, script: str, *args: str, outputs: Sequence[str] = ()) -> tuple[str, JobSpec]:
    spec = JobSpec(executable="/bin/sh", arguments=["-c", script, "sh", *args],
                   output_files=[OutputFile(name=n) for n in outputs])
    (job_id,) = (await backend.submit(spec)).job_ids
    (status,) = await until_terminal(backend, [job_id])
    assert status.state is JobState.DONE, status
    return job_id, spec


def _workdir(backend: BatchBackend, job_id: str) -> str:
    return f"{backend.root}/{job_id.rpartition('@')[2]}"


def _everything_under(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file() or p.is_symlink()}


# -- TOCTOU: a swap or growth between listing and transfer -----------------------------------------------------------

async def test_a_file_or_directory_swapped_for_a_symlink_after_the_listing_is_refused_when_read(
        hostile_backend: BatchBackend, tmp_path: Path) -> None:
    backend = hostile_backend
    outside, secret = await _outside(backend)
    job_id, spec = await _finished(backend, "echo innocent > out.txt; mkdir d; echo inner > d/f",
                                   outputs=["out.txt", "d/f"])
    attack = _sh('cd "$1" && rm out.txt && ln -s "$2/secret" out.txt && mv d d.old && ln -s "$2" d',
                 _workdir(backend, job_id), outside)
    backend.transport = AfterListing(backend.transport, attack)
    manifest = await backend.fetch(job_id, spec, tmp_path)
    assert sorted(manifest.refused) == ["d/f", "out.txt"], manifest
    assert "symbolic link" in manifest.refused["out.txt"] and "outside" in manifest.refused["d/f"]
    got = _everything_under(tmp_path)
    assert sorted(got) == ["stderr.txt", "stdout.txt"]
    assert not any(secret in content for content in got.values())


async def test_a_file_grown_past_the_bound_after_the_listing_fails_typed_and_leaves_nothing(
        hostile_backend: BatchBackend, tmp_path: Path) -> None:
    backend = hostile_backend
    job_id, spec = await _finished(backend, "echo small > big.bin", outputs=["big.bin"])
    attack = _sh('head -c 4194304 /dev/zero >"$1/big.bin"', _workdir(backend, job_id))
    backend.transport = AfterListing(backend.transport, attack)
    with pytest.raises(OutputBoundError, match="over the bound of 1048576"):
        await backend.fetch(job_id, spec, tmp_path / "dest", OutputBounds(max_bytes=1 << 20))
    assert list((tmp_path / "dest").iterdir()) == []  # not even stdout.txt: a failed fetch leaves nothing


class GrowingWhileRead(LocalTransport):
    """A local transport under which ``path`` grows by ``extra`` bytes as soon as the first bytes of a streamed read
    arrive: the reader (``dd``) is then still at most a pipe's and a buffer's worth (< 300 KiB) ahead of us."""

    def __init__(self, path: Path, extra: int) -> None:
        super().__init__()
        self.path, self.extra = path, extra

    async def stream(self, argv: Sequence[str], sink: Callable[[bytes], None], *,
                     timeout: float | None = None) -> CommandResult:
        grown = False

        def first_then_grow(chunk: bytes) -> None:
            nonlocal grown
            if not grown:
                grown = True
                with self.path.open("ab") as f:
                    f.write(bytes(self.extra))
            sink(chunk)

        return await super().stream(argv, first_then_grow, timeout=timeout)


async def test_a_file_growing_while_it_is_read_is_cut_at_the_bound_and_leaves_nothing(
        local_root: Path, tmp_path: Path) -> None:
    async with BatchBackend(LocalTransport(), DirectScheduler(str(local_root)), str(local_root)) as backend:
        job_id, spec = await _finished(backend, "head -c 921600 /dev/zero > big.bin", outputs=["big.bin"])
        big = Path(_workdir(backend, job_id)) / "big.bin"
        backend.transport = GrowingWhileRead(big, 4 << 20)
        with pytest.raises(OutputBoundError, match="grew while it was read"):
            await backend.fetch(job_id, spec, tmp_path / "dest", OutputBounds(max_bytes=1 << 20))
        assert list((tmp_path / "dest").iterdir()) == []


async def test_a_directory_named_with_a_trailing_newline_that_links_outside_is_refused(
        hostile_backend: BatchBackend, tmp_path: Path) -> None:
    backend = hostile_backend
    outside, secret = await _outside(backend)
    # "sub\n" links outside; a real "sub" beside it is what a newline-stripping listing would check instead.
    job_id, spec = await _finished(backend, 'mkdir sub; echo inner > sub/f; n=$(printf "sub\\n."); '
                                   'ln -s "$1" "${n%.}"', outside, outputs=["sub\n/f", "sub/f"])
    manifest = await backend.fetch(job_id, spec, tmp_path)
    assert list(manifest.refused) == ["sub\n/f"] and "outside" in manifest.refused["sub\n/f"]
    assert (tmp_path / "sub/f").read_text() == "inner\n"
    assert not any(secret in content for content in _everything_under(tmp_path).values())


async def test_a_job_directory_replaced_by_a_symlink_to_outside_is_refused_as_a_whole(
        local_root: Path, tmp_path: Path) -> None:
    async with BatchBackend(LocalTransport(), DirectScheduler(str(local_root)), str(local_root)) as backend:
        outside, secret = await _outside(backend)
        job_id, spec = await _finished(backend, "echo out", outputs=["secret"])
        workdir = _workdir(backend, job_id)
        (await backend.transport.run(_sh('mv "$1" "$1.moved" && ln -s "$2" "$1"', workdir, outside))).check()
        with pytest.raises(OutputBoundError, match="no longer a real directory"):
            await backend.fetch(job_id, spec, tmp_path)
        with pytest.raises(OutputBoundError, match="no longer a real directory"):
            await backend.peek(job_id, "secret")
        assert not any(secret in content for content in _everything_under(tmp_path).values())


# -- declared names that collide ---------------------------------------------------------------------------------------

async def test_outputs_named_like_temporary_files_and_of_249_to_255_bytes_all_arrive(
        hostile_backend: BatchBackend, tmp_path: Path) -> None:
    backend = hostile_backend
    long_names = ["L" * n for n in (249, 250, 254, 255)]
    names = ["a", ".a.part", "..a.part.part", "stdout.txt.part", *long_names]
    job_id, spec = await _finished(backend, 'for n; do printf "%s" "$n" > "$n"; done', *names, outputs=names)
    manifest = await backend.fetch(job_id, spec, tmp_path)
    assert sorted(f.name for f in manifest.files) == sorted(["stdout.txt", "stderr.txt", *names])
    for name in names:
        assert (tmp_path / name).read_text() == name
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(  # noqa: ASYNC240 - a tiny local directory
        ["stdout.txt", "stderr.txt", *names])


@pytest.mark.parametrize(("outputs", "stdout", "words"), [
    ([OutputFile(name="r.txt", destination="stdout.txt")], "stdout.txt", "stdout"),
    ([OutputFile(name="r.txt", destination="err")], "stdout.txt", "stderr"),
    ([OutputFile(name="stdout.txt", destination="copy.txt")], "stdout.txt", "stdout"),
    ([OutputFile(name="a"), OutputFile(name="x", destination="a")], "stdout.txt", "'a'"),
    ([OutputFile(name="a"), OutputFile(name="a", destination="b")], "stdout.txt", "declared twice"),
    ([OutputFile(name="a"), OutputFile(name="a/b")], "stdout.txt", "directory"),
    ([OutputFile(name="x", destination="a/b/c"), OutputFile(name="a-b"), OutputFile(name="y", destination="a")],
     "stdout.txt", "directory"),
    ([OutputFile(name="o/x")], "o", "directory"),
], ids=["dest-is-stdout", "dest-is-stderr", "stdout-declared", "two-to-one", "one-twice", "file-and-dir",
        "file-and-deep-dir", "stdout-is-a-dir"])
def test_output_declarations_that_can_never_be_fetched_are_refused_naming_the_field(
        outputs: list[OutputFile], stdout: str, words: str) -> None:
    with pytest.raises(InvalidSpecError, match="output_files") as refused:
        parse_spec({"executable": "true", "stdout": stdout, "stderr": "err",
                    "output_files": [o.model_dump() for o in outputs]})
    assert words in str(refused.value)


def test_output_declarations_that_only_look_alike_are_accepted() -> None:
    spec = JobSpec(executable="true", output_files=[
        OutputFile(name="a"), OutputFile(name="a-b"), OutputFile(name="ab/c"), OutputFile(name="x", destination="y/a"),
        OutputFile(name=".a.part"), OutputFile(name="stdout.txt.d/x")])
    assert len(spec.output_files) == 6


async def test_a_spec_that_skipped_validation_with_colliding_destinations_fails_typed_before_writing(
        local_root: Path, tmp_path: Path) -> None:
    async with BatchBackend(LocalTransport(), DirectScheduler(str(local_root)), str(local_root)) as backend:
        job_id, spec = await _finished(backend, "echo a > a; mkdir b; echo b > b/c", outputs=["a"])
        # model_copy(update=...) does not validate: the service can be handed such a spec.
        for bad in ([OutputFile(name="a"), OutputFile(name="b/c", destination="a/c")],
                    [OutputFile(name="a", destination="stdout.txt")]):
            unchecked = spec.model_copy(update={"output_files": bad})
            with pytest.raises(OutputBoundError, match="destination"):
                await backend.fetch(job_id, unchecked, tmp_path / "dest")
            assert not (tmp_path / "dest").exists() or list((tmp_path / "dest").iterdir()) == []


# -- many names and ids: commands stay within the remote's argument limits -------------------------------------------

async def test_20000_declared_outputs_are_listed_and_bounded_over_ssh(sshd_stack: SSHStack, tmp_path: Path) -> None:
    root = "/home/tester/jobs"
    async with BatchBackend(SSHTransport(sshd_stack.endpoint()), DirectScheduler(root), root) as backend:
        names = [f"output-file-{i:05d}.dat" for i in range(20_000)]  # ~470 KiB of names, quoted
        # Only three exist: the listing must still cover every name (missing ones cost nothing more).
        job_id, spec = await _finished(backend, ": > output-file-00000.dat; : > output-file-10000.dat; "
                                       "echo z > output-file-19999.dat", outputs=names)
        manifest = await backend.fetch(job_id, spec, tmp_path / "few")
        assert sorted(f.name for f in manifest.files) == sorted(
            ["stdout.txt", "stderr.txt", names[0], names[10_000], names[19_999]])
        assert len(manifest.missing) == 19_997 and (tmp_path / "few" / names[19_999]).read_text() == "z\n"
        # All exist: the typed bound error, before anything is copied.
        (await backend.transport.run(_sh('cd "$1" && seq -f output-file-%05g.dat 0 19999 | xargs touch',
                                         _workdir(backend, job_id)))).check()
        with pytest.raises(OutputBoundError, match="20002 output files, over the bound of 1000"):
            await backend.fetch(job_id, spec, tmp_path / "all")
        assert not (tmp_path / "all").exists()


@pytest.mark.parametrize("hostile_backend", [pytest.param(c, id=c.id, marks=c.marks) for c in HOSTILE_CASES
                                             if c.id != "direct-Local"], indirect=True)
async def test_status_cancel_and_purge_of_20000_ids_stay_within_argument_limits(
        hostile_backend: BatchBackend) -> None:
    backend = hostile_backend
    backend.chunk = 20_000  # a configuration that allows it: the byte budget must still split the commands
    job_id, _ = await _finished(backend, "exit 0")
    unknown = [f"{70_000_000 + i}@{i:016x}" for i in range(20_000)]
    statuses = await backend.status([*unknown, job_id])
    assert len(statuses) == 20_001 and statuses[-1].state is JobState.DONE
    assert {s.state for s in statuses[:-1]} <= {JobState.SUBMITTED, JobState.UNKNOWN}
    # scancel asks slurmctld once per id (~1.5 ms each): fewer, longer ids pass the 128 KiB of one command line too.
    doomed = unknown if backend.scheduler.name == "direct" else [f"{10**19 + i}@{i:016x}" for i in range(6_500)]
    outcomes = await backend.cancel([*doomed, job_id])
    assert [o.job_id for o in outcomes] == [*doomed, job_id] and not any(o.ok for o in outcomes[:-1])
    purged = await backend.purge([*unknown, job_id])
    assert all(o.ok for o in purged) and len(purged) == 20_001


# -- peek: the same containment as fetch -------------------------------------------------------------------------------

async def test_peek_refuses_what_fetch_refuses(hostile_backend: BatchBackend) -> None:
    backend = hostile_backend
    outside, _ = await _outside(backend)
    job_id, _ = await _finished(backend, 'printf "0123456789" > log.txt; ln -s "$1/secret" link.txt; ln -s "$1" d',
                                outside)
    assert await backend.peek(job_id, "log.txt", max_bytes=4) == b"6789"
    assert await backend.peek(job_id, "log.txt", max_bytes=100) == b"0123456789"
    with pytest.raises(OutputBoundError, match="symbolic link"):
        await backend.peek(job_id, "link.txt")
    with pytest.raises(OutputBoundError, match="outside"):
        await backend.peek(job_id, "d/secret")


# -- cleanup never masks the real error --------------------------------------------------------------------------------

async def test_an_ssh_get_to_a_255_byte_name_works_and_its_failure_is_a_transfer_error(
        sshd_stack: SSHStack, tmp_path: Path) -> None:
    async with SSHTransport(sshd_stack.endpoint()) as transport:
        remote = (await transport.run(["mktemp", "/tmp/intercede-get-XXXXXX"])).check().text.strip()
        (await transport.run(_sh('printf data > "$1"', remote))).check()
        local = tmp_path / ("n" * 255)
        await transport.get(remote, local)
        assert local.read_bytes() == b"data"
        assert [p.name for p in tmp_path.iterdir()] == [local.name]  # noqa: ASYNC240 - a tiny local directory
        with pytest.raises(TransferError, match="no-such-file"):
            await transport.get("/tmp/no-such-file", tmp_path / ("m" * 250))
        assert [p.name for p in tmp_path.iterdir()] == [local.name]  # noqa: ASYNC240 - no temporary file left
