"""What every benchmark prints about the machine, and how it writes its own section of docs/benchmarks.md."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
_PREAMBLE = "# Benchmarks\n\nMeasured side by side; each section is written by the script named in its heading.\n"


def machine() -> str:
    """E.g. ``Debian GNU/Linux 12 (bookworm), 2 cores (Intel(R) Xeon(R) Processor); Python 3.11.7``."""
    os_name = "unknown OS"
    with open("/etc/os-release") as f:
        m = re.search(r'^PRETTY_NAME="?([^"\n]*)', f.read(), re.M)
        if m:
            os_name = m.group(1)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{os_name}, {os.cpu_count()} cores ({cpu}); Python {platform.python_version()}"


def write_section(heading: str, body: str) -> None:
    """Replace (or append) the section under ``heading`` in docs/benchmarks.md, leaving the others alone."""
    section = f"{heading}\n\n{body}\n"
    text = DOC.read_text() if DOC.exists() else _PREAMBLE
    if heading in text:
        start = text.index(heading)
        nxt = text.find("\n## ", start + len(heading))
        text = text[:start] + section + (text[nxt:] if nxt != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(text)
