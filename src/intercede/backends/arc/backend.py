"""ARCBackend: an ARC CE (A-REX) over its REST interface (docs/arc.md).

Capabilities: JobBackend, Cancellable, OutputRetriever (non-destructive until purge), Purgeable, LoadReporter,
Diagnosable, Taggable. Job ids are A-REX's own ids (one backend per CE).

* submit — one ``POST /jobs?action=new`` per chunk of copies (an ``ActivityDescriptions`` bundle), per-copy answers,
  or, for copies that share one description (untagged, differing only by their uploaded variables and secrets), one
  REST 1.1 ``instances=N`` request; then each created job's client-pushed inputs (input files, secrets, the
  launcher) are uploaded; A-REX holds the job in PREPARING until they are there. A submit is never re-sent: a
  connection lost mid-submit raises :class:`ConnectivityError` and the reconciler finds the job by its tag (the ADL
  ``Name``).
* status — ``POST /jobs?action=info`` per chunk: the REST state, exit code and error in one round trip, matched by id.
  A 404 means A-REX has no record: the last state seen (SUBMITTED if none) for ``grace`` seconds, then UNKNOWN.
* fetch — the session directory is listed down to every wanted file, hostile names refused per entry, sizes read
  with HEAD and bounded before anything is transferred, each file streamed to a temporary name, hashed, renamed.
* purge — kill what is still active, wait until A-REX is done with it, then clean; idempotent.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

from intercede.backends.capabilities import LoadReport
from intercede.backends.credentials import Credential, CredentialNeed, private_file
from intercede.errors import (
    AuthenticationError,
    CommandError,
    ConnectivityError,
    IntercedeError,
    OutputBoundError,
    TransferError,
    is_temporary,
)
from intercede.model import (
    JobSpec,
    JobState,
    JobStatus,
    ManifestEntry,
    Outcome,
    OutputBounds,
    OutputManifest,
    Submission,
    SubmitResult,
)

from . import _adl, _delegation, _parse
from ._rest import RestClient

__all__ = ["ARCBackend"]

log = logging.getLogger("intercede.backends.arc")
_ID = re.compile(r"[A-Za-z0-9]{6,64}\Z")
#: A-REX reads at most 1 MiB of a request body: ids per bulk call, descriptions per submit (each well under 8 KiB).
_CHUNK = 500
_SUBMIT_CHUNK = 100
_FIND_TRIES = 10  # find_by_tag: asks about a job listed without information (just created) this many times
_FIND_PAUSE = 0.5  # seconds between them


def _when(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except ValueError:
        return None


def _chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


class ARCBackend:
    """The ARC CE at ``endpoint`` (``https://host:port/arex``). At least one of ``proxy_file`` and ``token_file``;
    ``queue`` is used for specs that name none. Construction does no I/O; ``aclose`` is idempotent."""

    fetch_is_destructive = False

    def __init__(self, endpoint: str, *, name: str | None = None, ca_file: Path | None = None,
                 ca_dir: Path | None = None, proxy_file: Path | None = None, token_file: Path | None = None,
                 queue: str | None = None, grace: float = 120.0, timeout: float = 60.0,
                 connect_timeout: float = 10.0, purge_wait: float = 60.0, uploads: int = 8,
                 delegate: bool = True, instances: bool = True) -> None:
        self.name = name or f"arc-{endpoint}"
        self.rest = RestClient(endpoint, ca_file=ca_file, ca_dir=ca_dir, proxy_file=proxy_file,
                               token_file=token_file, timeout=timeout, connect_timeout=connect_timeout,
                               max_connections=uploads)
        self.queue = queue
        self.grace = grace
        self.purge_wait = purge_wait
        self._uploads = asyncio.Semaphore(uploads)
        self._last_seen: dict[str, JobStatus] = {}
        self._missing_since: dict[str, float] = {}
        self._purged: set[str] = set()
        #: delegate a credential to the CE for the jobs: the proxy (X.509), else the token (REST 1.1, ARC 7)
        self.delegate = delegate
        #: identical copies made with one REST 1.1 ``instances=N`` request (False: always one description per copy)
        self.instances = instances
        self._delegation: tuple[str, datetime] | None = None  # (id at the CE, when it expires)
        self._delegated_token = ""  # the digest of the token a token delegation holds
        self._delegating = asyncio.Lock()
        self._delegation_checked = 0.0

    def __repr__(self) -> str:
        return f"ARCBackend({self.name!r}, {self.rest.endpoint!r})"

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.rest.aclose()

    # -- submit --------------------------------------------------------------------------------------------------

    async def submit(self, spec: JobSpec) -> SubmitResult:
        """Per-copy results. Raises only when credentials are refused or the CE cannot be reached (then no copy's
        fate is known: the caller looks the copies up by tag before ever submitting again)."""
        n = len(spec.copies)
        if self.queue is not None and spec.resources.queue is None:
            spec = spec.model_copy(update={"resources": spec.resources.model_copy(update={"queue": self.queue})})
        why = _adl.refusal(spec) or next((f"input file {f.source} does not exist" for f in spec.input_files
                                          if not f.source.is_file()), None)
        if why is not None:
            return SubmitResult(submissions=[Submission(copy_index=i, tag=spec.copy_tag(i), error=why)
                                             for i in range(n)])
        plans = _adl.plans(spec)
        params = {"action": "new"}
        delegation = await self.delegation()
        await self.rest.negotiate()
        if delegation is not None and self.rest.version != "1.0":  # REST 1.0 has no way to name it per request
            params["delegation_id"] = delegation
        one = _adl.shared(plans) if self.instances and self.rest.version != "1.0" else None
        if one is not None:  # identical copies: one description, REST 1.1 makes the N jobs
            entries = await self._create(one, n, params | {"instances": str(n)}, _parse.instances)
        else:
            entries = []
            for chunk in _chunks(range(n), _SUBMIT_CHUNK):
                entries += await self._create(_adl.bundle([plans[i].xml for i in chunk]), len(chunk), params,
                                              _parse.submitted)
        subs = await asyncio.gather(*(self._after_create(spec, i, plans[i], e) for i, e in enumerate(entries)))
        return SubmitResult(submissions=list(subs))

    async def _create(self, body: str, count: int, params: dict[str, str],
                      parse: Callable[[Mapping[str, Any], int], list[_parse.Entry]]) -> list[_parse.Entry]:
        """One ``POST /jobs?action=new`` for ``count`` copies; one entry per copy, in order."""
        answer = await self.rest.call("POST", "jobs", params=params, content=body.encode(),
                                      headers={"Content-Type": "application/xml"}, creates=True, expect_ok=False)
        if answer.status_code not in (200, 201, 202):
            # refused before any job was made (a malformed request, the CE's own limit: "No more jobs allowed")
            text = answer.reason_phrase or answer.text[:200]
            return [_parse.Entry(answer.status_code, text, None) for _ in range(count)]
        try:
            return parse(answer.json(), count)
        except ValueError as exc:
            raise ConnectivityError(f"{self.name}: {exc}; the jobs may have been created: find them by "
                                    "their tags") from None

    async def _after_create(self, spec: JobSpec, index: int, plan: _adl.Plan, entry: _parse.Entry) -> Submission:
        tag = spec.copy_tag(index)
        if not entry.ok or entry.job_id is None:
            refusal = _refusal(entry)
            return Submission(copy_index=index, tag=tag, error=str(refusal), temporary=is_temporary(refusal))
        job_id = entry.job_id
        try:
            for path, data in plan.uploads.items():
                await self._put(job_id, path, data)
            for path, source in plan.files.items():
                await self._put_file(job_id, path, Path(source))
        except (IntercedeError, OSError) as exc:  # the job would wait for inputs that never come: remove it
            log.warning("%s: uploading the inputs of %s failed (%s); removing the job", self.name, job_id,
                        type(exc).__name__)
            await self._discard(job_id)
            return Submission(copy_index=index, tag=tag, error=f"uploading the inputs of {job_id} failed: {exc}",
                              temporary=is_temporary(exc))
        self._last_seen[job_id] = JobStatus(job_id=job_id, state=JobState.SUBMITTED,
                                            native_state=str(entry.body.get("state", "")))
        return Submission(copy_index=index, tag=tag, job_id=job_id)

    async def _put(self, job_id: str, path: str, data: bytes) -> None:
        async with self._uploads:
            answer = await self.rest.call("PUT", _session(job_id, path), content=data,
                                          headers={"Content-Type": "application/octet-stream"}, expect_ok=False)
        if not answer.is_success:
            raise TransferError(f"A-REX refused the upload of {path} to {job_id}: {answer.status_code} "
                                f"{answer.reason_phrase}")

    async def _put_file(self, job_id: str, path: str, source: Path) -> None:
        size = (await asyncio.to_thread(os.stat, source)).st_size

        async def chunks() -> AsyncIterator[bytes]:
            with source.open("rb") as f:
                while block := await asyncio.to_thread(f.read, 1 << 20):
                    yield block

        async with self._uploads:
            answer = await self.rest.call("PUT", _session(job_id, path), content=chunks(),  # type: ignore[arg-type]
                                          headers={"Content-Type": "application/octet-stream",
                                                   "Content-Length": str(size)}, expect_ok=False)
        if not answer.is_success:
            raise TransferError(f"A-REX refused the upload of {path} to {job_id}: {answer.status_code} "
                                f"{answer.reason_phrase}")

    async def _discard(self, job_id: str) -> None:
        for action in ("kill", "clean"):
            try:
                await self._bulk(action, [job_id])
            except Exception as exc:  # noqa: BLE001 - best effort; A-REX times out jobs whose inputs never arrive
                log.warning("%s: %s of %s failed (%s)", self.name, action, job_id, type(exc).__name__)

    # -- delegation ------------------------------------------------------------------------------------------------

    async def delegation(self) -> str | None:
        """The id of this backend's delegation at the CE, which its submits name (None with ``delegate=False``, or
        with only a token on a CE without token delegation: REST 1.0, ARC 6).

        With a proxy, an X.509 delegation: A-REX's CSR signed with the proxy. With only a token, on REST 1.1, a
        token delegation (``action=new&type=jwt``, the token in ``X-Token-Delegation``); A-REX has no renew for
        those, so when the token file holds a different token a new delegation is made with it. Either is created
        once and reused; checked to exist (``action=get``, at most once a minute) and recreated when A-REX no longer
        knows it (404: A-REX accepts an unknown ``delegation_id`` silently); an X.509 one is replaced an hour
        before it expires."""
        if not self.delegate:
            return None
        async with self._delegating:
            await self.rest.negotiate()
            token = None
            if self.rest.proxy_file is None:
                if not await self._token_delegation():
                    return None
                token = self.rest.token()
                if self._delegation is not None and _digest(token) != self._delegated_token:
                    log.info("%s: the token changed; delegating the new one (A-REX cannot renew a token "
                             "delegation)", self.name)
                    self._delegation = None
            if self._delegation is not None:
                known, expires = self._delegation
                fresh = expires - datetime.now(UTC) > timedelta(hours=1)
                if fresh and time.monotonic() - self._delegation_checked < 60:
                    return known
                if fresh:
                    answer = await self.rest.call("POST", f"delegations/{known}", params={"action": "get"},
                                                  expect_ok=False)
                    if answer.is_success:
                        self._delegation_checked = time.monotonic()
                        return known
                    log.info("%s: delegation %s is gone at the CE (%s); creating a new one", self.name, known,
                             answer.status_code)
                self._delegation = None
            self._delegation = await (self._delegate() if token is None else self._delegate_token(token))
            self._delegation_checked = time.monotonic()
            return self._delegation[0]

    async def _token_delegation(self) -> bool:
        """Whether the CE takes token delegations: REST 1.1 (ARC 7). ARC 6.17 (REST 1.0) ignores ``type=jwt`` and
        answers an X.509 CSR (checked in ``tests/arc/test_token_delegation.py``)."""
        return await self.rest.negotiate() != "1.0"

    async def _delegate_token(self, token: str) -> tuple[str, datetime]:
        answer = await self.rest.call("POST", "delegations", params={"action": "new", "type": "jwt"},
                                      headers={"X-Token-Delegation": f"Bearer {token}"})
        made = answer.headers.get("Location", "").rstrip("/").rpartition("/")[2]
        if answer.status_code != 201 or not made:
            raise ConnectivityError(f"{self.name}: A-REX did not make a token delegation ({answer.status_code} "
                                    f"{answer.reason_phrase})")
        self._delegated_token = _digest(token)
        # valid as long as the token; re-made when the token changes, not by time (re-delegating it cannot help)
        log.debug("%s: token delegation %s created", self.name, made)
        return made, datetime.max.replace(tzinfo=UTC)

    # -- credentials (a CredentialConsumer; the default provider reads proxy_file and token_file) -------------------

    def credential_needs(self) -> list[CredentialNeed]:
        needs = []
        if self.rest.proxy_file is not None:
            needs.append(CredentialNeed("proxy", "proxy", None, Path(self.rest.proxy_file)))
        if self.rest.token_file is not None:
            needs.append(CredentialNeed("token", "token", self.rest.endpoint, Path(self.rest.token_file)))
        return needs

    async def use_credential(self, need: CredentialNeed, credential: Credential) -> None:
        """A renewed proxy renews the X.509 delegation in place (``action=renew``: the jobs that use it keep a
        valid proxy, DIRAC #7908). A new token is delegated at once where the token is what is delegated (a new
        delegation: A-REX has no renew for tokens), so the next submits name it. Either is first written to its
        file if the provider did not read it from there: the REST client reads the token file at every request and
        reloads the proxy file when it changes."""
        where = {"token": self.rest.token_file, "proxy": self.rest.proxy_file}.get(need.slot)
        if where is not None:
            path = Path(where)
            current = await asyncio.to_thread(lambda: path.read_bytes() if path.exists() else b"")
            if current.strip() != credential.secret.strip():
                await asyncio.to_thread(private_file, path, credential.secret)
        if not self.delegate:
            return
        async with self._delegating:
            if self._delegation is None:
                return  # made at the next submit, from the new credential
            if need.slot == "proxy" and self.rest.proxy_file is not None:
                self._delegation = await self._delegate(renew=self._delegation[0], proxy=credential.secret)
            elif need.slot == "token" and self.rest.proxy_file is None and await self._token_delegation():
                self._delegation = await self._delegate_token(credential.text().strip())
            self._delegation_checked = time.monotonic()

    async def _delegate(self, renew: str | None = None, proxy: bytes | None = None) -> tuple[str, datetime]:
        if renew is not None:
            answer = await self.rest.call("POST", f"delegations/{renew}", params={"action": "renew"})
            made = renew
        else:
            answer = await self.rest.call("POST", "delegations", params={"action": "new"})
            made = answer.headers.get("Location", "").rstrip("/").rpartition("/")[2]
        if not made:
            raise ConnectivityError(f"{self.name}: A-REX made a delegation but did not say where")
        if proxy is None:
            proxy = await asyncio.to_thread(Path(self.rest.proxy_file or "").read_bytes)
        try:
            signed = _delegation.sign_request(answer.content, proxy)
        except ValueError as exc:
            raise AuthenticationError(f"{self.name}: cannot sign A-REX's delegation request with the proxy: "
                                      f"{exc}") from None
        await self.rest.call("PUT", f"delegations/{made}", content=signed,
                             headers={"Content-Type": "application/x-pem-file"})
        expires = _delegation.not_after(signed)
        log.debug("%s: delegation %s %s, valid until %s", self.name, made, "renewed" if renew else "created",
                  expires.isoformat())
        return made, expires

    # -- status --------------------------------------------------------------------------------------------------

    async def _bulk(self, action: str, job_ids: Sequence[str]) -> dict[str, _parse.Entry]:
        found: dict[str, _parse.Entry] = {}
        for chunk in _chunks(list(dict.fromkeys(job_ids)), _CHUNK):
            answer = await self.rest.call("POST", "jobs", params={"action": action},
                                          json={"job": [{"id": i} for i in chunk]})
            found.update(_parse.bulk(answer.json()))
        return found

    async def _activities(self, job_ids: Sequence[str]) -> tuple[dict[str, _parse.Entry], dict[str, _parse.Activity]]:
        entries = await self._bulk("info", job_ids)
        acts = {i: a for i, e in entries.items() if e.ok and (a := _parse.activity(e)) is not None and a.state}
        return entries, acts

    async def status(self, job_ids: Sequence[str]) -> list[JobStatus]:
        """One JobStatus per id, in order (one ``info`` round trip per chunk of ids)."""
        valid = [i for i in job_ids if _ID.match(i)]
        entries, acts = await self._activities(valid) if valid else ({}, {})
        return [self._resolve(i, entries.get(i), acts.get(i)) for i in job_ids]

    def _resolve(self, job_id: str, entry: _parse.Entry | None, act: _parse.Activity | None) -> JobStatus:
        if not _ID.match(job_id):
            return JobStatus(job_id=job_id, state=JobState.UNKNOWN, reason="not an ARC job id")
        if act is not None:
            self._missing_since.pop(job_id, None)
            status = _parse.job_status(act, self._last_seen.get(job_id)).model_copy(update={
                "submitted_at": _when(act.submitted), "started_at": _when(act.started),
                "finished_at": _when(act.ended)})
            self._last_seen[job_id] = status
            return status
        if job_id in self._purged:
            return JobStatus(job_id=job_id, state=JobState.UNKNOWN, reason="purged: A-REX has no record of it")
        if entry is not None and entry.code != 404:  # known, but no state yet (just created) or a transient answer
            return self._last_seen.get(job_id) or JobStatus(job_id=job_id, state=JobState.SUBMITTED,
                                                            reason=f"no state yet ({entry.code} {entry.reason})")
        since = self._missing_since.setdefault(job_id, time.monotonic())
        if time.monotonic() - since < self.grace:
            return self._last_seen.get(job_id) or JobStatus(job_id=job_id, state=JobState.SUBMITTED,
                                                            reason="not known to A-REX (yet)")
        return JobStatus(job_id=job_id, state=JobState.UNKNOWN,
                         reason=f"A-REX has had no record of it for {self.grace:.0f} s")

    # -- cancel, purge -------------------------------------------------------------------------------------------

    async def cancel(self, job_ids: Sequence[str]) -> list[Outcome]:
        valid = [i for i in job_ids if _ID.match(i)]
        entries = await self._bulk("kill", valid) if valid else {}
        return [self._outcome(i, entries.get(i)) for i in job_ids]

    @staticmethod
    def _outcome(job_id: str, entry: _parse.Entry | None, gone_ok: bool = False) -> Outcome:
        if not _ID.match(job_id):
            return Outcome(job_id=job_id, ok=False, detail="not an ARC job id")
        if entry is None:
            return Outcome(job_id=job_id, ok=False, detail="A-REX did not answer for this id", temporary=True)
        if entry.ok:
            return Outcome(job_id=job_id, ok=True, detail=entry.reason)
        if entry.code == 404:
            if gone_ok:
                return Outcome(job_id=job_id, ok=True, detail="A-REX has no record of it: nothing left to remove")
            return Outcome(job_id=job_id, ok=False, detail="A-REX has no record of this job")
        return Outcome(job_id=job_id, ok=False, detail=f"{entry.code} {entry.reason}",
                       temporary=entry.code >= 500)

    async def purge(self, job_ids: Sequence[str]) -> list[Outcome]:
        """Kill what is active, wait (up to ``purge_wait`` s) until A-REX is done with it, then clean."""
        valid = [i for i in job_ids if _ID.match(i)]
        if not valid:
            return [self._outcome(i, None) for i in job_ids]
        _, acts = await self._activities(valid)
        active = [i for i, a in acts.items() if a.state not in _parse.FINAL]
        if active:
            await self._bulk("kill", active)
            deadline = time.monotonic() + self.purge_wait
            while active and time.monotonic() < deadline:
                await asyncio.sleep(1.0)
                _, now = await self._activities(active)
                active = [i for i in active if i in now and now[i].state not in _parse.FINAL]
        entries = await self._bulk("clean", [i for i in valid if i not in active])
        out = []
        for i in job_ids:
            if i in active:
                out.append(Outcome(job_id=i, ok=False, temporary=True,
                                   detail=f"still being killed after {self.purge_wait:.0f} s; purge again later"))
                continue
            outcome = self._outcome(i, entries.get(i), gone_ok=True)
            if outcome.ok:
                self._purged.add(i)
                self._last_seen.pop(i, None)
            out.append(outcome)
        return out

    # -- fetch, peek ---------------------------------------------------------------------------------------------

    async def _list(self, job_id: str, directory: str) -> _parse.Listing | None:
        path = _session(job_id, directory)
        answer = await self.rest.call("GET", path, expect_ok=False)
        if answer.status_code == 404:
            return None
        if not answer.is_success:
            raise TransferError(f"listing {directory or 'the session'} of {job_id}: {answer.status_code} "
                                f"{answer.reason_phrase}")
        return _parse.listing(answer.json())

    async def fetch(self, job_id: str, spec: JobSpec, destination: Path,
                    bounds: OutputBounds | None = None) -> OutputManifest:
        """Every wanted file the session listing names as a file, within ``bounds``; the others refused per file
        with the reason (``manifest.refused``) while the rest still arrive: a name A-REX cannot keep (a control
        character), a name the listing does not show although it answers (a symbolic link: A-REX would follow it
        out of the session directory), hostile names in the listing, files past the count bound (in declared
        order, stdout and stderr first) and files bigger than what is left of the byte bound (sizes by ``HEAD``,
        before transfer; a file that grows past it while streamed is dropped and refused)."""
        bounds = bounds or OutputBounds()
        if not _ID.match(job_id):
            raise TransferError(f"{job_id!r} is not an ARC job id")
        wanted = {spec.stdout: spec.stdout, spec.stderr: spec.stderr} | {o.name: o.target for o in spec.output_files}
        top = await self._list(job_id, "")
        if top is None:
            raise TransferError(f"the outputs of {job_id} are gone: A-REX has no session for it (purged?)")
        listings: dict[str, _parse.Listing | None] = {"": top}
        refused: dict[str, str] = {}
        present: list[str] = []
        missing: list[str] = []
        for name in wanted:
            if (why := _parse.unkeepable(name)) is not None:
                refused[name] = why
                continue
            parent = str(PurePosixPath(name).parent)
            parent = "" if parent == "." else parent
            where = await self._walk(job_id, parent, listings)
            leaf = PurePosixPath(name).name
            if where is None:
                missing.append(name)
            elif leaf in where.files:
                present.append(name)
            elif leaf in where.dirs:
                refused[name] = "is a directory, not a regular file"
            elif await self._answers(job_id, name):
                refused[name] = ("not listed by A-REX although it answers: a symbolic link or a special file "
                                 "(A-REX would follow a link out of the session directory), not fetched")
            else:
                missing.append(name)
        for directory, found in listings.items():
            for bad, why in (found.refused.items() if found else ()):
                refused[f"{directory}/{bad}" if directory else bad] = f"in the CE's listing: {why}"
        for name in present[bounds.max_files:]:
            refused[name] = f"over the bound of {bounds.max_files} output files (before transfer)"
        present = present[:bounds.max_files]
        sizes = {name: await self._size(job_id, name) for name in present}
        root = await asyncio.to_thread(_prepare, destination)
        files: list[ManifestEntry] = []
        budget = bounds.max_bytes
        for name in present:
            if sizes[name] > budget:
                refused[name] = (f"{sizes[name]} bytes, over the byte bound of {bounds.max_bytes} ({budget} left "
                                 "for it; before transfer)")
                continue
            try:
                entry = await asyncio.wait_for(self._download(job_id, name, root, wanted[name], budget),
                                               bounds.transfer_timeout)
            except OutputBoundError as exc:
                refused[name] = str(exc)
                continue
            budget -= entry.size
            files.append(entry)
        return OutputManifest(job_id=job_id, destination=root, files=files, missing=missing, refused=refused)

    async def _answers(self, job_id: str, name: str) -> bool:
        """Whether A-REX serves ``name`` (``HEAD``) although its listing does not show it."""
        answer = await self.rest.call("HEAD", _session(job_id, name), expect_ok=False)
        return answer.is_success

    async def _walk(self, job_id: str, directory: str, listings: dict[str, _parse.Listing | None]
                    ) -> _parse.Listing | None:
        """The listing of ``directory``, reached one component at a time through listings that name it."""
        if directory in listings:
            return listings[directory]
        parent = str(PurePosixPath(directory).parent)
        parent = "" if parent == "." else parent
        above = await self._walk(job_id, parent, listings)
        found = None
        if above is not None and PurePosixPath(directory).name in above.dirs:
            found = await self._list(job_id, directory)
        listings[directory] = found
        return found

    async def _size(self, job_id: str, name: str) -> int:
        answer = await self.rest.call("HEAD", _session(job_id, name), expect_ok=False)
        if not answer.is_success:
            raise TransferError(f"{name} of {job_id}: {answer.status_code} {answer.reason_phrase}")
        return int(answer.headers.get("Content-Length", "0"))

    async def _download(self, job_id: str, name: str, root: Path, target: str, budget: int) -> ManifestEntry:
        local = await asyncio.to_thread(_local_path, root, target)
        part = local.with_name(f".{local.name}.part")
        digest = hashlib.sha256()
        size = 0
        try:
            async with self.rest.stream(_session(job_id, name)) as answer:
                if not answer.is_success:
                    raise TransferError(f"{name} of {job_id}: {answer.status_code} {answer.reason_phrase}")
                with part.open("wb") as out:
                    async for block in answer.aiter_bytes(1 << 20):
                        size += len(block)
                        if size > budget:
                            raise OutputBoundError(f"grew past the {budget} bytes left of the byte bound while "
                                                   "it was streamed: dropped")
                        digest.update(block)
                        await asyncio.to_thread(out.write, block)
            os.replace(part, local)
        finally:
            part.unlink(missing_ok=True)
        return ManifestEntry(name=target, size=size, sha256=digest.hexdigest())

    async def peek(self, job_id: str, name: str, max_bytes: int = 65536) -> bytes:
        """The last ``max_bytes`` of a session file of the job, or of one of its A-REX diagnostics with
        ``diagnose/<file>`` (errors, failed, status, description, ...). A file that is not there is a
        :class:`CommandError`."""
        if not _ID.match(job_id):
            raise CommandError(f"{job_id!r} is not an ARC job id")
        path = PurePosixPath(name)
        if path.is_absolute() or ".." in path.parts or not name or "\0" in name:
            raise OutputBoundError(f"{name!r} is not a relative path inside the job's session directory")
        if name.startswith("diagnose/"):
            where = f"jobs/{job_id}/diagnose/{quote(name.removeprefix('diagnose/'), safe='')}"
        else:  # only what the listing names as a file: A-REX would follow a symbolic link out of the session
            parent = str(path.parent)
            listings: dict[str, _parse.Listing | None] = {"": await self._list(job_id, "")}
            found = await self._walk(job_id, "" if parent == "." else parent, listings)
            if found is None or path.name not in found.files:
                raise CommandError(f"{name} of {job_id}: not a file the session listing names (missing, a "
                                   "directory, or a symbolic link A-REX would follow)")
            where = _session(job_id, name)
        tail = bytearray()
        async with self.rest.stream(where) as answer:
            if not answer.is_success:
                raise CommandError(f"{name} of {job_id}: {answer.status_code} {answer.reason_phrase}")
            async for block in answer.aiter_bytes():
                tail += block
                del tail[:-max_bytes]
        return bytes(tail)

    # -- tags, load ----------------------------------------------------------------------------------------------

    async def find_by_tag(self, tags: Sequence[str]) -> dict[str, list[str]]:
        """Every job of this user at the CE whose ADL ``Name`` is one of ``tags`` (``GET /jobs`` + ``info``).

        A job A-REX lists but has no information for yet (just created: its description is still being accepted)
        could carry one of the tags, so it is asked about again (up to :data:`_FIND_TRIES` times,
        :data:`_FIND_PAUSE` s apart); if it is still unknown, :class:`ConnectivityError` (temporary): the lookup
        never answers "none" while a job it cannot read yet may be the one looked for."""
        answer = await self.rest.call("GET", "jobs")
        listed = answer.json().get("job")
        pending = [e["id"] for e in listed if isinstance(e, dict) and "id" in e] if isinstance(listed, list) else []
        found: dict[str, list[str]] = {t: [] for t in tags}
        for attempt in range(_FIND_TRIES):
            if not pending:
                break
            if attempt:
                await asyncio.sleep(_FIND_PAUSE)
            entries = await self._bulk("info", pending)
            unread = []
            for job_id in pending:
                entry = entries.get(job_id)
                act = _parse.activity(entry) if entry is not None and entry.ok else None
                if act is None or not act.written:
                    unread.append(job_id)
                elif act.name in found:
                    found[act.name].append(job_id)
            pending = unread
        if pending:
            raise ConnectivityError(f"{self.name}: A-REX lists {len(pending)} job(s) it has no information for yet "
                                    f"({', '.join(pending[:5])}): which tags they carry is not known, ask again later")
        return found

    async def version(self) -> str:
        """What the CE speaks (``REST 1.1``), learned through an authenticated call that changes nothing: listing
        this identity's delegations. ``intercede ce check`` uses it as its authenticate step; refused or expired
        credentials raise :class:`AuthenticationError`."""
        version = await self.rest.negotiate()
        await self.rest.call("GET", "delegations")
        return f"REST {version}"

    async def load(self) -> LoadReport:
        answer = await self.rest.call("GET", "info")
        if not answer.content.strip():  # right after A-REX starts, before its info provider has run
            raise ConnectivityError(f"{self.name}: the CE has not published its GLUE2 information yet")
        return _parse.load(answer.json())


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _refusal(entry: _parse.Entry) -> IntercedeError:
    """The error of a copy A-REX did not create. Its job limit (``500 No more jobs allowed`` once ``maxjobs``'
    total is reached, ``... exceeds allowed limit``) and a 503 mean the CE is full or busy now: retrying later may
    succeed (a :class:`ConnectivityError`, temporary); anything else is a refusal of this description."""
    why = entry.reason.lower()
    text = f"A-REX refused the job: {entry.reason} ({entry.code})"
    if entry.code in (0, 503) or "no more jobs" in why or "allowed limit" in why:
        return ConnectivityError(f"{text}: the CE is at its job limit or busy; retry later")
    return CommandError(text)


def _session(job_id: str, path: str) -> str:
    """The REST path of ``path`` in the job's session directory, every component percent-encoded (a ``;``, ``&``,
    ``#`` or ``?`` in a file name must not reach A-REX as URL syntax)."""
    return f"jobs/{job_id}/session" + "".join(f"/{quote(part, safe='')}" for part in path.split("/") if part)


def _prepare(destination: Path) -> Path:
    destination.mkdir(parents=True, exist_ok=True)
    return destination.resolve()


def _local_path(root: Path, target: str) -> Path:
    local = root / target
    local.parent.mkdir(parents=True, exist_ok=True)
    if not local.parent.resolve().is_relative_to(root):
        raise OutputBoundError(f"output {target!r} would be written outside {root} (a directory there is a symlink)")
    if local.is_symlink():
        raise OutputBoundError(f"refusing to write output {target!r} through the symlink {local}")
    return local
