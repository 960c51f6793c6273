"""IntercedeComputingElement: a DIRAC ComputingElement that submits pilots through any intercede backend.

DIRAC's SiteDirector makes it with the CE's name, hands it the CE's parameters from the Configuration System
(:meth:`setParameters`) and calls it synchronously::

    result = ce.submitJob(wrapper, proxy, numberOfJobs=N)    # S_OK([ref, ...]) + result["PilotStampDict"]
    ce.getJobStatus(refs)                                    # S_OK({ref: "Waiting" | "Running" | "Done" | ...})
    ce.getJobOutput(ref)                                     # S_OK((stdout, stderr))
    ce.getJobLog(ref)                                        # S_OK(text)
    ce.killJob(refs); ce.cleanJob(refs)                      # S_OK() / S_ERROR naming the refs that failed
    ce.getCEStatus(); ce.available()                         # counts; free slots

Parameters (besides DIRAC's usual ones):

* ``IntercedeCEConfig``: one intercede CE configuration (a JSON object, or a dict), e.g.
  ``{"kind": "batch", "name": "slurm-a", "scheduler": "slurm", "transport": "ssh", ...}``; or
* ``IntercedeConfig`` (an intercede TOML settings file) and ``IntercedeCE`` (the name of a ``[[ce]]`` in it; default:
  this CE's name).
* ``Queue``, ``NumberOfProcessors``, ``MaxRAM`` (MB) and ``MaxCPUTime`` (s, as wall time) set the pilots' resources.

Semantics: the states are intercede's, which are DIRAC's strings. Each copy of a submit is tagged with its pilot
stamp (``<20 hex>.<i>``, at most 32 characters; see :mod:`.pilots`), so a pilot is found again at the resource by its
stamp. Pilot references are ``intercede://<ce>/<job id>``. A ``proxy`` given to ``submitJob`` (a DIRAC ``X509Chain``
or PEM text) is staged per pilot as a 0600 secret file (``X509_USER_PROXY_FILE``), never in an attribute or a log.
A token DIRAC gives with ``setToken`` is handed to the backend as its bearer token (see
:mod:`intercede.backends.credentials`). Every method answers ``S_OK``/``S_ERROR``; none raises.

DIRAC itself is an optional dependency (``pip install intercede[dirac]``): when it is importable the class derives
from DIRAC's ``ComputingElement`` (and its logger, parameters and ``available`` are DIRAC's); without it a small
stand-in base gives the same call surface, so the plug-in runs and is tested either way (docs/dirac.md says why).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from intercede.backends.capabilities import Cancellable, JobBackend, LoadReporter, OutputRetriever, Purgeable
from intercede.backends.credentials import CredentialConsumer, credential_from_bytes
from intercede.backends.registry import CEConfigBase, build_backend, ce_union
from intercede.dirac import pilots
from intercede.dirac.bridge import LoopThread
from intercede.errors import IntercedeError, InvalidSpecError
from intercede.model import JobStatus, Resources

__all__ = ["HAVE_DIRAC", "IntercedeComputingElement"]

# DIRAC's result makers where DIRAC is installed (its S_ERROR carries the Errno and CallStack its callers read).
_S_OK: Callable[..., dict[str, Any]]
_S_ERROR: Callable[..., dict[str, Any]]
try:  # pragma: no cover - which branch runs depends on the environment
    import DIRAC
    from DIRAC.Resources.Computing.ComputingElement import ComputingElement as _Base

    HAVE_DIRAC = True
    _S_OK, _S_ERROR = DIRAC.S_OK, DIRAC.S_ERROR
except ImportError:  # DIRAC is an optional extra
    HAVE_DIRAC = False
    _S_OK, _S_ERROR = pilots.s_ok, pilots.s_error

    class _Base:  # type: ignore[no-redef]
        """The part of DIRAC's ComputingElement this plug-in relies on, for use without DIRAC."""

        def __init__(self, ceName: str) -> None:
            self.ceName = ceName
            self.ceParameters: dict[str, Any] = {}
            self.proxy: Any = None
            self.token: Any = None
            self.log = logging.getLogger(f"intercede.dirac.{ceName}")

        def setParameters(self, ceOptions: Mapping[str, Any]) -> dict[str, Any]:
            self.ceParameters.update(ceOptions)
            return pilots.s_ok()

        def setProxy(self, proxy: Any) -> None:
            self.proxy = proxy

        def setToken(self, token: Any) -> None:
            self.token = token

        def available(self) -> dict[str, Any]:
            """How many more pilots fit, as DIRAC's base class computes it: none once running + waiting reach
            ``MaxTotalJobs`` or waiting reaches ``MaxWaitingJobs``; else what both limits leave."""
            result: dict[str, Any] = self.getCEStatus()  # type: ignore[attr-defined]
            if not result["OK"]:
                return result
            running, waiting = result["RunningJobs"], result["WaitingJobs"]
            max_total = int(self.ceParameters.get("MaxTotalJobs", 0))
            max_waiting = int(self.ceParameters.get("MaxWaitingJobs", 0))
            total = running + waiting
            result["CEInfoDict"] = {**result, "MaxTotalJobs": max_total, "MaxWaitingJobs": max_waiting}
            result["Value"] = 0 if total >= max_total or waiting >= max_waiting else min(
                max_waiting - waiting, max_total - total)
            return result


#: A call's deadline (s): longer than any backend's own (a submit of many copies over SSH included).
CALL_TIMEOUT = 900.0


class IntercedeComputingElement(_Base):  # type: ignore[misc]
    """A DIRAC ComputingElement over one intercede backend (see the module docstring)."""

    def __init__(self, ceUniqueID: str) -> None:
        super().__init__(ceUniqueID)
        self.submittedJobs = 0
        self._loop: LoopThread | None = None
        self._backend: JobBackend | None = None
        self._config: CEConfigBase | None = None
        self._mine: dict[str, str] = {}  # ref -> stamp, the pilots this object submitted (for getCEStatus)

    # -- configuration and the backend --------------------------------------------------------------------------

    def _ce_config(self) -> CEConfigBase:
        params = self.ceParameters
        if "IntercedeCEConfig" in params:
            raw = params["IntercedeCEConfig"]
            data = json.loads(raw) if isinstance(raw, str) else dict(raw)
            return ce_union().validate_python(data)
        if "IntercedeConfig" in params:
            from intercede.actors.settings import load_settings

            settings = load_settings(Path(params["IntercedeConfig"]))
            name = params.get("IntercedeCE", self.ceName)
            for ce in settings.ce:
                if ce.name == name:
                    return ce
            raise InvalidSpecError(f"no CE named {name!r} in {params['IntercedeConfig']}")
        raise InvalidSpecError(f"CE {self.ceName}: set IntercedeCEConfig, or IntercedeConfig (and IntercedeCE)")

    def _ensure(self) -> tuple[LoopThread, JobBackend]:
        if self._loop is None or self._backend is None:
            self._config = self._ce_config()
            self._loop = LoopThread(f"intercede-{self.ceName}")
            config = self._config
            self._backend = self._loop.run(lambda: _build(config), CALL_TIMEOUT)
        self._push_token()
        return self._loop, self._backend

    def _push_token(self) -> None:
        """Hand DIRAC's token (``setToken``) to the backend's bearer-token slots."""
        token = self.token
        text = token.get("access_token") if isinstance(token, Mapping) else token
        if not isinstance(text, str) or not text or not isinstance(self._backend, CredentialConsumer):
            return
        assert self._loop is not None
        backend = self._backend
        for need in backend.credential_needs():
            if need.kind == "token":
                credential = credential_from_bytes("token", text.encode(), need.audience)
                self._loop.run(lambda n=need, c=credential: backend.use_credential(n, c), CALL_TIMEOUT)

    def _resources(self) -> Resources:
        p = self.ceParameters
        options: dict[str, Any] = {}
        if p.get("Queue"):
            options["queue"] = str(p["Queue"])
        if p.get("NumberOfProcessors"):
            options["cores"] = int(p["NumberOfProcessors"])
        if p.get("MaxRAM"):
            options["memory_mb"] = int(p["MaxRAM"])
        if p.get("MaxCPUTime"):
            options["wall_time"] = timedelta(seconds=int(p["MaxCPUTime"]))
        return Resources(**options)

    def _name(self) -> str:
        assert self._config is not None
        return self._config.name

    def _ids(self, refs: Sequence[str]) -> dict[str, str]:
        """job id -> ref, refusing references of another CE."""
        ids = {}
        for given in refs:
            ref = given.split(":::")[0]  # DIRAC appends ":::<stamp>" to the references it passes back
            ce, job_id = pilots.parse_reference(ref)
            if ce != self._name():
                raise InvalidSpecError(f"{ref!r} belongs to CE {ce!r}, not {self._name()!r}")
            ids[job_id] = ref
        return ids

    def close(self) -> None:
        """Close the backend and stop the loop thread (idempotent)."""
        if self._loop is not None:
            backend = self._backend
            self._loop.close((lambda: backend.aclose()) if backend is not None else None)
            self._loop, self._backend = None, None

    # -- DIRAC's ComputingElement interface ----------------------------------------------------------------------

    def submitJob(self, executableFile: str, proxy: Any = None, numberOfJobs: int = 1,
                  **kwargs: Any) -> dict[str, Any]:
        """Submit ``numberOfJobs`` copies of the pilot wrapper: S_OK(refs) with ``PilotStampDict`` {ref: stamp}.
        A copy the resource refused is left out (and logged); S_ERROR only when none was submitted."""
        try:
            loop, backend = self._ensure()
            base = pilots.new_stamp_base()
            spec = pilots.pilot_spec(Path(executableFile), int(numberOfJobs), base, resources=self._resources(),
                                     proxy=_proxy_text(proxy))
            result = loop.run(lambda: backend.submit(spec), CALL_TIMEOUT)
        except (IntercedeError, ValueError, OSError) as exc:
            return _S_ERROR(f"CE {self.ceName}: submit failed: {exc}")
        refs, stamps, refused = [], {}, []
        for sub in result.submissions:
            if sub.job_id is None:
                refused.append(sub.error)
                continue
            ref = pilots.reference(self._name(), sub.job_id)
            refs.append(ref)
            stamps[ref] = pilots.stamp_of(spec, sub.copy_index)
        if refused:
            self.log.warning(f"CE {self.ceName}: {len(refused)} of {numberOfJobs} pilots refused: {refused[0]}")
        if not refs:
            return _S_ERROR(f"CE {self.ceName}: no pilot submitted: {refused[0] if refused else 'no answer'}")
        self.submittedJobs += len(refs)
        self._mine.update(stamps)
        answer = _S_OK(refs)
        answer["PilotStampDict"] = stamps
        return answer

    def getJobStatus(self, jobIDList: Sequence[str]) -> dict[str, Any]:
        """S_OK({ref: state}) with intercede's (= DIRAC's) state strings (keyed by the reference without its
        ``:::<stamp>``, as DIRAC's own CEs answer)."""
        try:
            statuses = self._statuses(jobIDList)
        except (IntercedeError, ValueError) as exc:
            return _S_ERROR(f"CE {self.ceName}: status failed: {exc}")
        return _S_OK({ref: s.state.value for ref, s in statuses.items()})

    def _statuses(self, refs: Sequence[str]) -> dict[str, JobStatus]:
        loop, backend = self._ensure()
        ids = self._ids(refs)
        found = loop.run(lambda: backend.status(list(ids)), CALL_TIMEOUT)
        return {ids[s.job_id]: s for s in found if s.job_id in ids}

    def getJobLog(self, jobID: str) -> dict[str, Any]:
        """S_OK(text): the pilot's state, native state, exit code, reason and times as the resource reports them."""
        try:
            status = self._statuses([jobID]).get(jobID.split(":::")[0])
        except (IntercedeError, ValueError) as exc:
            return _S_ERROR(f"CE {self.ceName}: cannot read the log of {jobID}: {exc}")
        if status is None:
            return _S_ERROR(f"CE {self.ceName}: no status for {jobID}")
        return _S_OK(pilots.status_text(status))

    def getJobOutput(self, jobID: str, localDir: str | None = None) -> dict[str, Any]:
        """S_OK((stdout, stderr)) of a pilot; with ``localDir`` the files are also left there."""
        try:
            loop, backend = self._ensure()
            (job_id,) = self._ids([jobID])
            if not isinstance(backend, OutputRetriever):
                return _S_ERROR(f"CE {self.ceName}: the backend cannot retrieve outputs")
            spec = pilots.output_spec()
            with tempfile.TemporaryDirectory(prefix="intercede-dirac-") as scratch:
                where = Path(localDir) if localDir else Path(scratch)
                manifest = loop.run(lambda: backend.fetch(job_id, spec, where), CALL_TIMEOUT)
                texts = []
                for name in (spec.stdout, spec.stderr):
                    path = manifest.destination / name
                    texts.append(path.read_text(errors="replace") if path.is_file() else "")
        except (IntercedeError, ValueError, OSError) as exc:
            return _S_ERROR(f"CE {self.ceName}: cannot get the output of {jobID}: {exc}")
        return _S_OK((texts[0], texts[1]))

    def killJob(self, jobIDList: Sequence[str] | str) -> dict[str, Any]:
        """Cancel pilots: S_OK(), or S_ERROR naming those that could not be cancelled."""
        return self._bulk(jobIDList, Cancellable, "cancel")

    def cleanJob(self, jobIDList: Sequence[str] | str) -> dict[str, Any]:
        """Remove what the pilots left at the resource (intercede's purge): S_OK(), or S_ERROR naming failures."""
        answer = self._bulk(jobIDList, Purgeable, "purge")
        if answer["OK"]:
            for ref in [jobIDList] if isinstance(jobIDList, str) else jobIDList:
                self._mine.pop(ref.split(":::")[0], None)
        return answer

    def _bulk(self, refs: Sequence[str] | str, capability: type, op: str) -> dict[str, Any]:
        refs = [refs] if isinstance(refs, str) else list(refs)
        try:
            loop, backend = self._ensure()
            ids = self._ids(refs)
            if not isinstance(backend, capability):
                return _S_ERROR(f"CE {self.ceName}: the backend cannot {op}")
            method = getattr(backend, op)
            outcomes = loop.run(lambda: method(list(ids)), CALL_TIMEOUT)
        except (IntercedeError, ValueError) as exc:
            return _S_ERROR(f"CE {self.ceName}: {op} failed: {exc}")
        failed = [f"{ids[o.job_id]}: {o.detail}" for o in outcomes if not o.ok and o.job_id in ids]
        return _S_ERROR(f"CE {self.ceName}: {op} failed for {'; '.join(failed)}") if failed else _S_OK()

    def getCEStatus(self) -> dict[str, Any]:
        """S_OK() carrying ``SubmittedJobs``, ``RunningJobs``, ``WaitingJobs``: the resource's counts where it
        reports load, else those of the pilots this object submitted and has not cleaned."""
        try:
            loop, backend = self._ensure()
            if isinstance(backend, LoadReporter):
                reporter = backend
                return pilots.ce_status(loop.run(reporter.load, CALL_TIMEOUT), [], self.submittedJobs)
            statuses = list(self._statuses(list(self._mine)).values()) if self._mine else []
        except (IntercedeError, ValueError) as exc:
            return _S_ERROR(f"CE {self.ceName}: status failed: {exc}")
        return pilots.ce_status(None, statuses, self.submittedJobs)


async def _build(config: CEConfigBase) -> JobBackend:
    return build_backend(config)  # on the loop thread: the backend's locks and connections belong to that loop


def _proxy_text(proxy: Any) -> str | None:
    """PEM text of a DIRAC X509Chain (``dumpAllToString``), of PEM text, or None."""
    if not proxy:
        return None
    if isinstance(proxy, str):
        return proxy
    dumped = proxy.dumpAllToString()
    if isinstance(dumped, Mapping):
        if not dumped.get("OK"):
            raise InvalidSpecError(f"the proxy cannot be read: {dumped.get('Message')}")
        dumped = dumped["Value"]
    return dumped.decode() if isinstance(dumped, bytes) else str(dumped)



