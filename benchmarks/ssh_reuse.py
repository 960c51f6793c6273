"""What reusing one SSH connection buys: SSHTransport versus one ``ssh`` CLI connection per command.

Run from the repository root::

    .venv/bin/python -m benchmarks.ssh_reuse

Starts the sshd stack (``stacks/sshd``), then measures, side by side in one run:

* 200 sequential ``true`` over one reused :class:`~intercede.backends.transports.ssh.SSHTransport` (the one
  connection it opens is included in the total);
* 200 sequential invocations of the ``ssh`` CLI, each a new connection (BatchMode, the pinned known_hosts with
  StrictHostKeyChecking, the client key, no user config);
* 200 concurrent ``true`` on one connection (SSHTransport, default ``max_sessions``; sshd allows 10 channels).

Prints a table and ``ratio: N`` (ssh CLI total / reused-transport total), and writes the table into
``docs/benchmarks.md`` under its own heading, leaving any other section alone.
"""

from __future__ import annotations

import asyncio
import datetime
import subprocess
import time

import asyncssh

from benchmarks import _report
from intercede.backends.transports.ssh import SSHTransport
from stacks import harness
from stacks.ssh_stack import SSHStack, start_sshd

N = 200
HEADING = "## SSH connection reuse (benchmarks/ssh_reuse.py)"


async def reused_sequential(transport: SSHTransport) -> tuple[float, float]:
    """Total seconds for N commands, and seconds for the first one (which opens the connection)."""
    start = time.perf_counter()
    (await transport.run(["true"])).check()
    first = time.perf_counter() - start
    for _ in range(N - 1):
        (await transport.run(["true"])).check()
    return time.perf_counter() - start, first


def cli_per_command(stack: SSHStack) -> float:
    argv = ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={stack.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "IdentitiesOnly=yes", "-i", str(stack.client_key), "-p", str(stack.port),
            f"{stack.username}@{stack.host}", "true"]
    start = time.perf_counter()
    for _ in range(N):
        subprocess.run(argv, check=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - start


async def reused_concurrent(transport: SSHTransport) -> float:
    start = time.perf_counter()
    results = await asyncio.gather(*(transport.run(["true"]) for _ in range(N)))
    assert all(r.ok for r in results)
    return time.perf_counter() - start


async def measure(stack: SSHStack) -> tuple[list[tuple[str, float]], float]:
    """The table's rows, and the seconds the reused transport's first command took (connect included)."""
    async with SSHTransport(stack.endpoint()) as transport:
        sequential, first = await reused_sequential(transport)
        cli = await asyncio.to_thread(cli_per_command, stack)
        concurrent = await reused_concurrent(transport)
        assert transport.connections_opened == 1, "the transport must have used one connection throughout"
    return [("SSHTransport, one reused connection, sequential", sequential),
            ("ssh CLI, one new connection per command", cli),
            ("SSHTransport, one connection, 200 concurrent", concurrent)], first


def table(rows: list[tuple[str, float]]) -> str:
    lines = ["| mode | commands | total s | per command ms |", "|---|---:|---:|---:|"]
    lines += [f"| {mode} | {N} | {total:.2f} | {1000 * total / N:.1f} |" for mode, total in rows]
    return "\n".join(lines)


def machine() -> str:
    ssh_version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip().split(",")[0]
    return (f"{_report.machine()}, "
            f"asyncssh {asyncssh.__version__}, client {ssh_version}, server OpenSSH 9.2 (stacks/sshd, bookworm) "
            "on 127.0.0.1")


def main() -> None:
    harness.engine()
    with start_sshd() as stack:
        rows, first = asyncio.run(measure(stack))
    ratio = rows[1][1] / rows[0][1]
    result = table(rows)
    print(result)
    print(f"ratio: {ratio:.1f}")
    today = datetime.date.today().isoformat()
    _report.write_section(HEADING, f"Measured {today} on {machine()}.\n\n{result}\n\n"
              f"ratio: {ratio:.1f} (ssh CLI total / reused-transport total). The sequential reused total includes "
              f"opening its one connection: the first command took {first:.2f} s. Each CLI call pays a full "
              "handshake, key exchange and login, and sshd forks a new session process for it.")
    print(f"written to {_report.DOC}")


if __name__ == "__main__":
    main()
