"""The process that holds the ``htcondor2`` bindings for one backend: ``python <this file>`` (standalone: it imports
nothing of intercede).

Why a process: the bindings' configuration (collector, token directory, authentication methods) and their security
session cache are global to a process, and their calls block and cannot be interrupted. One worker process per
backend (see :mod:`intercede.backends.htcondor._client`) gives each backend its own credentials, lets a hung call be
killed, and keeps the event loop free.

Protocol: one JSON object per line on stdin, ``{"op": name, "args": {...}}``; one per line on the protocol channel
(the original stdout), ``{"ok": true, "result": ...}`` or ``{"ok": false, "kind": k, "message": m}`` where ``k`` is
``auth`` (authentication or authorization refused), ``connect`` (the daemon cannot be reached or is not advertised),
``refused`` (the schedd refused a submit) or ``error``. HTCondor's own messages are terse ("Failed communication
with collector"), so the worker turns on the library's D_ALWAYS log (file descriptors 1 and 2 go to the log file
named by ``INTERCEDE_CONDOR_LOG``) and classifies a failure by what HTCondor logged while the call ran.
Configuration comes from the environment (``CONDOR_CONFIG``, ``_CONDOR_*``) set by the parent.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

_AUTH = ("AUTHENTICATE", "PERMISSION DENIED", "not authorized", "DENIED")
# "resume session response": the peer closed the connection at once (shared_port had no daemon to hand it to).
_CONNECT = ("Failed to connect", "Connection refused", "connect", "timed out", "No route", "Can't find address",
            "Unable to locate", "Failed communication", "not advertised", "Timeout", "resume session response",
            "Failed to fetch ads")


class Located(Exception):
    """The schedd is not advertised by the collector (down, or a wrong name)."""


class Refused(Exception):
    """The schedd refused a submit (its message explains why)."""


class Session:
    """The collector and schedd one worker talks to; the schedd's location is cached until a call fails."""

    def __init__(self, pool: str, schedd: str | None) -> None:
        import htcondor2  # type: ignore[import-untyped]

        self.h = htcondor2
        self.pool = pool
        self.schedd_name = schedd
        self._schedd: Any = None

    def schedd(self) -> Any:
        if self._schedd is None:
            h = self.h
            constraint = f'Name == "{self.schedd_name}"' if self.schedd_name else None
            ads = h.Collector(self.pool).query(h.AdType.Schedd, constraint,
                                               ["Name", "MyAddress", "CondorVersion"])
            if not ads:
                raise Located(f"no schedd{' named ' + self.schedd_name if self.schedd_name else ''} is advertised "
                              f"by the collector {self.pool} (down?)")
            if len(ads) > 1 and not self.schedd_name:
                names = ", ".join(str(a.get("Name")) for a in ads)
                raise Located(f"the collector {self.pool} advertises several schedds ({names}): name one")
            self._schedd = h.Schedd(ads[0])
            self.version = str(ads[0].get("CondorVersion", ""))
        return self._schedd

    # -- operations (arguments and results are JSON) ----------------------------------------------------------------

    def op_version(self) -> str:
        self.schedd()
        return self.version

    def op_submit(self, description: dict[str, str], items: list[dict[str, str]] | None = None) -> int:
        """Submit one cluster: one proc, or one per entry of ``items`` (macro name -> value, one dict per proc)."""
        h = self.h
        schedd = self.schedd()
        try:
            if items:
                result = schedd.submit(h.Submit(description), itemdata=iter(items), spool=True)
            else:
                result = schedd.submit(h.Submit(description), count=1, spool=True)
        except h.HTCondorException as exc:
            raise Refused(str(exc)) from exc
        cluster = int(result.cluster())
        try:
            schedd.spool(result)
        except BaseException:
            schedd.act(h.JobAction.Remove, cluster, "intercede: spooling the input files failed")
            raise
        return cluster

    def op_query(self, constraint: str, projection: list[str]) -> list[dict[str, Any]]:
        return [_plain(ad) for ad in self.schedd().query(constraint, projection)]

    def op_history(self, constraint: str, projection: list[str], match: int) -> list[dict[str, Any]]:
        return [_plain(ad) for ad in self.schedd().history(constraint, projection, match)]

    def op_act(self, action: str, ids: list[str], reason: str) -> dict[str, Any]:
        return _plain(self.schedd().act(getattr(self.h.JobAction, action), ids, reason))

    def op_edit(self, ids: list[str], attr: str, value: str) -> int:
        return int(self.schedd().edit(ids, attr, value))

    def op_retrieve(self, job_id: str) -> None:
        self.schedd().retrieve(job_id)

    def op_startds(self, projection: list[str]) -> list[dict[str, Any]]:
        h = self.h
        return [_plain(ad) for ad in h.Collector(self.pool).query(h.AdType.Startd, None, projection)]

    def op_schedd_ad(self, projection: list[str]) -> dict[str, Any]:
        h = self.h
        constraint = f'Name == "{self.schedd_name}"' if self.schedd_name else None
        ads = h.Collector(self.pool).query(h.AdType.Schedd, constraint, projection)
        if not ads:
            raise Located(f"no schedd is advertised by the collector {self.pool} (down?)")
        return _plain(ads[0])


def _plain(ad: Any) -> dict[str, Any]:
    """A ClassAd as JSON-able values: expressions as their text, undefined/error as None."""
    import classad2  # type: ignore[import-untyped]

    out: dict[str, Any] = {}
    for key in ad:
        value = ad[key]
        if isinstance(value, classad2.ExprTree):
            value = str(value)
        elif isinstance(value, classad2.Value):
            value = None
        elif isinstance(value, list):
            value = [str(v) for v in value]
        out[key] = value
    return out


def _classify(exc: BaseException, logged: str) -> str:
    if isinstance(exc, Refused):
        return "auth" if any(w in logged for w in _AUTH) else "refused"
    if isinstance(exc, Located):
        return "connect"
    if any(w in logged for w in _AUTH):
        return "auth"
    if any(w in logged or w in str(exc) for w in _CONNECT):
        return "connect"
    return "error"


def _die_with_parent() -> None:
    """Have the kernel kill this worker when its parent (the backend's process) dies (Linux ``PR_SET_PDEATHSIG``):
    a submit must not go on in an orphaned worker and land after the parent's successor found no job by its tag."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):  # not Linux: the parent's kill of a hung call is all there is
        return


def main() -> None:
    _die_with_parent()
    log_path = os.environ["INTERCEDE_CONDOR_LOG"]
    channel = os.fdopen(os.dup(1), "w", encoding="utf-8")
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    import htcondor2

    htcondor2.enable_debug()
    session = Session(os.environ["INTERCEDE_CONDOR_POOL"], os.environ.get("INTERCEDE_CONDOR_SCHEDD") or None)
    for line in sys.stdin:
        request = json.loads(line)
        start = os.path.getsize(log_path)
        try:
            handler: Callable[..., Any] = getattr(session, "op_" + request["op"])
            reply: dict[str, Any] = {"ok": True, "result": handler(**request.get("args", {}))}
        except Exception as exc:  # noqa: BLE001 - every failure is reported to the parent, which maps it to the intercede tree
            with open(log_path, errors="replace") as f:
                f.seek(start)
                logged = f.read()[-4000:]
            session._schedd = None  # locate again next time: the schedd may have moved or restarted
            errors = [ln for ln in logged.splitlines() if "ERROR" in ln or "FAILED" in ln.upper()]
            reply = {"ok": False, "kind": _classify(exc, logged), "message": str(exc) or type(exc).__name__,
                     "log": "\n".join(errors[-5:])}
        channel.write(json.dumps(reply) + "\n")
        channel.flush()


if __name__ == "__main__":
    main()
