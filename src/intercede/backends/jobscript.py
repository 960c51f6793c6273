"""The POSIX shell script every composed job runs: pure text generation, no I/O.

Layout of a job's working directory (made by :class:`~intercede.backends.batch.BatchBackend`; the names are
:class:`~intercede.model.JobFile`, and a spec can use none of them, see :data:`~intercede.model.RESERVED_NAMES`)::

    <root>/<uid>/job.sh        this script (0700)
                 .tag          the idempotency tag (Direct only: a batch system names the job with it)
                 .claim        symlink made atomically by the first of: this script (-> job), a fence (-> fenced)
                 .secrets/KEY  one 0600 file per secret of the copy
                 .exitcode     the payload's exit status, written atomically (via .exitcode.tmp) when it ends
                 .usage        start and end times, node, and CPU times (`times`) of the payload, written just before
                               .exitcode
                 .pid          Direct only: the pid the launch printed (informational; never trusted for signals)
                 .cancelled    Direct only: made by a cancel
                 <inputs>, <stdout>, <stderr>, <outputs>

The wrapper never depends on anything a spec sets: the payload's environment is applied only inside a subshell that
then ``exec``\\s the payload, so the wrapper's own commands (``cd``, recording the exit status with ``command -p mv``,
which searches the system's default path, never ``$PATH``) run in the environment the job was started with. Secret
paths are the literal working directory, never ``$PWD``.

The payload's environment is, in this order (later entries win): the environment the job was started with (Direct:
the clean one below; a batch system: what it gives its jobs — Slurm's ``sbatch``, called without ``--export``, passes
the environment of the shell that submits, over SSH the login environment of the resource's account and never the
service's, plus Slurm's own ``SLURM_*`` variables),
``PWD`` (the working directory; ``OLDPWD`` is removed), the spec's ``environment``, the copy's ``variables``,
``<KEY>_FILE`` (absolute path of each secret's file) and ``INTERCEDE_JOB`` (the job's uid, marking every process of the
job: Direct's cancel and purge find them by it).

Direct starts every job with exactly ``HOME``, ``USER``, ``LOGNAME``, ``PATH=/usr/local/bin:/usr/bin:/bin``,
``LANG=C.UTF-8``, ``TMPDIR`` (if set where the job is launched) and ``INTERCEDE_JOB`` (see
:mod:`intercede.backends.schedulers.direct`).

Every user string (executable, arguments, environment values, file names) is quoted once, so it reaches the payload
byte for byte and nothing is ever expanded by a shell: a string of printable ASCII (plus tab and newline) is quoted
with :func:`shlex.quote`; any other string is produced by the shell's builtin ``printf`` from octal escapes (its
trailing newlines, which a command substitution would strip, quoted literally after it). The script itself is
therefore printable ASCII and newlines only, which every batch system accepts (Slurm refuses a script holding a
carriage return before a newline).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

from intercede.model import Copy, JobFile, JobSpec

__all__ = ["CLAIM", "EXITCODE", "SCRIPT", "SECRETS", "TAGFILE", "render", "shell_word"]

SCRIPT = JobFile.SCRIPT.value
EXITCODE = JobFile.EXITCODE.value
TAGFILE = JobFile.TAG.value
SECRETS = JobFile.SECRETS.value
CLAIM = JobFile.CLAIM.value
USAGE = JobFile.USAGE.value

_PLAIN = frozenset(range(0x20, 0x7F)) | {ord("\t"), ord("\n")}  # bytes that may appear in the script as they are
_PLAIN_BYTES = bytes(sorted(_PLAIN))  # the same, for ``bytes.translate`` (a C-level scan: job scripts are kilobytes)
_FORMAT_LITERAL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 _.,:/=+@")


def shell_word(value: str) -> str:
    """``value`` as one shell word that expands to exactly its UTF-8 bytes, written in printable ASCII and newlines.

    Plain values (printable ASCII, tab, newline) are single-quoted; any other value is one ``printf`` of octal
    escapes inside double quotes (never field-split), followed by its trailing newlines quoted literally, because a
    command substitution strips them. The format holds only letters, digits, a few punctuation marks and escapes, so
    it can never start with ``-`` or hold a ``%`` conversion.
    """
    data = value.encode("utf-8")
    if not data.translate(None, _PLAIN_BYTES):  # nothing left once the plain bytes are deleted
        return shlex.quote(value)
    core = data.rstrip(b"\n")
    trailing = len(data) - len(core)
    fmt = "".join(chr(b) if b in _FORMAT_LITERAL else f"\\{b:03o}" for b in core)
    word = f"\"$(printf '{fmt}')\""
    return word + (shlex.quote("\n" * trailing) if trailing else "")


def render(spec: JobSpec, copy: Copy, workdir: str, container: Sequence[str] = ()) -> str:
    """The job script for one copy of ``spec`` running in ``workdir`` (whose last component is the job's uid).

    ``container`` is the runtime prefix (e.g. ``apptainer exec``) used when ``spec.container`` is set; the image is
    appended to it.
    """
    w = shell_word
    uid = workdir.rstrip("/").rsplit("/", 1)[-1]
    lines = ["#!/bin/sh", "# generated by intercede: runs one job copy in its own working directory",
             f"cd {w(workdir)} || exit 97",
             # A submit attempt that was fenced (it landed after the submitter gave up on it) never runs its payload.
             f"command -p ln -s job {CLAIM} 2>/dev/null || exit 97"]
    staged = {f.name for f in spec.input_files}
    exe = spec.executable
    if exe in staged:
        lines.append(f"command -p chmod u+x -- {w(exe)}")
        exe = f"./{exe}"
    argv = [exe, *spec.arguments]
    if spec.container:
        argv = [*container, spec.container, *argv]
    # Everything the spec sets lives only in this subshell, which becomes the payload: the wrapper's own commands
    # below never see it (a spec's PATH, PWD or a huge value cannot break them).
    payload = ["(", "unset OLDPWD"]
    for name, value in {**spec.environment, **copy.variables}.items():
        payload.append(f"{name}={w(value)}; export {name}")
    for name in copy.secrets:
        payload.append(f"{name}_FILE={w(f'{workdir}/{SECRETS}/{name}')}; export {name}_FILE")
    payload.append(f"INTERCEDE_JOB={w(uid)}; export INTERCEDE_JOB")
    payload.append("exec " + " ".join(w(a) for a in argv))
    # Usage for the wrapper-only resources (Direct): start and end (epoch seconds), the node, and `times` (the
    # shell's own, then its children's user and system CPU: the payload's). Written before .exitcode, so a job seen
    # ended has it. In a brace group, not $(...): `times` in a subshell would not see the payload.
    lines.append("started=$(command -p date +%s)")
    lines += [*payload, f") </dev/null >{w(spec.stdout)} 2>{w(spec.stderr)}"]
    lines += [
        "code=$?",
        "{ printf 'start=%s\\nend=%s\\nnode=%s\\n' \"$started\" \"$(command -p date +%s)\" "
        f"\"$(command -p uname -n)\"; times; }} >{USAGE} 2>/dev/null",
        f"printf '%s\\n' \"$code\" >{JobFile.EXITCODE_TMP} && command -p mv -f {JobFile.EXITCODE_TMP} {EXITCODE}",
        'exit "$code"',
        "",
    ]
    return "\n".join(lines)


def array_launcher(root: str, prefix: str, copy_index: str, output: str) -> str:
    """A job array's script: the task runs its copy's ``job.sh`` in that copy's own directory
    ``<root>/<prefix><k:04d>``, where ``k`` is what the shell arithmetic ``copy_index`` gives from the scheduler's task
    variable (e.g. ``${SLURM_ARRAY_TASK_ID:?}``, or ``$((${SGE_TASK_ID:?} - 1))`` where tasks count from 1); the
    scheduler's own stdout/stderr of the task go to ``<output>.out``/``<output>.err`` there, as for a single job.
    Exit 97 (before the payload) when the variable is unset or the directory is missing."""
    return "\n".join([
        "#!/bin/sh",
        "# generated by intercede: each task of this job array runs its copy in the copy's own working directory",
        f'k=$(printf %04d "{copy_index}") || exit 97',
        f"cd {shell_word(root)}/{prefix}\"$k\" || exit 97",
        f"exec >{output}.out 2>{output}.err",
        f"exec /bin/sh ./{SCRIPT}",
        "",
    ])
