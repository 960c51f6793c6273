"""LocalTransport: commands as local subprocesses (exec, never a shell) and files as local copies."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from intercede.backends.transports.base import CommandResult, Sink, Transport
from intercede.errors import CommandNotFoundError, TimeoutError, TransferError

__all__ = ["LocalTransport"]

_CHUNK = 1 << 16
_STDERR_KEPT = 1 << 16


class LocalTransport(Transport):
    """Run commands on this machine. ``cwd`` is where relative paths and commands start (default: current)."""

    def __init__(self, *, cwd: Path | None = None) -> None:
        self.cwd = cwd
        self.name = "local://"

    async def run(
        self, argv: Sequence[str], *, stdin: bytes | None = None, timeout: float | None = None
    ) -> CommandResult:
        argv = tuple(argv)
        if not argv:
            raise ValueError("argv must not be empty")
        start = time.monotonic()
        proc = await self._start(argv, stdin is not None)
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
        except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
            _kill_group(proc)
            await proc.wait()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise TimeoutError(f"{argv[0]} did not finish within {timeout} s (killed)") from exc
        assert proc.returncode is not None
        return CommandResult(argv, proc.returncode, out, err, time.monotonic() - start)

    async def stream(self, argv: Sequence[str], sink: Sink, *, timeout: float | None = None) -> CommandResult:
        argv = tuple(argv)
        if not argv:
            raise ValueError("argv must not be empty")
        start = time.monotonic()
        proc = await self._start(argv, False)
        assert proc.stdout is not None and proc.stderr is not None
        errors = asyncio.ensure_future(_tail(proc.stderr))
        try:
            async with asyncio.timeout(timeout):
                while chunk := await proc.stdout.read(_CHUNK):
                    sink(chunk)
                await proc.wait()
                err = await errors
        except BaseException as exc:
            _kill_group(proc)
            errors.cancel()
            await proc.wait()
            if isinstance(exc, asyncio.TimeoutError):  # builtins.TimeoutError: ours is raised from it
                raise TimeoutError(f"{argv[0]} did not finish within {timeout} s (killed)") from exc
            raise
        assert proc.returncode is not None
        return CommandResult(argv, proc.returncode, b"", err, time.monotonic() - start)

    async def _start(self, argv: tuple[str, ...], with_stdin: bool) -> asyncio.subprocess.Process:
        try:
            return await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if with_stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=self.cwd,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise CommandNotFoundError(f"command not found: {argv[0]!r}", argv=list(argv), exit_status=127) from exc
        except PermissionError as exc:
            raise CommandNotFoundError(f"not executable: {argv[0]!r}", argv=list(argv), exit_status=126) from exc

    async def put(self, local: Path, remote: str, *, timeout: float | None = None) -> None:
        await self._copy(Path(local), self._path(remote), timeout)

    async def get(self, remote: str, local: Path, *, timeout: float | None = None) -> None:
        await self._copy(self._path(remote), Path(local), timeout)

    def _path(self, path: str) -> Path:
        return Path(path) if self.cwd is None else self.cwd / path

    async def _copy(self, src: Path, dst: Path, timeout: float | None) -> None:
        try:
            await asyncio.wait_for(asyncio.to_thread(_copy_file, src, dst), timeout)
        except asyncio.TimeoutError as exc:
            raise TimeoutError(f"copying {src} to {dst} did not finish within {timeout} s") from exc
        except OSError as exc:
            raise TransferError(f"cannot copy {src} to {dst}: {exc.strerror or exc}") from exc


def _copy_file(src: Path, dst: Path) -> None:
    if not src.is_file():
        raise TransferError(f"cannot copy {src}: no such file")
    shutil.copyfile(src, dst)


async def _tail(reader: asyncio.StreamReader) -> bytes:
    """Everything ``reader`` gives until EOF, keeping only the last :data:`_STDERR_KEPT` bytes."""
    kept = b""
    while chunk := await reader.read(_CHUNK):
        kept = (kept + chunk)[-_STDERR_KEPT:]
    return kept


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, 9)
