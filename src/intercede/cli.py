"""The ``intercede`` command line.

``intercede run`` starts intercede (the embedded default: local Ray, a local CE, the SQLite journal under
``./intercede-data``; or the CEs of ``--config``), declares the sample jobs, shows progress, cancels the ones meant to
be cancelled, collects every output and prints a final table. ``--serve`` keeps the service running afterwards.

User errors (a bad config, nothing to attach to) print one clear line and exit 2; never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import sys
from pathlib import Path

from intercede.actors.client import Intercede
from intercede.actors.reconciler import JobRequest
from intercede.actors.settings import Settings, load_settings
from intercede.demo import sample_jobs
from intercede.errors import IntercedeError

__all__ = ["main"]


def _settings(args: argparse.Namespace) -> Settings:
    if args.config:
        return load_settings(Path(args.config))
    return Settings.embedded(Path(args.data_dir))


async def _run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    ce = args.ce or settings.ce[0].name
    if ce not in {c.name for c in settings.ce}:
        raise IntercedeError(f"no CE named {ce!r} in the configuration (have: {[c.name for c in settings.ce]})")
    print(f"intercede: journal {settings.journal_path}, CEs: {', '.join(c.name for c in settings.ce)}")
    ic = Intercede.start(settings)
    jobs = sample_jobs(secrets.token_hex(3), args.jobs)
    await ic.declare([JobRequest(key, ce, spec) for key, (spec, _) in jobs.items()])
    doomed = [key for key, (_, kind) in jobs.items() if kind == "cancelled"]
    await _until_running(ic, doomed, args.timeout)
    await ic.cancel(doomed)
    await ic.wait(list(jobs), until="terminal", timeout=args.timeout)
    outputs = settings.data_dir / "outputs"
    await ic.collect(list(jobs), outputs)
    rows = await ic.wait(list(jobs), until="collected", timeout=args.timeout)
    _table(rows, {k: kind for k, (_, kind) in jobs.items()})
    print(f"outputs under {outputs}")
    if args.serve:
        print("serving; Ctrl-C to stop")
        await asyncio.Event().wait()
    return 0 if all(r["state"] == _expected(jobs[r["key"]][1]) for r in rows) else 1


async def _until_running(ic: Intercede, keys: list[str], timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        rows = [r for r in await ic.rows() if r["key"] in keys]
        if all(r["state"] in ("Running", "Done", "Failed", "Aborted") for r in rows):
            return
        await asyncio.sleep(0.3)


def _expected(kind: str) -> str:
    return {"done": "Done", "failed": "Failed", "cancelled": "Aborted"}[kind]


def _table(rows: list[dict[str, object]], kinds: dict[str, str]) -> None:
    print(f"\n{'key':22} {'wanted':9} {'state':8} {'exit':>4}  {'collected':9}  outputs")
    for r in rows:
        key = str(r["key"])
        outputs = r["outputs"] or "-"
        print(f"{key:22} {kinds[key]:9} {r['state']!s:8} {r['exit_code']!s:>4}  {r['collected']!s:9}  {outputs}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="intercede", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start intercede and run the sample jobs end to end")
    run.add_argument("--config", help="TOML file declaring the CEs (default: the embedded local CE)")
    run.add_argument("--data-dir", default="intercede-data", help="journal and outputs (embedded default only)")
    run.add_argument("--ce", help="the CE to send the sample jobs to (default: the first)")
    run.add_argument("--jobs", type=int, default=8, help="how many sample jobs")
    run.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for each phase")
    run.add_argument("--serve", action="store_true", help="keep running after the sample jobs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return asyncio.run(_run(args))
    except IntercedeError as exc:
        print(f"intercede: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
