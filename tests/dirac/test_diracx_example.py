"""The DiracX example of docs/diracx.md, run as documented: its tasks against intercede's embedded default (a local
CE, the SQLite journal, a local Ray started by the example itself)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.dirac, pytest.mark.xdist_group("ray")]  # it starts Ray: never beside another Ray test

ROOT = Path(__file__).parents[2]


def test_the_diracx_example_submits_checks_and_collects_pilots_keyed_by_the_wms_ids(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "examples/diracx/src"), "XDG_STATE_HOME": str(tmp_path / "state")}
    done = subprocess.run([sys.executable, "-m", "intercede_diracx_tasks.demo", "--data", str(tmp_path / "dx"),
                           "--pilots", "3", "--timeout", "180"],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith("pilot-")]
    assert len(lines) == 3
    for line in lines:
        pilot_id, ce, status, log = line.split(" ", 3)
        assert re.fullmatch(r"pilot-[0-9a-f]{20}", pilot_id) and (ce, status) == ("local", "Done")
        assert log.startswith(f"pilot {pilot_id} on ")  # the pilot's own output, collected under its WMS id
