"""Bounded, contained output retrieval from a job's working directory into a local destination directory.

The job is hostile until proven otherwise: it may swap a listed file for a symlink, grow it, or name a directory
``sub\\n`` that is a link to elsewhere. So every guarantee is enforced **when each file is read**, not only when the
files are listed:

* **Remote side** (a POSIX shell and GNU coreutils, never Python): one command per file ``cd -P``\\ s into the job's
  directory and checks that it is a real directory (not a symlink the job put in place of it), ``cd -P``\\ s into the
  file's own directory and checks that its physical path (``$PWD``) is inside the job's, then opens the bare file
  name without following a link (``dd iflag=nofollow``) and reads at most the remaining byte bound plus one. The
  working directory is fixed once checked: swapping any path component afterwards cannot redirect the read. Names
  cross as arguments, split into directory and base name here, so any byte in a name survives (no ``dirname``, no
  command substitution on names).
* **Local side**: every byte is counted and hashed while it is copied; the copy stops, and fails with
  :class:`~intercede.errors.OutputBoundError`, as soon as the job's files exceed ``bounds.max_bytes``. Files are
  written with ``O_EXCL | O_NOFOLLOW`` into a private staging directory under ``destination`` with short numbered
  names (never longer than a declared name, never one of them), and moved into place only once *every* file has
  arrived within the bounds; directories on the way are opened without following links. On any error the staging
  directory is removed: nothing of a failed fetch is left under ``destination``, and nothing is ever written outside
  it or through a symlink. Contents are streamed, never held in memory.

Before anything is read, one listing (split over several commands when the names are many, see
:func:`~intercede.backends.transports.base.chunks_within`) classifies each declared name, so that a job with more
files than ``bounds.max_files`` is refused without copying anything and missing files cost no round trip.
Refused per file (listed in the manifest's ``refused``): symlinks, files whose directory resolves outside the working
directory, anything that is not a regular file. :func:`read_tail` gives :meth:`BatchBackend.peek
<intercede.backends.batch.BatchBackend.peek>` the same containment.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from intercede.backends.transports.base import CommandResult, Transport, chunks_within, quoted_size
from intercede.errors import CommandError, OutputBoundError, TransferError
from intercede.model import JobSpec, ManifestEntry, OutputBounds, OutputManifest

__all__ = ["MAX_CHUNK", "fetch", "read_chunk", "read_tail", "receive", "split_name"]

# $1: the directory holding the job's directory, $2: the job directory's own name. Leaves the shell in the job's real
# working directory, as $w. A job can rename its directory and put a symlink in its place: refuse that (exit 9).
_ENTER = """
LC_ALL=C; export LC_ALL
cd -P -- "$1" 2>/dev/null && p=${PWD%/} && cd -P -- "$2" 2>/dev/null || exit 3
[ "$PWD" = "$p/$2" ] || exit 9
w=$PWD; shift 2
"""

# Then pairs (directory part, base name); one word per pair. Advisory only: each read checks everything again.
_LIST = _ENTER + """
kind() { if [ -L "$1" ]; then echo link; elif [ -f "$1" ]; then echo file; elif [ -e "$1" ]; then echo other
         else echo missing; fi; }
while [ $# -ge 2 ]; do
  if [ -z "$1" ]; then kind "$2"
  elif ! cd -P -- "$1" 2>/dev/null; then if [ -e "$1" ]; then echo other; else echo missing; fi
  else
    case "$PWD/" in "$w/"*) kind "$2";; *) echo escapes;; esac
    cd -P -- "$w" || exit 3
  fi
  shift 2
done
"""

# Then: directory part, base name, mode, limit. "head": the file's first bytes, refused (exit 8, its size on stderr)
# if it is already bigger than the limit, else at most limit + 1 bytes so growth shows. "tail": its last limit bytes.
# O_NONBLOCK: a FIFO swapped in after the checks reads as empty instead of blocking.
_READ = _ENTER + """
if [ -n "$1" ]; then cd -P -- "$1" 2>/dev/null || { [ -e "$1" ] && exit 7; exit 4; }; fi
case "$PWD/" in "$w/"*) ;; *) exit 5;; esac
[ -L "$2" ] && exit 6
[ -e "$2" ] || exit 4
[ -f "$2" ] || exit 7
size=$(stat -c %s -- "$2") || exit 4
if [ "$3" = head ]; then
  [ "$size" -le "$4" ] || { echo "$size" >&2; exit 8; }
  skip=0; count=$(($4 + 1))
else
  skip=$((size > $4 ? size - $4 : 0)); count=$4
fi
exec dd if="$2" iflag=nofollow,nonblock,count_bytes,skip_bytes skip="$skip" count="$count" bs=65536 status=none
"""

_KINDS = {3: "gone", 4: "missing", 5: "escapes", 6: "link", 7: "other", 8: "too big", 9: "not a directory"}
_REFUSALS = {
    "link": "is a symbolic link (refused: it could point outside the job's directory)",
    "escapes": "resolves outside the job's working directory (refused)",
    "other": "is not a regular file",
}
_STAGING = ".intercede-fetch-"
#: The most bytes :func:`read_chunk` returns at once (and :func:`receive` asks for): one Ray call's worth.
MAX_CHUNK = 4 << 20


def split_name(name: str) -> tuple[str, str]:
    """``name`` as (directory part, base name) inside the job's directory; refuses absolute names, ``..``, NUL and
    empty components (the model already refuses them in specs, but a name can also come from a caller)."""
    parts = name.split("/")
    if not name or "\0" in name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise OutputBoundError(f"{name!r} is not a relative path inside the job's directory")
    return "/".join(parts[:-1]), parts[-1]


def _job_dir(workdir: str) -> tuple[str, str]:
    parent, _, uid = workdir.rstrip("/").rpartition("/")
    return parent or "/", uid


async def fetch(transport: Transport, job_id: str, workdir: str, spec: JobSpec, destination: Path,
                bounds: OutputBounds) -> OutputManifest:
    """Copy ``spec``'s stdout, stderr and declared outputs of the job in ``workdir`` into ``destination``.

    Raises :class:`OutputBoundError` when the outputs exceed ``bounds`` (nothing is left under ``destination``),
    :class:`TransferError` when the job's directory is gone or a copy fails."""
    wanted = _wanted(spec)
    kinds = await _list(transport, job_id, workdir, list(wanted), bounds)
    present = [name for name in wanted if kinds[name] == "file"]
    missing = [name for name in wanted if kinds[name] == "missing"]
    refused = {name: _REFUSALS.get(kinds[name], kinds[name]) for name in wanted if kinds[name] in _REFUSALS}
    _check_count(job_id, len(present), bounds)
    staging = await asyncio.to_thread(_Staging.open, destination, list(wanted.values()))
    try:
        for name in present:
            kind = await _copy(transport, job_id, workdir, name, staging, bounds)
            if kind == "missing":
                missing.append(name)
            elif kind != "file":
                refused[name] = _REFUSALS[kind] + " when it was read"
        entries = await asyncio.to_thread(staging.commit, wanted)
    finally:
        await asyncio.to_thread(staging.discard)
    return OutputManifest(job_id=job_id, destination=staging.root, files=entries, missing=missing, refused=refused)


async def read_tail(transport: Transport, workdir: str, name: str, max_bytes: int, timeout: float) -> bytes:
    """The last ``max_bytes`` of the regular file ``name`` in the job's directory, with :func:`fetch`'s
    containment. :class:`OutputBoundError` if it is a symlink or outside the directory; :class:`CommandError` if it
    does not exist (yet)."""
    directory, base = split_name(name)
    got = bytearray()

    def keep(chunk: bytes) -> None:
        if len(got) + len(chunk) > max_bytes:
            raise OutputBoundError(f"{name!r} gave more than the {max_bytes} bytes asked for")
        got.extend(chunk)

    result = await transport.stream(["sh", "-c", _READ, "sh", *_job_dir(workdir), directory, base, "tail",
                                     str(max_bytes)], keep, timeout=timeout)
    kind = _kind(result)
    if kind == "file":
        return bytes(got)
    if kind in _REFUSALS:
        raise OutputBoundError(f"{name!r} in {workdir} {_REFUSALS[kind]}")
    if kind == "missing":
        raise CommandError(f"{name!r} does not exist in {workdir}", argv=["peek", name], exit_status=result.exit_status)
    raise _failure(result, kind, workdir, name)


def _wanted(spec: JobSpec) -> dict[str, str]:
    """Declared name -> destination. A spec that skipped validation (``model_construct``, ``model_copy(update=)``)
    may still collide: refuse it here rather than let one file overwrite another."""
    pairs = [(spec.stdout, spec.stdout), (spec.stderr, spec.stderr), *((o.name, o.target) for o in spec.output_files)]
    wanted = dict(pairs)
    if len(wanted) != len(pairs) or len({target for _, target in pairs}) != len(pairs):
        raise OutputBoundError("two outputs (stdout and stderr included) share a name or a destination")
    _check_targets([target for _, target in pairs])
    for name in wanted:
        split_name(name)
    return wanted


async def _list(transport: Transport, job_id: str, workdir: str, names: list[str],
                bounds: OutputBounds) -> dict[str, str]:
    kinds: dict[str, str] = {}
    pairs = [split_name(name) for name in names]
    start = 0
    for chunk in chunks_within(pairs, lambda pair: quoted_size(*pair)):
        argv = ["sh", "-c", _LIST, "sh", *_job_dir(workdir), *(part for pair in chunk for part in pair)]
        result = await transport.run(argv, timeout=bounds.transfer_timeout)
        kind = _KINDS.get(result.exit_status)
        if kind is not None:
            raise _failure(result, kind, workdir, "")
        lines = result.check().text.splitlines()
        if len(lines) != len(chunk):
            raise CommandError(f"listing the outputs of {job_id} gave {len(lines)} lines for {len(chunk)} files",
                               argv=list(result.argv[:4]))
        kinds.update(zip(names[start:start + len(chunk)], lines, strict=True))
        start += len(chunk)
    return kinds


async def _copy(transport: Transport, job_id: str, workdir: str, name: str, staging: _Staging,
                bounds: OutputBounds) -> str:
    """Read ``name`` into the staging directory; its kind as found when it was read ("file" when copied)."""
    directory, base = split_name(name)
    left = bounds.max_bytes - staging.total
    sink = staging.new_file(name, left, job_id, bounds)
    try:
        argv = ["sh", "-c", _READ, "sh", *_job_dir(workdir), directory, base, "head", str(left)]
        result = await transport.stream(argv, sink.write, timeout=bounds.transfer_timeout)
    finally:
        sink.close()
    kind = _kind(result)
    if kind == "file":
        staging.keep(sink)
        return kind
    staging.drop(sink)
    if kind == "too big":
        said = result.stderr.strip()
        size = int(said) if said.isdigit() else left + 1
        _over(job_id, staging.total + size, bounds, f"{name!r} has {size} bytes")
    if kind in ("missing", *_REFUSALS):
        return kind
    raise _failure(result, kind, workdir, name)


def _kind(result: CommandResult) -> str:
    """What a read found: "file" (read), a refusal, "missing", or another failure kind."""
    if result.exit_status == 0:
        return "file"
    kind = _KINDS.get(result.exit_status)
    if kind is not None:
        return kind
    err = result.stderr
    if b"Too many levels of symbolic links" in err:  # swapped for a link between the checks and dd's open
        return "link"
    if b"No such file or directory" in err:
        return "missing"
    return "failed"


def _failure(result: CommandResult, kind: str, workdir: str, name: str) -> TransferError:
    what = f"{name!r} in {workdir}" if name else workdir
    if kind == "gone":
        return TransferError(f"the outputs are gone: the job's working directory {workdir} no longer exists "
                             "(purged?)")
    if kind == "not a directory":
        return OutputBoundError(f"the job's working directory {workdir} is no longer a real directory (replaced by a "
                                "symlink?): refused")
    err = result.stderr.decode("utf-8", "replace").strip()
    return TransferError(f"reading {what} failed (exit {result.exit_status}): {err[-2000:]}")


def _check_count(job_id: str, count: int, bounds: OutputBounds) -> None:
    if count > bounds.max_files:
        raise OutputBoundError(f"{job_id} has {count} output files, over the bound of {bounds.max_files} (before "
                               "transfer); raise OutputBounds.max_files to fetch them")


def _over(job_id: str, total: int, bounds: OutputBounds, detail: str) -> None:
    raise OutputBoundError(f"{job_id} outputs total at least {total} bytes, over the bound of {bounds.max_bytes} "
                           f"({detail}); raise OutputBounds.max_bytes to fetch them")


@dataclass
class _Part:
    """One file being received: written to a numbered name in the staging directory, counted and hashed."""

    name: str
    number: int
    fd: int
    left: int
    job_id: str
    bounds: OutputBounds
    base: int
    size: int = 0
    digest: hashlib._Hash = field(default_factory=hashlib.sha256)

    def write(self, chunk: bytes) -> None:
        if self.size + len(chunk) > self.left:
            _over(self.job_id, self.base + self.size + len(chunk), self.bounds, f"{self.name!r} grew while it was read")
        try:
            view = memoryview(chunk)
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            raise TransferError(f"cannot write output {self.name!r}: {exc.strerror or exc}") from exc
        self.digest.update(chunk)
        self.size += len(chunk)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class _Staging:
    """A private directory under the destination root that receives a fetch's files until all have arrived."""

    def __init__(self, root: Path, path: Path) -> None:
        self.root, self.path = root, path
        self.kept: list[_Part] = []
        self.total = 0
        self._next = 0

    @classmethod
    def open(cls, destination: Path, targets: Sequence[str]) -> _Staging:
        try:
            destination.mkdir(parents=True, exist_ok=True)
            root = destination.resolve()
            firsts = {t.split("/", 1)[0] for t in targets}
            while True:  # never the first component of a declared destination (mkdtemp: 0700, O_EXCL)
                path = Path(tempfile.mkdtemp(prefix=_STAGING, dir=root))
                if path.name not in firsts:
                    return cls(root, path)
                path.rmdir()
        except OSError as exc:
            raise TransferError(f"cannot prepare the destination {destination}: {exc.strerror or exc}") from exc

    def new_file(self, name: str, left: int, job_id: str, bounds: OutputBounds) -> _Part:
        number, self._next = self._next, self._next + 1
        try:
            fd = os.open(self.path / str(number), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise TransferError(f"cannot write output {name!r} under {self.root}: {exc.strerror or exc}") from exc
        return _Part(name, number, fd, left, job_id, bounds, self.total)

    def keep(self, part: _Part) -> None:
        self.kept.append(part)
        self.total += part.size

    def drop(self, part: _Part) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path / str(part.number))

    def commit(self, wanted: dict[str, str]) -> list[ManifestEntry]:
        """Move every kept file to its destination, opening each directory on the way without following links.
        If one cannot be placed, the ones already placed are removed again (then the error is raised)."""
        placed: list[tuple[int, str]] = []
        entries = []
        root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for part in self.kept:
                target = wanted[part.name]
                parent_fd, base = _open_parent(root_fd, target, self.root)
                try:
                    os.replace(self.path / str(part.number), base, dst_dir_fd=parent_fd)
                    placed.append((os.dup(parent_fd), base))
                except OSError as exc:
                    raise TransferError(f"cannot place output {target!r} under {self.root}: "
                                        f"{exc.strerror or exc}") from exc
                finally:
                    os.close(parent_fd)
                entries.append(ManifestEntry(name=target, size=part.size, sha256=part.digest.hexdigest()))
        except BaseException:
            for fd, base in placed:
                with contextlib.suppress(OSError):
                    os.unlink(base, dir_fd=fd)
            raise
        finally:
            for fd, _ in placed:
                os.close(fd)
            os.close(root_fd)
        return entries

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _open_parent(root_fd: int, target: str, root: Path, *, create: bool = True) -> tuple[int, str]:
    """A descriptor of ``target``'s directory under ``root`` (made as needed unless not ``create``, never through a
    link) and its base."""
    *dirs, base = target.split("/")
    fd = os.dup(root_fd)
    try:
        for i, part in enumerate(dirs):
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
            try:
                sub = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                where = "/".join(dirs[:i + 1])
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    how = "written" if create else "read"
                    raise OutputBoundError(f"output {target!r} would be {how} through {root / where}, which is "
                                           "not a real directory (a symlink or a file): refused") from exc
                raise TransferError(f"cannot {'create' if create else 'open'} {root / where}: "
                                    f"{exc.strerror or exc}") from exc
            os.close(fd)
            fd = sub
    except BaseException:
        os.close(fd)
        raise
    return fd, base


def read_chunk(root: Path, name: str, offset: int, size: int) -> bytes:
    """At most ``min(size, MAX_CHUNK)`` bytes of the regular file ``name`` under ``root``, from ``offset`` (empty at
    its end). Every directory on the way and the file itself are opened without following links, so a symlink put
    anywhere under ``root`` is refused, never read through.

    Raises :class:`OutputBoundError` for a name outside ``root`` (absolute, ``..``), a symlink or anything that is
    not a regular file, :class:`TransferError` when the file (or ``root``) is not there. Blocking: run it off the
    event loop."""
    _, base = split_name(name)
    if offset < 0 or size < 0:
        raise ValueError(f"offset and size must be >= 0, got {offset} and {size}")
    try:
        root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise TransferError(f"the outputs under {root} are not on this node: {exc.strerror or exc}") from exc
    try:
        parent_fd, _ = _open_parent(root_fd, name, root, create=False)
    except OutputBoundError:
        raise
    except TransferError as exc:
        raise TransferError(f"{name!r} is not under {root}: {exc}") from exc
    finally:
        os.close(root_fd)
    try:
        try:
            fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise OutputBoundError(f"{name!r} under {root} is a symbolic link: refused") from exc
            raise TransferError(f"cannot read {name!r} under {root}: {exc.strerror or exc}") from exc
    finally:
        os.close(parent_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OutputBoundError(f"{name!r} under {root} is not a regular file: refused")
        return os.pread(fd, min(size, MAX_CHUNK), offset)
    finally:
        os.close(fd)


async def receive(destination: Path, manifest: OutputManifest, read: Callable[[str, int, int], Awaitable[bytes]],
                  *, chunk: int = MAX_CHUNK) -> OutputManifest:
    """Write the files ``manifest`` lists under ``destination``, pulling each with ``read(name, offset, size)`` (at
    most ``size`` bytes from ``offset``; ``size`` <= ``chunk``), and return their manifest under ``destination``.

    All or nothing, with :func:`fetch`'s local-side containment: the names are checked first (relative, no ``..``,
    no two entries for one file, no file that another entry needs as a directory: :class:`OutputBoundError`), every
    file is staged under ``destination`` while it is counted and hashed, and only once every one arrived with the
    manifest's size and sha256 are they moved into place, through directories opened without following links (a
    symlink under ``destination`` is refused, never written through). A file that arrives shorter, longer or with
    another sha256 raises :class:`TransferError` and leaves nothing under ``destination``."""
    if not 0 < chunk <= MAX_CHUNK:
        raise ValueError(f"chunk must be in (0, {MAX_CHUNK}], got {chunk}")
    names = [entry.name for entry in manifest.files]
    for name in names:
        split_name(name)
    _check_targets(names)
    bounds = OutputBounds(max_bytes=manifest.total_bytes, max_files=len(names))
    staging = await asyncio.to_thread(_Staging.open, destination, names)
    try:
        for entry in manifest.files:
            part = staging.new_file(entry.name, entry.size, manifest.job_id, bounds)
            try:
                while part.size < entry.size:
                    want = min(chunk, entry.size - part.size)
                    data = await read(entry.name, part.size, want)
                    if not data:
                        raise TransferError(f"{entry.name!r} of {manifest.job_id} ended after {part.size} bytes; "
                                            f"the manifest says {entry.size}")
                    if len(data) > want:
                        raise TransferError(f"{entry.name!r} of {manifest.job_id}: asked for {want} bytes, got "
                                            f"{len(data)}")
                    await asyncio.to_thread(part.write, data)
            finally:
                part.close()
            staging.keep(part)
            if entry.sha256 and part.digest.hexdigest() != entry.sha256:
                raise TransferError(f"{entry.name!r} of {manifest.job_id} arrived with another sha256 than the "
                                    "manifest's (changed at the service since it was recorded?)")
        entries = await asyncio.to_thread(staging.commit, {name: name for name in names})
    finally:
        await asyncio.to_thread(staging.discard)
    return OutputManifest(job_id=manifest.job_id, destination=staging.root, files=entries, missing=manifest.missing,
                          refused=manifest.refused)


def _check_targets(targets: Sequence[str]) -> None:
    """Refuse destinations that collide: one twice, or one that is also the directory of another."""
    unique = set(targets)
    if len(unique) != len(targets):
        raise OutputBoundError("two outputs share a destination")
    for target in unique:
        parts = target.split("/")
        for shorter in ("/".join(parts[:i]) for i in range(1, len(parts))):
            if shorter in unique:
                raise OutputBoundError(f"destination {shorter!r} would be both a file and the directory of "
                                       f"{target!r}")
