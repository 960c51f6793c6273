"""SSHTransport: run argv and copy files over one reused SSH connection (asyncssh), optionally through a jump host.

Contract, on top of :class:`~intercede.backends.transports.base.Transport`:

* **Key authentication only** (no password, keyboard-interactive, GSS or agent; ``~/.ssh/config`` is ignored) and a
  **pinned known_hosts**: an unknown or changed host key raises :class:`~intercede.errors.HostKeyError` and is never
  accepted. Key files are read at connect time; a missing or unusable one raises
  :class:`~intercede.errors.AuthenticationError` naming it, as does a key the server refuses.
* **One connection**, opened lazily by the first call and shared by every sequential and concurrent call
  (``connections_opened`` counts the connections made). At most ``max_sessions`` channels are open at once; when the
  server refuses a channel because of its own limit (OpenSSH ``MaxSessions``, 10 by default), the call waits and
  tries again as long as channels of this transport are open, then up to ``connect_timeout`` more (the server frees a
  session only once our close reaches it). ``aclose`` closes everything; a later call would open a new connection.
* **Reconnect**: when the connection has dropped, the next call opens a new one (one reconnect at a time). A call whose
  channel could not be opened because the connection had died is retried once on a fresh connection; a command that
  had started when the connection died raises :class:`~intercede.errors.ConnectivityError` (it may have run).
* ``run`` quotes argv exactly once, ``' '.join(shlex.quote(a) for a in argv)``, so the remote needs only a POSIX
  login shell. Exit status 127 with "not found" on stderr raises :class:`~intercede.errors.CommandNotFoundError`.
  ``timeout`` bounds the command once its channel is open: past it the remote process is sent SIGKILL, the channel
  is closed and :class:`~intercede.errors.TimeoutError` is raised; the connection stays usable. (Only the process
  sshd started is signalled: a grandchild that ignores its closed pipes may outlive it.)
* ``stream`` is ``run`` with stdout handed to the caller's sink as it arrives (asyncssh reads the channel in 64 KiB
  chunks; nothing is kept); a sink that raises gets the remote process killed, as a timeout does.
* ``put``/``get`` use one SFTP client per connection; a missing source raises
  :class:`~intercede.errors.TransferError` naming the path; ``get`` writes to a short random temporary name beside
  ``local`` and renames it, so a failed copy leaves no partial file (and removing it never hides the copy's error).
  A whole-file copy is idempotent, so one that loses its connection is retried once on a new one (then
  :class:`~intercede.errors.ConnectivityError`).
* Failing to connect: refused port, unreachable host or no answer within ``connect_timeout`` raise
  :class:`~intercede.errors.ConnectivityError` (the resource cannot be reached; a *connect* timeout is not a
  :class:`~intercede.errors.TimeoutError`, which is kept for commands and transfers that ran past their deadline).

Every asyncssh and OS error is translated into the intercede tree here, with ``raise ... from``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Self, TypeVar

import asyncssh
from pydantic import BaseModel, ConfigDict, Field, field_validator

from intercede.backends.credentials import Credential, CredentialNeed
from intercede.backends.transports.base import CommandResult, Sink, Transport
from intercede.errors import (
    AuthenticationError,
    CommandNotFoundError,
    ConnectivityError,
    HostKeyError,
    IntercedeError,
    TimeoutError,
    TransferError,
)

__all__ = ["SSHEndpoint", "SSHTransport"]

T = TypeVar("T")

_CHUNK = 1 << 16

#: What a copy raises when its connection died (ConnectionError: the socket's, a local file raises no such error).
_LOST = (asyncssh.SFTPConnectionLost, asyncssh.SFTPNoConnection, asyncssh.DisconnectError, ConnectionError)


class SSHEndpoint(BaseModel):
    """Where and as whom to log in. Holds key *paths*, never key material, so its repr is safe to log."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(min_length=1)
    port: int = Field(22, ge=1, le=65535)
    username: str = Field(min_length=1)
    client_keys: list[Path]
    known_hosts: Path

    @field_validator("host", "username", "client_keys", "known_hosts")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if "\x00" in str(value):  # the OS refuses it only at connect time, with an untyped ValueError
            raise ValueError("must not contain a NUL character")
        return value

    @property
    def address(self) -> str:
        return f"{self.username}@{self.host}:{self.port}"


class SSHTransport(Transport):
    """Run commands and copy files on ``endpoint`` over SSH, through ``jump`` if given (see the module docstring)."""

    def __init__(self, endpoint: SSHEndpoint, *, jump: SSHEndpoint | None = None, connect_timeout: float = 10.0,
                 max_sessions: int = 16, keepalive_interval: float = 15.0) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self.endpoint, self.jump = endpoint, jump
        self.connect_timeout, self.keepalive_interval = connect_timeout, keepalive_interval
        self.name = f"ssh://{endpoint.address}" + (" via jump" if jump else "")
        self.connections_opened = 0
        self._conn: asyncssh.SSHClientConnection | None = None
        self._jump_conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._connect_lock = asyncio.Lock()
        self._sftp_lock = asyncio.Lock()
        self._sessions = asyncio.Semaphore(max_sessions)
        self._open_channels = 0
        self._given_keys: dict[str, bytes] = {}  # slot -> a credential provider's key, replacing the file's

    # -- credentials (a CredentialConsumer; the default provider reads the client key files) ----------------------

    def credential_needs(self) -> list[CredentialNeed]:
        """One ``ssh-key`` per client key of the endpoint (slot ``ssh-key:<n>``); a provider's key replaces that
        file's from the next connection on (an open connection stays: it is authenticated already)."""
        keys = self.endpoint.client_keys
        return [CredentialNeed(f"ssh-key:{i}", "ssh-key", None, Path(p)) for i, p in enumerate(keys)]

    async def use_credential(self, need: CredentialNeed, credential: Credential) -> None:
        self._given_keys[need.slot] = credential.secret

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Self:
        """Build from a TOML table: ``endpoint`` (and optionally ``jump``) as SSHEndpoint fields, plus the keyword
        options of the constructor."""
        rest = dict(options)
        endpoint = SSHEndpoint.model_validate(rest.pop("endpoint", None))
        jump = rest.pop("jump", None)
        return cls(endpoint, jump=SSHEndpoint.model_validate(jump) if jump is not None else None, **rest)

    # -- the contract ---------------------------------------------------------------------------------------------

    async def run(
        self, argv: Sequence[str], *, stdin: bytes | None = None, timeout: float | None = None
    ) -> CommandResult:
        return await self._execute(argv, lambda process: self._communicate(process, stdin, timeout, argv[0]))

    async def stream(self, argv: Sequence[str], sink: Sink, *, timeout: float | None = None) -> CommandResult:
        return await self._execute(argv, lambda process: self._pour(process, sink, timeout, argv[0]))

    async def _execute(self, argv: Sequence[str],
                       talk: Callable[[asyncssh.SSHClientProcess[bytes]], Awaitable[tuple[bytes, bytes]]]
                       ) -> CommandResult:
        """Open a channel for ``argv`` (quoted once), let ``talk`` exchange its input and output, read its status."""
        argv = tuple(argv)
        if not argv:
            raise ValueError("argv must not be empty")
        command = " ".join(shlex.quote(a) for a in argv)
        async with self._sessions:
            start = time.monotonic()
            process = await self._with_channel(lambda conn: conn.create_process(command, encoding=None))
            self._open_channels += 1
            try:
                out, err = await talk(process)
            finally:
                self._open_channels -= 1
        status = process.returncode
        if status is None:  # neither exit-status nor exit-signal: the connection went away under the command
            raise ConnectivityError(f"{self.name}: connection lost while {argv[0]!r} ran; it may have run")
        if status == 127 and b"not found" in err:
            raise CommandNotFoundError(f"{self.name}: command not found: {argv[0]!r}", argv=list(argv),
                                       exit_status=127, stderr=err.decode("utf-8", "replace"))
        return CommandResult(argv, status, out, err, time.monotonic() - start)

    async def put(self, local: Path, remote: str, *, timeout: float | None = None) -> None:
        local = Path(local)
        if not local.is_file():
            raise TransferError(f"cannot put {local}: no such local file")
        await self._transfer(lambda sftp: sftp.put(str(local), remote), f"{local} to {self.name}:{remote}", timeout)

    async def get(self, remote: str, local: Path, *, timeout: float | None = None) -> None:
        local = Path(local)
        try:
            # Short and random: never longer than the final name (a 255-byte name has no room for a suffix) and
            # never one of the caller's own files.
            fd, name = tempfile.mkstemp(prefix=".", suffix=".part", dir=local.parent)
        except OSError as exc:
            raise TransferError(f"cannot write into {local.parent}: {exc.strerror or exc}") from exc
        os.close(fd)
        try:
            await self._transfer(lambda sftp: sftp.get(remote, name), f"{self.name}:{remote} to {local}", timeout)
            try:
                os.replace(name, local)
            except OSError as exc:
                raise TransferError(f"cannot write {local}: {exc.strerror or exc}") from exc
        finally:
            with contextlib.suppress(OSError):  # cleanup must never hide the error that brought us here
                os.unlink(name)

    async def aclose(self) -> None:
        async with self._connect_lock:
            await self._drop()

    # -- connection -----------------------------------------------------------------------------------------------

    async def _connection(self, stale: asyncssh.SSHClientConnection | None = None) -> asyncssh.SSHClientConnection:
        """The open connection; a new one if there is none, it has closed, or it is ``stale``."""
        conn = self._conn
        if conn is not None and conn is not stale and not conn.is_closed():
            return conn
        async with self._connect_lock:
            conn = self._conn
            if conn is not None and conn is not stale and not conn.is_closed():
                return conn  # another task reconnected while this one waited
            await self._drop()
            jump_conn = await self._connect(self.jump, None) if self.jump else None
            try:
                conn = await self._connect(self.endpoint, jump_conn)
            except BaseException:
                if jump_conn is not None:
                    jump_conn.close()
                raise
            self._conn, self._jump_conn = conn, jump_conn
            self.connections_opened += 1
            return conn

    async def _connect(self, ep: SSHEndpoint, tunnel: asyncssh.SSHClientConnection | None
                       ) -> asyncssh.SSHClientConnection:
        where = f"ssh://{ep.address}" + (" (jump host)" if ep is self.jump else "")
        keys = []
        for i, path in enumerate(ep.client_keys):
            given = self._given_keys.get(f"ssh-key:{i}") if ep is self.endpoint else None
            try:
                keys.append(asyncssh.import_private_key(given) if given else asyncssh.read_private_key(path))
            except OSError as exc:
                raise AuthenticationError(f"{where}: cannot read client key {path}: {exc.strerror or exc}") from exc
            except asyncssh.KeyImportError as exc:
                raise AuthenticationError(f"{where}: client key {path} is not a usable unencrypted private key: "
                                          f"{exc}") from exc
        try:
            known_hosts = asyncssh.read_known_hosts(str(ep.known_hosts))
        except (OSError, ValueError) as exc:
            raise HostKeyError(f"{where}: cannot read known_hosts {ep.known_hosts}: {exc}") from exc
        try:
            return await asyncssh.connect(
                ep.host, ep.port, tunnel=tunnel or (), config=None, username=ep.username, client_keys=keys,
                known_hosts=known_hosts, public_key_auth=True, password_auth=False, kbdint_auth=False,
                host_based_auth=False, gss_auth=False, gss_kex=False, agent_path=None, pkcs11_provider=None,
                connect_timeout=self.connect_timeout, keepalive_interval=self.keepalive_interval,
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise HostKeyError(f"{where}: host key rejected: it is not the key pinned for {ep.host}:{ep.port} in "
                               f"{ep.known_hosts} (host missing there, or its key changed)") from exc
        except asyncssh.PermissionDenied as exc:
            keys_named = ", ".join(map(str, ep.client_keys)) or "none"
            raise AuthenticationError(f"{where}: the server refused the client key(s) {keys_named} for "
                                      f"{ep.username!r} (is the public key in its authorized_keys?)") from exc
        except asyncio.TimeoutError as exc:  # builtins.TimeoutError, an OSError: before OSError
            raise ConnectivityError(f"{where}: no SSH answer within the {self.connect_timeout} s connect timeout "
                                    "(host down, filtered or overloaded)") from exc
        except (asyncssh.Error, OSError) as exc:
            raise ConnectivityError(f"{where}: cannot connect: {_reason(exc)}") from exc

    async def _drop(self) -> None:
        """Close the SFTP client and the connections (caller holds the connect lock)."""
        sftp, conn, jump_conn = self._sftp, self._conn, self._jump_conn
        self._sftp = self._conn = self._jump_conn = None
        if sftp is not None:
            sftp.exit()
        for c in (conn, jump_conn):
            if c is not None:
                c.close()
                await c.wait_closed()

    async def _with_channel(self, open_: Callable[[asyncssh.SSHClientConnection], Awaitable[T]]) -> T:
        """Open a channel with ``open_``: reconnect once if the connection had died; while the server refuses
        channels (its MaxSessions), wait as long as channels of ours are open, then ``connect_timeout`` more (the
        server frees a session only after our close reaches it)."""
        loop = asyncio.get_running_loop()
        stale: asyncssh.SSHClientConnection | None = None
        delay, deadline = 0.005, 0.0
        while True:
            conn = await self._connection(stale)
            try:
                async with asyncio.timeout(self.connect_timeout):
                    return await open_(conn)
            except asyncio.TimeoutError as exc:  # builtins.TimeoutError, an OSError: before OSError
                # The server stopped answering (frozen, overloaded, a dead link the keepalive has not caught yet).
                # Abort the connection so the next call reconnects, and fail this one now rather than hang.
                conn.abort()
                raise ConnectivityError(f"{self.name}: the server did not answer within the "
                                        f"{self.connect_timeout} s connect timeout") from exc
            except (asyncssh.Error, OSError) as exc:
                if conn.is_closed() or not isinstance(exc, asyncssh.ChannelOpenError):
                    if stale is not None:
                        raise ConnectivityError(f"{self.name}: connection lost again after reconnecting: "
                                                f"{_reason(exc)}") from exc
                    stale = conn  # it died before anything started: retry once on a new connection
                    continue
                if self._open_channels > 0:
                    deadline = 0.0
                elif not deadline:
                    deadline = loop.time() + self.connect_timeout
                elif loop.time() > deadline:
                    raise ConnectivityError(f"{self.name}: the server refuses to open a channel: "
                                            f"{_reason(exc)}") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    async def _communicate(self, process: asyncssh.SSHClientProcess[bytes], stdin: bytes | None,
                           timeout: float | None, program: str) -> tuple[bytes, bytes]:
        try:
            async with asyncio.timeout(timeout):
                with contextlib.suppress(BrokenPipeError):  # it exited without reading: so does a local process
                    if stdin:
                        process.stdin.write(stdin)
                    process.stdin.write_eof()
                return await process.communicate()
        except asyncio.TimeoutError as exc:  # builtins.TimeoutError, an OSError: before OSError
            _kill(process)
            raise TimeoutError(f"{self.name}: {program!r} did not finish within {timeout} s (killed)") from exc
        except BaseException as exc:
            _kill(process)
            if isinstance(exc, asyncssh.Error | OSError):
                raise ConnectivityError(f"{self.name}: connection lost while {program!r} ran; it may have run: "
                                        f"{_reason(exc)}") from exc
            raise

    async def _pour(self, process: asyncssh.SSHClientProcess[bytes], sink: Sink, timeout: float | None,
                    program: str) -> tuple[bytes, bytes]:
        """Hand ``process``'s stdout to ``sink`` as it arrives; keep the last 64 KiB of its stderr."""
        async def tail() -> bytes:
            kept = b""
            while chunk := await process.stderr.read(_CHUNK):
                kept = (kept + chunk)[-_CHUNK:]
            return kept

        errors = asyncio.ensure_future(tail())
        try:
            async with asyncio.timeout(timeout):
                with contextlib.suppress(BrokenPipeError):
                    process.stdin.write_eof()
                while chunk := await process.stdout.read(_CHUNK):
                    sink(chunk)
                err = await errors
                await process.wait_closed()
                return b"", err
        except BaseException as exc:
            errors.cancel()
            _kill(process)
            if isinstance(exc, asyncio.TimeoutError):  # builtins.TimeoutError, an OSError: before OSError
                raise TimeoutError(f"{self.name}: {program!r} did not finish within {timeout} s (killed)") from exc
            if isinstance(exc, asyncssh.Error | OSError) and not isinstance(exc, IntercedeError):
                raise ConnectivityError(f"{self.name}: connection lost while {program!r} ran: {_reason(exc)}") from exc
            raise

    # -- files ----------------------------------------------------------------------------------------------------

    async def _sftp_client(self, stale: asyncssh.SFTPClient | None) -> asyncssh.SFTPClient:
        """The SFTP client of the current connection; a new one if there is none, or it is ``stale``."""
        async with self._sftp_lock:
            sftp, conn = self._sftp, self._conn
            if sftp is None or sftp is stale or conn is None or conn.is_closed():
                if sftp is not None:
                    sftp.exit()
                self._sftp = sftp = await self._with_channel(lambda c: c.start_sftp_client())
            return sftp

    async def _transfer(self, copy: Callable[[asyncssh.SFTPClient], Awaitable[None]], what: str,
                        timeout: float | None) -> None:
        stale: asyncssh.SFTPClient | None = None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    sftp = await self._sftp_client(stale)
                    try:
                        return await copy(sftp)
                    except _LOST as exc:
                        if stale is not None:
                            raise ConnectivityError(f"connection lost while copying {what}: {_reason(exc)}") from exc
                        stale = sftp  # a whole-file copy is idempotent: retry it once on a new session
        except asyncio.TimeoutError as exc:  # builtins.TimeoutError, an OSError: before OSError
            raise TimeoutError(f"copying {what} did not finish within {timeout} s") from exc
        except asyncssh.SFTPError as exc:
            raise TransferError(f"cannot copy {what}: {exc.reason}") from exc
        except (asyncssh.Error, OSError) as exc:
            raise TransferError(f"cannot copy {what}: {_reason(exc)}") from exc


def _kill(process: asyncssh.SSHClientProcess[bytes]) -> None:
    """SIGKILL the remote process (OpenSSH honours signal requests) and close its channel."""
    with contextlib.suppress(OSError):  # the channel is already closed
        process.kill()
    process.close()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)  # asyncio's "Connect call failed (...)" hides "Connection refused" and the like
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(reason)
