"""Limits change at run time: settings that differ only in CE limits are applied to the running reconciler (no
restart, no ConfigConflictError); anything else still conflicts. In process (LocalSeam), over the embedded Direct CE."""

from __future__ import annotations

from pathlib import Path

import pytest

from intercede.actors.client import Intercede
from intercede.actors.reconciler import JobRequest, ReconcilerActor, limits_only_change, reconciler_name
from intercede.actors.seam import LocalSeam
from intercede.actors.settings import Settings, load_settings
from intercede.errors import ConfigConflictError, InvalidSpecError
from intercede.model import JobSpec
from intercede.reconcile import CELimits

pytestmark = [pytest.mark.policy, pytest.mark.actors]


def _with(settings: Settings, **changes: object) -> Settings:
    return settings.model_copy(update={"ce": [settings.ce[0].model_copy(update=changes)]})


async def test_changed_limits_are_applied_to_the_running_reconciler_without_a_restart(tmp_path: Path) -> None:
    seam = LocalSeam()
    settings = Settings.embedded(tmp_path / "data", job_root=tmp_path / "jobs")
    Intercede.start(settings, seam=seam)
    actor: ReconcilerActor = seam.find(reconciler_name())
    try:
        down = _with(settings, downtime=True, max_queued=5)
        assert limits_only_change(settings, down)
        Intercede.start(down, seam=seam)
        assert seam.find(reconciler_name()) is actor, "the same reconciler, not a new one"
        assert actor.reconciler.limits("local") == CELimits(max_queued=5, downtime=True, lost_after=120.0)
        await actor.declare([JobRequest("k", "local", JobSpec(executable="/bin/true"))])
        await actor.step()
        (row,) = await actor.rows()
        assert (row.job_id, row.waiting_reason) == (None, "CE in downtime")
        assert (await actor.stats())["ce_load"] == {"local": {"queued": 0, "total": 0, "max_queued": 5,
                                                              "max_total": None, "in_downtime": True}}
        with pytest.raises(ConfigConflictError, match="poll_interval"):
            Intercede.start(_with(down, poll_interval=9.0), seam=seam)
        Intercede.start(settings, seam=seam)
        await actor.step()
        (row,) = await actor.rows()
        assert row.job_id is not None and row.waiting_reason is None
    finally:
        actor.close()


def test_limits_are_validated_where_the_config_is_read(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[[ce]]\nname = "x"\nscheduler = "direct"\nroot = "/tmp/x-jobs"\nmax_queued = -1\n'
                      'downtime = [{ start = 2026-12-02T00:00:00Z, end = 2026-12-01T00:00:00Z }]\n')
    with pytest.raises(InvalidSpecError) as info:
        load_settings(config)
    assert "max_queued" in str(info.value) and "downtime" in str(info.value)
    config.write_text('[[ce]]\nname = "x"\nscheduler = "direct"\nroot = "/tmp/x-jobs"\nmax_queued = 20\n'
                      'submit_rate = 2.5\nsubmit_burst = 5\n'
                      'downtime = [{ start = 2026-12-01T00:00:00Z, end = 2026-12-02T00:00:00Z }]\n')
    (ce,) = load_settings(config).ce
    assert (ce.max_queued, ce.submit_rate, ce.submit_burst) == (20, 2.5, 5)
