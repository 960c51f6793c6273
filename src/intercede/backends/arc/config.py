"""The ``arc`` kind of CE configuration: an ARC CE reached over A-REX's REST interface.

Registered under the ``intercede.backends`` entry-point group (``arc = "intercede.backends.arc.config:ARCConfig"``).
The fields every CE kind has (``name``, ``poll_interval``, ``submits_per_tick``, ``grace``) come from
:class:`~intercede.backends.registry.CEConfigBase`; the rest are ARC's. ``build`` makes the backend without any I/O
(credentials are read when first used).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import Field, model_validator

from intercede.backends.arc.backend import ARCBackend
from intercede.backends.registry import CEConfigBase, Seconds

__all__ = ["ARCConfig"]


class ARCConfig(CEConfigBase):
    """One ARC CE. At least one of ``proxy_file`` and ``token_file``; a site that needs both gets both."""

    kind: Literal["arc"] = "arc"

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
    timeout: Seconds = 60.0
    connect_timeout: Seconds = 10.0
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
