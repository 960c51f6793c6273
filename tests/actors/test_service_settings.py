"""``Intercede.start`` with other settings than the running service's: refused with what differs, or applied on
request (``replace=True``), never silently ignored. On real Ray (the named actors are found across starts) and with
the in-process seam."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from intercede.actors.client import Intercede
from intercede.actors.reconciler import JobRequest, ce_actor_name, reconciler_name
from intercede.actors.seam import LocalSeam, RaySeam, Seam
from intercede.actors.settings import Settings
from intercede.errors import ConfigConflictError, InvalidSpecError
from intercede.model import JobSpec

pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    """A local Ray instance for this module (one already connected is used as it is)."""
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, namespace="intercede-tests", include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    yield
    if started:
        ray.shutdown()


def _settings(folder: Path, namespace: str) -> Settings:
    return Settings.embedded(folder).model_copy(update={"namespace": namespace, "tick_interval": 0.2})


def _with_second_ce(settings: Settings, folder: Path) -> Settings:
    (local,) = settings.ce
    second = local.model_copy(update={"name": "second", "root": str(folder / "jobs-second")})
    return settings.model_copy(update={"tick_interval": 0.5, "ce": [local, second]})


def _echo(key: str, ce: str) -> JobRequest:
    return JobRequest(key, ce, JobSpec(executable="/bin/sh", arguments=["-c", f"echo {key}"]))


async def _other_settings_are_refused_then_applied_on_request(seam: Seam, folder: Path) -> None:
    first = _settings(folder, seam.namespace)
    ic = Intercede.start(first, seam=seam)
    await ic.declare([_echo("before", "local")], progress=False)
    await ic.wait(["before"], timeout=60, progress=False)
    assert Intercede.start(first, seam=seam), "the same settings join the running service"
    local_epoch = (await seam.call(seam.find(ce_actor_name("local")), "changes", "", 0))[0]

    second = _with_second_ce(first, folder)
    with pytest.raises(ConfigConflictError) as refused:
        Intercede.start(second, seam=seam)
    message = str(refused.value)
    assert "tick_interval" in message and "CEs added: second" in message and "nothing was changed" in message
    assert "replace=True" in message
    assert isinstance(refused.value, InvalidSpecError)  # permanent: retrying cannot help
    running = seam.find(reconciler_name())
    assert seam.call_blocking(running, "running_settings") == first, "the running service is untouched"

    replaced = Intercede.start(second, seam=seam, replace=True)
    assert seam.call_blocking(seam.find(reconciler_name()), "running_settings") == second
    await replaced.declare([_echo("after", "second")], progress=False)
    rows = {r.key: r for r in await replaced.wait(["before", "after"], timeout=60, progress=False)}
    assert (rows["before"].state, rows["after"].state) == ("Done", "Done"), "the journal carried over"
    assert (await seam.call(seam.find(ce_actor_name("local")), "changes", "", 0))[0] == local_epoch, \
        "the CE actor whose configuration did not change was kept"


@pytest.mark.usefixtures("ray_instance")
async def test_other_settings_are_refused_naming_what_differs_and_applied_with_replace_on_ray(
        tmp_path: Path) -> None:
    namespace = f"settings-{uuid.uuid4().hex[:8]}"
    try:
        await _other_settings_are_refused_then_applied_on_request(RaySeam(namespace, timeout=30), tmp_path)
    finally:
        from ray.util import list_named_actors

        for entry in list_named_actors(all_namespaces=True):
            if entry["namespace"] == namespace:
                ray.kill(ray.get_actor(entry["name"], namespace=namespace), no_restart=True)


async def test_other_settings_are_refused_and_applied_with_replace_in_process(tmp_path: Path) -> None:
    seam = LocalSeam(f"settings-{uuid.uuid4().hex[:8]}")
    try:
        await _other_settings_are_refused_then_applied_on_request(seam, tmp_path)
    finally:
        for actor in list(seam.actors.values()):
            seam.kill(actor)


def test_the_conflict_names_a_changed_ce_by_its_fields_never_by_its_values(tmp_path: Path) -> None:
    from intercede.actors.client import _conflict

    first = _settings(tmp_path, "n")
    (local,) = first.ce
    changed = first.model_copy(update={"ce": [local.model_copy(update={"root": "/secret/place"})]})
    message = _conflict(first, changed)
    assert "CE 'local' changed (root)" in message and "/secret/place" not in message
