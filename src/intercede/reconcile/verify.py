"""Check a fetched output manifest against the files really present under the destination.

The process that fetched runs this check, on the files it just wrote (the CE actor, on its node: the reconciler may
run elsewhere and could not see them); the reconciler records the manifest, and then purges the remote job, only
after it passed: a destructive fetch must not lose outputs because a transfer was cut short or a file was
overwritten. :func:`check_manifest_identity` is the part that needs no file: what the reconciler checks itself.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path, PurePosixPath

from intercede.errors import OutputBoundError, TransferError
from intercede.model import OutputManifest

__all__ = ["ManifestConflictError", "ManifestMismatchError", "check_manifest_identity", "verify_manifest"]

_CHUNK = 1 << 20


class ManifestMismatchError(TransferError):
    """A fetched manifest does not match the files under its destination (missing, wrong size or digest, escaping).
    Temporary: the fetch is repeated (it rewrites every file)."""


class ManifestConflictError(ManifestMismatchError, OutputBoundError):
    """A manifest that can never match any destination: two entries for one file, or a file that another entry
    needs as a directory. Repeating the same fetch would write the same manifest again, so this is permanent (an
    :class:`~intercede.errors.OutputBoundError`: the outputs collide in their destination)."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_consistent(manifest: OutputManifest) -> None:
    """Raise :class:`ManifestConflictError` if no set of files could match ``manifest`` (before reading any)."""
    names = {str(PurePosixPath(entry.name)) for entry in manifest.files}
    if len(names) != len(manifest.files):
        raise ManifestConflictError(f"manifest of {manifest.job_id} lists one file twice: two outputs were "
                                    "written to the same destination")
    for name in names:
        parents = PurePosixPath(name).parents
        clash = next((str(p) for p in parents if str(p) in names), None)
        if clash is not None:
            raise ManifestConflictError(f"manifest of {manifest.job_id} lists {clash!r} as a file and as the "
                                        f"directory of {name!r}")


def check_manifest_identity(manifest: OutputManifest, job_id: str, destination: Path) -> None:
    """Raise :class:`ManifestMismatchError` unless ``manifest`` is for ``job_id`` and names ``destination`` (paths
    compared as written: no file is read, so it holds wherever the files are); :class:`ManifestConflictError` if no
    set of files could ever match it."""
    if manifest.job_id != job_id:
        raise ManifestMismatchError(f"manifest is for job {manifest.job_id!r}, expected {job_id!r}")
    if Path(os.path.normpath(manifest.destination)) != Path(os.path.normpath(destination)):
        raise ManifestMismatchError(f"manifest destination {manifest.destination} is not {destination}")
    _check_consistent(manifest)


def verify_manifest(manifest: OutputManifest, job_id: str, destination: Path) -> None:
    """Raise :class:`ManifestMismatchError` unless ``manifest`` is for ``job_id`` and ``destination`` and every file
    it lists is a regular file inside ``destination`` with the listed size and sha256 (an entry whose sha256 is empty
    is checked by size only: a resource that lists no checksum). Reads every byte: run it off the event loop, in the
    process that wrote the files."""
    if manifest.job_id != job_id:
        raise ManifestMismatchError(f"manifest is for job {manifest.job_id!r}, expected {job_id!r}")
    root = destination.resolve()
    if manifest.destination.resolve() != root:
        raise ManifestMismatchError(f"manifest destination {manifest.destination} is not {destination}")
    _check_consistent(manifest)
    for entry in manifest.files:
        relative = PurePosixPath(entry.name)
        if relative.is_absolute() or ".." in relative.parts:
            raise ManifestMismatchError(f"manifest entry {entry.name!r} is not inside the destination")
        path = root / relative
        try:
            info = path.lstat()
        except FileNotFoundError:
            raise ManifestMismatchError(f"{entry.name!r} is listed but missing under {destination}") from None
        # A symlink could point outside the destination, or change under us between check and use.
        if not stat.S_ISREG(info.st_mode):
            raise ManifestMismatchError(f"{entry.name!r} under {destination} is not a regular file")
        if not path.resolve().is_relative_to(root):
            raise ManifestMismatchError(f"{entry.name!r} resolves outside {destination}")
        if info.st_size != entry.size:
            raise ManifestMismatchError(f"{entry.name!r} has {info.st_size} bytes, the manifest says {entry.size}")
        if entry.sha256 and _sha256(path) != entry.sha256:
            raise ManifestMismatchError(f"{entry.name!r} does not match its sha256 in the manifest")
