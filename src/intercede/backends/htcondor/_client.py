"""CondorClient: one backend's ``htcondor2`` bindings, run in worker processes of its own (see ``_worker``).

Contract:

* Constructing does no I/O. The first call starts a worker; at most ``workers`` run calls at once, each call in one
  worker. ``aclose`` stops them and removes their private directory. Idempotent.
* Authentication is configured per client, never process-wide: a worker starts with ``CONDOR_CONFIG`` (default
  ``/dev/null``: nothing of this machine's HTCondor configuration leaks in), ``_CONDOR_*`` knobs for the
  authentication ``methods``, and a private 0700 token directory holding a copy of ``token_file`` (IDTOKENS); a
  ``scitoken_file`` is handed over as ``_CONDOR_SCITOKENS_FILE``. The copy is refreshed when the file changes.
  A token handed over by :meth:`CondorClient.set_token` (a credential provider's) replaces the file's: it is written
  0600 into the private directory, and idle workers are retired so the next call authenticates with it.
* Errors: a missing or unreadable token file raises :class:`~intercede.errors.AuthenticationError` before any I/O;
  so does an authentication the daemon refused (with a hint when the token has expired). A daemon that cannot be
  reached or is not advertised raises :class:`~intercede.errors.ConnectivityError`; a call that runs past its
  deadline kills its worker and raises :class:`~intercede.errors.TimeoutError`. A submit the schedd refuses raises
  :class:`SubmitRefused`; anything else :class:`~intercede.errors.CommandError`.
* A worker whose call could not reach the daemon or authenticate is retired (its cached security sessions and
  daemon locations may be stale); a call refused because a restarted daemon forgot the session is asked once more.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from intercede.errors import AuthenticationError, CommandError, ConnectivityError, IntercedeError, TimeoutError

__all__ = ["CondorClient", "SubmitRefused"]

_STALE_SESSION = "rejected our session id"


class SubmitRefused(CommandError):
    """The schedd refused a submit; ``str()`` is its reason."""


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def call(self, request: bytes) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(request)
        await self.process.stdin.drain()
        line = await self.process.stdout.readline()
        if not line:
            raise ConnectivityError("the HTCondor worker process exited unexpectedly")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()


class CondorClient:
    """Talk to the schedd advertised by the collector ``pool`` (``host:port``), or the one named ``schedd``."""

    def __init__(self, pool: str, *, schedd: str | None = None, token_file: Path | None = None,
                 scitoken_file: Path | None = None, methods: Sequence[str] = ("IDTOKENS",),
                 config: Mapping[str, str] | None = None, condor_config: Path | None = None, workers: int = 2,
                 call_timeout: float = 60.0, audience: str | None = None) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.pool, self.schedd = pool, schedd
        self.token_file = Path(token_file).expanduser() if token_file else None
        self.scitoken_file = Path(scitoken_file).expanduser() if scitoken_file else None
        self.methods = list(methods)
        self.config = dict(config or {})
        self.condor_config = condor_config
        self.call_timeout = call_timeout
        self.audience = audience
        self._slots = asyncio.Semaphore(workers)
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._dir: Path | None = None
        self._copied: tuple[float, int] | None = None
        self._given: dict[str, bytes] = {}  # "idtoken" / "scitoken" -> a provider's token, replacing the file's
        self._closed = False

    # -- calls ------------------------------------------------------------------------------------------------------

    async def call(self, op: str, *, timeout: float | None = None, **args: Any) -> Any:
        """Run ``op`` in a worker; its JSON result, or the intercede error it maps to (see the module docstring)."""
        if self._closed:
            raise ConnectivityError(f"the HTCondor client of {self.pool} is closed")
        self._check_credentials()
        request = (json.dumps({"op": op, "args": args}) + "\n").encode()
        reply = await self._call(op, request, timeout or self.call_timeout)
        if not reply["ok"] and _STALE_SESSION in reply["message"]:
            # The daemon restarted and forgot our security session: refused at the handshake, before the command
            # ran, so it is safe to ask again (from a fresh worker, whose session cache is empty).
            reply = await self._call(op, request, timeout or self.call_timeout)
        if reply["ok"]:
            return reply["result"]
        raise self._error(op, reply)

    async def _call(self, op: str, request: bytes, limit: float) -> dict[str, Any]:
        async with self._slots:
            worker = self._idle.pop() if self._idle else await self._spawn()
            self._busy.add(worker)
            try:
                async with asyncio.timeout(limit):
                    reply = await worker.call(request)
            except BaseException as exc:
                self._busy.discard(worker)
                worker.kill()
                await worker.process.wait()
                if isinstance(exc, asyncio.TimeoutError):
                    raise TimeoutError(f"HTCondor {op} on {self.pool} did not finish within {limit} s "
                                       "(its worker was killed)") from exc
                raise
            self._busy.discard(worker)
            if self._closed:
                await self._retire(worker)
            elif reply["ok"] or reply["kind"] not in ("connect", "auth"):
                self._idle.append(worker)
            else:  # its cached sessions and daemon locations may be stale: start afresh next time
                await self._retire(worker)
        return reply

    def _error(self, op: str, reply: Mapping[str, Any]) -> IntercedeError:
        kind, message, log = reply["kind"], reply["message"], reply.get("log", "")
        detail = f"HTCondor {op} on {self.pool}: {message}" + (f" [{log}]" if log else "")
        if kind == "auth":
            return AuthenticationError(detail + self._token_hint())
        if kind == "connect":
            return ConnectivityError(detail)
        if kind == "refused":
            return SubmitRefused(message, argv=[op])
        return CommandError(detail, argv=[op])

    def _token_hint(self) -> str:
        """Why a token was refused, when the token itself says: expired, or issued for another audience."""
        path = self.scitoken_file or self.token_file
        claims = _claims(path.read_text()) if path and path.is_file() else {}
        hints = []
        exp = claims.get("exp")
        if isinstance(exp, int | float) and exp < time.time():
            hints.append(f"the token {path} expired at {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(exp))}")
        aud = claims.get("aud")
        if self.audience and aud is not None and self.audience not in (aud if isinstance(aud, list) else [aud]):
            hints.append(f"the token {path} is for the audience {aud!r}, not {self.audience!r}")
        return ("; " + "; ".join(hints)) if hints else ""

    # -- workers ----------------------------------------------------------------------------------------------------

    async def set_token(self, slot: str, token: bytes) -> None:
        """Authenticate with ``token`` from now on, in ``slot`` ``"idtoken"`` or ``"scitoken"`` (never logged)."""
        if self._given.get(slot) == token:
            return
        self._given[slot] = token
        if self._dir is not None:
            self._write_given()
        idle, self._idle = self._idle, []
        for worker in idle:  # their security sessions were made with the old token
            await self._retire(worker)

    def _write_given(self) -> None:
        assert self._dir is not None
        for slot, token in self._given.items():
            target = self._dir / "tokens" / "intercede" if slot == "idtoken" else self._dir / "scitoken"
            tmp = target.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(token.strip() + b"\n")
            os.replace(tmp, target)

    def _check_credentials(self) -> None:
        for slot, path in (("idtoken", self.token_file), ("scitoken", self.scitoken_file)):
            if path is not None and slot not in self._given and not os.access(path, os.R_OK):
                raise AuthenticationError(f"HTCondor {self.pool}: token file {path} is missing or unreadable")
        if self.token_file is not None and self._dir is not None:
            self._copy_token()

    def _copy_token(self) -> None:
        assert self.token_file is not None and self._dir is not None
        if "idtoken" in self._given:
            return
        st = self.token_file.stat()
        if self._copied == (st.st_mtime, st.st_size):
            return
        target = self._dir / "tokens" / "intercede"
        tmp = target.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.token_file.read_text().strip() + "\n")
        os.replace(tmp, target)
        self._copied = (st.st_mtime, st.st_size)

    def _environment(self) -> dict[str, str]:
        assert self._dir is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("_CONDOR_") and k != "CONDOR_CONFIG"}
        tokens = str(self._dir / "tokens")
        env |= {
            "CONDOR_CONFIG": str(self.condor_config or "/dev/null"),
            "INTERCEDE_CONDOR_LOG": str(self._dir / "condor.log"),
            "INTERCEDE_CONDOR_POOL": self.pool,
            "INTERCEDE_CONDOR_SCHEDD": self.schedd or "",
            "_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS": ",".join(self.methods),
            "_CONDOR_SEC_CLIENT_AUTHENTICATION": "REQUIRED",
            "_CONDOR_SEC_CLIENT_INTEGRITY": "REQUIRED",
            "_CONDOR_SEC_CLIENT_ENCRYPTION": "OPTIONAL",
            "_CONDOR_SEC_TOKEN_DIRECTORY": tokens,
            "_CONDOR_SEC_TOKEN_SYSTEM_DIRECTORY": tokens,
            "_CONDOR_TOOL_DEBUG": "D_ALWAYS",
        }
        if "scitoken" in self._given:
            env["_CONDOR_SCITOKENS_FILE"] = str(self._dir / "scitoken")
        elif self.scitoken_file is not None:
            env["_CONDOR_SCITOKENS_FILE"] = str(self.scitoken_file)
        env |= {f"_CONDOR_{k}": v for k, v in self.config.items()}
        return env

    async def _spawn(self) -> _Worker:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="intercede-condor-"))
            (self._dir / "tokens").mkdir(mode=0o700)
        if self.token_file is not None:
            self._copy_token()
        self._write_given()
        # Run by path: the worker imports nothing of intercede, so it starts without importing the package.
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(Path(__file__).with_name("_worker.py")), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=self._environment())
        return _Worker(process)

    async def _retire(self, worker: _Worker) -> None:
        """Let ``worker`` finish (end of its input), killing it if it does not within 5 s."""
        assert worker.process.stdin is not None
        worker.process.stdin.close()
        try:
            await asyncio.wait_for(worker.process.wait(), 5)
        except asyncio.TimeoutError:
            worker.kill()
            await worker.process.wait()

    async def aclose(self) -> None:
        """Stop the workers and remove their private directory. Idempotent."""
        self._closed = True
        idle, self._idle = self._idle, []
        for worker in idle:
            await self._retire(worker)
        for worker in list(self._busy):  # a call still running in another task: it fails with ConnectivityError
            worker.kill()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


def _claims(token: str) -> dict[str, Any]:
    """The (unverified) claims of a JWT, or ``{}``: only used to explain a refusal, never to decide one."""
    try:
        payload = token.strip().split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
