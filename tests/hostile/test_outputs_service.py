"""Through the service (real Ray, the embedded local Direct CE): a key whose outputs can never be verified ends with a
permanent error instead of being fetched again forever, and the verify step tells such manifests from healable ones;
collected outputs pulled to a caller are contained at both ends (the CE actor serves no file outside its area nor
through a symlink, the caller writes nothing outside its directory nor through a symlink) and checked on arrival.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from intercede.actors.client import Intercede
from intercede.actors.reconciler import JobRequest, ce_actor_name
from intercede.actors.seam import RaySeam
from intercede.actors.settings import Settings
from intercede.backends.outputs import receive
from intercede.errors import OutputBoundError, TransferError
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
        rows = {r.key: r for r in await ic.wait(keys, until="collected", timeout=60, progress=False)}
        await asyncio.sleep(3 * settings.tick_interval + 2.0)  # long enough for a temporary error's first retry
        later = {r.key: r for r in await ic.rows()}
    finally:
        stop_actors(namespace)
    assert rows["fine"].collected and rows["fine"].permanent_error is None
    assert (tmp_path / "out/fine/r.txt").read_text() == "r\n"
    error = rows["collides"].permanent_error
    assert error and "OutputBoundError" in error and "destination" in error, rows["collides"]
    assert later["collides"].attempts == rows["collides"].attempts == 1, "a permanent error is not retried"
    assert not later["collides"].collected


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


async def test_collected_outputs_are_contained_at_the_ce_actor_and_at_the_caller(ray_local: None,
                                                                                   tmp_path: Path) -> None:
    namespace = f"hostile-collect-{uuid.uuid4().hex[:8]}"
    settings = Settings.embedded(tmp_path / "data", job_root=tmp_path / "jobs").model_copy(
        update={"namespace": namespace, "tick_interval": 0.2})
    spec = JobSpec(executable="/bin/sh", arguments=["-c", "mkdir sub; echo secret-ish > sub/f.txt"],
                   output_files=[OutputFile(name="sub/f.txt")])
    outside, mine = tmp_path / "outside", tmp_path / "mine"
    outside.mkdir()
    (mine / "k").mkdir(parents=True)
    (mine / "k" / "sub").symlink_to(outside)  # the caller's directory holds a link where an output's folder goes
    seam = RaySeam(namespace)
    try:
        ic = Intercede.start(settings, seam=seam)
        await ic.declare([JobRequest("k", "local", spec)], progress=False)
        with pytest.raises(OutputBoundError, match="not a real directory"):
            await ic.collect(["k"], mine, timeout=60, progress=False)
        area = (await ic.recorded_outputs(["k"]))["k"].destination
        ce = seam.find(ce_actor_name("local"))
        refused = []
        for name in ("../journal.sqlite", "/etc/passwd", "sub/../../journal.sqlite"):
            with pytest.raises(OutputBoundError) as error:
                await seam.call(ce, "read_output", str(area), name, 0, 10)
            refused.append(str(error.value))
        (area / "planted").symlink_to(settings.journal_path)
        with pytest.raises(OutputBoundError, match="symbolic link"):
            await seam.call(ce, "read_output", str(area), "planted", 0, 10)
        (area / "sub").rename(area / "real-sub")
        (area / "sub").symlink_to(area / "real-sub")
        with pytest.raises(OutputBoundError, match="not a real directory"):
            await seam.call(ce, "read_output", str(area), "sub/f.txt", 0, 10)
        assert await seam.call(ce, "read_output", str(area), "real-sub/f.txt", 0, 6) == b"secret"
    finally:
        stop_actors(namespace)
    assert list(outside.iterdir()) == [], "nothing was written through the link"
    assert [p.name for p in (mine / "k").iterdir()] == ["sub"], "nothing of the failed pull was left"
    assert all("not a relative path" in text for text in refused), refused


def _served(files: dict[str, bytes]) -> tuple[OutputManifest, dict[str, bytes]]:
    import hashlib

    entries = [ManifestEntry(name=n, size=len(b), sha256=hashlib.sha256(b).hexdigest()) for n, b in files.items()]
    return OutputManifest(job_id="j", destination=Path("/service/area"), files=entries), dict(files)


async def test_receive_refuses_hostile_names_and_files_that_do_not_match_their_manifest(tmp_path: Path) -> None:
    manifest, store = _served({"a.txt": b"hello", "d/b.bin": bytes(range(256)) * 10})

    async def honest(name: str, offset: int, size: int) -> bytes:
        return store[name][offset:offset + size]

    got = await receive(tmp_path / "ok", manifest, honest, chunk=100)
    assert (tmp_path / "ok/d/b.bin").read_bytes() == store["d/b.bin"] and got.files == manifest.files

    for hostile in ("../escape", "/etc/passwd", "a/../../x", "", "d/./b"):
        bad = manifest.model_copy(update={"files": [ManifestEntry(name=hostile, size=1, sha256="")]})
        with pytest.raises(OutputBoundError):
            await receive(tmp_path / "h", bad, honest)
    clash = manifest.model_copy(update={"files": [*manifest.files, ManifestEntry(name="d", size=0, sha256="")]})
    with pytest.raises(OutputBoundError, match="both a file and the directory"):
        await receive(tmp_path / "h", clash, honest)

    async def short(name: str, offset: int, size: int) -> bytes:
        return store[name][offset:offset + min(size, 2)] if offset < 2 else b""  # cut off after two bytes

    async def changed(name: str, offset: int, size: int) -> bytes:
        return bytes(len(store[name][offset:offset + size]))

    async def generous(name: str, offset: int, size: int) -> bytes:
        return store[name][offset:offset + size] + b"extra"

    for reader, what in ((short, "ended after"), (changed, "sha256"), (generous, "asked for")):
        with pytest.raises(TransferError, match=what):
            await receive(tmp_path / "bad", manifest, reader)
        assert not (tmp_path / "bad").exists() or list((tmp_path / "bad").iterdir()) == [], what
    assert not (tmp_path / "escape").exists() and not (tmp_path.parent / "escape").exists()
