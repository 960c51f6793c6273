"""The service's configuration: a TOML file validated by pydantic, with the embedded default when there is none.

::

    data_dir = "/var/lib/intercede"    # journal, outputs; default ./intercede-data
    tick_interval = 1.0
    # journal = "postgresql://intercede@db.example.org:5432/intercede"   # default: <data_dir>/journal.sqlite
    # journal_passfile = "/etc/intercede/pgpass"                        # libpq password file, mode 0600

    [[ce]]
    kind = "batch"                     # batch | htcondor | htcondor-ce | arc | any kind a package registers
    name = "local"
    scheduler = "direct"
    root = "/var/lib/intercede-jobs"   # a local CE's root must not be inside data_dir, nor contain it

Each ``[[ce]]`` entry is validated against the kinds installed (:func:`intercede.backends.registry.ce_kinds`); see
:mod:`intercede.backends.registry` for each kind's fields. :func:`load_settings` reports every mistake field by field,
naming the file, the CE (its name, else its position) and the field.

The journal (:func:`intercede.reconcile.open_journal`): by default an SQLite file under ``data_dir``, which only the
node holding the file can open. ``journal = "postgresql://user@host:port/dbname"`` puts it in a PostgreSQL database
instead, so a reconciler restarted on any node finds it (:mod:`intercede.reconcile.journal_postgres`); any other
value is the path of an SQLite file. The password is never in the config (a URL with one is refused): it is read by
libpq from ``journal_passfile`` (libpq's ``host:port:dbname:user:password`` format, mode 0600), else from
``PGPASSFILE`` or ``~/.pgpass`` of the reconciler's user on its node.
"""

from __future__ import annotations

import hashlib
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import CoreSchema

from intercede.backends.registry import BatchConfig, CEConfigBase, ConfigPath, Seconds, ce_union_type, kind_tags
from intercede.errors import InvalidSpecError
from intercede.reconcile.journals import is_postgres

__all__ = ["Settings", "default_job_root", "load_settings"]


class _InstalledKinds:
    """Validates a ``[[ce]]`` entry as the discriminated union of the kinds installed when Settings is first used."""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return handler.generate_schema(ce_union_type())


class Settings(BaseModel):
    """Where the journal lives, how often the reconciler ticks, and the CEs."""

    # defer_build: the union of CE kinds is built from the entry points at the first validation, not at import.
    # hide_input_in_errors: a ValidationError's text would quote a journal URL, password and all
    # (load_settings quotes scalar inputs itself, never the journal's).
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True, hide_input_in_errors=True)

    data_dir: ConfigPath = Path("intercede-data")
    tick_interval: Seconds = 1.0
    purge_cancelled_after: float = Field(600.0, ge=0, allow_inf_nan=False)  # s a cancelled job's files are kept
    namespace: str = Field("intercede", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    # The Ray node id of the node whose disk holds data_dir (the SQLite journal); None: the node where
    # Intercede.start runs. The reconciler runs, and is restarted, only there.
    journal_node: str | None = Field(None, pattern=r"^[0-9a-f]{8,128}$")
    ce: list[Annotated[CEConfigBase, _InstalledKinds()]] = Field(default_factory=list)
    # None: <data_dir>/journal.sqlite; "postgresql://user@host:port/dbname": PostgreSQL; else an SQLite file's path.
    journal: str | None = Field(None, min_length=1)
    journal_passfile: ConfigPath | None = None  # the PostgreSQL journal's libpq password file (mode 0600)

    @field_validator("journal")
    @classmethod
    def _journal_location(cls, journal: str | None) -> str | None:
        if journal is None:
            return None
        if "\0" in journal:
            raise ValueError("must not contain a NUL character")
        if not is_postgres(journal):
            return journal
        try:
            from psycopg import conninfo
        except ImportError:
            raise ValueError("a PostgreSQL journal needs psycopg: pip install 'intercede[service]'") from None
        try:
            params = conninfo.conninfo_to_dict(journal)
        except Exception:  # noqa: BLE001 - libpq's message may quote the URL; say what to write instead
            raise ValueError("not a valid PostgreSQL URL; write postgresql://user@host:port/dbname") from None
        if params.get("password"):
            raise ValueError("a password in the journal URL is refused (a config file is copied and shown): put it "
                             "in a password file named by journal_passfile (libpq's host:port:dbname:user:password "
                             "format, mode 0600), or PGPASSFILE")
        return journal

    @model_validator(mode="after")
    def _passfile_for_postgres(self) -> Settings:
        if self.journal_passfile is not None and not (self.journal is not None and is_postgres(self.journal)):
            raise ValueError("journal_passfile is only for a PostgreSQL journal (journal = \"postgresql://...\")")
        return self

    @model_validator(mode="after")
    def _journal_node_for_sqlite(self) -> Settings:
        if self.journal_node is not None and not self.journal_on_a_node:
            raise ValueError("journal_node is only for an SQLite journal (a PostgreSQL journal is reachable from "
                             "every node, so the reconciler may run on any)")
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        names = [c.name for c in self.ce]
        if len(set(names)) != len(names):
            raise ValueError(f"CE names must be unique, got {names}")
        return self

    @model_validator(mode="after")
    def _local_jobs_outside_the_data(self) -> Settings:
        # A local job runs as the service's user: a job directory inside the data directory puts the journal at a
        # fixed relative path from every job ("../../journal.sqlite"); one containing it exposes it the same way.
        data = Path(os.path.abspath(self.data_dir))
        for c in self.ce:
            if isinstance(c, BatchConfig) and c.is_local:
                root = Path(os.path.abspath(c.root))
                if root == data or data in root.parents or root in data.parents:
                    raise ValueError(f"CE {c.name!r}: root {c.root} is a local job directory "
                                     f"{'containing' if root in data.parents else 'inside'} data_dir {data}; "
                                     "local jobs must not reach the journal: put root outside data_dir "
                                     f"(e.g. {default_job_root(data)})")
        return self

    @property
    def journal_path(self) -> Path:
        """Where the default SQLite journal lives (under ``data_dir``)."""
        return self.data_dir / "journal.sqlite"

    @property
    def journal_on_a_node(self) -> bool:
        """Whether the journal is a file on one node's disk (SQLite): then the reconciler runs only there."""
        return self.journal is None or not is_postgres(self.journal)

    @property
    def journal_location(self) -> str | Path:
        """What :func:`~intercede.reconcile.open_journal` opens: the PostgreSQL URL, or the SQLite file's path."""
        if self.journal is None:
            return self.journal_path
        return self.journal if is_postgres(self.journal) else Path(self.journal)

    @classmethod
    def embedded(cls, data_dir: Path = Path("intercede-data"), *, job_root: Path | None = None) -> Settings:
        """The embedded default: one CE running local processes, the journal under ``data_dir``, job directories
        under ``job_root`` (default :func:`default_job_root`: outside ``data_dir``, private to this user)."""
        data_dir = data_dir.absolute()
        if job_root is None:
            job_root = default_job_root(data_dir)
            _private(job_root.parent.parent)
        root = job_root.absolute()
        local = BatchConfig(name="local", scheduler="direct", root=str(root), poll_interval=1.0)
        return cls(data_dir=data_dir, ce=[local])


def default_job_root(data_dir: Path) -> Path:
    """Where the embedded default's local jobs live: ``$XDG_STATE_HOME/intercede/jobs/<name>-<hash of data_dir>``
    (default ``~/.local/state``), one folder per data directory, never inside it.

    Computed only (no I/O); :meth:`Settings.embedded` makes the ``intercede`` folder above it private (0700), and the
    local scheduler creates the rest.
    """
    data = os.path.abspath(data_dir)
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    digest = hashlib.sha256(data.encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return Path(state) / "intercede" / "jobs" / f"{Path(data).name or 'root'}-{digest}"


def _private(folder: Path) -> None:
    """Create ``folder`` 0700 (and its parents, as the XDG spec asks); refuse one that another user owns."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = folder.stat()
        if info.st_uid != os.getuid():
            raise InvalidSpecError(f"{folder} belongs to uid {info.st_uid}, not to this user: local job directories "
                                   "must be private; set XDG_STATE_HOME or pass job_root")
        if info.st_mode & 0o077:
            folder.chmod(0o700)
    except OSError as exc:
        raise InvalidSpecError(f"cannot create the local job directory {folder}: {exc.strerror or exc}") from exc


def load_settings(path: Path) -> Settings:
    """Read and validate ``path``; every problem is an :class:`InvalidSpecError` naming the file and the field (and
    for a ``[[ce]]`` entry, the CE's name or position)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidSpecError(f"cannot read config {path}: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidSpecError(f"config {path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                               f"{exc.start}); save it as UTF-8") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidSpecError(f"config {path} is not valid TOML: {exc}") from exc
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        lines = [f"config {path} is invalid:"]
        lines += [f"  {_where(err['loc'], data)}{_msg(err)}{_got(err)}" for err in exc.errors()]
        raise InvalidSpecError("\n".join(lines)) from exc


def _where(loc: tuple[int | str, ...], data: Mapping[str, Any]) -> str:
    """``[[ce]] #2 ('cluster'), transport_options.endpoint.port`` for a CE's field; the dotted path otherwise."""
    if len(loc) >= 2 and loc[0] == "ce" and isinstance(loc[1], int):
        entries = data.get("ce")
        entry = entries[loc[1]] if isinstance(entries, list) and loc[1] < len(entries) else None
        name = entry.get("name") if isinstance(entry, Mapping) else None
        which = f"[[ce]] #{loc[1] + 1}" + (f" ({name!r})" if isinstance(name, str) else "")
        rest = [str(p) for p in loc[2:]]
        if rest and rest[0] in kind_tags():  # the union's tag, not a field
            rest = rest[1:]
        if len(rest) >= 2 and rest[0] == "transport_options" and rest[1] in ("local", "ssh", "plugin"):
            rest = [rest[0], *rest[2:]]
        return which + (", " + ".".join(rest) if rest else "")
    return ".".join(str(p) for p in loc)


def _got(err: Any) -> str:
    # Scalars only: a table's repr would drown the message (and the field itself is named already).
    value = err.get("input")
    if err["loc"] and err["loc"][0] == "journal":  # a URL may hold a password: never echo it
        return ""
    if err.get("type") == "missing" or isinstance(value, dict | list) or value is None:
        return ""
    return f" (got {value!r})"


def _msg(err: Any) -> str:
    msg = str(err["msg"]).removeprefix("Value error, ")
    return f": {msg}" if err["loc"] else msg
