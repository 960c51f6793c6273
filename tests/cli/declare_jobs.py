"""Declare shell-command jobs on a running intercede: ``python declare_jobs.py ADDRESS KEY=COMMAND...``.

The command-line suite's stand-in for a WMS: the ``intercede`` command line has no ``declare``.
"""

from __future__ import annotations

import asyncio
import sys

from intercede.actors.client import Intercede
from intercede.actors.reconciler import JobRequest
from intercede.model import JobSpec


async def main(address: str, jobs: list[str]) -> None:
    ic = Intercede.attach("intercede", address)
    requests = []
    for job in jobs:
        key, _, command = job.partition("=")
        spec = JobSpec(executable="/bin/sh", arguments=["-c", command], tag=key)
        requests.append(JobRequest(key, "local", spec))
    await ic.declare(requests, progress=False)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
