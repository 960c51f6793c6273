"""What reusing one SSH connection buys: SSHTransport versus one ``ssh`` CLI connection per command.

Run from the repository root::

    .venv/bin/python -m benchmarks.ssh_reuse

Starts the sshd stack (``stacks/sshd``), then measures, side by side in one run:

* 200 sequential ``true`` over one reused :class:`~intercede.backends.transports.ssh.SSHTransport` (the one
  connection it opens is included in the total);
* 200 sequential invocations of the ``ssh`` CLI, each a new connection (BatchMode, the pinned known_hosts with
  StrictHostKeyChecking, the client key, no user config);
* 200 concurrent ``true`` on one connection (SSHTransport, default ``max_sessions``; sshd allows 10 channels).

Prints a table and ``ratio: N`` (ssh CLI total / reused-transport total), and writes exactly that into
``docs/benchmarks.md`` under its own heading, leaving any other section alone; why the CLI costs more is prose in that
file's notes.
"""

from __future__ import annotations

import argparse
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


async def measure(stack: SSHStack) -> tuple[list[tuple[str, float]], float, str]:
    """The table's rows, the seconds the reused transport's first command took (connect included), and the server's
    OpenSSH package version as the server reports it."""
    async with SSHTransport(stack.endpoint()) as transport:
        sequential, first = await reused_sequential(transport)
        cli = await asyncio.to_thread(cli_per_command, stack)
        concurrent = await reused_concurrent(transport)
        assert transport.connections_opened == 1, "the transport must have used one connection throughout"
        server = (await transport.run(["dpkg-query", "-W", "-f=${Version}", "openssh-server"])).text.strip()
    return [("SSHTransport, one reused connection, sequential", sequential),
            ("ssh CLI, one new connection per command", cli),
            (f"SSHTransport, one connection, {N} concurrent", concurrent)], first, server or "unknown"


def table(rows: list[tuple[str, float]]) -> str:
    lines = ["| mode | commands | total s | per command ms |", "|---|---:|---:|---:|"]
    lines += [f"| {mode} | {N} | {total:.2f} | {1000 * total / N:.1f} |" for mode, total in rows]
    return "\n".join(lines)


def machine(server: str) -> str:
    ssh_version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip().split(",")[0]
    return (f"{_report.machine()}, "
            f"asyncssh {asyncssh.__version__}, client {ssh_version}, server openssh-server {server} (stacks/sshd) "
            "on 127.0.0.1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-doc", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    harness.engine()
    with start_sshd() as stack:
        rows, first, server = asyncio.run(measure(stack))
    ratio = rows[1][1] / rows[0][1]
    result = table(rows)
    print(result)
    figures = (f"ratio: {ratio:.1f} (ssh CLI total / reused-transport total). The sequential reused total includes "
               f"opening its one connection: the first command took {first:.2f} s.")
    print(figures)
    print(f"on {machine(server)}")
    if args.no_doc:
        return
    today = datetime.date.today().isoformat()
    _report.write_section(HEADING, f"Measured {today} on {machine(server)}.\n\n{result}\n\n{figures}")
    print(f"written to {_report.DOC}")


if __name__ == "__main__":
    main()
