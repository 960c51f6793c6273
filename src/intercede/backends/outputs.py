"""Bounded, contained output retrieval from a job's working directory into a local destination directory.

Before anything is copied, one command lists every wanted file's type and size on the resource. Refused, per file:
symlinks and files whose directory resolves outside the working directory (a job must not be able to make us copy
``~/.ssh/id_rsa``), and anything that is not a regular file. Refused as a whole (:class:`OutputBoundError`): more files
than ``bounds.max_files`` or more bytes than ``bounds.max_bytes`` — checked before the transfer and again after it,
since a still-running job can grow a file. Locally, files are written to a temporary name and renamed into place,
never through a symlink and never outside ``destination``. Contents are streamed, never held in memory.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from intercede.backends.transports.base import Transport
from intercede.errors import CommandError, OutputBoundError, TransferError
from intercede.model import JobSpec, ManifestEntry, OutputBounds, OutputManifest

__all__ = ["fetch", "remote_path"]

_LIST = """
d=$(cd -P -- "$1" && pwd -P) || exit 3; shift
for f; do p="$d/$f"; dir=$(cd -P -- "$(dirname -- "$p")" 2>/dev/null && pwd -P)
  case "$dir/" in "$d/"*) ;; *) if [ -e "$p" ]; then echo escapes; else echo missing; fi; continue;; esac
  if [ -L "$p" ]; then echo link
  elif [ -f "$p" ]; then echo "file $(wc -c <"$p")"
  elif [ -e "$p" ]; then echo other
  else echo missing; fi
done
"""

_REFUSALS = {
    "link": "is a symbolic link (refused: it could point outside the job's directory)",
    "escapes": "resolves outside the job's working directory (refused)",
    "other": "is not a regular file",
}


def remote_path(workdir: str, name: str) -> str:
    """``name`` inside ``workdir``; refuses absolute names and ``..`` (the model already does for specs)."""
    if name.startswith("/") or ".." in name.split("/") or not name or "\0" in name:
        raise OutputBoundError(f"{name!r} is not a relative path inside the job's directory")
    return f"{workdir}/{name}"


async def fetch(transport: Transport, job_id: str, workdir: str, spec: JobSpec, destination: Path,
                bounds: OutputBounds) -> OutputManifest:
    """Copy ``spec``'s stdout, stderr and declared outputs of the job in ``workdir`` into ``destination``."""
    wanted = {spec.stdout: spec.stdout, spec.stderr: spec.stderr} | {o.name: o.target for o in spec.output_files}
    names = list(wanted)
    listing = await transport.run(["sh", "-c", _LIST, "sh", workdir, *names], timeout=bounds.transfer_timeout)
    if listing.exit_status == 3:
        raise TransferError(f"the outputs of {job_id} are gone: its working directory {workdir} no longer exists "
                            "(purged?)")
    lines = listing.check().text.splitlines()
    if len(lines) != len(names):
        raise CommandError(f"listing the outputs of {job_id} gave {len(lines)} lines for {len(names)} files",
                           argv=list(listing.argv))
    sizes: dict[str, int] = {}
    missing: list[str] = []
    refused: dict[str, str] = {}
    for name, line in zip(names, lines, strict=True):
        kind, _, size = line.partition(" ")
        if kind == "file":
            sizes[name] = int(size)
        elif kind == "missing":
            missing.append(name)
        else:
            refused[name] = _REFUSALS.get(kind, kind)
    _check_bounds(job_id, len(sizes), sum(sizes.values()), bounds)
    root = await asyncio.to_thread(_prepare, destination)
    files = []
    for name in sizes:
        local = _local_path(root, wanted[name])
        part = local.with_name(f".{local.name}.part")
        await transport.get(remote_path(workdir, name), part, timeout=bounds.transfer_timeout)
        entry = await asyncio.to_thread(_seal, part, local, wanted[name])
        files.append(entry)
        _check_bounds(job_id, len(files), sum(f.size for f in files), bounds, after=True)
    return OutputManifest(job_id=job_id, destination=root, files=files, missing=missing, refused=refused)


def _check_bounds(job_id: str, count: int, total: int, bounds: OutputBounds, after: bool = False) -> None:
    when = "after transfer" if after else "before transfer"
    if count > bounds.max_files:
        raise OutputBoundError(f"{job_id} has {count} output files, over the bound of {bounds.max_files} ({when})")
    if total > bounds.max_bytes:
        raise OutputBoundError(f"{job_id} outputs total {total} bytes, over the bound of {bounds.max_bytes} ({when}); "
                               "raise OutputBounds.max_bytes to fetch them")


def _prepare(destination: Path) -> Path:
    destination.mkdir(parents=True, exist_ok=True)
    return destination.resolve()


def _local_path(root: Path, target: str) -> Path:
    local = root / target
    parent = local.parent
    parent.mkdir(parents=True, exist_ok=True)
    if not parent.resolve().is_relative_to(root):
        raise OutputBoundError(f"output {target!r} would be written outside {root} (a directory there is a symlink)")
    if local.is_symlink():
        raise OutputBoundError(f"refusing to write output {target!r} through the symlink {local}")
    return local


def _seal(part: Path, local: Path, name: str) -> ManifestEntry:
    digest = hashlib.sha256()
    size = 0
    with part.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    os.replace(part, local)
    return ManifestEntry(name=name, size=size, sha256=digest.hexdigest())
