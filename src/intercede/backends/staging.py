"""The one shell script that stages job directories and runs the submit command: pure text generation, no I/O.

:class:`~intercede.backends.batch.BatchBackend` makes a submit ONE round trip: it runs ``sh -s -- <submit argv>``
on the resource with this script on stdin. The script makes every copy's working directory (``job.sh``; ``.tag``
when the copy has a tag file; ``.secrets/<KEY>`` 0600 when it has secrets: no file or directory a copy does not
need, since making them is most of what staging hundreds of copies costs), an optional array launcher, and then
``exec``\\s its arguments (the scheduler's submit command) — or exits 0 when there are none (the caller still has
input files to upload before it submits).

Why stdin and not argv: the directories' contents (job scripts for hundreds of copies, secrets) would overflow the
argument budget (:data:`~intercede.backends.transports.base.ARGV_BUDGET`), and a secret must never be on a command
line. Every file (job scripts, tags, secrets) is written by the shell's builtin ``printf`` from one quoted word (no
process is exec'd with its text).

Exit statuses the caller reads (with a marker line on stderr, so a submit command exiting the same way is not
mistaken for them): :data:`ATTEMPT_USED` — a copy's directory exists already (an earlier use of the same attempt id;
not ours to remove) — and :data:`STAGE_FAILED` — a directory or file could not be written. Everything else is the
submit command's own exit status.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from intercede.backends.jobscript import SCRIPT, SECRETS, TAGFILE, shell_word

__all__ = ["ATTEMPT_USED", "MARK", "STAGE_FAILED", "StagedDir", "script"]

ATTEMPT_USED = 17
STAGE_FAILED = 96
#: The prefix of the stderr line the script prints when it exits with one of its own statuses.
MARK = "intercede-staging:"


@dataclass(frozen=True)
class StagedDir:
    """One working directory to make: its job script, the text of its ``.tag`` file (None: no tag file), and its
    secrets (name -> value)."""

    workdir: str
    job_script: str
    tag: str | None
    secrets: Mapping[str, str] = field(default_factory=dict)


def script(root: str, dirs: Sequence[StagedDir], *, anchor: str | None = None, launcher: str | None = None) -> str:
    """The staging script for ``dirs`` under ``root`` (made if missing). ``anchor`` is made too (it may exist), with
    ``launcher`` written into it as ``array.sh`` when given. Ends with ``exec "$@"`` when given arguments.

    Every check and write is a shell builtin (``[``, ``printf`` with a redirection), and one ``mkdir`` makes every
    directory: staging N copies costs one fork, not several per copy (forks dominate on a busy login node)."""
    w = shell_word
    lines = [
        "umask 077",
        f"fail() {{ printf '%s %s\\n' '{MARK} cannot write' \"$1\" >&2; exit {STAGE_FAILED}; }}",
    ]
    for d in dirs:
        lines.append(f"if [ -e {w(d.workdir)} ] || [ -L {w(d.workdir)} ]; then "
                     f"printf '%s %s\\n' '{MARK} attempt used:' {w(d.workdir)} >&2; exit {ATTEMPT_USED}; fi")
    made = [root, *([anchor] if anchor is not None else []),
            *(f"{d.workdir}/{SECRETS}" if d.secrets else d.workdir for d in dirs)]
    lines.append(f"mkdir -p -- {' '.join(w(m) for m in made)} || fail {w(root)}")
    if anchor is not None and launcher is not None:
        lines.append(_write(f"{anchor}/array.sh", launcher))
    for d in dirs:
        lines.append(_write(f"{d.workdir}/{SCRIPT}", d.job_script))
        if d.tag is not None:
            lines.append(_write(f"{d.workdir}/{TAGFILE}", d.tag))
        for name, value in d.secrets.items():
            lines.append(_write(f"{d.workdir}/{SECRETS}/{name}", value))
    lines += ['[ "$#" -eq 0 ] && exit 0', 'exec "$@"', ""]
    return "\n".join(lines)


def _write(path: str, text: str) -> str:
    """The builtin ``printf`` writing exactly ``text`` to ``path`` (no process is exec'd with it)."""
    return f"printf '%s' {shell_word(text)} >{shell_word(path)} || fail {shell_word(path)}"
