"""Record real Grid Engine outputs for the parser tests: ``.venv/bin/python -m tests.data.sge.record``.

Starts the real stack (``stacks/sge_stack.py``), submits a fixed set of jobs as ``tester`` with the argv
:class:`~intercede.backends.schedulers.gridengine.GridEngineScheduler` builds, drives them into the states it can
provoke (done, failed, running, held, error state, deleted while running and while pending, refused at submit), and
writes what each command printed under ``tests/data/sge/<version>/``: ``<capture>.txt`` (stdout), ``<capture>.stderr``
(when non-empty) and ``captures.json`` (version, role -> job id, per capture the argv and exit status). About two
minutes.

Job arrays go through the scheduler's bulk argv: ``arr`` (3 copies, ``-tc 2``: copy 0 ends at once, 1 and 2 sleep, so
copy 2 waits for a slot) and ``harr`` (2 held copies); their roles are ``arr.<k>``/``harr.<k>`` (copy k, task k + 1)
and ``copies.json`` holds each array's prefix. ``busy`` burns CPU for the usage records (``usage``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from intercede.backends.jobscript import shell_word
from intercede.backends.schedulers.base import BatchJob, BulkRequest, SubmitRequest
from intercede.backends.schedulers.gridengine import GridEngineScheduler
from intercede.backends.transports.base import CommandResult
from intercede.model import Resources
from stacks.sge_stack import GridEngineStack, start
from tests.data.recordings import write_capture

HERE = Path(__file__).resolve().parent
HOME = "/home/tester"
ROOT = f"{HOME}/jobs"
UNKNOWN = "99999"
SCRIPTS = {"ok.sh": "mkdir -p . && ln -s job .claim; exit 0", "fail.sh": "ln -s job .claim; exit 3",
           "sleep.sh": "ln -s job .claim; sleep 600",
           "busy.sh": "ln -s job .claim; i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done"}
ARRAYS = {"arr": ("a1a1a1a1a1a1", ["ok.sh", "sleep.sh", "sleep.sh"], ("-tc", "2")),
          "harr": ("b2b2b2b2b2b2", ["sleep.sh", "sleep.sh"], ("-h",))}


class Recorder:
    def __init__(self, stack: GridEngineStack) -> None:
        self.stack, self.sge = stack, GridEngineScheduler(ROOT)
        self.out = HERE / stack.version
        self.captures: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, str] = {}
        self.prefixes: dict[str, str] = {}

    def capture(self, name: str | None, argv: list[str]) -> tuple[int, str, str]:
        res = self.stack.exec(argv, user="tester")
        result = res.exit_code, res.stdout, res.stderr
        if name is not None:
            write_capture(self.out, self.captures, name, argv, result, label="sge")
        return result

    def submit(self, role: str, script: str, capture: str | None = None, *, workdir: str | None = None,
               native: tuple[str, ...] = (), **resources: Any) -> str | None:
        request = SubmitRequest(f"{HOME}/{script}", workdir or f"{ROOT}/{role}", f"rec-{role}",
                                Resources(native=list(native), **resources))
        code, out, _ = self.capture(capture, self.sge.submit_argv(request))
        if code != 0:
            return None
        self.jobs[role] = out.strip().split(".")[0]
        return self.jobs[role]

    def submit_array(self, role: str, capture: str | None = None) -> None:
        """Stage an array's copies (each copy's job.sh is one of SCRIPTS) and its launcher, then submit it."""
        prefix, scripts, native = ARRAYS[role]
        workdirs = tuple(f"{ROOT}/{prefix}{k:04d}" for k in range(len(scripts)))
        request = BulkRequest(ROOT, prefix, 0, len(scripts), f"rec-{role}", Resources(native=list(native)), workdirs,
                              tuple(f"{w}/job.sh" for w in workdirs), f"{ROOT}/{prefix}ffff")
        launcher = self.sge.bulk_launcher(request) or ""
        self.stack.check(["sh", "-c", " && ".join([
            f"mkdir -p {' '.join(workdirs)} {request.anchor}",
            f"printf %s {shell_word(launcher)} > {request.launcher}",
            *(f"cp {HOME}/{script} {w}/job.sh" for script, w in zip(scripts, workdirs, strict=True))])], user="tester")
        code, out, _ = self.capture(capture, self.sge.submit_bulk_argv(request))
        assert code == 0, out
        self.prefixes[role] = prefix
        for k, native_id in enumerate(self.sge.parse_submit_bulk(_ok(request.launcher, out), request)):
            self.jobs[f"{role}.{k}"] = native_id

    def jobs_of(self, *roles: str) -> list[BatchJob]:
        return [BatchJob(self.jobs[r], self.workdir(r)) for r in roles if r in self.jobs]

    def workdir(self, role: str) -> str:
        base, _, k = role.partition(".")
        return f"{ROOT}/{self.prefixes[base]}{int(k):04d}" if base in self.prefixes else f"{ROOT}/{role}"

    def wait(self, what: str, predicate: Any, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.5)

    def letters(self, role: str) -> str:
        job = self.jobs_of(role)
        _, out, err = self.capture(None, self.sge.status_argv(job))
        found = self.sge.parse_status(_ok("qstat", out, err), job)
        return found[self.jobs[role]].native_state if self.jobs[role] in found else ""

    def accounted(self, role: str) -> bool:
        number, _, task = self.jobs[role].partition(".")
        code, out, _ = self.capture(None, ["qacct", "-j", number, *(["-t", task] if task else [])])
        return code == 0 and "jobnumber" in out

    def record(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        names = " ".join(SCRIPTS)
        self.capture(None, ["sh", "-c", f"cd {HOME} && " + " && ".join(
            f"printf '%s\\n' '#!/bin/sh' '{body}' > {name}" for name, body in SCRIPTS.items()) + f" && chmod +x {names}"
            + " && mkdir -p " + " ".join(f"{ROOT}/{r}" for r in ("ok", "fail", "running", "held", "cancel_run",
                                                               "cancel_pending", "array", "busy"))])
        self.submit("ok", "ok.sh", "qsub_ok")
        self.submit("fail", "fail.sh")
        self.submit("running", "sleep.sh", cores=2, memory_mb=512, wall_time=None)
        self.submit("held", "sleep.sh", native=("-h",))
        self.submit("error", "ok.sh", workdir=f"{ROOT}/no-such-dir")
        self.submit("cancel_run", "sleep.sh")
        self.submit("cancel_pending", "sleep.sh", native=("-h",))
        self.submit("array", "sleep.sh", "qsub_array", native=("-t", "1-3"))
        self.submit("bad_queue", "ok.sh", "qsub_bad_queue", queue="no-such.q")
        self.submit("too_many_cores", "ok.sh", "qsub_too_many_cores", cores=999)
        self.submit("busy", "busy.sh")
        self.submit_array("arr", "qsub_bulk")
        self.submit_array("harr")
        self.wait("running jobs", lambda: self.letters("running") == "r" and self.letters("cancel_run") == "r")
        self.wait("the error state", lambda: "E" in self.letters("error"))
        self.wait("finished jobs", lambda: all(self.accounted(r) for r in ("ok", "fail", "busy", "arr.0")))
        self.wait("the array's running copies", lambda: self.letters("arr.1") == "r" and self.letters("arr.2") == "r")
        live = self.jobs_of("running", "held", "error", "cancel_run", "cancel_pending", "array", "ok", "arr.0",
                            "arr.1", "arr.2", "harr.0", "harr.1")
        self.capture("qstat_live", self.sge.status_argv(live))
        self.capture("find_queue", self.sge.find_argvs(["rec-running", "rec-held", "rec-nope", "rec-arr.1",
                                                        "rec-arr.2", "rec-harr.0", "rec-harr.5"])[0])
        self.capture("load", self.sge.load_argv() or [])
        self.capture("qdel_mixed", self.sge.cancel_argv([*self.jobs_of("cancel_run", "cancel_pending"),
                                                         BatchJob(UNKNOWN, f"{ROOT}/x")]))
        # One finished task, one running, one held; a task of an unknown job.
        self.capture("qdel_tasks", self.sge.cancel_argv([*self.jobs_of("arr.0", "arr.1", "harr.0"),
                                                         BatchJob(f"{UNKNOWN}.1", f"{ROOT}/x")]))
        self.capture("qstat_after_task_deletion", self.sge.status_argv(self.jobs_of("arr.1", "arr.2", "harr.0",
                                                                                    "harr.1")))
        self.capture(None, self.sge.cancel_argv(self.jobs_of("arr.2", "harr.1")))
        self.wait("the deletions", lambda: self.accounted("cancel_run") and self.letters("cancel_pending") == ""
                  and self.accounted("arr.1") and self.accounted("arr.2") and self.letters("harr.1") == "")
        finished = [*self.jobs_of("ok", "fail", "cancel_run", "cancel_pending", "arr.0", "arr.1", "arr.2", "harr.0",
                                  "harr.1"), BatchJob(UNKNOWN, f"{ROOT}/x")]
        self.capture("history", self.sge.history_argv(finished) or [])
        self.capture("find_history", self.sge.find_argvs(["rec-ok", "rec-cancel_run", "rec-nope", "rec-arr.0",
                                                          "rec-arr.2", "rec-harr.0"])[1])
        self.capture("usage", self.sge.usage_argv([*self.jobs_of("busy", "ok", "fail", "cancel_run", "cancel_pending",
                                                                 "arr.0", "arr.1", "harr.0")]))
        self.capture(None, ["qdel", *[j.native_id for j in self.jobs_of("running", "held", "error", "array")]])
        self.stack.check("pkill -x sge_qmaster; while pgrep -x sge_qmaster; do sleep 0.2; done")
        self.capture("qstat_master_down", self.sge.status_argv(self.jobs_of("ok")))
        self.capture("qsub_master_down", self.sge.submit_argv(
            SubmitRequest(f"{HOME}/ok.sh", f"{ROOT}/ok", "rec-down", Resources())))
        self.capture("qdel_master_down", self.sge.cancel_argv(self.jobs_of("ok")))
        (self.out / "captures.json").write_text(json.dumps(
            {"version": self.stack.version, "jobs": self.jobs, "captures": self.captures}, indent=2, sort_keys=True)
            + "\n")
        (self.out / "copies.json").write_text(json.dumps(self.prefixes, indent=2, sort_keys=True) + "\n")


def _ok(program: str, out: str, err: str = "") -> CommandResult:
    return CommandResult((program,), 0, out.encode(), err.encode(), 0.0)


def main() -> None:
    stack = start()
    try:
        Recorder(stack).record()
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
