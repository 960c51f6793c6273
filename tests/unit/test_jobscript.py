"""The generated job script runs the payload with every string intact, in its own directory."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intercede.backends.jobscript import EXITCODE, render
from intercede.model import Copy, InputFile, JobSpec

text = st.text(st.characters(min_codepoint=1, max_codepoint=0x10FFFF, exclude_categories=("Cs",)), max_size=30)


@settings(max_examples=60, deadline=None)
@given(args=st.lists(text, max_size=6), value=text)
def test_arguments_and_environment_reach_the_payload_unchanged(
        tmp_path_factory: pytest.TempPathFactory, args: list[str], value: str) -> None:
    work = tmp_path_factory.mktemp("job")
    script = 'printf "%s\\0" "$@"; printf %s "$V" >&2'
    spec = JobSpec(executable="/bin/sh", arguments=["-c", script, "sh", "first", *args],
                   environment={"V": value})
    (work / "job.sh").write_text(render(spec, spec.copies[0], str(work)))
    subprocess.run(["sh", str(work / "job.sh")], check=True)
    assert (work / "stdout.txt").read_bytes().decode().split("\0")[:-1] == ["first", *args]
    assert (work / "stderr.txt").read_bytes().decode() == value
    assert (work / EXITCODE).read_text() == "0\n"


def test_a_staged_executable_is_made_runnable_and_its_exit_code_recorded(tmp_path: Path) -> None:
    (tmp_path / "run me.sh").write_text("#!/bin/sh\necho staged \"$SECRET_FILE\"\nexit 5\n")
    spec = JobSpec(executable="run me.sh", input_files=[InputFile(source=tmp_path / "x", name="run me.sh")],
                   copies=[Copy(secrets={"SECRET": "hunter2"})])
    script = render(spec, spec.copies[0], str(tmp_path))
    assert "hunter2" not in script
    result = subprocess.run(["sh", "-c", script], check=False)
    assert result.returncode == 5
    assert (tmp_path / "stdout.txt").read_text() == f"staged {tmp_path}/.secrets/SECRET\n"
    assert (tmp_path / EXITCODE).read_text() == "5\n"
