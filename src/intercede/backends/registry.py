"""From configuration to a backend: one typed model per CE kind, found through entry points, and the builder.

A CE kind is a pydantic model deriving from :class:`CEConfigBase`, with a ``kind: Literal["<name>"]`` discriminator
and the options of that kind, validated field by field; its :meth:`~CEConfigBase.build` returns the backend (an async
context manager implementing the Protocols of :mod:`intercede.backends.capabilities`) and does no I/O.

Kinds are registered under the ``intercede.backends`` entry-point group (kind name -> config class), so a site
package adds its own without forking::

    [project.entry-points."intercede.backends"]
    mine = "site_pkg.config:MyCEConfig"     # class MyCEConfig(CEConfigBase): kind: Literal["mine"] = "mine"

Built in: ``batch`` (:class:`BatchConfig`: a transport + a scheduler dialect + a root), ``htcondor``
(:class:`HTCondorConfig`: a schedd through the bindings), ``htcondor-ce`` (:class:`HTCondorCEConfig`), and ``arc``
(``intercede.backends.arc.config:ARCConfig``). :func:`ce_kinds` lists what is installed; :func:`ce_union` is the
discriminated union a configuration's ``[[ce]]`` entries are validated against (an entry with a ``scheduler`` and no
``kind`` is a ``batch`` one, the shape of configurations written before kinds existed).

Transports are looked up the same way in the ``intercede.transports`` group. A batch CE's ``transport_options`` are
typed per transport (:class:`LocalOptions`, :class:`SSHOptions`, a discriminated union on ``transport``); a
third-party transport's options are handed to its ``from_options`` when the backend is built.

A batch CE in TOML::

    [[ce]]
    kind = "batch"                     # may be left out when `scheduler` is given
    name = "cluster"
    scheduler = "slurm"                # direct | slurm | htcondor | sge | oar (the CLI over the transport)
    root = "/home/alice/intercede"     # job working directories live here, on the resource
    transport = "ssh"                  # local | ssh | any registered name
    [ce.transport_options]
    endpoint = { host = "login.example.org", username = "alice", client_keys = ["~/.ssh/id_ed25519"],
                 known_hosts = "~/.ssh/known_hosts" }
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from intercede.backends.capabilities import JobBackend
from intercede.backends.transports.base import Transport
from intercede.backends.transports.ssh import SSHEndpoint
from intercede.errors import InvalidSpecError

if TYPE_CHECKING:
    from intercede.backends.batch import BatchBackend
    from intercede.backends.schedulers.base import Scheduler

__all__ = [
    "BACKENDS",
    "LIMIT_FIELDS",
    "TRANSPORTS",
    "BatchConfig",
    "CEConfig",
    "CEConfigBase",
    "ConfigPath",
    "DowntimeWindow",
    "HTCondorCEConfig",
    "HTCondorConfig",
    "LocalOptions",
    "SSHOptions",
    "Seconds",
    "build_backend",
    "ce_kinds",
    "ce_union",
    "ce_union_type",
    "kind_tags",
    "transport_class",
]

TRANSPORTS = "intercede.transports"
BACKENDS = "intercede.backends"
GROUP = TRANSPORTS  # the name this module exported first


def _no_nul(value: Any) -> Any:
    if "\x00" in str(value):
        raise ValueError("must not contain a NUL character")
    return value


#: A path a configuration names: NUL is refused at load (the OS would refuse it at the first use, untyped).
ConfigPath = Annotated[Path, AfterValidator(_no_nul)]
#: A positive, finite number of seconds (TOML allows ``inf`` and ``nan``; neither can work as a delay).
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Port = Annotated[int, Field(ge=1, le=65535)]
Text = Annotated[str, Field(min_length=1), AfterValidator(_no_nul)]


class DowntimeWindow(BaseModel):
    """A scheduled downtime: no new submits from ``start`` until ``end`` (TOML datetimes; a naive one is UTC)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    start: datetime
    end: datetime

    @model_validator(mode="after")
    def _ends_after_it_starts(self) -> DowntimeWindow:
        if not _utc(self.start) < _utc(self.end):
            raise ValueError(f"a downtime must end after it starts ({self.start} .. {self.end})")
        return self

    def epoch(self) -> tuple[float, float]:
        return _utc(self.start).timestamp(), _utc(self.end).timestamp()


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


#: The fields of :class:`CEConfigBase` that are the reconciler's limits for the CE, not the backend's: a running
#: service takes new values for them at once (``Intercede.start`` with changed limits only), without a restart.
LIMIT_FIELDS = frozenset({"max_queued", "max_total", "submit_rate", "submit_burst", "downtime", "max_waiting",
                          "max_held"})


class CEConfigBase(BaseModel):
    """What every CE kind has: its name, the CE actor's pacing and the reconciler's limits for it. A kind adds
    ``kind: Literal["<name>"]`` and its own options, and implements :meth:`build`.

    Limits (see :data:`LIMIT_FIELDS`; unset means no limit): ``max_queued`` jobs not running yet (submitted, waiting,
    held, unknown, by the reconciler's own record), ``max_total`` jobs not ended, a ``submit_rate`` (jobs/s) with a
    ``submit_burst``, and ``downtime`` (``true``, or a list of windows) during which nothing new is submitted. Jobs
    are held back, never failed, while a CE has no room. ``max_waiting`` / ``max_held``: seconds a job may wait / be
    held before it is cancelled with that reason; a job unknown longer than ``grace`` is reported lost.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    poll_interval: Seconds = 5.0
    max_in_flight: int = Field(32, ge=1, description="units of work (a submit, a fetch, a bulk cancel or purge) the "
                               "reconciler runs at once against this CE; also the most submits it starts at once")
    submits_per_tick: int | None = Field(None, ge=1, description="deprecated: read as max_in_flight")
    grace: Seconds = Field(120.0, description="seconds a job may be missing from queue and history")
    credentials: str | None = Field(None, description="credential provider: an `intercede.credentials` entry point or "
                                    "module:attribute; None reads the files this CE's options name")
    credential_options: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the provider")
    credential_margins: dict[Literal["token", "proxy", "ssh-key"], Seconds] = Field(
        default_factory=dict, description="seconds before expiry at which a credential is refreshed, per kind")
    max_queued: int | None = Field(None, ge=0)
    max_total: int | None = Field(None, ge=0)
    submit_rate: Seconds | None = Field(None, description="jobs per second")
    submit_burst: int = Field(1, ge=1)
    downtime: bool | tuple[DowntimeWindow, ...] = False
    max_waiting: Seconds | None = None
    max_held: Seconds | None = None

    @model_validator(mode="before")
    @classmethod
    def _submits_per_tick_is_max_in_flight(cls, data: Any) -> Any:
        # Steps no longer cap submits (they never wait for them); the nearest meaning of the old cap is the CE's
        # concurrency budget, so an old configuration keeps working, with a warning to rename the option.
        if isinstance(data, Mapping) and data.get("submits_per_tick") is not None:
            warnings.warn("CE option submits_per_tick is deprecated and read as max_in_flight (units of work in "
                          "flight at once for the CE); rename it to max_in_flight", FutureWarning, stacklevel=2)
            if data.get("max_in_flight") is None:
                data = {**data, "max_in_flight": data["submits_per_tick"]}
        return data

    def build(self) -> object:
        """The backend this configuration describes; does no I/O. Subclasses implement it."""
        raise NotImplementedError(f"CE kind {type(self).__name__} does not implement build()")


# -- batch: a transport and a scheduler dialect ---------------------------------------------------------------------


class LocalOptions(BaseModel):
    """``transport = "local"``: commands run on this machine (``cwd``: where relative paths start)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    transport: Literal["local"] = "local"
    cwd: ConfigPath | None = None

    def build(self) -> Transport:
        from intercede.backends.transports.local import LocalTransport

        return LocalTransport(cwd=self.cwd)


class SSHOptions(BaseModel):
    """``transport = "ssh"``: the endpoint (and an optional jump host) and the connection's limits."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    transport: Literal["ssh"] = "ssh"
    endpoint: SSHEndpoint
    jump: SSHEndpoint | None = None
    connect_timeout: Seconds = 10.0
    max_sessions: int = Field(16, ge=1)
    keepalive_interval: float = Field(15.0, ge=0, allow_inf_nan=False)

    def build(self) -> Transport:
        from intercede.backends.transports.ssh import SSHTransport

        return SSHTransport(self.endpoint, jump=self.jump, connect_timeout=self.connect_timeout,
                            max_sessions=self.max_sessions, keepalive_interval=self.keepalive_interval)


class PluginOptions(BaseModel):
    """A transport registered by another package: its options go to its ``from_options`` when it is built."""

    model_config = ConfigDict(frozen=True, extra="allow")

    transport: str

    def build(self) -> Transport:
        return transport_class(self.transport).from_options(dict(self.model_extra or {}))


_BUILTIN_TRANSPORTS = ("local", "ssh")


def _transport_tag(value: Any) -> str:
    name = value.get("transport") if isinstance(value, Mapping) else getattr(value, "transport", None)
    return name if name in _BUILTIN_TRANSPORTS else "plugin"


TransportOptions = Annotated[
    Annotated[LocalOptions, Tag("local")] | Annotated[SSHOptions, Tag("ssh")] | Annotated[PluginOptions, Tag("plugin")],
    Discriminator(_transport_tag),
]


class BatchConfig(CEConfigBase):
    """``kind = "batch"``: :class:`~intercede.backends.batch.BatchBackend` over a transport, speaking ``scheduler``;
    job working directories live under ``root`` on the resource."""

    kind: Literal["batch"] = "batch"
    scheduler: Literal["direct", "slurm", "htcondor", "sge", "oar"]
    root: str = Field(pattern=r"^/[^\x00]*$")
    transport: str = "local"
    transport_options: TransportOptions = Field(default_factory=LocalOptions)
    #: Slurm, Grid Engine and OAR: the most tasks of one job array (keep it below the cluster's MaxArraySize /
    #: max_aj_tasks), and how many of them may run at once (Slurm's ``--array=...%<n>``, Grid Engine's ``-tc <n>``;
    #: OAR has no throttle; unset: no limit).
    array_max: int = Field(1000, ge=1, le=10_000)
    array_throttle: int | None = Field(None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _options_know_their_transport(cls, data: Any) -> Any:
        # TOML keeps the transport's name beside its options table; the union is discriminated inside the table.
        if not isinstance(data, Mapping):
            return data
        data = dict(data)
        options = data.get("transport_options", {})
        if isinstance(options, BaseModel):
            data.setdefault("transport", getattr(options, "transport", "local"))
        elif isinstance(options, Mapping):
            data["transport_options"] = {**options, "transport": data.get("transport", "local")}
        return data

    @field_validator("transport")
    @classmethod
    def _installed_transport(cls, name: str) -> str:
        if name not in _BUILTIN_TRANSPORTS and name not in _entry_points(TRANSPORTS):
            raise ValueError(f"unknown transport {name!r}; installed transports: "
                             f"{', '.join(sorted({*_BUILTIN_TRANSPORTS, *_entry_points(TRANSPORTS)}))}")
        return name

    @property
    def is_local(self) -> bool:
        """Whether jobs run on this machine (their directories then share its filesystem with the service's)."""
        return self.transport == "local"

    def build(self) -> BatchBackend:
        from intercede.backends.batch import BatchBackend

        try:
            transport = self.transport_options.build()
        except (ValidationError, TypeError, ValueError) as exc:
            raise InvalidSpecError(f"CE {self.name!r}: invalid transport_options for {self.transport!r}: {exc}") \
                from exc
        return BatchBackend(transport, _scheduler(self), self.root, name=self.name, grace=self.grace)


#: The name configurations and code used before kinds existed (``CEConfig(name=..., scheduler=..., root=...)``).
CEConfig = BatchConfig


def _scheduler(config: BatchConfig) -> Scheduler:
    if config.scheduler == "direct":
        from intercede.backends.schedulers.direct import DirectScheduler

        return DirectScheduler(config.root)
    if config.scheduler == "htcondor":
        from intercede.backends.schedulers.htcondor import HTCondorScheduler

        return HTCondorScheduler()
    if config.scheduler == "sge":
        from intercede.backends.schedulers.gridengine import GridEngineScheduler

        return GridEngineScheduler(config.root, array_max=config.array_max, array_throttle=config.array_throttle)
    if config.scheduler == "oar":
        from intercede.backends.schedulers.oar import OARScheduler

        return OARScheduler(config.root, array_max=config.array_max)
    from intercede.backends.schedulers.slurm import SlurmScheduler

    return SlurmScheduler(array_max=config.array_max, array_throttle=config.array_throttle)


# -- HTCondor: a schedd, or an HTCondor-CE, through the bindings ------------------------------------------------------


class _CondorOptions(CEConfigBase):
    schedd: Text | None = None
    staging: ConfigPath | None = None
    keep_seconds: int = Field(10 * 86400, ge=1)
    max_output_mb: int | None = Field(1024, ge=1)
    config: dict[str, str] = Field(default_factory=dict, description="extra _CONDOR_* knobs for the client")
    workers: int = Field(2, ge=1)
    call_timeout: Seconds = 60.0


class HTCondorConfig(_CondorOptions):
    """``kind = "htcondor"``: the schedd advertised by the collector ``pool`` (``host:port``), authenticated by the
    IDTOKEN in ``token_file`` (see :class:`~intercede.backends.htcondor.schedd.HTCondorBackend`)."""

    kind: Literal["htcondor"] = "htcondor"
    pool: str = Field(pattern=r"^[^\s:\x00]+(:[0-9]{1,5})?$")
    token_file: ConfigPath | None = None

    @field_validator("pool")
    @classmethod
    def _a_port_that_exists(cls, pool: str) -> str:
        _, _, port = pool.partition(":")
        if port and not 1 <= int(port) <= 65535:
            raise ValueError(f"the collector's port must be 1-65535, got {port}")
        return pool

    def build(self) -> JobBackend:
        from intercede.backends.htcondor.schedd import HTCondorBackend

        return HTCondorBackend(self.pool, token_file=self.token_file, schedd=self.schedd, name=self.name,
                               staging=self.staging, grace=self.grace, keep_seconds=self.keep_seconds,
                               max_output_mb=self.max_output_mb, config=self.config, workers=self.workers,
                               call_timeout=self.call_timeout)


class HTCondorCEConfig(_CondorOptions):
    """``kind = "htcondor-ce"``: the HTCondor-CE ``ce`` (its host name) on ``port``, with a SciToken and/or an IDTOKEN
    (see :class:`~intercede.backends.htcondor.ce.HTCondorCEBackend`)."""

    kind: Literal["htcondor-ce"] = "htcondor-ce"
    ce: str = Field(pattern=r"^[^\s:/\x00]+$")
    port: Port = 9619
    scitoken_file: ConfigPath | None = None
    token_file: ConfigPath | None = None
    proxy: ConfigPath | None = None
    ca_file: ConfigPath | None = None

    @model_validator(mode="after")
    def _a_token(self) -> HTCondorCEConfig:
        if self.scitoken_file is None and self.token_file is None:
            raise ValueError("an HTCondor-CE needs `scitoken_file` or `token_file` (or both)")
        return self

    def build(self) -> JobBackend:
        from intercede.backends.htcondor.ce import HTCondorCEBackend

        return HTCondorCEBackend(self.ce, port=self.port, scitoken_file=self.scitoken_file,
                                 token_file=self.token_file, proxy=self.proxy, ca_file=self.ca_file,
                                 schedd=self.schedd, name=self.name, staging=self.staging, grace=self.grace,
                                 keep_seconds=self.keep_seconds, max_output_mb=self.max_output_mb,
                                 config=self.config, workers=self.workers, call_timeout=self.call_timeout)


# -- the registry -----------------------------------------------------------------------------------------------------


def _entry_points(group: str) -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=group)}


def transport_class(name: str) -> type[Transport]:
    """The transport registered as ``name``; :class:`InvalidSpecError` listing the known ones otherwise."""
    found = _entry_points(TRANSPORTS)
    if name not in found:
        raise InvalidSpecError(f"unknown transport {name!r}; installed transports: {', '.join(sorted(found))}")
    cls = found[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Transport)):
        raise InvalidSpecError(f"entry point {name!r} in {TRANSPORTS} is not a Transport class")
    return cls


_BUILTIN_KINDS: dict[str, type[CEConfigBase]] = {
    "batch": BatchConfig, "htcondor": HTCondorConfig, "htcondor-ce": HTCondorCEConfig,
}


def _unloadable(kind: str, reason: str) -> type[BaseModel]:
    """Stands for a registered kind whose class cannot be imported: refused only by the configurations using it."""

    class Unloadable(BaseModel):
        @model_validator(mode="before")
        @classmethod
        def _refuse(cls, data: Any) -> Any:
            raise ValueError(f"CE kind {kind!r} is registered but cannot be loaded ({reason}); install the package "
                             f"that provides it (e.g. `pip install intercede[{kind}]`)")

    return Unloadable


@functools.cache
def ce_kinds() -> dict[str, type[BaseModel]]:
    """Every installed CE kind: name -> config class (the built-ins, then the ``intercede.backends`` entry points).

    A registered kind whose module cannot be imported maps to a model that refuses every entry with the reason, so
    one broken plug-in does not stop configurations that do not use it.
    """
    kinds: dict[str, type[BaseModel]] = dict(_BUILTIN_KINDS)
    for name, ep in sorted(_entry_points(BACKENDS).items()):
        try:
            cls = ep.load()
        except Exception as exc:  # noqa: BLE001 - any import failure of a plug-in is reported where it is used
            kinds[name] = _unloadable(name, f"{type(exc).__name__}: {exc}")
            continue
        if not (isinstance(cls, type) and issubclass(cls, CEConfigBase)):
            kinds[name] = _unloadable(name, f"{ep.value} is not a CEConfigBase subclass")
            continue
        kinds[name] = cls
    return kinds


_UNKNOWN = "?unknown-kind"


def _kind_tag(value: Any) -> str:
    if isinstance(value, Mapping):
        kind = value.get("kind", "batch" if "scheduler" in value else None)
    else:
        kind = getattr(value, "kind", None)
    return kind if isinstance(kind, str) and kind in ce_kinds() else _UNKNOWN


class _UnknownKind(BaseModel):
    @model_validator(mode="before")
    @classmethod
    def _refuse(cls, data: Any) -> Any:
        kind = data.get("kind") if isinstance(data, Mapping) else getattr(data, "kind", None)
        known = ", ".join(repr(k) for k in sorted(ce_kinds()))
        if kind is None:
            raise ValueError(f"no `kind` (one of {known}; an entry with `scheduler` is a 'batch' one)")
        raise ValueError(f"unknown CE kind {kind!r}; installed kinds: {known}")


def ce_union_type() -> Any:
    """The discriminated union over the installed kinds that one ``[[ce]]`` entry is validated against (a type for
    pydantic: an entry's errors are then reported field by field, under the entry's position)."""
    members: list[Any] = [Annotated[cls, Tag(name)] for name, cls in ce_kinds().items()]
    members.append(Annotated[_UnknownKind, Tag(_UNKNOWN)])
    return Annotated[Union[tuple(members)], Discriminator(_kind_tag)]  # noqa: UP007 - built at run time


@functools.cache
def ce_union() -> TypeAdapter[CEConfigBase]:
    """:func:`ce_union_type` as an adapter: ``ce_union().validate_python({"kind": "htcondor", ...})``."""
    adapter: TypeAdapter[CEConfigBase] = TypeAdapter(ce_union_type())
    return adapter


def kind_tags() -> frozenset[str]:
    """The tags an error's location may carry after a CE's index (the kind), dropped from messages."""
    return frozenset({*ce_kinds(), _UNKNOWN})


def build_backend(config: CEConfigBase) -> JobBackend:
    """The backend ``config`` describes. Does no I/O; bad options raise :class:`InvalidSpecError` naming the CE."""
    try:
        backend = config.build()
    except InvalidSpecError:
        raise
    except (ValidationError, TypeError, ValueError) as exc:
        raise InvalidSpecError(f"CE {config.name!r}: {exc}") from exc
    if not isinstance(backend, JobBackend):
        raise InvalidSpecError(f"CE {config.name!r}: {type(config).__name__}.build() returned {type(backend).__name__}"
                               ", which does not implement JobBackend")
    return backend
