"""A tour of the backend contract on this machine: submit, monitor, cancel, fetch outputs and purge.

Runs against a LocalTransport + Direct backend (plain local processes), so it needs nothing but Python.
    .venv/bin/python examples/contract_tour.py
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from intercede.backends.batch import BatchBackend
from intercede.backends.schedulers.direct import DirectScheduler
from intercede.backends.transports.local import LocalTransport
from intercede.model import JobSpec, OutputFile


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="intercede-tour-") as tmp:
        root = f"{tmp}/jobs"
        Path(root).mkdir()
        async with BatchBackend(LocalTransport(), DirectScheduler(root), root) as ce:
            ok = JobSpec(executable="/bin/sh", arguments=["-c", "echo hello > greeting.txt; echo done"],
                         output_files=[OutputFile(name="greeting.txt")], tag="tour-ok")
            bad = JobSpec(executable="/bin/sh", arguments=["-c", "echo oops >&2; exit 4"], tag="tour-bad")
            slow = JobSpec(executable="sleep", arguments=["600"], tag="tour-slow")
            ids = {name: (await ce.submit(spec)).job_ids[0] for name, spec in
                   {"ok": ok, "bad": bad, "slow": slow}.items()}
            await asyncio.sleep(0.5)
            print("cancel slow:", (await ce.cancel([ids["slow"]]))[0].ok)
            statuses = await ce.status(list(ids.values()))
            while not all(s.state.is_terminal for s in statuses):
                await asyncio.sleep(0.2)
                statuses = await ce.status(list(ids.values()))
            manifest = await ce.fetch(ids["ok"], ok, Path(tmp) / "out")
            print(f"{'job':6} {'state':8} {'exit':>4}  native")
            for name, s in zip(ids, statuses, strict=True):
                print(f"{name:6} {s.state.value:8} {s.exit_code!s:>4}  {s.native_state}")
            print("fetched:", ", ".join(f"{f.name} ({f.size} B)" for f in manifest.files))
            print("purged:", all(o.ok for o in await ce.purge(list(ids.values()))))


if __name__ == "__main__":
    asyncio.run(main())
