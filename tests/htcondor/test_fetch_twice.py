"""The flagship regression: what fetching a spooled job's outputs twice does, per release (docs/htcondor.md).

intercede submits with its own ``leave_in_queue``, so on every release a completed spooled job stays in the queue
after its outputs are retrieved, a second fetch returns the same files, and only ``purge`` lets it go
(``fetch_is_destructive = False``). The second test pins what HTCondor itself does without that override, so a new
release that changes either behaviour turns these red.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from intercede.backends.capabilities import OutputRetriever
from intercede.backends.htcondor._client import CondorClient
from intercede.errors import TransferError
from intercede.model import JobSpec, JobState, OutputFile
from tests.contract.cases_htcondor import CondorSetup
from tests.contract.waiting import until_terminal
from tests.htcondor.conftest import ce_backend, queued, schedd_backend

pytestmark = pytest.mark.htcondor

#: What a spooled job does after its outputs are retrieved when its submitter does not set leave_in_queue, with the
#: stock client and schedd of one release: 23.9 keeps it (for up to ten days), 25.x lets it leave the queue.
STOCK = {"23.9": "stays", "25": "leaves"}
#: Longer than the stacks' PERIODIC_EXPR_INTERVAL (5 s) twice over: a 25.x stock job has left by then.
REMOVAL_WINDOW = 15.0

SPEC = JobSpec(executable="/bin/sh", arguments=["-c", "echo out; printf '\\001\\002' > data.bin"],
               output_files=[OutputFile(name="data.bin")])


async def _fetch_twice(setup: CondorSetup, backend: OutputRetriever, tmp_path: Path) -> None:
    assert backend.fetch_is_destructive is False  # the declared semantics, on every release
    result = await backend.submit(SPEC)  # type: ignore[attr-defined]
    (status,) = await until_terminal(backend, result.job_ids)  # type: ignore[arg-type]
    assert (status.state, status.exit_code) == (JobState.DONE, 0)
    job_id = result.job_ids[0]
    first = await backend.fetch(job_id, SPEC, tmp_path / "first")
    await asyncio.sleep(REMOVAL_WINDOW)
    assert queued(setup, job_id), "the job left the queue after its outputs were fetched (leave_in_queue ignored?)"
    second = await backend.fetch(job_id, SPEC, tmp_path / "second")
    assert [(f.name, f.sha256) for f in second.files] == [(f.name, f.sha256) for f in first.files]
    assert (tmp_path / "second" / "data.bin").read_bytes() == b"\x01\x02"
    assert [o.ok for o in await backend.purge([job_id])] == [True]  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while queued(setup, job_id):
        assert time.monotonic() < deadline, "a purged job never left the queue"
        await asyncio.sleep(1)
    (after,) = await backend.status([job_id])  # type: ignore[attr-defined]
    assert (after.state, after.exit_code) == (JobState.DONE, 0)  # the history keeps it completed, not removed
    with pytest.raises(TransferError, match="gone"):
        await backend.fetch(job_id, SPEC, tmp_path / "third")


async def test_a_fetch_can_be_repeated_until_purge_on_the_schedd(pool: CondorSetup, tmp_path: Path) -> None:
    async with schedd_backend(pool) as backend:
        await _fetch_twice(pool, backend, tmp_path)


@pytest.mark.remote
async def test_a_fetch_can_be_repeated_until_purge_on_the_ce(ce: CondorSetup, tmp_path: Path) -> None:
    async with ce_backend(ce) as backend:
        await _fetch_twice(ce, backend, tmp_path)


async def test_the_pypi_client_s_own_default_makes_every_release_s_fetch_destructive(pool: CondorSetup,
                                                                                   tmp_path: Path) -> None:
    """Why intercede sets leave_in_queue: the LeaveJobInQueue of a spooled job comes from the *client*, and the 25.x
    client this project installs makes a retrieval drop the job on a 23.9 schedd too."""
    description = {"executable": "/bin/echo", "arguments": "hi", "output": "out.txt", "initialdir": str(tmp_path),
                   "should_transfer_files": "YES", "when_to_transfer_output": "ON_EXIT"}

    async def run() -> bool:
        client = CondorClient(pool.stack.pool, token_file=pool.token)
        try:
            cluster = await client.call("submit", description=description)
            constraint = f"ClusterId == {cluster}"
            for _ in range(240):
                ads = await client.call("query", constraint=constraint, projection=["JobStatus"])
                if [a["JobStatus"] for a in ads] == [4]:
                    break
                await asyncio.sleep(0.5)
            await client.call("retrieve", job_id=f"{cluster}.0")
            assert (tmp_path / "out.txt").read_text() == "hi\n"
            await asyncio.sleep(REMOVAL_WINDOW)
            return bool(await client.call("query", constraint=constraint, projection=["JobStatus"]))
        finally:
            await client.aclose()

    assert await run() is False


# The stock client of the stack's release (its own htcondor2) submits a spooled job without leave_in_queue, uploads
# its input, waits until it completes, retrieves its output, waits REMOVAL_WINDOW and says whether it is still queued.
STOCK_FETCH = f"""
import os, tempfile, time
import htcondor2 as h
s = h.Schedd()
d = tempfile.mkdtemp()
r = s.submit(h.Submit({{"executable": "/bin/echo", "arguments": "hi", "output": "out.txt", "initialdir": d,
                        "should_transfer_files": "YES"}}), count=1, spool=True)
s.spool(r)
c = r.cluster()
while s.query(f"ClusterId == {{c}}", ["JobStatus"])[0]["JobStatus"] != 4:
    time.sleep(0.5)
s.retrieve(f"{{c}}.0")
assert open(os.path.join(d, "out.txt")).read() == "hi\\n"
time.sleep({REMOVAL_WINDOW})
print("stays" if s.query(f"ClusterId == {{c}}", ["JobStatus"]) else "leaves")
"""


def test_without_intercede_s_leave_in_queue_a_fetched_job_follows_its_release(pool: CondorSetup) -> None:
    release = pool.stack.version.split(".")[0] if pool.stack.version.startswith("25") else "23.9"
    result = pool.stack.exec(["python3", "-c", STOCK_FETCH], user="tester")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == STOCK[release], f"HTCondor {pool.stack.version} changed what a retrieval does"
