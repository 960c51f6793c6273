"""intercede: one async contract to submit, monitor, cancel, retrieve and clean up grid jobs on any CE.

The names a WMS developer needs, importable from here::

    from intercede import Intercede, JobRequest, JobSpec, Phase, Settings

Every name is imported on first use, so ``import intercede`` is cheap and works without the optional parts: the
service (:class:`Intercede`, :class:`JobRequest`) needs the ``service`` extra (Ray), :class:`Diagnostics` the
``notebook`` extra; the backends, the job model and the configuration need only the core dependencies.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from intercede.actors.client import Intercede
    from intercede.actors.reconciler import JobRequest
    from intercede.actors.settings import Settings, load_settings
    from intercede.backends.batch import BatchBackend
    from intercede.backends.capabilities import (
        Cancellable,
        Diagnosable,
        JobBackend,
        LoadReport,
        LoadReporter,
        OutputRetriever,
        Purgeable,
        Taggable,
    )
    from intercede.backends.htcondor.ce import HTCondorCEBackend
    from intercede.backends.htcondor.schedd import HTCondorBackend
    from intercede.backends.registry import BatchConfig, CEConfigBase, HTCondorCEConfig, HTCondorConfig, build_backend
    from intercede.backends.schedulers.direct import DirectScheduler
    from intercede.backends.schedulers.htcondor import HTCondorScheduler
    from intercede.backends.schedulers.slurm import SlurmScheduler
    from intercede.backends.transports.base import CommandResult, Transport
    from intercede.backends.transports.local import LocalTransport
    from intercede.backends.transports.mock import MockTransport
    from intercede.backends.transports.ssh import SSHEndpoint, SSHTransport
    from intercede.diagnostics.cecheck import check_ce
    from intercede.diagnostics.views import Diagnostics
    from intercede.errors import (
        AuthenticationError,
        CommandError,
        ConnectivityError,
        IntercedeError,
        InvalidSpecError,
        TransferError,
        UnsupportedError,
        is_temporary,
    )
    from intercede.model import (
        InputFile,
        JobSpec,
        JobState,
        JobStatus,
        Outcome,
        OutputBounds,
        OutputFile,
        OutputManifest,
        Resources,
        SubmitResult,
    )
    from intercede.reconcile.reconciler import KeyRow
    from intercede.reconcile.state import Phase

__all__ = [
    "AuthenticationError",
    "BatchBackend",
    "BatchConfig",
    "CEConfigBase",
    "Cancellable",
    "CommandError",
    "CommandResult",
    "ConnectivityError",
    "Diagnosable",
    "Diagnostics",
    "DirectScheduler",
    "HTCondorBackend",
    "HTCondorCEBackend",
    "HTCondorCEConfig",
    "HTCondorConfig",
    "HTCondorScheduler",
    "InputFile",
    "Intercede",
    "IntercedeError",
    "InvalidSpecError",
    "JobBackend",
    "JobRequest",
    "JobSpec",
    "JobState",
    "JobStatus",
    "KeyRow",
    "LoadReport",
    "LoadReporter",
    "LocalTransport",
    "MockTransport",
    "Outcome",
    "OutputBounds",
    "OutputFile",
    "OutputManifest",
    "OutputRetriever",
    "Phase",
    "Purgeable",
    "Resources",
    "SSHEndpoint",
    "SSHTransport",
    "Settings",
    "SlurmScheduler",
    "SubmitResult",
    "Taggable",
    "TransferError",
    "Transport",
    "UnsupportedError",
    "build_backend",
    "check_ce",
    "is_temporary",
    "load_settings",
]

try:
    __version__ = version("intercede")
except PackageNotFoundError:  # a source tree that was not installed
    __version__ = "unknown"

_WHERE = {
    "AuthenticationError": "errors",
    "BatchBackend": "backends.batch",
    "BatchConfig": "backends.registry",
    "CEConfigBase": "backends.registry",
    "Cancellable": "backends.capabilities",
    "CommandError": "errors",
    "CommandResult": "backends.transports.base",
    "ConnectivityError": "errors",
    "Diagnosable": "backends.capabilities",
    "Diagnostics": "diagnostics.views",
    "DirectScheduler": "backends.schedulers.direct",
    "HTCondorBackend": "backends.htcondor.schedd",
    "HTCondorCEBackend": "backends.htcondor.ce",
    "HTCondorCEConfig": "backends.registry",
    "HTCondorConfig": "backends.registry",
    "HTCondorScheduler": "backends.schedulers.htcondor",
    "InputFile": "model",
    "Intercede": "actors.client",
    "IntercedeError": "errors",
    "InvalidSpecError": "errors",
    "JobBackend": "backends.capabilities",
    "JobRequest": "actors.reconciler",
    "JobSpec": "model",
    "JobState": "model",
    "JobStatus": "model",
    "KeyRow": "reconcile.reconciler",
    "LoadReport": "backends.capabilities",
    "LoadReporter": "backends.capabilities",
    "LocalTransport": "backends.transports.local",
    "MockTransport": "backends.transports.mock",
    "Outcome": "model",
    "OutputBounds": "model",
    "OutputFile": "model",
    "OutputManifest": "model",
    "OutputRetriever": "backends.capabilities",
    "Phase": "reconcile.state",
    "Purgeable": "backends.capabilities",
    "Resources": "model",
    "SSHEndpoint": "backends.transports.ssh",
    "SSHTransport": "backends.transports.ssh",
    "Settings": "actors.settings",
    "SlurmScheduler": "backends.schedulers.slurm",
    "SubmitResult": "model",
    "Taggable": "backends.capabilities",
    "TransferError": "errors",
    "Transport": "backends.transports.base",
    "UnsupportedError": "errors",
    "build_backend": "backends.registry",
    "check_ce": "diagnostics.cecheck",
    "is_temporary": "errors",
    "load_settings": "actors.settings",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"intercede.{_WHERE[name]}"), name)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
