"""The service's configuration: a TOML file validated by pydantic, with the embedded default when there is none.

::

    data_dir = "/var/lib/intercede"    # journal, outputs; default ./intercede-data
    tick_interval = 1.0

    [[ce]]
    name = "local"
    scheduler = "direct"
    root = "/var/lib/intercede/jobs"

See :class:`intercede.backends.registry.CEConfig` for a CE's fields (SSH transports, Slurm, ...).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from intercede.backends.registry import CEConfig
from intercede.errors import InvalidSpecError

__all__ = ["Settings", "load_settings"]


class Settings(BaseModel):
    """Where the journal lives, how often the reconciler ticks, and the CEs."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = Path("intercede-data")
    tick_interval: float = Field(1.0, gt=0)
    purge_cancelled_after: float = Field(600.0, ge=0, allow_inf_nan=False)  # s a cancelled job's files are kept
    namespace: str = "intercede"
    ce: list[CEConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> Settings:
        names = [c.name for c in self.ce]
        if len(set(names)) != len(names):
            raise ValueError(f"CE names must be unique, got {names}")
        return self

    @property
    def journal_path(self) -> Path:
        return self.data_dir / "journal.sqlite"

    @classmethod
    def embedded(cls, data_dir: Path = Path("intercede-data")) -> Settings:
        """The embedded default: one CE running local processes, journal and job directories under ``data_dir``."""
        data_dir = data_dir.absolute()
        local = CEConfig(name="local", scheduler="direct", root=str(data_dir / "jobs"), poll_interval=1.0)
        return cls(data_dir=data_dir, ce=[local])


def load_settings(path: Path) -> Settings:
    """Read and validate ``path``; every problem is an :class:`InvalidSpecError` naming the file and the field."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise InvalidSpecError(f"cannot read config {path}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise InvalidSpecError(f"config {path} is not valid TOML: {exc}") from exc
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise InvalidSpecError(f"config {path} is invalid:\n{exc}") from exc
