"""Direct: a job is a process started in the background by the resource's shell. Pure argv builders and parsers.

The process runs ``job.sh`` in its own session (``setsid``), so its pid is also its process group and a cancel signals
the whole group. Its pid is written to ``.pid`` in the working directory by the same command that starts it. State
comes from the ``.exitcode`` file the job script writes when the payload ends, and from whether the pid is alive:

=====================================================  ==========  ==================================
what the status command sees                           state       why
=====================================================  ==========  ==================================
``.exitcode`` = 0                                      DONE
``.exitcode`` != 0                                     FAILED      (ABORTED if it was cancelled)
process alive                                          RUNNING
no exit code, process gone, ``.cancelled`` present     ABORTED     killed by :meth:`cancel_argv`
no exit code, process gone                             FAILED      killed from outside (e.g. OOM)
working directory gone                                 (absent)    purged: the backend decides
=====================================================  ==========  ==================================

There is no queue and no history: a purged job is simply unknown.
"""

from __future__ import annotations

from collections.abc import Sequence

from intercede.backends.capabilities import LoadReport
from intercede.backends.jobscript import EXITCODE, TAGFILE
from intercede.backends.schedulers.base import BatchJob, NativeStatus, SubmitRequest
from intercede.backends.transports.base import CommandResult
from intercede.errors import CommandError
from intercede.model import JobState

__all__ = ["DirectScheduler"]

_LAUNCH = 'cd "$1" && { setsid sh "$2" </dev/null >/dev/null 2>&1 & echo $! >.pid; cat .pid; }'

# Checks .exitcode again after a failed liveness check: the payload may end between the two. `read` instead of `cat`
# saves a fork per job, and a directory purged while we look is skipped (absent) rather than half-printed.
# A zombie (reaped late by whoever adopted it) counts as gone. dash's kill takes "-TERM -<pgid>" but not "--".
_STATUS = f"""
alive() {{ kill -0 "$1" 2>/dev/null && case $(cat /proc/"$1"/stat 2>/dev/null) in *") Z "*) return 1;; esac; }}
while [ $# -ge 2 ]; do d=$1; p=$2; shift 2
  [ -d "$d" ] || continue
  if {{ read -r c <"$d/{EXITCODE}"; }} 2>/dev/null; then x=exited
  elif alive "$p"; then c=-; x=running
  elif {{ read -r c <"$d/{EXITCODE}"; }} 2>/dev/null; then x=exited
  elif [ -d "$d" ]; then c=-; x=vanished
  else continue; fi
  [ -f "$d/.cancelled" ] && k=cancelled || k=-
  printf '%s %s %s %s\\n' "$p" "$x" "$c" "$k"
done
"""

_CANCEL = f"""
while [ $# -ge 2 ]; do d=$1; p=$2; shift 2
  if [ ! -d "$d" ]; then printf '%s unknown\\n' "$p"; continue; fi
  if [ -f "$d/{EXITCODE}" ]; then printf '%s finished\\n' "$p"; continue; fi
  : >"$d/.cancelled"
  kill -TERM -"$p" 2>/dev/null || printf '%s notrunning\\n' "$p"
done
"""

_FIND = f"""
root=$1; shift
for d in "$root"/*/; do d=${{d%/}}
  [ -f "$d/{TAGFILE}" ] && [ -f "$d/.pid" ] || continue
  t=$(cat "$d/{TAGFILE}")
  for want; do [ "$t" = "$want" ] && printf '%s %s %s\\n' "$want" "$(cat "$d/.pid")" "${{d##*/}}"; done
done
exit 0
"""

_LOAD = f"""
n=0; for d in "$1"/*/; do [ -f "$d/.pid" ] && [ ! -f "$d/{EXITCODE}" ] && kill -0 "$(cat "$d/.pid")" 2>/dev/null \
  && n=$((n+1)); done
printf '%s %s\\n' "$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)" "$n"
"""


def _pairs(jobs: Sequence[BatchJob]) -> list[str]:
    return [x for j in jobs for x in (j.workdir, j.native_id)]


class DirectScheduler:
    """Background processes under ``root`` (the directory holding every job's working directory)."""

    name = "direct"

    def __init__(self, root: str) -> None:
        self.root = root

    def submit_argv(self, request: SubmitRequest) -> list[str]:
        return ["sh", "-c", _LAUNCH, "sh", request.workdir, request.script]

    def parse_submit(self, result: CommandResult) -> str:
        result.check()
        pid = result.text.strip()
        if not pid.isdigit():
            raise CommandError(f"direct launch printed no pid: {pid[:200]!r}", argv=list(result.argv))
        return pid

    def status_argv(self, jobs: Sequence[BatchJob]) -> list[str]:
        return ["sh", "-c", _STATUS, "sh", *_pairs(jobs)]

    def parse_status(self, result: CommandResult, jobs: Sequence[BatchJob]) -> dict[str, NativeStatus]:
        result.check()
        found: dict[str, NativeStatus] = {}
        for line in result.text.splitlines():
            fields = line.split()
            if len(fields) != 4:
                raise CommandError(f"unexpected direct status line: {line[:200]!r}", argv=list(result.argv))
            pid, how, code, cancelled = fields
            found[pid] = _status(how, code, cancelled == "cancelled")
        return found

    def history_argv(self, jobs: Sequence[BatchJob]) -> list[str] | None:
        return None

    def parse_history(self, result: CommandResult, jobs: Sequence[BatchJob]) -> dict[str, NativeStatus]:
        return {}

    def cancel_argv(self, jobs: Sequence[BatchJob]) -> list[str]:
        return ["sh", "-c", _CANCEL, "sh", *_pairs(jobs)]

    def parse_cancel(self, result: CommandResult, jobs: Sequence[BatchJob]) -> dict[str, str]:
        result.check()
        reasons = {"unknown": "no such job (working directory gone)", "notrunning": "job is not running",
                   "finished": "job has already finished"}
        failed: dict[str, str] = {}
        for line in result.text.splitlines():
            pid, _, why = line.partition(" ")
            failed[pid] = reasons.get(why, why)
        return failed

    def find_argvs(self, tags: Sequence[str]) -> list[list[str]]:
        return [["sh", "-c", _FIND, "sh", self.root, *tags]]

    def parse_find(self, results: Sequence[CommandResult], tags: Sequence[str]) -> dict[str, list[BatchJob]]:
        found: dict[str, list[BatchJob]] = {t: [] for t in tags}
        (result,) = results
        result.check()
        for line in result.text.splitlines():
            fields = line.split(" ")
            if len(fields) != 3 or fields[0] not in found:
                raise CommandError(f"unexpected direct find line: {line[:200]!r}", argv=list(result.argv))
            tag, pid, uid = fields
            found[tag].append(BatchJob(pid, f"{self.root}/{uid}"))
        return found

    def load_argv(self) -> list[str] | None:
        return ["sh", "-c", _LOAD, "sh", self.root]

    def parse_load(self, result: CommandResult) -> LoadReport:
        result.check()
        try:
            total, running = (int(x) for x in result.text.split())
        except ValueError as exc:
            raise CommandError(f"unexpected direct load output: {result.text[:200]!r}") from exc
        return LoadReport(total_cores=total, free_cores=max(total - running, 0), running=running, queued=0)


def _status(how: str, code: str, cancelled: bool) -> NativeStatus:
    if how == "running":
        return NativeStatus(JobState.RUNNING, "running")
    if how == "vanished":
        if cancelled:
            return NativeStatus(JobState.ABORTED, "killed", reason="cancelled")
        return NativeStatus(JobState.FAILED, "vanished", reason="process ended without an exit status (killed?)")
    exit_code = int(code) if code.lstrip("-").isdigit() else None
    if cancelled and exit_code != 0:
        return NativeStatus(JobState.ABORTED, "exited", exit_code, "cancelled")
    state = JobState.DONE if exit_code == 0 else JobState.FAILED
    return NativeStatus(state, "exited", exit_code)
