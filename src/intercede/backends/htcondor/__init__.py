"""HTCondor backends: a schedd through the ``htcondor2`` bindings and an HTCondor-CE, over one shared core.

* :class:`HTCondorBackend` — a (remote) schedd, IDTOKENS; reports load.
* :class:`HTCondorCEBackend` — an HTCondor-CE on port 9619, token plus optional X.509 proxy; deliberately no load.
* The CLI dialect for :class:`~intercede.backends.batch.BatchBackend` is
  :class:`~intercede.backends.schedulers.htcondor.HTCondorScheduler`.

The shared core (submit descriptions, ClassAd status parsing, the state map, the history fallback) is
:mod:`intercede.backends.htcondor._htcondor`.
"""

from intercede.backends.htcondor.ce import HTCondorCEBackend
from intercede.backends.htcondor.schedd import HTCondorBackend

__all__ = ["HTCondorBackend", "HTCondorCEBackend"]
