"""The actors' logic without a cluster (LocalSeam), over a real LocalTransport + Direct CE."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from intercede.actors.ce import CEActor
from intercede.actors.client import Intercede
from intercede.actors.reconciler import JobRequest, ReconcilerActor, ce_actor_name, reconciler_name
from intercede.actors.seam import LocalSeam
from intercede.actors.settings import Settings, load_settings
from intercede.backends.registry import CEConfig
from intercede.diagnostics import text
from intercede.errors import InvalidSpecError
from intercede.model import JobSpec, OutputFile, OutputManifest
from intercede.reconcile import KeyRow, ManifestMismatchError, RetryPolicy

pytestmark = pytest.mark.actors


def _spec(script: str, **kw: object) -> JobSpec:
    return JobSpec(executable="/bin/sh", arguments=["-c", script], **kw)  # type: ignore[arg-type]


async def test_declared_jobs_run_and_are_collected_and_purged(tmp_path: Path) -> None:
    seam = LocalSeam()
    ic = Intercede.start(Settings.embedded(tmp_path / "data", job_root=tmp_path / "jobs"), seam=seam)
    jobs = [JobRequest("ok-1", "local", _spec("echo 1 > r.txt", output_files=[OutputFile(name="r.txt")])),
            JobRequest("bad-1", "local", _spec("exit 9"))]
    await ic.declare(jobs, progress=False)
    rows = await ic.wait(["ok-1", "bad-1"], timeout=60, progress=False)
    assert {r.key: (r.state, r.exit_code) for r in rows} == {"ok-1": ("Done", 0), "bad-1": ("Failed", 9)}
    await ic.collect(["ok-1", "bad-1"], tmp_path / "out")
    rows = await ic.wait(["ok-1", "bad-1"], until="collected", timeout=60, progress=False)
    assert all(r.collected for r in rows)
    assert (tmp_path / "out/ok-1/r.txt").read_text() == "1\n"
    assert list((tmp_path / "jobs").iterdir()) == []  # purged at the resource


async def test_redeclaring_a_key_with_another_spec_is_refused(tmp_path: Path) -> None:
    actor = ReconcilerActor(Settings.embedded(tmp_path), seam=LocalSeam(), start=False)
    await actor.declare([JobRequest("k", "local", _spec("true"))])
    await actor.declare([JobRequest("k", "local", _spec("true"))])  # same spec: idempotent
    with pytest.raises(InvalidSpecError, match="k"):
        await actor.declare([JobRequest("k", "local", _spec("false"))])


async def test_a_restarted_reconciler_resumes_from_its_journal_without_resubmitting(tmp_path: Path) -> None:
    settings = Settings.embedded(tmp_path)
    seam = LocalSeam()
    first = ReconcilerActor(settings, seam=seam, start=False)  # stepped by hand
    await first.declare([JobRequest("once", "local", _spec("sleep 2"))])
    await first.step()
    job_id = (await first.rows())[0].job_id
    assert job_id
    first.reconciler.close()
    second = ReconcilerActor(settings, seam=seam, start=False)  # same CE actor, new reconciler over the same journal
    ce = seam.find(ce_actor_name("local"))
    for _ in range(100):
        await ce.poll()
        await second.step()
        (row,) = await second.rows()
        if row.state == "Done":
            break
        await asyncio.sleep(0.1)
    assert (row.job_id, row.state) == (job_id, "Done")
    assert (await ce.find_by_tag(["once"]))["once"] == [job_id]


async def test_an_unreachable_ce_marks_itself_so_and_fails_no_job(tmp_path: Path) -> None:
    config = CEConfig(name="gone", scheduler="direct", root="/nonexistent/jobs", transport="ssh",
                      transport_options={"endpoint": {"host": "127.0.0.1", "port": 1, "username": "nobody",
                                                      "client_keys": [str(tmp_path / "k")],
                                                      "known_hosts": str(tmp_path / "kh")}})
    ce = CEActor(config)
    await ce.track(["1@0123456789abcdef"])
    assert await ce.poll() is False
    health = await ce.health()
    assert not health.reachable and health.poll_errors == 1 and health.last_error
    _, _, statuses, reachable = await ce.changes("", 0)
    assert statuses == [] and reachable is False  # no status invented, nothing failed
    assert ce.next_poll_delay() == 2 * config.poll_interval


def test_a_config_with_an_unknown_transport_or_bad_field_is_refused_clearly(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[[ce]]\nname = "x"\nscheduler = "pbs"\nroot = "/tmp"\n')
    with pytest.raises(InvalidSpecError, match="scheduler"):
        load_settings(bad)
    bad.write_text('[[ce]]\nname = "x"\nscheduler = "direct"\nroot = "/tmp"\ntransport = "carrier-pigeon"\n')
    with pytest.raises(InvalidSpecError, match="carrier-pigeon"):
        CEActor(load_settings(bad).ce[0])
    with pytest.raises(InvalidSpecError, match="cannot read"):
        load_settings(tmp_path / "missing.toml")


def test_actor_names_are_stable_so_notebooks_can_attach() -> None:
    assert reconciler_name() == "intercede-reconciler"
    assert ce_actor_name("cern-slurm") == "intercede-ce-cern-slurm"


async def test_the_ce_actor_verifies_what_it_fetched_in_its_own_process(tmp_path: Path) -> None:
    ce = CEActor(CEConfig(name="local", scheduler="direct", root=str(tmp_path / "jobs")))
    spec = _spec("echo hi; echo r > r.txt", output_files=[OutputFile(name="r.txt")])
    (job,) = (await ce.submit(spec)).job_ids
    deadline = asyncio.get_running_loop().time() + 30
    while not (await ce.backend.status([job]))[0].state.is_terminal:
        assert asyncio.get_running_loop().time() < deadline, "the job did not end"
        await asyncio.sleep(0.1)
    (tmp_path / "real").mkdir()
    (tmp_path / "via").symlink_to(tmp_path / "real")
    manifest = await ce.fetch(job, spec, tmp_path / "via" / "k")  # made by the actor, named as given
    assert manifest.destination == tmp_path / "via" / "k"
    assert {e.name for e in manifest.files} == {"stdout.txt", "stderr.txt", "r.txt"}
    real_fetch = ce.backend.fetch  # type: ignore[attr-defined]

    async def overwritten(job_id: str, spec: JobSpec, destination: Path) -> OutputManifest:
        fetched: OutputManifest = await real_fetch(job_id, spec, destination)
        (destination / "r.txt").write_text("another writer\n")  # between the copy and the check
        return fetched

    ce.backend.fetch = overwritten  # type: ignore[attr-defined]
    with pytest.raises(ManifestMismatchError, match=r"r\.txt") as mismatch:
        await ce.fetch(job, spec, tmp_path / "again")
    assert RetryPolicy.is_temporary(mismatch.value), "repeating the fetch rewrites the file"
    await ce.aclose()


async def test_summaries_move_counts_and_the_rows_asked_for_not_every_row(tmp_path: Path) -> None:
    seam = LocalSeam()
    settings = Settings.embedded(tmp_path / "data", job_root=tmp_path / "jobs")
    actor = seam.start(ReconcilerActor, reconciler_name(), settings, seam=seam, start=False)
    ic = Intercede(seam, actor)
    await ic.declare([JobRequest(f"k-{i}", "local", _spec("true")) for i in (3, 1, 2, 0)], progress=False)
    first = await ic.rows(limit=2)
    assert [r.key for r in first] == ["k-0", "k-1"] and all(isinstance(r, KeyRow) for r in first)
    assert await ic.unknown(["k-9", "k-1", "k-8"]) == ["k-9", "k-8"]
    assert await ic.counts() == [("local", None, "running", 4)]
    assert text.counts_summary(await ic.counts()) == "4 keys: Unobserved 4"
    assert text.jobs_table(first, total=4).endswith("... and 2 more (--limit)")
    actor.close()
