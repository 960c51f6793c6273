"""Through the service (real Ray, the embedded local Direct CE): a key whose outputs can never be verified ends with a
permanent error instead of being fetched again forever, and the verify step tells such manifests from healable ones.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from intercede.actors.client import Intercede
from intercede.actors.reconciler import JobRequest
from intercede.actors.seam import RaySeam
from intercede.actors.settings import Settings
from intercede.model import JobSpec, ManifestEntry, OutputFile, OutputManifest
from intercede.reconcile import Phase, RetryPolicy
from intercede.reconcile.verify import ManifestConflictError, ManifestMismatchError, verify_manifest
from tests.faults.conftest import stop_actors

pytestmark = pytest.mark.hostile


async def test_a_key_whose_outputs_collide_ends_with_a_permanent_error_and_is_not_fetched_again(
        ray_local: None, tmp_path: Path) -> None:
    namespace = f"hostile-outputs-{uuid.uuid4().hex[:8]}"
    settings = Settings.embedded(tmp_path / "data", job_root=tmp_path / "jobs").model_copy(
        update={"namespace": namespace, "tick_interval": 0.2})
    valid = JobSpec(executable="/bin/sh", arguments=["-c", "echo out; echo r > r.txt"],
                    output_files=[OutputFile(name="r.txt")])
    # model_copy(update=...) skips validation: r.txt would be fetched onto stdout.txt, and the two manifest entries
    # for one file could never both verify.
    colliding = valid.model_copy(update={"output_files": [OutputFile(name="r.txt", destination="stdout.txt")]})
    keys = ["collides", "fine"]
    try:
        ic = Intercede.start(settings, seam=RaySeam(namespace))
        await ic.declare([JobRequest("collides", "local", colliding, Phase.COLLECTED, tmp_path / "out/collides"),
                          JobRequest("fine", "local", valid, Phase.COLLECTED, tmp_path / "out/fine")], progress=False)
        rows = {r["key"]: r for r in await ic.wait(keys, until="collected", timeout=60, progress=False)}
        await asyncio.sleep(3 * settings.tick_interval + 2.0)  # long enough for a temporary error's first retry
        later = {r["key"]: r for r in await ic.rows()}
    finally:
        stop_actors(namespace)
    assert rows["fine"]["collected"] and rows["fine"]["permanent_error"] is None
    assert (tmp_path / "out/fine/r.txt").read_text() == "r\n"
    error = rows["collides"]["permanent_error"]
    assert error and "OutputBoundError" in error and "destination" in error, rows["collides"]
    assert later["collides"]["attempts"] == rows["collides"]["attempts"] == 1, "a permanent error is not retried"
    assert not later["collides"]["collected"]


def _manifest(root: Path, *entries: tuple[str, bytes]) -> OutputManifest:
    import hashlib

    files = []
    for name, content in entries:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        files.append(ManifestEntry(name=name, size=len(content), sha256=hashlib.sha256(content).hexdigest()))
    return OutputManifest(job_id="j", destination=root, files=files)


def test_a_manifest_that_no_destination_can_match_is_a_permanent_conflict(tmp_path: Path) -> None:
    twice = _manifest(tmp_path / "a", ("stdout.txt", b"1"), ("stdout.txt", b"1"))
    nested = _manifest(tmp_path / "b", ("x/y", b"1"))
    nested = nested.model_copy(update={"files": [*nested.files, ManifestEntry(name="x", size=0, sha256="0")]})
    for manifest in (twice, nested):
        with pytest.raises(ManifestConflictError) as conflict:
            verify_manifest(manifest, "j", manifest.destination)
        assert not RetryPolicy.is_temporary(conflict.value)


def test_a_manifest_whose_files_changed_afterwards_stays_a_temporary_mismatch(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path, ("out.txt", b"written"))
    (tmp_path / "out.txt").write_bytes(b"changed")  # another writer: repeating the fetch rewrites the file
    with pytest.raises(ManifestMismatchError) as mismatch:
        verify_manifest(manifest, "j", tmp_path)
    assert not isinstance(mismatch.value, ManifestConflictError) and RetryPolicy.is_temporary(mismatch.value)
