"""CredentialKeeper: a CE actor's credentials, refreshed before they expire, independently of job traffic.

Contract: :meth:`CredentialKeeper.refresh` asks the provider for every credential the backend needs (each kind with
its margin: a credential that expires within it is asked for again), hands a changed one to the backend
(:meth:`~intercede.backends.credentials.CredentialConsumer.use_credential`: the HTCondor token file, the ARC
delegation, the SSH key) and records what is wrong (:attr:`problem`: missing or expired; "" when nothing is).
:meth:`run_forever` does that on its own schedule (at the next expiry-minus-margin, and at least every ``interval``
seconds so a renewed file is noticed), whether or not jobs are moving. A backend that uses no credentials has
nothing to keep. Secrets are never logged: log lines name the slot, the expiry and the fingerprint only.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from intercede.backends.credentials import (
    DEFAULT_MARGINS,
    Credential,
    CredentialConsumer,
    CredentialNeed,
    CredentialProvider,
    problem,
)

__all__ = ["CredentialKeeper"]

log = logging.getLogger(__name__)
#: After a provider failed: ask again this soon (seconds).
RETRY = 5.0


class CredentialKeeper:
    """The credentials of one CE's ``backend`` (see the module docstring)."""

    def __init__(self, name: str, backend: object, provider: CredentialProvider, *,
                 margins: Mapping[str, float] | None = None, interval: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.provider = provider
        self.margins = {**DEFAULT_MARGINS, **(margins or {})}
        self.interval = interval
        self._clock = clock
        self._consumer = backend if isinstance(backend, CredentialConsumer) else None
        self._needs: list[CredentialNeed] = list(self._consumer.credential_needs()) if self._consumer else []
        self._used: dict[str, Credential] = {}
        self._problems: dict[str, str] = {}
        self._refreshed = False
        self._lock = asyncio.Lock()
        self.refreshes = 0

    @property
    def problem(self) -> str:
        """What keeps this CE from authenticating ("" when nothing does), as of now: a credential in use that
        expired since the last round counts even while the provider is still busy making the next one."""
        problems = dict(self._problems)
        now = self._clock()
        for need in self._needs:
            if need.slot not in problems and (why := problem(self._used.get(need.slot), need, now)):
                problems[need.slot] = why
        return "; ".join(f"{slot}: {why}" for slot, why in sorted(problems.items()))

    def expiries(self) -> dict[str, float | None]:
        """Per slot, when the credential in use expires (None: it does not say)."""
        return {slot: c.expires_at for slot, c in sorted(self._used.items())}

    async def ready(self) -> None:
        """Refresh once if that never happened (before the first poll or call of the CE)."""
        if not self._refreshed:
            await self.refresh()

    async def refresh(self) -> float:
        """One round over the needs; returns the seconds until the next round is due."""
        async with self._lock:
            delay = self.interval
            for need in self._needs:
                delay = min(delay, await self._refresh(need))
            self._refreshed = True
            return max(delay, 0.5)

    async def _refresh(self, need: CredentialNeed) -> float:
        margin = self.margins.get(need.kind, 0.0)
        try:
            credential = await self.provider.get(need, min_valid=margin)
        except Exception as exc:  # noqa: BLE001 - a failing provider is a credential problem of this CE, not a crash
            self._problems[need.slot] = f"the credential provider failed ({type(exc).__name__})"
            log.warning("CE %s: the credential provider failed for %s (%s)", self.name, need.slot,
                        type(exc).__name__)
            return RETRY
        assert self._consumer is not None
        used = self._used.get(need.slot)
        if credential is not None and (used is None or used.fingerprint != credential.fingerprint):
            try:
                await self._consumer.use_credential(need, credential)
            except Exception as exc:  # noqa: BLE001 - e.g. an ARC delegation renewal that could not reach the CE
                self._problems[need.slot] = f"could not install the new {need.kind} ({type(exc).__name__}: {exc})"
                log.warning("CE %s: could not install %r: %s", self.name, credential, self._problems[need.slot])
                return RETRY
            self._used[need.slot] = credential
            self.refreshes += 1
            log.info("CE %s: %s now %r", self.name, need.slot, credential)
        now = self._clock()
        current = self._used.get(need.slot)
        why = problem(current, need, now)
        if why:
            if self._problems.get(need.slot) != why:
                log.warning("CE %s: %s", self.name, why)
            self._problems[need.slot] = why
            return self.interval
        if need.slot in self._problems:
            log.info("CE %s: %s is valid again", self.name, need.slot)
        self._problems.pop(need.slot, None)
        assert current is not None
        due = current.remaining(now) - margin
        # Within its margin and the provider had nothing newer: keep asking every interval until it expires.
        return due if due > 0 else min(self.interval, max(current.remaining(now), 1.0))

    async def run_forever(self) -> None:
        while True:
            delay = await self.refresh()
            await asyncio.sleep(min(delay, self.interval))
