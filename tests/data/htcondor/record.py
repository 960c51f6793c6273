"""Record real HTCondor outputs for the parser tests: ``.venv/bin/python -m tests.data.htcondor.record [23.9 25]``.

For each release it starts the real minicondor stack (``stacks/condor_stack.py``), submits a fixed set of jobs as
``tester`` with the argv :class:`~intercede.backends.schedulers.htcondor.HTCondorScheduler` builds, drives them into
the states it can provoke (completed, failed, running, idle and unmatchable, held by the site, held on a failing exit,
killed by a signal, removed, held for spooling, refused at submit) and writes what each command printed under
``tests/data/htcondor/<release>/``:

* ``<capture>.txt`` stdout and ``<capture>.stderr`` stderr (only when non-empty);
* ``bindings_queue.json`` / ``bindings_history.json``: the same jobs' ads as the ``htcondor2`` client on this machine
  reads them (what :class:`~intercede.backends.htcondor.HTCondorBackend` parses);
* ``captures.json``: the HTCondor version, ``jobs`` (role -> job id), ``tags`` and, per capture, argv and exit status.

``--usage`` records only ``bindings_usage.json`` (finished jobs' usage attributes) and ``usage.json``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from intercede.backends.htcondor import _htcondor as core
from intercede.backends.htcondor._client import CondorClient
from intercede.backends.schedulers.base import BatchJob, SubmitRequest
from intercede.backends.schedulers.htcondor import HTCondorScheduler
from intercede.model import Resources
from stacks import harness
from stacks.condor_stack import CONDOR_VERSIONS, CondorStack, condor_stack
from tests.data.recordings import write_capture

HERE = Path(__file__).resolve().parent
HOME = "/home/tester"
UNKNOWN = "999999.0"
SCRIPTS = {"ok.sh": "exit 0", "fail.sh": "exit 3", "sleep.sh": "sleep 600", "signal.sh": "kill -9 $$"}
# The stock client of the stack's own release submits a spooled job and leaves it held for spooling (no upload):
# prints its cluster id and the LeaveJobInQueue it set.
SPOOL_HELD = """
import htcondor2 as h
s = h.Schedd()
r = s.submit(h.Submit({"executable": "/bin/true", "should_transfer_files": "YES", "MY.IntercedeTag": '"rec-spooling"'}),
             count=1, spool=True)
print(r.cluster(), s.query(f"ClusterId == {r.cluster()}", ["LeaveJobInQueue"])[0]["LeaveJobInQueue"])
"""


class Recorder:
    def __init__(self, stack: CondorStack, version: str) -> None:
        self.stack, self.version, self.condor = stack, version, HTCondorScheduler()
        self.out = HERE / version
        self.captures: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, str] = {}
        self.tags: dict[str, str] = {}

    def run(self, argv: list[str], user: str = "tester") -> tuple[int, str, str]:
        res = self.stack.exec(argv, user=user)
        return res.exit_code, res.stdout, res.stderr

    def capture(self, name: str, argv: list[str]) -> tuple[int, str, str]:
        result = self.run(argv)
        write_capture(self.out, self.captures, name, argv, result, label=self.version)
        return result

    def submit(self, role: str, script: str, capture: str | None = None, **resources: Any) -> str | None:
        tag, workdir = f"rec-{role}", f"{HOME}/jobs/{role}"
        self.run(["mkdir", "-p", workdir])
        argv = self.condor.submit_argv(SubmitRequest(f"{HOME}/{script}", workdir, tag, Resources(**resources)))
        code, out, _ = self.capture(capture, argv) if capture else self.run(argv)
        if code != 0:
            return None
        self.jobs[role], self.tags[role] = out.split()[0], tag
        return self.jobs[role]

    def jobs_of(self, *roles: str) -> list[BatchJob]:
        return [BatchJob(self.jobs[r], f"{HOME}/jobs/{r}") for r in roles if r in self.jobs]

    def status(self, role: str) -> str:
        job = self.jobs[role]
        return (self.run(["condor_q", job, "-af", "JobStatus"])[1].strip()
                or "history:" + self.run(["condor_history", job, "-af", "JobStatus"])[1].strip())

    def wait(self, what: str, predicate: Any, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError(f"[{self.version}] gave up waiting for {what}")
            time.sleep(1)

    def record(self) -> None:
        self.out.mkdir(exist_ok=True)
        for name, body in SCRIPTS.items():
            self.stack.check(["sh", "-c", f"printf '#!/bin/sh\\n{body}\\n' > {HOME}/{name}"], user="tester")
        self.submit("completed", "ok.sh", capture="submit_ok")
        self.submit("failed", "fail.sh")
        self.submit("running", "sleep.sh")
        self.submit("held", "sleep.sh")
        self.submit("exit_hold", "fail.sh", native=["on_exit_hold = ExitCode != 0"])
        self.submit("signalled", "signal.sh")
        self.submit("removed", "sleep.sh")
        self.submit("wide", "sleep.sh", cores=64)  # never matches: the node has 4 cores
        self.submit("refused", "ok.sh", capture="submit_refused", native=["container_image = docker://nope"])
        self.wait("the first jobs to end and start", lambda: self.status("completed") in ("4", "history:4")
                  and self.status("running") == "2" and self.status("held") == "2"
                  and self.status("exit_hold") == "5" and self.status("removed") == "2")
        self.run(["condor_hold", "-reason", "site maintenance", self.jobs["held"]], user="root")
        self.run(["condor_rm", self.jobs["removed"]])
        code, out, err = self.run(["python3", "-c", SPOOL_HELD])
        if code != 0:
            raise RuntimeError(f"[{self.version}] stock spooled submit failed: {err}")
        cluster, leave = out.split(" ", 1)
        self.jobs["spooling"], self.tags["spooling"] = f"{cluster}.0", "rec-spooling"
        (self.out / "stock_leave_in_queue.txt").write_text(leave)
        self.wait("the hold, the removal and the signal", lambda: self.status("held") == "5"
                  and self.status("removed") in ("3", "history:3") and self.status("signalled").endswith("4"))
        everyone = [*self.jobs_of(*self.jobs), BatchJob(UNKNOWN, "/nowhere")]
        self.capture("q_mixed", self.condor.status_argv(everyone))
        self.capture("q_unknown", self.condor.status_argv([BatchJob(UNKNOWN, "/nowhere")]))
        self.capture("history_mixed", self.condor.history_argv(everyone) or [])
        self.capture("load", self.condor.load_argv() or [])
        asyncio.run(self.bindings(everyone))
        self.capture("rm_mixed", self.condor.cancel_argv([*self.jobs_of("running", "completed"),
                                                          BatchJob(UNKNOWN, "/nowhere")]))
        self.capture("rm_unknown", self.condor.cancel_argv([BatchJob(UNKNOWN, "/nowhere")]))
        tags = [self.tags["completed"], self.tags["running"], "rec-absent"]
        for name, argv in zip(("find_q", "find_history"), self.condor.find_argvs(tags), strict=True):
            self.capture(name, argv)
        self.stack.schedd_off()
        self.capture("q_schedd_down", self.condor.status_argv(self.jobs_of("running")))
        self.capture("rm_schedd_down", self.condor.cancel_argv(self.jobs_of("held")))
        self.submit("schedd_down", "ok.sh", capture="submit_schedd_down")
        self.stack.schedd_on()
        meta = {"condor_version": self.stack.version, "jobs": self.jobs, "tags": self.tags, "unknown": UNKNOWN,
                "find_tags": tags, "captures": self.captures}
        (self.out / "captures.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")

    async def bindings(self, jobs: list[BatchJob]) -> None:
        ids = [core.parse_job_id(j.native_id) for j in jobs]
        constraint = core.id_constraint([i for i in ids if i])
        async with _Closing(CondorClient(self.stack.pool, token_file=self.stack.token())) as client:
            for name, op, extra in (("bindings_queue", "query", {}), ("bindings_history", "history", {"match": -1})):
                ads = await client.call(op, constraint=constraint, projection=core.STATUS_ATTRS, **extra)
                ads.sort(key=lambda ad: (ad["ClusterId"], ad["ProcId"]))
                (self.out / f"{name}.json").write_text(json.dumps(ads, indent=1, sort_keys=True) + "\n")


class _Closing:
    def __init__(self, client: CondorClient) -> None:
        self.client = client

    async def __aenter__(self) -> CondorClient:
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()


def record(version: str) -> None:
    with condor_stack(version) as stack:
        Recorder(stack, version).record()


# Usage records (``--usage``): written to their own file, so the captures above stay as they are.
USAGE_SCRIPTS = {
    "busy.sh": "x=$(head -c 40000000 /dev/zero | tr '\\0' a); i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; "
               "sleep 7; echo ${#x}",
    "ok.sh": "exit 0", "fail.sh": "exit 3",
}


def record_usage(version: str) -> None:
    """``bindings_usage.json``: the history ads (:data:`core.STATUS_ATTRS` + :data:`core.USAGE_ATTRS`) of a busy, a
    completed and a failed job, as :class:`~intercede.backends.htcondor.HTCondorBackend` reads them."""
    with condor_stack(version) as stack:
        rec = Recorder(stack, version)
        for name, body in USAGE_SCRIPTS.items():
            stack.check(["sh", "-c", f"printf '#!/bin/sh\\n%s\\n' \"$1\" >{HOME}/{name} && chmod 755 {HOME}/{name}",
                         "sh", body], user="tester")
        for role, script in (("busy", "busy.sh"), ("completed", "ok.sh"), ("failed", "fail.sh")):
            rec.submit(role, script)
        rec.wait("the jobs to end", lambda: all(rec.status(r) == "history:4" for r in ("busy", "completed", "failed")))
        jobs = rec.jobs_of("busy", "completed", "failed")
        constraint = core.id_constraint([i for j in jobs if (i := core.parse_job_id(j.native_id))])

        async def history() -> list[dict[str, Any]]:
            async with _Closing(CondorClient(stack.pool, token_file=stack.token())) as client:
                ads: list[dict[str, Any]] = await client.call(
                    "history", constraint=constraint, projection=[*core.STATUS_ATTRS, *core.USAGE_ATTRS], match=-1)
                return ads

        ads = sorted(asyncio.run(history()), key=lambda ad: (ad["ClusterId"], ad["ProcId"]))
        (rec.out / "bindings_usage.json").write_text(json.dumps(ads, indent=1, sort_keys=True) + "\n")
        meta = {"condor_version": stack.version, "jobs": rec.jobs, "scripts": USAGE_SCRIPTS}
        (rec.out / "usage.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def main(argv: list[str]) -> None:
    harness.engine()
    usage = "--usage" in argv
    versions = [a for a in argv if a != "--usage"] or list(CONDOR_VERSIONS)
    with ThreadPoolExecutor(len(versions)) as pool:
        for version, _ in zip(versions, pool.map(record_usage if usage else record, versions), strict=True):
            print(f"[{version}] recorded under {HERE / version}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
