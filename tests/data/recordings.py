"""Recorded real scheduler outputs: how the recorders (``tests/data/<scheduler>/record.py``) write them and how the
parser tests read them back, in one shape for every batch dialect.

A recording is one folder per version: ``<capture>.txt`` (the command's stdout, always written), ``<capture>.stderr``
(only when non-empty) and ``captures.json``, whose ``captures`` map each capture to its ``argv`` and ``exit_status``
(the recorder adds what its parser tests need besides: the version, ``jobs`` (role -> job id), tags, ...).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from intercede.backends.transports.base import CommandResult


def write_capture(folder: Path, captures: dict[str, dict[str, Any]], name: str, argv: list[str],
                  result: tuple[int, str, str], *, label: str) -> None:
    """Record one command's ``(exit status, stdout, stderr)`` as capture ``name`` in ``folder`` and in ``captures``
    (a stale ``.stderr`` of an earlier recording is removed); ``label`` prefixes the progress line on stderr."""
    code, out, err = result
    for suffix, text in ((".txt", out), (".stderr", err)):
        path = folder / f"{name}{suffix}"
        if text or suffix == ".txt":
            path.write_text(text)
        elif path.exists():
            path.unlink()
    captures[name] = {"argv": argv, "exit_status": code}
    print(f"[{label}] {name}: exit {code}", file=sys.stderr, flush=True)


class Recording:
    """One version's recorded outputs, read back: :meth:`result` is a capture as the transport answered it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.version = folder.name
        self.meta: dict[str, Any] = json.loads((folder / "captures.json").read_text())

    def result(self, name: str) -> CommandResult:
        capture = self.meta["captures"][name]
        stderr = self.folder / f"{name}.stderr"
        return CommandResult(tuple(capture["argv"]), capture["exit_status"], (self.folder / f"{name}.txt").read_bytes(),
                             stderr.read_bytes() if stderr.exists() else b"", 0.1)

    def id(self, role: str) -> str:
        """The job id of the job that played ``role``."""
        return str(self.meta["jobs"][role])
