"""From configuration to a backend: the CE description a TOML file holds, and the one function that builds it.

Transports are looked up by name in the ``intercede.transports`` entry-point group, so a third-party package can
add one (``[project.entry-points."intercede.transports"] mine = "pkg.mod:MyTransport"``); each transport class builds
itself from its options with ``from_options``. Schedulers are the built-in dialects.

A CE in TOML::

    [[ce]]
    name = "cluster"
    scheduler = "slurm"                # direct | slurm | htcondor (the CLI over the transport)
    root = "/home/alice/intercede"     # job working directories live here, on the resource
    transport = "ssh"                  # local | ssh | any registered name
    [ce.transport_options]
    endpoint = { host = "login.example.org", username = "alice", client_keys = ["~/.ssh/id_ed25519"],
                 known_hosts = "~/.ssh/known_hosts" }
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from intercede.backends.batch import BatchBackend
from intercede.backends.schedulers.base import Scheduler
from intercede.backends.schedulers.direct import DirectScheduler
from intercede.backends.transports.base import Transport
from intercede.errors import InvalidSpecError

__all__ = ["CEConfig", "build_backend", "transport_class"]

GROUP = "intercede.transports"


class CEConfig(BaseModel):
    """One Computing Element: how to reach it and which scheduler it speaks."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    scheduler: Literal["direct", "slurm", "htcondor"]
    root: str = Field(pattern=r"^/")
    transport: str = "local"
    transport_options: dict[str, Any] = Field(default_factory=dict)
    grace: float = Field(120.0, gt=0, description="seconds a job may be missing from queue and history")
    submits_per_tick: int = Field(50, ge=1)
    poll_interval: float = Field(5.0, gt=0)


def transport_class(name: str) -> type[Transport]:
    """The transport registered as ``name``; :class:`InvalidSpecError` listing the known ones otherwise."""
    found = {ep.name: ep for ep in entry_points(group=GROUP)}
    if name not in found:
        raise InvalidSpecError(f"unknown transport {name!r}; installed transports: {', '.join(sorted(found))}")
    cls = found[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Transport)):
        raise InvalidSpecError(f"entry point {name!r} in {GROUP} is not a Transport class")
    return cls


def _scheduler(config: CEConfig) -> Scheduler:
    if config.scheduler == "direct":
        return DirectScheduler(config.root)
    if config.scheduler == "htcondor":
        from intercede.backends.schedulers.htcondor import HTCondorScheduler

        return HTCondorScheduler()
    from intercede.backends.schedulers.slurm import SlurmScheduler

    return SlurmScheduler()


def build_backend(config: CEConfig) -> BatchBackend:
    """The backend ``config`` describes. Does no I/O; bad options raise :class:`InvalidSpecError` naming the CE."""
    try:
        transport = transport_class(config.transport).from_options(config.transport_options)
    except (ValidationError, TypeError) as exc:
        raise InvalidSpecError(f"CE {config.name!r}: invalid transport_options for {config.transport!r}: {exc}") \
            from exc
    return BatchBackend(transport, _scheduler(config), config.root, name=config.name, grace=config.grace)
