"""``Intercede.collect`` through real Ray actors, each in its own process: the CE actor fetches and verifies the outputs
into the service's area, the reconciler records the manifest, and the caller pulls the files in bounded chunks into
its own directory, which the actors never write."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path
from typing import Any

import pytest

from intercede.actors.client import Intercede
from intercede.actors.reconciler import JobRequest, reconciler_name
from intercede.actors.seam import RaySeam
from intercede.actors.settings import Settings
from intercede.backends.outputs import MAX_CHUNK
from intercede.model import JobSpec, OutputFile
from tests.faults.conftest import _ray_shutdown_at_session_end, ray_local, stop_actors

__all__ = ["_ray_shutdown_at_session_end", "ray_local"]  # the fixtures, imported for pytest

pytestmark = pytest.mark.actors

BIG = 2 * MAX_CHUNK + 12345  # three chunks


class _Counting(RaySeam):
    """The caller's seam, recording the size of every ``read_output`` answer (the client side only)."""

    def __init__(self, namespace: str) -> None:
        super().__init__(namespace)
        self.chunks: list[int] = []

    async def call(self, handle: Any, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        result = await super().call(handle, method, *args, timeout=timeout, **kwargs)
        if method == "read_output":
            self.chunks.append(len(result))
        return result


async def test_collect_pulls_verified_outputs_into_the_callers_directory_in_bounded_chunks(
        ray_local: None, tmp_path: Path) -> None:
    namespace = f"collect-{uuid.uuid4().hex[:8]}"
    settings = Settings.embedded(tmp_path / "data", job_root=tmp_path / "jobs").model_copy(
        update={"namespace": namespace, "tick_interval": 0.2})
    script = f"head -c {BIG} /dev/urandom > big.bin; mkdir sub; echo small > sub/small.txt; echo out"
    spec = JobSpec(executable="/bin/sh", arguments=["-c", script],
                   output_files=[OutputFile(name="big.bin"), OutputFile(name="sub/small.txt")])
    mine = tmp_path / "mine"
    try:
        Intercede.start(settings, seam=RaySeam(namespace))
        counting = _Counting(namespace)
        ic = Intercede(counting, counting.find(reconciler_name()))
        await ic.declare([JobRequest("k1", "local", spec)], progress=False)
        pulled = await ic.collect(["k1"], mine, timeout=120, progress=False)
        recorded = (await ic.recorded_outputs(["k1"]))["k1"]
        (row,) = await ic.rows_of(["k1"])
    finally:
        stop_actors(namespace)
    # The service's copy is where the CE actor fetched it, not where the caller asked.
    assert recorded.destination == settings.data_dir.absolute() / "fetched" / "k1"
    assert row.collected and row.outputs == recorded.destination
    assert pulled["k1"].destination == (mine / "k1").resolve()
    assert {e.name for e in recorded.files} == {"stdout.txt", "stderr.txt", "big.bin", "sub/small.txt"}
    for entry in recorded.files:
        data = (mine / "k1" / entry.name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (entry.size, entry.sha256), entry.name
    assert pulled["k1"].files == recorded.files
    assert sorted(p.name for p in (mine / "k1").iterdir()) == ["big.bin", "stderr.txt", "stdout.txt", "sub"]
    # Bounded: the big file came in several chunks, none over the bound.
    assert max(counting.chunks) == MAX_CHUNK and sum(counting.chunks) == recorded.total_bytes
    assert len(counting.chunks) >= 3
