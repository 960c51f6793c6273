"""Credentials as a lifecycle: who hands them out (:class:`CredentialProvider`), who uses them
(:class:`CredentialConsumer`), and when one is due for a refresh.

Contract:

* A :class:`Credential` is a bearer token (``kind="token"``, for an ``audience``), an X.509 proxy (``"proxy"``, PEM:
  certificate, key, chain) or an SSH private key (``"ssh-key"``), with the time it expires (a JWT's ``exp``, a proxy's
  earliest ``notAfter``; None when it does not say). Its secret never appears in a ``repr``, ``str`` or log line: only
  its kind, audience, expiry and a short fingerprint (a hash prefix, enough to tell two apart) do.
* A backend that uses credentials is a :class:`CredentialConsumer`: it names what it needs
  (:meth:`~CredentialConsumer.credential_needs`, with the file its configuration names, if any) and takes a fresh one
  with :meth:`~CredentialConsumer.use_credential` (it writes the HTCondor token file, renews the ARC delegation,
  reloads the SSH key). ``use_credential`` is called only when the credential changed.
* A :class:`CredentialProvider` answers :meth:`~CredentialProvider.get` with the current credential for a need,
  valid for at least ``min_valid`` seconds if it can (a token service mints a new one then), or the best it has, or
  None when it has none. The default, :class:`FileCredentialProvider`, reads the files the backend's configuration
  names (``token_file``, ``proxy_file``, ...) and notices when they change (size, mtime, content): whoever renews the
  files (a cron job, ``htgettoken``, ``voms-proxy-init``) renews intercede's credentials. A WMS plugs its own as an
  async callable (:class:`CallableCredentialProvider`) or by naming, in a CE's ``credentials`` option, an entry point
  of the group ``intercede.credentials`` (or a ``module:attribute``) that makes one from ``credential_options``.
* Refresh margins are per kind (:data:`DEFAULT_MARGINS`): a credential that expires within its margin is asked for
  again; an expired one makes the CE report an authentication problem (:func:`problem`).

Errors: a provider raises :class:`~intercede.errors.AuthenticationError` when it cannot hand out a credential at all
(bad configuration); a missing file is None (no credential yet), so the CE reports the problem and recovers when
the file appears.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from intercede.errors import AuthenticationError, InvalidSpecError

__all__ = [
    "DEFAULT_MARGINS",
    "ENTRY_POINTS",
    "CallableCredentialProvider",
    "Credential",
    "CredentialConsumer",
    "CredentialKind",
    "CredentialNeed",
    "CredentialProvider",
    "FileCredentialProvider",
    "credential_from_bytes",
    "load_provider",
    "private_file",
    "problem",
    "proxy_expiry",
    "token_expiry",
]

CredentialKind = Literal["token", "proxy", "ssh-key"]
#: Entry point group of pluggable providers: ``name = "package.module:factory"``, ``factory(options) -> provider``.
ENTRY_POINTS = "intercede.credentials"
#: Seconds before expiry at which a credential is refreshed, per kind: a token lives minutes to hours, a proxy hours
#: to days (and an ARC delegation made from it must outlive the jobs' next stage-out).
DEFAULT_MARGINS: Mapping[str, float] = {"token": 120.0, "proxy": 3600.0, "ssh-key": 0.0}


@dataclass(frozen=True, repr=False)
class Credential:
    """One credential; its ``secret`` is never shown (see the module docstring)."""

    kind: CredentialKind
    secret: bytes = field(compare=True)
    expires_at: float | None = None
    audience: str | None = None

    @property
    def fingerprint(self) -> str:
        """A short hash of the secret: tells two credentials apart without revealing either."""
        return hashlib.sha256(self.secret).hexdigest()[:12]

    def text(self) -> str:
        return self.secret.decode()

    def remaining(self, now: float) -> float:
        """Seconds until it expires (``inf`` when it does not say)."""
        return float("inf") if self.expires_at is None else self.expires_at - now

    def __repr__(self) -> str:
        until = "no expiry" if self.expires_at is None else time.strftime(
            "until %Y-%m-%dT%H:%M:%SZ", time.gmtime(self.expires_at))
        aud = f" for {self.audience}" if self.audience else ""
        return f"<Credential {self.kind}{aud} {until} #{self.fingerprint}>"

    __str__ = __repr__


@dataclass(frozen=True)
class CredentialNeed:
    """What a backend needs: a ``kind`` (for ``audience``) in its ``slot`` (the backend's name for the place it goes:
    ``"scitoken"``, ``"idtoken"``, ``"proxy"``, ...), and the file its configuration names, if any."""

    slot: str
    kind: CredentialKind
    audience: str | None = None
    file: Path | None = None


@runtime_checkable
class CredentialConsumer(Protocol):
    """A backend that uses credentials (see the module docstring)."""

    def credential_needs(self) -> Sequence[CredentialNeed]: ...

    async def use_credential(self, need: CredentialNeed, credential: Credential) -> None: ...


@runtime_checkable
class CredentialProvider(Protocol):
    """Hands out credentials (see the module docstring)."""

    async def get(self, need: CredentialNeed, *, min_valid: float) -> Credential | None: ...


# -- expiry ---------------------------------------------------------------------------------------------------------


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT (unverified: only used to schedule a refresh), or None (not a JWT, no claim)."""
    try:
        payload = token.strip().split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) else None


def proxy_expiry(pem: bytes) -> float | None:
    """The earliest ``notAfter`` of the certificates in a proxy file, or None (no certificate, or ``cryptography``
    is not installed: it comes with the ``arc`` extra)."""
    try:
        from cryptography import x509
    except ImportError:  # pragma: no cover - the arc extra is missing
        return None
    try:
        certs = x509.load_pem_x509_certificates(pem)
    except ValueError:
        return None
    return min(c.not_valid_after_utc.timestamp() for c in certs) if certs else None


def credential_from_bytes(kind: CredentialKind, secret: bytes, audience: str | None = None) -> Credential:
    """A credential with its expiry read from the secret itself."""
    if kind == "token":
        expires = token_expiry(secret.decode(errors="replace"))
    elif kind == "proxy":
        expires = proxy_expiry(secret)
    else:
        expires = None
    return Credential(kind, secret, expires, audience)


def problem(credential: Credential | None, need: CredentialNeed, now: float) -> str:
    """Why a CE cannot authenticate with ``credential`` right now ("" when it can): missing or expired. Never shows
    the secret."""
    where = f" ({need.file})" if need.file else ""
    if credential is None:
        return f"no {need.kind} credential{where}"
    if credential.remaining(now) <= 0:
        assert credential.expires_at is not None
        at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(credential.expires_at))
        return f"the {need.kind}{where} expired at {at}"
    return ""


# -- providers ------------------------------------------------------------------------------------------------------


class FileCredentialProvider:
    """The default: each need's ``file``, re-read when its size, mtime or content changed; None when it is missing."""

    def __init__(self) -> None:
        self._seen: dict[Path, tuple[tuple[int, int, int], Credential]] = {}

    async def get(self, need: CredentialNeed, *, min_valid: float) -> Credential | None:
        if need.file is None:
            return None
        return await asyncio.to_thread(self._read, need)

    def _read(self, need: CredentialNeed) -> Credential | None:
        assert need.file is not None
        try:
            st = need.file.stat()
        except OSError:
            return None
        stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
        seen = self._seen.get(need.file)
        if seen is not None and seen[0] == stamp:
            return seen[1]
        try:
            secret = need.file.read_bytes()
        except OSError:
            return None
        if need.kind == "token":
            secret = secret.strip()
        credential = credential_from_bytes(need.kind, secret, need.audience)
        self._seen[need.file] = (stamp, credential)
        return credential

    def __repr__(self) -> str:
        return "<FileCredentialProvider>"


ProviderFunction = Callable[[CredentialNeed], Awaitable["Credential | None"]]


class CallableCredentialProvider:
    """A WMS's own source of credentials as an async callable ``fn(need) -> Credential | None`` (a DiracX token
    request, say). The last answer per need is kept while it stays valid for ``min_valid``: ``fn`` runs only when a
    credential is missing or due for a refresh."""

    def __init__(self, fn: ProviderFunction) -> None:
        self._fn = fn
        self._last: dict[str, Credential] = {}

    async def get(self, need: CredentialNeed, *, min_valid: float) -> Credential | None:
        last = self._last.get(need.slot)
        if last is not None and last.remaining(time.time()) > min_valid:
            return last
        fresh = await self._fn(need)
        if fresh is not None:
            self._last[need.slot] = fresh
        return fresh or last

    def __repr__(self) -> str:
        return f"<CallableCredentialProvider {getattr(self._fn, '__qualname__', type(self._fn).__name__)}>"


def load_provider(name: str | None, options: Mapping[str, Any] | None = None) -> CredentialProvider:
    """The provider a CE's configuration names: None is the default (files); otherwise an entry point of
    :data:`ENTRY_POINTS` or a ``module:attribute``, called with ``options`` to make the provider (a plain async
    function is wrapped in :class:`CallableCredentialProvider`). Unknown names raise
    :class:`~intercede.errors.InvalidSpecError`."""
    if name is None:
        return FileCredentialProvider()
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINTS)}
    if name in found:
        factory = found[name].load()
    elif ":" in name:
        module, _, attr = name.partition(":")
        try:
            factory = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise InvalidSpecError(f"credential provider {name!r} cannot be loaded: {exc}") from exc
    else:
        raise InvalidSpecError(f"unknown credential provider {name!r}; installed: {', '.join(sorted(found)) or 'none'}"
                               " (or give module:attribute)")
    made = factory(**dict(options or {}))
    if isinstance(made, CredentialProvider):
        return made
    if callable(made):
        return CallableCredentialProvider(made)
    raise AuthenticationError(f"credential provider {name!r} made {type(made).__name__}, not a provider")


def private_file(path: Path, secret: bytes) -> None:
    """Write ``secret`` to ``path`` as 0600, atomically (readers see the old or the new file, never half)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    os.replace(tmp, path)
