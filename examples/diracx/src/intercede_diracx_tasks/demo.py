"""The tasks run by hand against intercede's embedded default: one local CE, the SQLite journal, a local Ray.

    python -m intercede_diracx_tasks.demo --data /tmp/dx-demo --pilots 4

What a DiracX scheduler and worker would do on their schedules, in a loop: SubmitPilotsTask tops the CE up to
``--pilots`` waiting pilots, CheckPilotsTask records their states and collects their outputs, until every pilot's
record is final. Prints one line per pilot: its id (the WMS's, also intercede's key), CE and final status.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from pathlib import Path

from intercede import Intercede, JobSpec, OutputFile, Settings
from intercede_diracx_tasks.store import FINAL, SQLitePilotStore
from intercede_diracx_tasks.tasks import CheckPilotsTask, PilotContext, SubmitPilotsTask, configure


def pilot(ce: str, pilot_id: str) -> JobSpec:
    """The demo's "pilot": a shell line that reports its id (a real one runs DIRAC's pilot wrapper)."""
    return JobSpec(executable="/bin/sh", arguments=["-c", 'echo "pilot $DIRACX_PILOT_ID on $(hostname)" > pilot.log'],
                   environment={"DIRACX_PILOT_ID": pilot_id}, output_files=[OutputFile(name="pilot.log")],
                   tag=pilot_id)


async def run(data: Path, pilots: int, timeout: float) -> int:
    settings = Settings.embedded(data / "intercede").model_copy(
        update={"namespace": f"diracx-demo-{secrets.token_hex(4)}"})
    ic = Intercede.start(settings, address="local")
    store = SQLitePilotStore(data / "pilots.sqlite")
    configure(PilotContext(intercede=ic, store=store, targets={"local": pilots}, pilot=pilot,
                           outputs=data / "outputs", per_cycle=pilots))
    await SubmitPilotsTask().execute()  # one submit cycle: the target is reached at once
    async with asyncio.timeout(timeout):
        while True:
            await CheckPilotsTask().execute()
            records = await store.all()
            if records and all(status in FINAL for _, status in records.values()):
                break
            await asyncio.sleep(1)
    for pilot_id, (ce, status) in records.items():
        log = (data / "outputs" / pilot_id / "pilot.log").read_text().strip()
        print(f"{pilot_id} {ce} {status} {log}")
    return 0 if all(s == "Done" for _, s in records.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder for the journal, pilot records, outputs")
    parser.add_argument("--pilots", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args(argv)
    args.data.mkdir(parents=True, exist_ok=True)
    return asyncio.run(run(args.data.absolute(), args.pilots, args.timeout))


if __name__ == "__main__":
    sys.exit(main())
