"""The ``arc`` kind of CE configuration: an ARC CE reached over A-REX's REST interface.

Registered under the ``intercede.backends`` entry-point group (``arc = "intercede.backends.arc.config:ARCConfig"``).
The first fields (``kind``, ``name``, ``poll_interval``, ``submits_per_tick``, ``grace``) are the ones every CE kind
has; the rest are ARC's. ``build`` makes the backend without any I/O (credentials are read when first used).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from intercede.backends.arc.backend import ARCBackend

__all__ = ["ARCConfig"]


class ARCConfig(BaseModel):
    """One ARC CE. At least one of ``proxy_file`` and ``token_file``; a site that needs both gets both."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["arc"]
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    poll_interval: float = Field(5.0, gt=0)
    submits_per_tick: int = Field(50, ge=1)
    grace: float = Field(120.0, ge=0)

    #: the A-REX endpoint, e.g. ``https://ce.example.org:443/arex`` (the REST interface lives under ``/rest``)
    endpoint: str = Field(pattern=r"^https://[^/\s]+(/[^\s]*)?$")
    #: a PEM bundle and/or a grid CA directory (``/etc/grid-security/certificates``) verifying the CE; neither: the
    #: system trust store
    ca_file: Path | None = None
    ca_dir: Path | None = None
    token_file: Path | None = None
    proxy_file: Path | None = None
    #: the queue (A-REX share) for specs that name none
    queue: str | None = Field(None, min_length=1)
    timeout: float = Field(60.0, gt=0)
    connect_timeout: float = Field(10.0, gt=0)
    #: how long a purge waits for a killed job to be done before cleaning it
    purge_wait: float = Field(60.0, ge=0)

    @model_validator(mode="after")
    def _a_credential(self) -> Self:
        if self.token_file is None and self.proxy_file is None:
            raise ValueError("an ARC CE needs token_file or proxy_file (or both)")
        return self

    def build(self) -> ARCBackend:
        """The backend for this CE (no I/O)."""
        return ARCBackend(self.endpoint, name=self.name, ca_file=self.ca_file, ca_dir=self.ca_dir,
                          proxy_file=self.proxy_file, token_file=self.token_file, queue=self.queue,
                          grace=self.grace, timeout=self.timeout, connect_timeout=self.connect_timeout,
                          purge_wait=self.purge_wait)
