"""The HTTP edge of the ARC backend: one ``httpx.AsyncClient`` per CE, verified TLS, credentials, error mapping.

Contracts:

* The server certificate is always verified, against ``ca_file`` and/or ``ca_dir`` (a grid CA directory) or, with
  neither, the system's trust store. A certificate that does not verify is an :class:`AuthenticationError`: the CE's
  identity is unknown, and retrying cannot help.
* Client identity: an X.509 proxy as the TLS client certificate (reloaded when the file changes), and/or a bearer token
  read from its file at every request (so a refreshed token is picked up; a changed proxy or token closes the pooled
  connections, since A-REX keeps the identity a connection first presented). Neither value is ever logged or put in
  a message; only method, path and status are logged.
* Nothing is ever re-sent. httpx does not retry a request once it has been written (the transport's ``retries`` is 0,
  which covers connection attempts only), and this module adds no retries. A request that *creates* something
  (``creates=True``) and loses its connection after being written raises :class:`ConnectivityError` saying it may
  have been created — for a submit, the job is found again by its tag, never submitted twice.
* Explicit timeouts on connect, read, write and pool.
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx

from intercede.errors import AuthenticationError, ConnectivityError, TimeoutError, UnsupportedError

from . import _parse

__all__ = ["RestClient"]

log = logging.getLogger("intercede.backends.arc")

#: A-REX answers 500 with this reason when no authorisation group matches the client (expired or foreign token,
#: proxy of an unknown subject): observed on 6.17, 7.0 and 7.2.
_NOT_AUTHORISED = ("can't be assigned configuration", "not authorized", "not authorised")


class RestClient:
    """REST calls to the A-REX at ``endpoint`` (``https://host:port/arex``). Construction does no I/O."""

    def __init__(self, endpoint: str, *, ca_file: Path | None = None, ca_dir: Path | None = None,
                 proxy_file: Path | None = None, token_file: Path | None = None, timeout: float = 60.0,
                 connect_timeout: float = 10.0, max_connections: int = 8) -> None:
        if proxy_file is None and token_file is None:
            raise UnsupportedError(f"ARC CE {endpoint}: a proxy file or a token file is required")
        self.endpoint = endpoint.rstrip("/")
        self.ca_file, self.ca_dir = ca_file, ca_dir
        self.proxy_file, self.token_file = proxy_file, token_file
        self._timeout = httpx.Timeout(timeout, connect=connect_timeout, pool=connect_timeout)
        self._limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
        self._client: httpx.AsyncClient | None = None
        self._proxy_stamp: tuple[float, int, str] | None = None
        self._inflight: dict[httpx.AsyncClient, int] = {}
        self._retired: set[httpx.AsyncClient] = set()
        self.version: str | None = None

    def __repr__(self) -> str:
        return f"RestClient({self.endpoint!r}, version={self.version!r})"

    # -- connection ----------------------------------------------------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        try:
            ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None,
                                             capath=str(self.ca_dir) if self.ca_dir else None)
        except (OSError, ssl.SSLError) as exc:
            raise AuthenticationError(f"ARC CE {self.endpoint}: the CA file or directory cannot be loaded "
                                      f"({type(exc).__name__})") from None
        if self.proxy_file is not None:
            try:
                ctx.load_cert_chain(str(self.proxy_file))
            except (OSError, ssl.SSLError) as exc:
                raise AuthenticationError(f"ARC CE {self.endpoint}: the proxy {self.proxy_file} cannot be loaded "
                                          f"({type(exc).__name__})") from None
        return ctx

    def _stamp(self, token: str | None) -> tuple[float, int, str] | None:
        """What identifies the client now: the proxy file's mtime and size, and a digest of the token."""
        mtime, size = 0.0, 0
        if self.proxy_file is not None:
            try:
                st = os.stat(self.proxy_file)
                mtime, size = st.st_mtime, st.st_size
            except OSError:
                pass
        return (mtime, size, hashlib.sha256((token or "").encode()).hexdigest())

    async def _http(self, token: str | None) -> httpx.AsyncClient:
        stamp = self._stamp(token)
        # A new identity needs new connections: A-REX authorises a connection once, at its first request, and keeps
        # that identity for every later request on it (observed on 7.0: a refreshed token sent on a kept-alive
        # connection is still refused as the old one was).
        if self._client is not None and stamp != self._proxy_stamp:
            # retired, not closed: requests still in flight on it (a status poll while the credential keeper
            # renews the delegation) finish on it; it is closed when its last one ends
            old, self._client = self._client, None
            if self._inflight.get(old, 0):
                self._retired.add(old)
            else:
                await old.aclose()
        if self._client is None:
            ctx = self._context()
            self._client = httpx.AsyncClient(
                transport=httpx.AsyncHTTPTransport(verify=ctx, retries=0, limits=self._limits),
                timeout=self._timeout, headers={"Accept": "application/json"}, follow_redirects=False)
            self._proxy_stamp = stamp
        return self._client

    def _token(self) -> str | None:
        if self.token_file is None:
            return None
        try:
            token = Path(self.token_file).read_text().strip()
        except OSError as exc:
            raise AuthenticationError(f"ARC CE {self.endpoint}: the token file {self.token_file} cannot be read "
                                      f"({type(exc).__name__})") from None
        if not token:
            raise AuthenticationError(f"ARC CE {self.endpoint}: the token file {self.token_file} is empty")
        return token

    def token(self) -> str:
        """The bearer token now in the token file (:class:`AuthenticationError` without one)."""
        token = self._token()
        if token is None:
            raise AuthenticationError(f"ARC CE {self.endpoint}: no token file is configured")
        return token

    @staticmethod
    def _auth(token: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"} if token else {}

    async def aclose(self) -> None:
        client, self._client = self._client, None
        retired, self._retired = self._retired, set()
        for each in [*retired, *([client] if client is not None else [])]:
            await each.aclose()

    @asynccontextmanager
    async def _using(self, token: str | None) -> AsyncIterator[httpx.AsyncClient]:
        """The current client, counted as in use while the caller's request runs."""
        client = await self._http(token)
        self._inflight[client] = self._inflight.get(client, 0) + 1
        try:
            yield client
        finally:
            left = self._inflight.pop(client) - 1
            if left:
                self._inflight[client] = left
            elif client in self._retired:
                self._retired.discard(client)
                await client.aclose()

    # -- requests ------------------------------------------------------------------------------------------------

    def _url(self, path: str, versioned: bool = True) -> str:
        if not versioned:
            return f"{self.endpoint}/rest"
        return f"{self.endpoint}/rest/{self.version}/{path}"

    async def negotiate(self) -> str:
        """The REST version to speak (cached): the newest one both this client and the CE know."""
        if self.version is None:
            answer = await self._send("GET", self._url("", versioned=False), "rest")
            self._check(answer, "rest")
            offered = _parse.versions(answer.json())
            chosen = _parse.pick_version(offered)
            if chosen is None:
                raise UnsupportedError(f"ARC CE {self.endpoint} offers REST {offered}, this client speaks "
                                       f"{list(_parse.SUPPORTED)}")
            self.version = chosen
        return self.version

    async def call(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                   json: Any = None, content: bytes | str | None = None, headers: Mapping[str, str] | None = None,
                   creates: bool = False, expect_ok: bool = True) -> httpx.Response:
        """One request under the negotiated version. Raises on transport and credential failures (and, with
        ``expect_ok``, on any other non-2xx answer as :class:`ConnectivityError` with the CE's reason)."""
        await self.negotiate()
        answer = await self._send(method, self._url(path), path, params=params, json=json, content=content,
                                  headers=headers, creates=creates)
        if expect_ok:
            self._check(answer, path)
        return answer

    @asynccontextmanager
    async def stream(self, path: str) -> AsyncIterator[httpx.Response]:
        """A streamed GET (the caller reads ``aiter_bytes``); the answer is returned whatever its status."""
        await self.negotiate()
        token = self._token()
        async with self._using(token) as client:
            try:
                async with client.stream("GET", self._url(path), headers=self._auth(token)) as answer:
                    log.debug("ARC %s GET %s -> %s", self.endpoint, path, answer.status_code)
                    self._credentials(answer)
                    yield answer
            except httpx.HTTPError as exc:
                raise self._transport_error(exc, "GET", path, creates=False) from None

    async def _send(self, method: str, url: str, path: str, *, params: Mapping[str, str] | None = None,
                    json: Any = None, content: Any = None, headers: Mapping[str, str] | None = None,
                    creates: bool = False) -> httpx.Response:
        token = self._token()
        merged = {**(headers or {}), **self._auth(token)}
        async with self._using(token) as client:
            try:
                answer = await client.request(method, url, params=params, json=json, content=content,
                                              headers=merged)
            except httpx.HTTPError as exc:
                raise self._transport_error(exc, method, path, creates) from None
        log.debug("ARC %s %s %s%s -> %s", self.endpoint, method, path,
                  f"?action={params['action']}" if params and "action" in params else "", answer.status_code)
        self._credentials(answer)
        return answer

    def _credentials(self, answer: httpx.Response) -> None:
        reason = answer.reason_phrase.lower()
        if answer.status_code in (401, 403) or (answer.status_code == 500 and any(
                r in reason for r in _NOT_AUTHORISED)):
            raise AuthenticationError(f"ARC CE {self.endpoint} refused the credentials: {answer.status_code} "
                                      f"{answer.reason_phrase} (expired or not authorised?)")

    def _check(self, answer: httpx.Response, path: str) -> None:
        if not answer.is_success:
            raise ConnectivityError(f"ARC CE {self.endpoint}: {path} answered {answer.status_code} "
                                    f"{answer.reason_phrase}")

    def _transport_error(self, exc: httpx.HTTPError, method: str, path: str, creates: bool) -> Exception:
        where = f"ARC CE {self.endpoint}: {method} {path}"
        cause: BaseException | None = exc
        while cause is not None:
            if isinstance(cause, ssl.SSLCertVerificationError):
                return AuthenticationError(f"{where}: the server certificate was not verified "
                                           f"({cause.verify_message}); refusing to talk to it")
            # closed or stalled mid-handshake (a handshake that timed out leaves SSLWantReadError in the chain):
            # the CE did not answer in time, it refused nothing
            if isinstance(cause, ssl.SSLEOFError | ssl.SSLZeroReturnError | ssl.SSLWantReadError |
                          ssl.SSLWantWriteError):
                break
            if isinstance(cause, ssl.SSLError):
                return AuthenticationError(f"{where}: the TLS handshake failed ({type(cause).__name__}: "
                                           f"{cause.reason}): the CE refused "
                                           "the client certificate, or it does not verify")
            cause = cause.__cause__ or cause.__context__
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            return ConnectivityError(f"{where}: cannot connect ({type(exc).__name__})")
        if creates:
            return ConnectivityError(f"{where}: the connection failed after the request was sent "
                                     f"({type(exc).__name__}); the job may have been created: find it by its tag, "
                                     "do not submit it again")
        if isinstance(exc, httpx.TimeoutException):
            return TimeoutError(f"{where}: no answer in time ({type(exc).__name__})")
        return ConnectivityError(f"{where}: {type(exc).__name__}")
