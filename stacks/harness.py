"""Start the real backends the tests and benchmarks run against.

One folder per stack under ``stacks/`` holds a Dockerfile (``ARG BASE`` names the local Debian base image), its
config and a start script. :func:`image` builds a stack on a Debian suite once and caches it under a tag derived from
the folder's contents, so a second run never rebuilds and an edited recipe always does. :func:`engine` prepares the
container engine (Podman behind a Docker-compatible socket here, Docker where it runs) by calling
``stacks/engine/setup.sh``. Containers are started with testcontainers.

Nothing here skips: when the engine or an image cannot be had, the caller gets the error.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STACKS = Path(__file__).resolve().parent


@functools.cache
def engine() -> str:
    """Make the container engine usable from this process; return its CLI name (``podman`` or ``docker``)."""
    out = subprocess.run(
        ["bash", str(STACKS / "engine" / "setup.sh")], check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    for line in out.splitlines():
        if line.startswith("export "):
            key, _, value = line.removeprefix("export ").partition("=")
            os.environ[key] = value
    return os.environ["INTERCEDE_ENGINE"]


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:12]


def image(stack: str, suite: str = "bookworm") -> str:
    """The tag of ``stacks/<stack>`` built on ``local/debian:<suite>``, building it only if it is not cached."""
    cli = engine()
    folder = STACKS / stack
    tag = f"localhost/intercede-{stack}:{suite}-{_digest(folder)}"
    if subprocess.run([cli, "image", "inspect", tag], capture_output=True).returncode == 0:
        return tag
    print(f"[stacks] building {tag} (once; cached afterwards)", file=sys.stderr, flush=True)
    subprocess.run(
        [cli, "build", "--build-arg", f"BASE=local/debian:{suite}", "-t", tag, str(folder)],
        check=True, stdout=sys.stderr,
    )
    return tag


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 120.0, interval: float = 0.25) -> None:
    """Poll ``predicate`` until it is true; raise ``RuntimeError`` naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: S110, BLE001 - the stack is still starting; keep polling until the deadline
            pass
        time.sleep(interval)
    raise RuntimeError(f"stack not ready after {timeout:.0f} s: {what}")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


@dataclass(frozen=True)
class ExecResult:
    """What a command run inside a container left (output decoded as UTF-8)."""

    exit_code: int
    stdout: str
    stderr: str


def run_in(container: Any, cmd: str | Sequence[str], *, user: str = "root", workdir: str | None = None) -> ExecResult:
    """Run ``cmd`` in a testcontainers container (a string goes through ``sh -c``; a list is exec'd as is)."""
    argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
    code, (out, err) = container.get_wrapped_container().exec_run(argv, user=user, workdir=workdir, demux=True)
    return ExecResult(int(code), (out or b"").decode("utf-8", "replace"), (err or b"").decode("utf-8", "replace"))


def check_in(container: Any, cmd: str | Sequence[str], *, user: str = "root") -> str:
    """Like :func:`run_in`, but raise ``RuntimeError`` with stderr on a non-zero exit; return stdout."""
    res = run_in(container, cmd, user=user)
    if res.exit_code != 0:
        raise RuntimeError(f"{cmd!r} exited {res.exit_code}: {res.stderr.strip()}")
    return res.stdout


def ssh_greets(host: str, port: int) -> bool:
    """Whether an SSH server answers on ``host:port`` (its identification line): the engine may accept on a published
    port before sshd listens."""
    try:
        with socket.create_connection((host, port), timeout=1.0) as s:
            s.settimeout(1.0)
            return s.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


def stop_container(container: Any) -> None:
    """Stop and remove a testcontainers container, tolerating podman 4.3's 500 "container state improper" (or "no
    such container") when the container had already exited."""
    try:
        container.stop()
    except Exception as exc:
        if "state improper" not in str(exc) and "no such container" not in str(exc).lower():
            raise


def remove(container: Any, *folders: Path) -> None:
    """Stop ``container`` (:func:`stop_container`), then delete the stack's local ``folders`` (keys, credentials),
    even if the stop failed."""
    try:
        stop_container(container)
    finally:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


def container_address(container: Any) -> str:
    """The address of a started testcontainers container on the engine's bridge network (clients reach its daemons
    there, on their standard ports, so several stacks run side by side)."""
    wrapped = container.get_wrapped_container()
    wrapped.reload()
    settings = wrapped.attrs["NetworkSettings"]
    address = settings.get("IPAddress") or next(
        (n["IPAddress"] for n in (settings.get("Networks") or {}).values() if n.get("IPAddress")), "")
    if not address:
        raise RuntimeError(f"the container has no address on a bridge network: {settings}")
    return str(address)
