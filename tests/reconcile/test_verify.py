"""A fetched manifest is checked against the bytes really on disk before it is recorded."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from intercede.model import ManifestEntry, OutputManifest
from intercede.reconcile import ManifestMismatchError, verify_manifest

pytestmark = pytest.mark.actors


def _manifest(dest: Path, files: dict[str, bytes]) -> OutputManifest:
    for name, data in files.items():
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        (dest / name).write_bytes(data)
    return OutputManifest(job_id="1", destination=dest, files=[
        ManifestEntry(name=name, size=len(data), sha256=hashlib.sha256(data).hexdigest())
        for name, data in files.items()])


def test_a_manifest_matching_the_files_verifies(tmp_path: Path) -> None:
    verify_manifest(_manifest(tmp_path, {"stdout.txt": b"hi\n", "sub/out.root": b"\0" * 5000}), "1", tmp_path)


@pytest.mark.parametrize("damage", ["missing", "size", "content", "symlink"])
def test_a_manifest_not_matching_the_files_is_refused(tmp_path: Path, damage: str) -> None:
    manifest = _manifest(tmp_path, {"stdout.txt": b"hello"})
    target = tmp_path / "stdout.txt"
    if damage == "missing":
        target.unlink()
    elif damage == "size":
        target.write_bytes(b"hell")
    elif damage == "content":
        target.write_bytes(b"jello")
    else:
        outside = tmp_path.parent / f"{tmp_path.name}-outside"
        outside.write_bytes(b"hello")
        target.unlink()
        target.symlink_to(outside)
    with pytest.raises(ManifestMismatchError):
        verify_manifest(manifest, "1", tmp_path)


def test_a_manifest_for_another_job_or_place_is_refused(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, {})
    with pytest.raises(ManifestMismatchError, match="job"):
        verify_manifest(manifest, "2", tmp_path)
    with pytest.raises(ManifestMismatchError, match="destination"):
        verify_manifest(manifest, "1", tmp_path / "elsewhere")
    escaping = manifest.model_copy(update={"files": [ManifestEntry(name="../x", size=0, sha256="")]})
    with pytest.raises(ManifestMismatchError, match="inside"):
        verify_manifest(escaping, "1", tmp_path)
