"""Outages of the shared Slurm stack's daemons, made where a fault test wants them: sshd stopped, restarted or killed
the moment a condition holds inside the container (a watcher), and waiting for the effect to show."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from stacks.slurm_stack import SlurmStack

SSHD = "/usr/sbin/sshd -p 22 -E /var/log/sshd.log"  # as stacks/slurm/start.sh starts it
SSHD_PROCESSES = "sshd|sshd-session|sshd-auth"  # OpenSSH >= 10 splits sshd in three
WATCHER_PID = "/run/intercede-sshd-watcher.pid"


def sshd_greets(stack: SlurmStack) -> bool:
    try:
        with socket.create_connection((stack.host, stack.port), timeout=1.0) as s:
            s.settimeout(1.0)
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def wait_until(what: str, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f} s: {what}")
        time.sleep(0.1)


def stop_sshd(stack: SlurmStack) -> None:
    """Kill the listener and every connection's sshd: open connections drop, new ones are refused."""
    stack.exec(["pkill", "-x", SSHD_PROCESSES])
    wait_until("sshd gone", lambda: stack.exec(["pgrep", "-x", SSHD_PROCESSES]).exit_code == 1)
    wait_until("the SSH port refuses", lambda: not sshd_greets(stack))


def start_sshd(stack: SlurmStack) -> None:
    stack.check(SSHD)
    wait_until("sshd greets again", lambda: sshd_greets(stack))


def restart_sshd(stack: SlurmStack) -> None:
    """Kill sshd (dropping every connection) and start a new one."""
    stop_sshd(stack)
    start_sshd(stack)


def kill_sshd_when(stack: SlurmStack, condition: str) -> None:
    """Arm a watcher in the container that kills sshd the moment the shell ``condition`` holds (polled every 50 ms,
    for at most 30 s): an outage that lands exactly where a test wants it, whatever the test process is doing."""
    script = (f'echo $$ > {WATCHER_PID}; for _ in $(seq 600); do {condition} && break; sleep 0.05; done; '
              f'pkill -x "{SSHD_PROCESSES}"; rm -f {WATCHER_PID}')
    stack.container.get_wrapped_container().exec_run(["sh", "-c", script], detach=True)


def disarm_watcher(stack: SlurmStack) -> None:
    stack.exec(f"[ -f {WATCHER_PID} ] && kill $(cat {WATCHER_PID}); rm -f {WATCHER_PID}")


def sshd_killed_then_started(stack: SlurmStack) -> None:
    wait_until("sshd killed", lambda: stack.exec(["pgrep", "-x", SSHD_PROCESSES]).exit_code == 1)
    start_sshd(stack)
