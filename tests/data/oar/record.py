"""Record real OAR outputs for the parser tests: ``.venv/bin/python -m tests.data.oar.record``.

Starts the real stack (``stacks/oar_stack.py``), submits a fixed set of jobs as ``tester`` with the argv
:class:`~intercede.backends.schedulers.oar.OARScheduler` builds, drives them into the states it can provoke (done,
failed, running, held, a missing working directory, walltime exceeded, deleted while running and while held, a job
array, refused at submit, the server down), and writes what each command printed under
``tests/data/oar/<version>/``: ``<capture>.txt`` (stdout), ``<capture>.stderr`` (when non-empty) and
``captures.json`` (version, role -> job id, per capture the argv and exit status). A few minutes.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from intercede.backends.schedulers.base import BatchJob, BulkRequest, SubmitRequest
from intercede.backends.schedulers.oar import OARScheduler
from intercede.model import Resources
from stacks.oar_stack import OARStack, start
from tests.data.recordings import write_capture

HERE = Path(__file__).resolve().parent
HOME = "/home/tester"
ROOT = f"{HOME}/jobs"
UNKNOWN = "99999"
PREFIX = "0123456789ab"  # the array's copies work in ROOT/<PREFIX>0000.., its anchor is ROOT/<PREFIX>ffff
SCRIPTS = {"ok.sh": "exit 0", "fail.sh": "exit 3", "sleep.sh": "sleep 600"}
ROLES = ("ok", "fail", "running", "held", "walltime", "cancel_run", "cancel_held")


class Recorder:
    def __init__(self, stack: OARStack) -> None:
        self.stack, self.oar = stack, OARScheduler(ROOT)
        self.out = HERE / stack.version
        self.captures: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, str] = {}

    def capture(self, name: str | None, argv: list[str]) -> tuple[int, str, str]:
        res = self.stack.exec(argv, user="tester")
        result = res.exit_code, res.stdout, res.stderr
        if name is not None:
            write_capture(self.out, self.captures, name, argv, result, label="oar")
        return result

    def submit(self, role: str, script: str, capture: str | None = None, *, workdir: str | None = None,
               **resources: Any) -> str | None:
        request = SubmitRequest(f"{HOME}/{script}", workdir or f"{ROOT}/{role}", f"rec-{role}", Resources(**resources))
        code, out, _ = self.capture(capture, self.oar.submit_argv(request))
        if code != 0:
            return None
        self.jobs[role] = out.rsplit("OAR_JOB_ID=", 1)[1].split()[0]
        return self.jobs[role]

    def jobs_of(self, *roles: str) -> list[BatchJob]:
        return [BatchJob(self.jobs[r], f"{ROOT}/{r}") for r in roles if r in self.jobs]

    def wait(self, what: str, predicate: Any, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(1.0)

    def state(self, role: str) -> str:
        out = self.capture(None, ["oarstat", "-J", "-j", self.jobs[role]])[1]
        return str(json.loads(out or "{}").get(self.jobs[role], {}).get("state", ""))

    def record(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        copies = [f"{ROOT}/{PREFIX}{k:04d}" for k in range(3)]
        setup = [f"cd {HOME}", *(f"printf '%s\\n' '#!/bin/sh' '{body}' > {name}" for name, body in SCRIPTS.items()),
                 "chmod +x " + " ".join(SCRIPTS), "mkdir -p " + " ".join([*(f"{ROOT}/{r}" for r in ROLES), *copies,
                                                                         f"{ROOT}/{PREFIX}ffff"]),
                 *(f"printf '#!/bin/sh\\nexit {k}\\n' > {d}/job.sh" for k, d in enumerate(copies))]
        self.capture(None, ["sh", "-c", " && ".join(setup)])
        self.submit("ok", "ok.sh", "oarsub_ok")
        self.submit("fail", "fail.sh")
        self.submit("running", "sleep.sh", cores=2, wall_time=timedelta(minutes=30))
        self.submit("held", "sleep.sh", native=["--hold"])
        self.submit("error", "ok.sh", workdir=f"{ROOT}/no-such-dir")
        self.submit("walltime", "sleep.sh", wall_time=timedelta(seconds=3))
        self.submit("cancel_run", "sleep.sh")
        self.submit("cancel_held", "sleep.sh", native=["--hold"])
        bulk = BulkRequest(ROOT, PREFIX, 0, 3, "rec-array", Resources(), tuple(copies),
                           tuple(f"{d}/job.sh" for d in copies), f"{ROOT}/{PREFIX}ffff")
        launcher = self.oar.bulk_launcher(bulk) or ""
        self.capture(None, ["sh", "-c", 'printf "%s" "$1" > "$2"', "sh", launcher, bulk.launcher])
        _, out, _ = self.capture("oarsub_array", self.oar.submit_bulk_argv(bulk))
        for k, job_id in enumerate(line.split("=", 1)[1] for line in out.splitlines()
                                   if line.startswith("OAR_JOB_ID=")):
            self.jobs[f"array{k}"] = job_id
        self.submit("bad_queue", "ok.sh", "oarsub_bad_queue", queue="no-such-queue")
        self.submit("too_many_cores", "ok.sh", "oarsub_too_many_cores", cores=999)
        self.wait("running jobs", lambda: self.state("running") == "Running" and self.state("cancel_run") == "Running")
        self.wait("held jobs", lambda: self.state("held") == "Hold" and self.state("cancel_held") == "Hold")
        live = [*self.jobs_of("running", "held", "cancel_run", "cancel_held"), BatchJob(UNKNOWN, f"{ROOT}/x")]
        self.capture("oarstat_live", self.oar.status_argv(live))
        self.capture("load", self.oar.load_argv() or [])
        self.capture("oardel_mixed", self.oar.cancel_argv([*self.jobs_of("cancel_run", "cancel_held"),
                                                           BatchJob(UNKNOWN, f"{ROOT}/x")]))
        ended = ("ok", "fail", "error", "walltime", "cancel_run", "cancel_held", "array0", "array1", "array2")
        self.wait("the ends", lambda: all(self.state(r) in ("Terminated", "Error") for r in ended))
        self.capture("oarstat_final", self.oar.status_argv(
            [BatchJob(self.jobs[r], f"{ROOT}/{r}") for r in ended] + [BatchJob(UNKNOWN, f"{ROOT}/x")]))
        self.capture("oarstat_unknown", self.oar.status_argv([BatchJob(UNKNOWN, f"{ROOT}/x")]))
        self.capture("find", self.oar.find_argvs(["rec-running", "rec-ok", "rec-array.1", "rec-nope"])[0])
        self.capture("oardel_finished", self.oar.cancel_argv(self.jobs_of("ok", "cancel_run")))
        self.capture(None, ["oardel", *[j.native_id for j in self.jobs_of("running", "held")]])
        self.stack.check("pkill -f 'perl /usr/lib/oar/[A]lmighty'; while pgrep -f 'perl /usr/lib/oar/[A]lmighty'; "
                         "do sleep 0.2; done")
        self.capture("oarsub_server_down", self.oar.submit_argv(
            SubmitRequest(f"{HOME}/ok.sh", f"{ROOT}/ok", "rec-down", Resources())))
        self.capture("oardel_server_down", self.oar.cancel_argv(self.jobs_of("fail")))
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
