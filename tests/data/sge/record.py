"""Record real Grid Engine outputs for the parser tests: ``.venv/bin/python -m tests.data.sge.record``.

Starts the real stack (``stacks/sge_stack.py``), submits a fixed set of jobs as ``tester`` with the argv
:class:`~intercede.backends.schedulers.gridengine.GridEngineScheduler` builds, drives them into the states it can
provoke (done, failed, running, held, error state, deleted while running and while pending, refused at submit), and
writes what each command printed under ``tests/data/sge/<version>/``: ``<capture>.txt`` (stdout), ``<capture>.stderr``
(when non-empty) and ``captures.json`` (version, role -> job id, per capture the argv and exit status). About a minute.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from intercede.backends.schedulers.base import BatchJob, SubmitRequest
from intercede.backends.schedulers.gridengine import GridEngineScheduler
from intercede.model import Resources
from stacks.sge_stack import GridEngineStack, start

HERE = Path(__file__).resolve().parent
HOME = "/home/tester"
ROOT = f"{HOME}/jobs"
UNKNOWN = "99999"
SCRIPTS = {"ok.sh": "mkdir -p . && ln -s job .claim; exit 0", "fail.sh": "ln -s job .claim; exit 3",
           "sleep.sh": "ln -s job .claim; sleep 600"}


class Recorder:
    def __init__(self, stack: GridEngineStack) -> None:
        self.stack, self.sge = stack, GridEngineScheduler(ROOT)
        self.out = HERE / stack.version
        self.captures: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, str] = {}

    def capture(self, name: str | None, argv: list[str]) -> tuple[int, str, str]:
        res = self.stack.exec(argv, user="tester")
        if name is not None:
            for suffix, text in ((".txt", res.stdout), (".stderr", res.stderr)):
                path = self.out / f"{name}{suffix}"
                if text or suffix == ".txt":
                    path.write_text(text)
                elif path.exists():
                    path.unlink()
            self.captures[name] = {"argv": argv, "exit_status": res.exit_code}
            print(f"[sge] {name}: exit {res.exit_code}", file=sys.stderr, flush=True)
        return res.exit_code, res.stdout, res.stderr

    def submit(self, role: str, script: str, capture: str | None = None, *, workdir: str | None = None,
               native: tuple[str, ...] = (), **resources: Any) -> str | None:
        request = SubmitRequest(f"{HOME}/{script}", workdir or f"{ROOT}/{role}", f"rec-{role}",
                                Resources(native=list(native), **resources))
        code, out, _ = self.capture(capture, self.sge.submit_argv(request))
        if code != 0:
            return None
        self.jobs[role] = out.strip().split(".")[0]
        return self.jobs[role]

    def jobs_of(self, *roles: str) -> list[BatchJob]:
        return [BatchJob(self.jobs[r], f"{ROOT}/{r}") for r in roles if r in self.jobs]

    def wait(self, what: str, predicate: Any, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.5)

    def letters(self, role: str) -> str:
        out = self.capture(None, ["qstat", "-xml"])[1]
        number = f"<JB_job_number>{self.jobs[role]}</JB_job_number>"
        if number not in out:
            return ""
        return out.split(number, 1)[1].split("<state>", 1)[1].split("</state>", 1)[0]

    def accounted(self, role: str) -> bool:
        return self.capture(None, ["qacct", "-j", self.jobs[role]])[0] == 0

    def record(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        names = " ".join(SCRIPTS)
        self.capture(None, ["sh", "-c", f"cd {HOME} && " + " && ".join(
            f"printf '%s\\n' '#!/bin/sh' '{body}' > {name}" for name, body in SCRIPTS.items()) + f" && chmod +x {names}"
            + " && mkdir -p " + " ".join(f"{ROOT}/{r}" for r in ("ok", "fail", "running", "held", "cancel_run",
                                                               "cancel_pending", "array"))])
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
        self.wait("running jobs", lambda: self.letters("running") == "r" and self.letters("cancel_run") == "r")
        self.wait("the error state", lambda: "E" in self.letters("error"))
        self.wait("finished jobs", lambda: self.accounted("ok") and self.accounted("fail"))
        live = self.jobs_of("running", "held", "error", "cancel_run", "cancel_pending", "array", "ok")
        self.capture("qstat_live", self.sge.status_argv(live))
        self.capture("find_queue", self.sge.find_argvs(["rec-running", "rec-held", "rec-nope"])[0])
        self.capture("load", self.sge.load_argv() or [])
        self.capture("qdel_mixed", self.sge.cancel_argv([*self.jobs_of("cancel_run", "cancel_pending"),
                                                         BatchJob(UNKNOWN, f"{ROOT}/x")]))
        self.wait("the deletions", lambda: self.accounted("cancel_run") and self.letters("cancel_pending") == "")
        finished = [*self.jobs_of("ok", "fail", "cancel_run", "cancel_pending"), BatchJob(UNKNOWN, f"{ROOT}/x")]
        self.capture("history", self.sge.history_argv(finished) or [])
        self.capture("find_history", self.sge.find_argvs(["rec-ok", "rec-cancel_run", "rec-nope"])[1])
        self.capture(None, ["qdel", *[j.native_id for j in self.jobs_of("running", "held", "error", "array")]])
        self.stack.check("pkill -x sge_qmaster; while pgrep -x sge_qmaster; do sleep 0.2; done")
        self.capture("qstat_master_down", self.sge.status_argv(self.jobs_of("ok")))
        self.capture("qsub_master_down", self.sge.submit_argv(
            SubmitRequest(f"{HOME}/ok.sh", f"{ROOT}/ok", "rec-down", Resources())))
        self.capture("qdel_master_down", self.sge.cancel_argv(self.jobs_of("ok")))
        (self.out / "captures.json").write_text(json.dumps(
            {"version": self.stack.version, "jobs": self.jobs, "captures": self.captures}, indent=2, sort_keys=True)
            + "\n")


def main() -> None:
    stack = start()
    try:
        Recorder(stack).record()
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
