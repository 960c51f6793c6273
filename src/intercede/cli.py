"""The ``intercede`` command line.

``intercede run`` starts intercede (the embedded default: local Ray, a local CE, the SQLite journal under
``./intercede-data``; or the CEs of ``--config``), declares the sample jobs, shows progress, cancels the ones meant to
be cancelled, collects every output and prints a final table. ``--serve`` keeps the service running afterwards;
``--jobs 0`` declares nothing (service only). It prints the Ray address the other commands attach to.

``intercede serve --config FILE`` runs the service for a config's CEs (no sample jobs) until interrupted (the same as
``run --config FILE --jobs 0 --serve``); ``intercede declare FILE`` declares the jobs of a TOML/JSON file into it.

``intercede status`` / ``cancel KEY...`` / ``collect KEY... --to DIR`` attach to a running intercede (its named actors
in a Ray cluster: ``--address``, default auto); ``collect`` writes ``DIR/<key>`` on the machine where it runs, wherever
the actors run (pulled through Ray, see :meth:`Intercede.collect <intercede.actors.client.Intercede.collect>`).
``intercede ce check NAME --config FILE`` checks one CE directly
(connectivity, authentication, a tiny test job), without Ray.

Exit status: 0 success; 1 a CE failed its check, or the sample jobs did not end as expected; 2 a user error (a bad
config, nothing to attach to, an unknown key), printed as one clear message with what to do, never a traceback;
130 interrupted. ``INTERCEDE_DEBUG=1`` adds the traceback to an unexpected error.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import secrets
import signal
import sys
import time
import tomllib
import traceback
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from intercede.actors.settings import Settings, load_settings
from intercede.backends.registry import build_backend
from intercede.demo import sample_jobs
from intercede.diagnostics import text
from intercede.diagnostics.cecheck import Step, check_ce, credential_files, credential_options, describe
from intercede.errors import IntercedeError, InvalidSpecError
from intercede.model import JobSpec
from intercede.reconcile.state import Phase

if TYPE_CHECKING:
    from intercede.actors.client import Intercede
    from intercede.reconcile import KeyRow

# The modules that import Ray are imported by the commands that use it: `ce check` and a bad config answer at once.

__all__ = ["main"]

DEFAULT_NAMESPACE = "intercede"
#: What the service commands import beyond the core dependencies (the `service` extra).
_SERVICE_MODULES = ("ray", "tqdm")


class UsageError(IntercedeError):
    """A command-line mistake: the message says what is wrong and what to do."""


# -- configuration -------------------------------------------------------------------------------------------------


def _load_config(path: Path) -> Settings:
    """The settings of ``path``, or a :class:`UsageError` that names each bad field and its CE in plain words."""
    try:
        return load_settings(path)
    except InvalidSpecError as exc:
        if isinstance(exc.__cause__, ValidationError):
            raise UsageError(f"{exc}\nfix the file and run the command again (see the [[ce]] fields in README.md)"
                             ) from exc
        raise UsageError(f"{exc}; fix the file and run the command again") from exc


def _preflight(settings: Settings) -> None:
    """Catch what would otherwise only show as an unreachable CE later: unusable options and missing credentials."""
    for ce in settings.ce:
        build_backend(ce)  # InvalidSpecError names the CE
        options, table = credential_options(ce)
        for option, path in credential_files(options):
            if not path.expanduser().is_file():
                raise UsageError(f"CE {ce.name!r}: the {option} file {path} does not exist; create it or correct "
                                 f"`{option}` under {table} (check it with "
                                 f"`intercede ce check {ce.name} --config FILE`)")


def _settings(args: argparse.Namespace) -> Settings:
    if args.config:
        settings = _load_config(Path(args.config))
        if not settings.ce:
            raise UsageError(f"config {args.config} declares no CE; add a [[ce]] table")
        _preflight(settings)
        return settings
    return Settings.embedded(Path(args.data_dir))


# -- run -----------------------------------------------------------------------------------------------------------


async def _run(args: argparse.Namespace) -> int:
    from intercede.actors.client import Intercede
    from intercede.actors.metrics import metrics_endpoints

    settings = _settings(args)
    ce = args.ce or settings.ce[0].name
    if ce not in {c.name for c in settings.ce}:
        raise UsageError(f"no CE named {ce!r} in the configuration (have: {[c.name for c in settings.ce]})")
    print(f"intercede: journal {settings.journal_path}, CEs: {', '.join(c.name for c in settings.ce)}")
    ic = Intercede.start(settings, address=args.address, replace=args.replace)
    address = Intercede.cluster_address()
    if address:
        print(f"intercede: Ray cluster at {address}, namespace {settings.namespace!r}; attach with "
              f"`intercede status --address {address}`")
    for endpoint in metrics_endpoints():
        print(f"intercede: metrics at {endpoint}")
    sys.stdout.flush()
    ok = True
    if args.jobs > 0:
        ok = await _sample(ic, settings, ce, args)
    else:
        print("intercede: no sample jobs (--jobs 0)")
    if args.serve:
        print("serving; Ctrl-C to stop", flush=True)
        await _until_signalled()
        print("intercede: stopping")
    return 0 if ok else 1


async def _sample(ic: Intercede, settings: Settings, ce: str, args: argparse.Namespace) -> bool:
    from intercede.actors.reconciler import JobRequest

    jobs = sample_jobs(secrets.token_hex(3), args.jobs)
    await ic.declare([JobRequest(key, ce, spec) for key, (spec, _) in jobs.items()])
    doomed = [key for key, (_, kind) in jobs.items() if kind == "cancelled"]
    await _until_running(ic, doomed, args.timeout)
    await ic.cancel(doomed)
    await ic.wait(list(jobs), until="terminal", timeout=args.timeout)
    outputs = settings.data_dir / "outputs"
    pulled = await ic.collect(list(jobs), outputs, timeout=args.timeout)
    rows = await ic.rows_of(list(jobs))
    _table(rows, {k: kind for k, (_, kind) in jobs.items()}, {k: m.destination for k, m in pulled.items()})
    print(f"outputs under {outputs}", flush=True)
    return all(r.state == _expected(jobs[r.key][1]) for r in rows)


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _until_running(ic: Intercede, keys: list[str], timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        rows = await ic.rows_of(keys)
        if all(r.state in ("Running", "Done", "Failed", "Aborted") for r in rows):
            return
        await asyncio.sleep(0.3)


def _expected(kind: str) -> str:
    return {"done": "Done", "failed": "Failed", "cancelled": "Aborted"}[kind]


def _table(rows: list[KeyRow], kinds: dict[str, str], pulled: dict[str, Path]) -> None:
    print(f"\n{'key':22} {'wanted':9} {'state':8} {'exit':>4}  {'collected':9}  outputs")
    for r in rows:
        outputs = pulled.get(r.key) or "-"
        print(f"{r.key:22} {kinds[r.key]:9} {r.state!s:8} {r.exit_code!s:>4}  {r.collected!s:9}  {outputs}")


# -- status, cancel, collect: attached to a running intercede ------------------------------------------------------


def _attach(args: argparse.Namespace) -> Intercede:
    from intercede.actors.client import Intercede

    namespace = args.namespace
    if args.config:
        namespace = _load_config(Path(args.config)).namespace
    return Intercede.attach(namespace or DEFAULT_NAMESPACE, args.address)


async def _status(args: argparse.Namespace) -> int:
    """Counts for the summary (however many keys), and only the rows shown: the keys asked for, else the first
    ``--limit``."""
    ic = _attach(args)
    if args.keys:
        await _known(ic, args.keys)
    counts, health, stats = await ic.counts(), await ic.ce_health(), await ic.stats()
    rows = await ic.rows_of(args.keys) if args.keys else await ic.rows(limit=args.limit)
    total = sum(n for *_, n in counts)
    if args.json:
        print(json.dumps({"rows": [dataclasses.asdict(r) for r in rows],
                          "counts": [{"ce": ce, "state": state, "phase": phase, "count": n}
                                     for ce, state, phase, n in counts],
                          "ces": [h.model_dump() for h in health], "stats": stats}, default=str, indent=1))
        return 0
    where = ic.cluster_address() or "?"
    print(f"intercede at {where}: {text.counts_summary(counts)}; {stats.get('ticks', 0)} reconcile ticks, "
          f"{stats.get('tick_errors', 0)} errors" + (f" (last: {stats['last_error']})" if stats.get("last_error")
                                                      else ""))
    print()
    print(text.ces_table(health))
    print()
    shown = len(args.keys) if args.keys else total
    print(text.jobs_table(rows, limit=args.limit, total=shown) if rows else "no job keys declared")
    return 0


async def _known(ic: Intercede, keys: list[str]) -> None:
    unknown = await ic.unknown(keys)
    if unknown:
        raise UsageError(f"not declared in this intercede: {', '.join(unknown[:10])}"
                         + (f" and {len(unknown) - 10} more" if len(unknown) > 10 else "")
                         + "; `intercede status` lists the keys")


async def _cancel(args: argparse.Namespace) -> int:
    ic = _attach(args)
    await _known(ic, args.keys)
    await ic.cancel(args.keys)
    print(f"intercede: cancel requested for {len(args.keys)} key(s)", flush=True)
    if args.wait:
        rows = await ic.wait(args.keys, until="terminal", timeout=args.timeout)
        print(text.jobs_table(rows))
    return 0


async def _collect(args: argparse.Namespace) -> int:
    """The outputs land in ``--to DIR`` on the machine running this command, wherever the actors run: the CE actors
    fetch and verify them on their nodes, then this pulls them through Ray (:meth:`Intercede.collect`)."""
    ic = _attach(args)
    await _known(ic, args.keys)
    destination = Path(args.to).absolute()  # noqa: ASYNC240 - no I/O
    if args.no_wait:
        await ic.collect(args.keys, destination, wait=False)
        print(f"intercede: collect requested for {len(args.keys)} key(s); run this again without --no-wait to "
              f"bring the outputs to {destination}/<key>", flush=True)
        return 0
    print(f"intercede: outputs of {len(args.keys)} key(s) will go to {destination}/<key> on this machine",
          flush=True)
    pulled = await ic.collect(args.keys, destination, timeout=args.timeout)
    rows = await ic.rows_of(args.keys)
    print(text.table([[r.key, r.state, r.exit_code, "yes" if r.key in pulled else "no",
                       pulled[r.key].destination if r.key in pulled else r.permanent_error] for r in rows],
                     ["key", "state", "exit", "collected", "outputs"], right=["exit"]))
    return 0 if all(r.key in pulled for r in rows) else 1


# -- declare: jobs from a file into a running intercede ------------------------------------------------------------


class _JobEntry(BaseModel):
    """One ``[[job]]`` of a jobs file: a key, its CE, the spec, and optionally the phase and destination."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    ce: str
    spec: JobSpec
    phase: Phase = Phase.RUNNING
    destination: Path | None = None


class _JobsFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    job: list[_JobEntry] = Field(min_length=1)


def _read_jobs(path: Path) -> list[_JobEntry]:
    """The jobs of a TOML (``[[job]]`` tables) or JSON (``{"job": [...]}`` or a list) file; :class:`UsageError` naming
    the file, the job and the field otherwise (values are never echoed: a spec may hold secrets)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read jobs file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"jobs file {path} is not UTF-8 text (offset {exc.start}); save it as UTF-8") from exc
    try:
        data: Any = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"jobs file {path} is not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}"
                         ) from exc
    if isinstance(data, list):
        data = {"job": data}
    try:
        jobs = _JobsFile.model_validate(data).job
    except ValidationError as exc:
        lines = [f"jobs file {path} is invalid:"]
        for err in exc.errors(include_input=False):
            loc = err["loc"]
            if len(loc) >= 2 and loc[0] == "job" and isinstance(loc[1], int):
                entry = data["job"][loc[1]] if isinstance(data.get("job"), list) else None
                key = entry.get("key") if isinstance(entry, dict) else None
                where = f"[[job]] #{loc[1] + 1}" + (f" ({key!r})" if isinstance(key, str) else "")
                if loc[2:]:
                    where += ", " + ".".join(map(str, loc[2:]))
            else:
                where = ".".join(map(str, loc)) or "the file"
            lines.append(f"  {where}: {str(err['msg']).removeprefix('Value error, ')}")
        lines.append("fix the file and run the command again (see `intercede declare --help`)")
        raise UsageError("\n".join(lines)) from exc
    keys = [j.key for j in jobs]
    if len(set(keys)) != len(keys):
        twice = sorted({k for k in keys if keys.count(k) > 1})
        raise UsageError(f"jobs file {path} declares these keys more than once: {', '.join(twice[:10])}")
    return jobs


async def _declare(args: argparse.Namespace) -> int:
    from intercede.actors.reconciler import JobRequest

    path = Path(args.file)
    jobs = _read_jobs(path)
    ic = _attach(args)
    requests = [JobRequest(j.key, j.ce, j.spec, j.phase,
                           None if j.destination is None else (path.parent / j.destination.expanduser()).absolute())
                for j in jobs]
    await ic.declare(requests, progress=False)
    ces = sorted({j.ce for j in jobs})
    print(f"intercede: declared {len(jobs)} key(s) on {', '.join(ces)}; `intercede status` follows them", flush=True)
    return 0


# -- ce check ------------------------------------------------------------------------------------------------------


async def _ce_check(args: argparse.Namespace) -> int:
    settings = _load_config(Path(args.config)) if args.config else Settings.embedded(Path(args.data_dir))
    found = {c.name: c for c in settings.ce}
    if args.name not in found:
        where = args.config or "the embedded default"
        raise UsageError(f"no CE named {args.name!r} in {where} (have: {', '.join(found) or 'none'})")
    print(f"ce check {args.name}: {describe(found[args.name])}", flush=True)

    def show(step: Step) -> None:
        took = f"  [{step.seconds:.1f} s]" if step.seconds >= 0.05 else ""
        print(f"  {step.result:4}  {step.name:13} {step.detail}{took}", flush=True)

    report = await check_ce(found[args.name], timeout=args.timeout, progress=show)
    print(report.verdict)
    failed = report.failed
    if failed is not None and failed.hint:
        print(f"  what to do: {failed.hint}")
    return 0 if report.ok else 1


# -- the parser and main -------------------------------------------------------------------------------------------


def _attach_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default="auto",
                        help="the Ray cluster to attach to, as `intercede run` printed it (default: auto = "
                             "$RAY_ADDRESS or the cluster running on this machine)")
    parser.add_argument("--namespace", default=None, help=f"intercede's Ray namespace (default: {DEFAULT_NAMESPACE})")
    parser.add_argument("--config", help="take the namespace from this config file")


def _replace_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--replace", action="store_true",
                        help="if intercede already runs there with other settings, replace it with these (without "
                             "this flag it is refused, naming what differs)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="intercede", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"intercede {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="start intercede and run the sample jobs end to end")
    run.add_argument("--config", help="TOML file declaring the CEs (default: the embedded local CE)")
    run.add_argument("--data-dir", default="intercede-data", help="journal and outputs (embedded default only)")
    run.add_argument("--ce", help="the CE to send the sample jobs to (default: the first)")
    run.add_argument("--jobs", type=int, default=8, help="how many sample jobs (0: none, just the service)")
    run.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for each phase")
    run.add_argument("--serve", action="store_true", help="keep running after the sample jobs (until Ctrl-C)")
    _replace_option(run)
    run.add_argument("--address", default=None,
                     help="the Ray cluster to run in (default: $RAY_ADDRESS, else the one `ray start` started on "
                          "this machine, else a new local one; `local` always starts a new one)")
    run.set_defaults(handler=_run)

    serve = sub.add_parser("serve", help="run the service for the CEs of a config (no sample jobs) until Ctrl-C")
    serve.add_argument("--config", help="TOML file declaring the CEs (default: the embedded local CE)")
    serve.add_argument("--data-dir", default="intercede-data", help="journal and outputs (embedded default only)")
    serve.add_argument("--address", default=None, help="the Ray cluster to run in (as for `intercede run`)")
    _replace_option(serve)  # both share _run, which reads args.replace
    serve.set_defaults(handler=_run, jobs=0, serve=True, ce=None, timeout=600.0)

    declare = sub.add_parser(
        "declare", help="declare jobs from a TOML or JSON file into a running intercede",
        description="FILE holds [[job]] tables (TOML) or a list of objects (JSON, or {\"job\": [...]}), each with "
                    "`key`, `ce`, `spec` (the JobSpec fields: executable, arguments, environment, output_files, "
                    "...), and optionally `phase` (running | cancelled | collected; default running) and "
                    "`destination` (for collected; relative to FILE's folder). Declaring a key again with the same "
                    "spec is a no-op.")
    declare.add_argument("file", metavar="FILE")
    _attach_options(declare)
    declare.set_defaults(handler=_declare)

    status = sub.add_parser("status", help="table of the jobs and CEs of a running intercede")
    _attach_options(status)
    status.add_argument("keys", nargs="*", metavar="KEY", help="only these keys")
    status.add_argument("--limit", type=int, default=200, help="show at most this many jobs (default 200)")
    status.add_argument("--json", action="store_true", help="print jobs, CEs and figures as JSON")
    status.set_defaults(handler=_status)

    cancel = sub.add_parser("cancel", help="cancel jobs by key")
    cancel.add_argument("keys", nargs="+", metavar="KEY")
    _attach_options(cancel)
    cancel.add_argument("--wait", action="store_true", help="wait until the jobs have ended")
    cancel.add_argument("--timeout", type=float, default=600.0, help="seconds to wait (with --wait)")
    cancel.set_defaults(handler=_cancel)

    collect = sub.add_parser("collect", help="fetch jobs' outputs to a directory (then purge them remotely)",
                             description="Each key's outputs go to DIR/<key> once its job has ended. DIR must be "
                                         "writable where intercede's reconciler runs (this machine, for "
                                         "`intercede run`).")
    collect.add_argument("keys", nargs="+", metavar="KEY")
    collect.add_argument("--to", required=True, metavar="DIR",
                         help="destination directory on this machine (outputs go to DIR/<key>), wherever the "
                              "service runs")
    _attach_options(collect)
    collect.add_argument("--no-wait", action="store_true",
                         help="return once asked (the outputs stay at the service until a collect without it)")
    collect.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the outputs")
    collect.set_defaults(handler=_collect)

    ce = sub.add_parser("ce", help="Computing Element tools")
    ce_sub = ce.add_subparsers(dest="ce_command", required=True, metavar="COMMAND")
    check = ce_sub.add_parser("check", help="connectivity, authentication and a tiny test job on one CE")
    check.add_argument("name", metavar="NAME", help="the CE's name in the config")
    check.add_argument("--config", help="TOML file declaring the CE (default: the embedded local CE, `local`)")
    check.add_argument("--data-dir", default="intercede-data", help="job directories (embedded default only)")
    check.add_argument("--timeout", type=float, default=120.0, help="seconds the test job may take")
    check.set_defaults(handler=_ce_check)
    return parser


def _version() -> str:
    try:
        return version("intercede")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "unknown"


def _explain(exc: BaseException) -> str:
    # An error raised inside a Ray actor arrives wrapped, its str() carrying the remote traceback: show the original.
    cause = getattr(exc, "cause", None)
    return str(cause if isinstance(cause, BaseException) else exc)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    try:
        code: int = asyncio.run(args.handler(args))
        return code
    except IntercedeError as exc:
        print(f"intercede: {_explain(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"intercede: interrupted after {time.monotonic() - started:.0f} s", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug or a broken environment: one line; the traceback on request
        if isinstance(exc, ModuleNotFoundError) and (exc.name or "").partition(".")[0] in _SERVICE_MODULES:
            print(f"intercede: `intercede {args.command}` needs the service extra ({exc.name} is not installed): "
                  "pip install 'intercede[service]'", file=sys.stderr)
            return 2
        if os.environ.get("INTERCEDE_DEBUG"):
            traceback.print_exc()
        print(f"intercede: unexpected error: {type(exc).__name__}: {_explain(exc)} "
              "(set INTERCEDE_DEBUG=1 for the traceback)", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
