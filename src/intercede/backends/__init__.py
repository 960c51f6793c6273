"""Everything that talks to a resource: the capability contract, transports, schedulers and backends."""

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

__all__ = [
    "Cancellable",
    "Diagnosable",
    "JobBackend",
    "LoadReport",
    "LoadReporter",
    "OutputRetriever",
    "Purgeable",
    "Taggable",
]
