"""Direct: a job is a process started in the background by the resource's shell. Pure argv builders and parsers.

**Launch.** ``job.sh`` runs in its own session (``setsid``), so its pid is also its process group, in a clean
environment: exactly ``HOME`` (the launching account's), ``USER`` and ``LOGNAME`` (``id -un``),
``PATH=/usr/local/bin:/usr/bin:/bin``, ``LANG=C.UTF-8``, ``TMPDIR`` (only if set where the job is launched) and
``INTERCEDE_JOB=<uid>`` (the job directory's name); the job script adds ``PWD`` and the spec's environment (see
:mod:`intercede.backends.jobscript`). Nothing else of the service's environment (Ray's variables, CA bundles, ...)
reaches a job. The launch prints the pid it started, the native part of the job id ``<pid>@<uid>``, and also writes it
to ``.pid`` for tag lookups; that file is the payload's to rewrite, so no signal is ever sent on its word.

**Which processes are the job's.** The job's *leader* is the pid ``p`` of its job id only while that process is
alive, not a zombie, leads its own process group and works in the job's directory (``/proc/<p>/cwd``: the job script
never leaves it) — never pid 0 or 1, whatever id it is given. Every process of the job carries ``INTERCEDE_JOB=<uid>``
in its environment (inherited through ``setsid``, ``nohup``, double forks); a *sweep* finds them by reading
``/proc/*/environ`` (readable for one's own processes). Cancel and purge signal the leader's process group and the
swept processes, nothing else. A process that both leaves the job's session and clears its environment escapes
(only a cgroup could hold it; Direct uses none).

**Cancel** makes ``.cancelled``, sends SIGTERM to the job's processes and starts a detached killer on the resource
(so the caller does not wait) that sends SIGKILL to whatever is left of the job ``kill_grace`` seconds later.
**Purge** sends SIGKILL to every process of the job at once, then removes its working directory.

**State** comes from the ``.exitcode`` file the job script writes when the payload ends, and from whether the job's
processes are alive:

=====================================================  ==========  ==================================
what the status command sees                           state       why
=====================================================  ==========  ==================================
``.exitcode`` = 0                                      DONE
``.exitcode`` != 0                                     FAILED      (ABORTED if it was cancelled)
the leader, or any other process of the job, alive     RUNNING     (also while a cancel takes effect)
no exit code, nothing alive, ``.cancelled`` present    ABORTED     killed by :meth:`cancel_argv`
no exit code, nothing alive                            FAILED      killed from outside (e.g. OOM)
working directory gone                                 (absent)    purged: the backend decides
=====================================================  ==========  ==================================

There is no queue and no history: a purged job is simply unknown. An id whose native part is not a pid never reaches
a command line (status: absent; cancel: "no such job").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

from intercede.backends.capabilities import LoadReport
from intercede.backends.jobscript import EXITCODE, TAGFILE, USAGE
from intercede.backends.schedulers.base import BatchJob, BulkRequest, NativeStatus, SubmitRequest
from intercede.backends.transports.base import CommandResult
from intercede.errors import CommandError
from intercede.model import JobFile, JobState, Usage

__all__ = ["DirectScheduler"]

_CANCELLED = JobFile.CANCELLED.value
_PID = JobFile.PID.value
_MARK = "INTERCEDE_JOB"  # one of model.RESERVED_ENV: a spec cannot set it
_NATIVE = re.compile(r"[1-9][0-9]{0,9}\Z")

# "$1" the job's directory, "$2" its script. $! is printed as it is, never read back from .pid (which the job may be
# rewriting already), once the child leads its own session (a few reads of /proc, bounded), so a cancel right after
# the submit finds its process group. `setsid` does not fork here: a background child is never a group leader.
_LAUNCH = (
    'cd "$1" && { env -i HOME="$HOME" USER="$u" LOGNAME="$u" PATH=/usr/local/bin:/usr/bin:/bin '
    'LANG=C.UTF-8 ${TMPDIR:+"TMPDIR=$TMPDIR"} ' + _MARK + '="${1##*/}" setsid sh "$2" </dev/null >/dev/null 2>&1 & '
    'p=$!; i=0; while [ $i -lt 5000 ] && { read -r s </proc/$p/stat; } 2>/dev/null; do s=${s##*") "}; '
    'set -f; set -- $s; set +f; [ "$3" = "$p" ] && break; i=$((i+1)); done; echo "$p" >' + _PID + '; echo "$p"; }'
)
# Bulk: (directory, script) pairs, one launch each in a subshell (the launch's `set --` and `cd` stay in it), one pid
# printed per line in order; a copy whose launch failed prints "-" (it was not started: its directory is missing, or
# the shell could not fork, e.g. at the account's process limit, and says so on stderr), and the loop goes on.
_LAUNCH_ONE = "u=$(id -un); " + _LAUNCH
_LAUNCH_MANY = (
    "u=$(id -un); launch() { " + _LAUNCH + "; }\n"
    'while [ $# -ge 2 ]; do ( launch "$1" "$2" ) || echo -; shift 2; done'
)

# Shell functions of the commands below.
# ours PID DIR: PID is alive, not a zombie and works in DIR (sets pg, its process group). /proc/<p>/stat is
#   "pid (comm) state ppid pgrp ...": the fields after the last ") " (comm may hold anything). `cd -P` resolves both
#   directories without a fork.
# leader PID DIR: PID is the job's leader (see the module docstring): ours, and leading its own process group.
# uid DIR: DIR's name is a job uid (16 hex digits; sets u), so unquoted lists of uids split into exactly their words.
# swept UID...: the /proc/<pid>/environ of every process carrying one of the jobs' markers (grep's status is 2 when a
#   process ended while it looked, so callers test the output, never the status).
# reap SIGNAL UID...: send SIGNAL to every process swept; SIGKILL repeats the sweep (up to 10 times) until none is left,
#   so children forked while we looked go too. The sweeping shell and grep carry no marker.
_COMMON = f"""
ours() {{
  case $1 in ''|*[!0-9]*|0|1) return 1;; esac
  {{ read -r s </proc/"$1"/stat; }} 2>/dev/null || return 1
  s=${{s##*") "}}; set -f; set -- "$1" "$2" $s; set +f
  [ "$3" != Z ] && pg=$5 || return 1
  cd -P /proc/"$1"/cwd 2>/dev/null && h=$PWD && cd -P "$2" 2>/dev/null && [ "$PWD" = "$h" ]
}}
leader() {{ ours "$1" "$2" && [ "$pg" = "$1" ]; }}
uid() {{ u=${{1%/}}; u=${{u##*/}}; case $u in *[!0-9a-f]*) return 1;; esac; [ ${{#u}} = 16 ]; }}
swept() {{
  m=; for u; do m="$m -e {_MARK}=$u"; done
  [ -n "$m" ] && grep -l -F $m /proc/[0-9]*/environ 2>/dev/null; return 0
}}
reap() {{
  g=$1; shift; n=0
  while [ $n -lt 10 ] && f=$(swept "$@") && [ -n "$f" ]; do n=$((n+1))
    for f in $f; do q=${{f#/proc/}}; q=${{q%/environ}}
      [ "$q" -gt 1 ] && [ "$q" != $$ ] && kill -"$g" "$q" 2>/dev/null; done
    [ "$g" = KILL ] || return 0
  done
  return 0
}}
"""

# Checks .exitcode again after a failed liveness check: the payload may end between the two. `read` instead of `cat`
# saves a fork per job, and a directory purged while we look is skipped (absent) rather than half-printed. A job whose
# leader is gone may still have processes (a cancel taking effect, a leader killed from outside): the marker entries
# of every process are read once per command (one pipeline, only when a job needs them) and matched exactly.
_STATUS = _COMMON + f"""
nl='
'
all=-
lingers() {{
  uid "$1" || return 1
  [ "$all" = - ] && all="$nl$(cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | grep "^{_MARK}=")$nl"
  case $all in *"${{nl}}{_MARK}=$u$nl"*) return 0;; esac
  return 1
}}
while [ $# -ge 2 ]; do d=$1; p=$2; shift 2
  [ -d "$d" ] || continue
  if {{ read -r c <"$d/{EXITCODE}"; }} 2>/dev/null; then x=exited
  elif ours "$p" "$d" || lingers "$d"; then c=-; x=running
  elif {{ read -r c <"$d/{EXITCODE}"; }} 2>/dev/null; then x=exited
  elif [ -d "$d" ]; then c=-; x=vanished
  else continue; fi
  [ -f "$d/{_CANCELLED}" ] && k=cancelled || k=-
  printf '%s %s %s %s\\n' "$p" "$x" "$c" "$k"
done
"""

# "$1" the grace in seconds, then the cancel's (directory, pid) pairs: SIGKILL for what is left of each job cancelled.
_KILLER = _COMMON + f"""
sleep "$1"; shift; us=
while [ $# -ge 2 ]; do d=$1; p=$2; shift 2
  [ -f "$d/{_CANCELLED}" ] || continue
  leader "$p" "$d" && kill -KILL -"$p" 2>/dev/null
  uid "$d" && us="$us $u"
done
reap KILL $us
"""

# "$1" the killer's script, "$2" the grace in seconds, then (directory, pid) pairs. SIGTERM now; the killer runs
# detached (its own session, every descriptor on /dev/null, so neither sshd nor a local caller waits for it).
_CANCEL = _COMMON + f"""
one() {{
  if [ ! -d "$1" ]; then printf '%s unknown\\n' "$2"; return; fi
  if [ -f "$1/{EXITCODE}" ]; then printf '%s finished\\n' "$2"; return; fi
  : >"$1/{_CANCELLED}"
  uid "$1" && us="$us $u"
  if leader "$2" "$1"; then kill -TERM -"$2" 2>/dev/null; return; fi
  uid "$1" && [ -n "$(swept "$u")" ] || printf '%s notrunning\\n' "$2"
}}
k=$1; grace=$2; shift 2; d=; us=
for a; do if [ -z "$d" ]; then d=$a; else one "$d" "$a"; d=; fi; done
reap TERM $us
if [ -n "$us" ]; then setsid sh -c "$k" sh "$grace" "$@" </dev/null >/dev/null 2>&1 & fi
"""

# (directory, pid) pairs: SIGKILL for every process of the jobs, then one `rm` for every directory (the loop keeps
# the directories, at odd positions, by appending them to the arguments it is iterating over, then drops the rest).
_PURGE = _COMMON + """
d=; us=
for a; do
  if [ -z "$d" ]; then d=$a; continue; fi
  leader "$a" "$d" && kill -KILL -"$a" 2>/dev/null
  uid "$d" && us="$us $u"; d=
done
reap KILL $us
n=$#; i=0
for a; do i=$((i+1)); [ $((i % 2)) = 1 ] && set -- "$@" "$a"; done
shift "$n"
cd / && rm -rf -- "$@"
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

# A job counts as running while its leader is (the pid in .pid is only a candidate: `leader` checks it).
_LOAD = _COMMON + f"""
n=0; for d in "$1"/*/; do d=${{d%/}}
  [ ! -f "$d/{EXITCODE}" ] && {{ read -r p <"$d/{_PID}"; }} 2>/dev/null && leader "$p" "$d" && n=$((n+1)); done
printf '%s %s\\n' "$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1)" "$n"
"""


# (directory, pid) pairs: each finished job's .usage on one line after its pid (jobs without one are left out).
_USAGE = f"""
while [ $# -ge 2 ]; do d=$1; p=$2; shift 2
  [ -f "$d/{USAGE}" ] || continue
  l=$p; while IFS= read -r x; do l="$l $x"; done <"$d/{USAGE}" 2>/dev/null
  printf '%s\\n' "$l"
done
exit 0
"""
_TIMES = re.compile(r"([0-9]+)m([0-9]+(?:[.,][0-9]+)?)s\Z")


def _times_seconds(word: str) -> float | None:
    match = _TIMES.match(word)
    return int(match[1]) * 60 + float(match[2].replace(",", ".")) if match else None


def parse_usage_line(line: str) -> tuple[str, Usage] | None:
    """``<pid> start=<epoch> end=<epoch> node=<name> <self user> <self sys> <children user> <children sys>`` (the
    job script's ``.usage`` on one line) -> (pid, usage); None for a line without an end (the job is still writing
    it). CPU time is the children's user + system time (the payload's); peak memory is not known to a shell."""
    words = line.split()
    if not words:
        return None
    fields = dict(w.split("=", 1) for w in words[1:] if "=" in w)
    times = [t for w in words[1:] if "=" not in w and (t := _times_seconds(w)) is not None]
    try:
        start, end = int(fields["start"]), int(fields["end"])
    except (KeyError, ValueError):
        return None
    cpu = sum(times[2:4]) if len(times) >= 4 else None
    return words[0], Usage(wall_seconds=float(max(0, end - start)), cpu_seconds=cpu, node=fields.get("node") or None,
                           started_at=datetime.fromtimestamp(start, UTC), ended_at=datetime.fromtimestamp(end, UTC))


def _signalable(job: BatchJob) -> bool:
    """Whether ``job``'s native id can be a pid at all (anything else never reaches a command line)."""
    return bool(_NATIVE.match(job.native_id))


def _pairs(jobs: Sequence[BatchJob]) -> list[str]:
    return [x for j in jobs if _signalable(j) for x in (j.workdir, j.native_id)]


class DirectScheduler:
    """Background processes under ``root`` (the directory holding every job's working directory).

    ``kill_grace`` is how many seconds a cancelled job has to end after SIGTERM before it is sent SIGKILL.
    """

    name = "direct"
    tag_file: Literal[True] = True  # no job names of its own: find_argvs reads each job's .tag

    def __init__(self, root: str, *, kill_grace: int = 10) -> None:
        if kill_grace < 0:
            raise ValueError(f"kill_grace must be >= 0 seconds, got {kill_grace}")
        self.root = root
        self.kill_grace = kill_grace

    def submit_argv(self, request: SubmitRequest) -> list[str]:
        return ["sh", "-c", _LAUNCH_ONE, "sh", request.workdir, request.script]

    def parse_submit(self, result: CommandResult) -> str:
        result.check()
        pid = result.text.strip()
        if not pid.isdigit():
            raise CommandError(f"direct launch printed no pid: {pid[:200]!r}", argv=list(result.argv))
        return pid

    bulk_max = 10_000

    def bulk_launcher(self, request: BulkRequest) -> str | None:
        return None

    def submit_bulk_argv(self, request: BulkRequest) -> list[str]:
        """One command starting every copy, each exactly as :meth:`submit_argv` starts one."""
        pairs = [x for w, s in zip(request.workdirs, request.scripts, strict=True) for x in (w, s)]
        return ["sh", "-c", _LAUNCH_MANY, "sh", *pairs]

    def parse_submit_bulk(self, result: CommandResult, request: BulkRequest) -> list[str | None]:
        """The pid of each copy, in order; None for a copy the launcher printed ``-`` for: it was not started (its
        directory was gone, or the shell could not fork, e.g. at the account's process limit), while the copies
        around it were. A launcher that stopped part way (it exits when it cannot fork a copy's subshell) printed a
        line for each copy it tried, so the copies after its last line were never tried: None too. A launcher that
        printed nothing and failed, or printed anything else, raises for all."""
        pids = result.text.split()
        if not result.ok and not pids:
            result.check()
        if len(pids) > request.count or (result.ok and len(pids) != request.count) or \
                not all(p.isdigit() or p == "-" for p in pids):
            raise CommandError(f"direct bulk launch printed {result.text[:200]!r} for {request.count} copies",
                               argv=list(result.argv))
        return [None if p == "-" else p for p in pids] + [None] * (request.count - len(pids))

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

    def usage_argv(self, jobs: Sequence[BatchJob]) -> list[str]:
        """Each finished job's ``.usage`` (written by the job script), one line per job."""
        return ["sh", "-c", _USAGE, "sh", *_pairs(jobs)]

    def parse_usage(self, result: CommandResult, jobs: Sequence[BatchJob]) -> dict[str, Usage]:
        """Pid -> usage (see :func:`parse_usage_line`)."""
        result.check()
        return dict(parsed for line in result.text.splitlines() if (parsed := parse_usage_line(line)) is not None)

    def cancel_argv(self, jobs: Sequence[BatchJob]) -> list[str]:
        return ["sh", "-c", _CANCEL, "sh", _KILLER, str(self.kill_grace), *_pairs(jobs)]

    def parse_cancel(self, result: CommandResult, jobs: Sequence[BatchJob]) -> dict[str, str]:
        result.check()
        reasons = {"unknown": "no such job (working directory gone)", "notrunning": "job is not running",
                   "finished": "job has already finished"}
        failed = {j.native_id: "no such job (not a Direct job id)" for j in jobs if not _signalable(j)}
        for line in result.text.splitlines():
            pid, _, why = line.partition(" ")
            failed[pid] = reasons.get(why, why)
        return failed

    def purge_argv(self, jobs: Sequence[BatchJob]) -> list[str]:
        """Kill every process left of ``jobs`` (SIGKILL, see the module docstring), then remove their directories."""
        return ["sh", "-c", _PURGE, "sh", *(x for j in jobs for x in (j.workdir, j.native_id))]

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
