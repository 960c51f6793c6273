"""Hostile and over-bound session directories against a real A-REX (ARC 7.2, the shared session stack).

A job writes, next to normal declared outputs, declared outputs whose names are hostile (a newline, a leading dash,
shell metacharacters), a symbolic link out of the session directory (A-REX serves its target: /etc/passwd), a file
over the fetch's byte bound and more files than its count bound. Each offending file is refused on its own with the
reason; every other output arrives, and its sha256 is that of what the job wrote.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from intercede.backends.arc import ARCBackend
from intercede.errors import CommandError
from intercede.model import InputFile, JobSpec, JobState, OutputBounds, OutputFile
from stacks.arc_stack import ARCStack
from tests.contract.waiting import until_terminal

pytestmark = [pytest.mark.arc, pytest.mark.remote, pytest.mark.hostile]

NORMAL = {"out.txt": "normal\n", "sub/data.txt": "in a subdirectory\n", "-rf": "leading dash\n",
          "$(touch pwned);x": "command substitution\n", "a b;c&d|e>f": "metacharacters\n"}
MANY = [f"many/f{i:02d}" for i in range(30)]
BOUNDS = OutputBounds(max_bytes=100_000, max_files=20)
SCRIPT = r"""
mkdir sub many
for n in out.txt sub/data.txt -rf '$(touch pwned);x' 'a b;c&d|e>f'; do
  cat ".in/$(printf %s "$n" | od -An -tx1 | tr -d ' \n')" > "./$n"
done
printf 'x\n' > "$(printf 'a\nb')"
ln -s /etc/passwd link
head -c 300000 /dev/zero > big.bin
for i in $(seq -w 0 29); do echo "$i" > "many/f$i"; done
"""


@pytest.fixture(params=["7.2"], ids=["arc-7.2"])
def stack(request: pytest.FixtureRequest) -> ARCStack:
    return request.getfixturevalue(f"arc_{request.param.replace('.', '_')}")  # type: ignore[no-any-return]


def _on_disk(dest: Path) -> set[str]:
    """The regular files under ``dest`` (relative names); no symlink there, and none holds /etc/passwd's lines."""
    assert not any(p.is_symlink() for p in dest.rglob("*"))
    files = [p for p in dest.rglob("*") if p.is_file()]
    assert not any("root:" in p.read_text(errors="replace") for p in files)
    return {p.relative_to(dest).as_posix() for p in files}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def test_hostile_and_over_bound_outputs_are_refused_per_file_and_the_others_arrive_verified(
        stack: ARCStack, tmp_path: Path) -> None:
    # the contents go in as input files named by the hex of the output's name: no name crosses the job's shell raw
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name, text in NORMAL.items():
        (inputs / name.encode().hex()).write_text(text)
    outputs = [*NORMAL, "a\nb", "link", "big.bin", *MANY]
    spec = JobSpec(executable="/bin/sh", arguments=["-c", SCRIPT],
                   input_files=[InputFile(source=p, name=f".in/{p.name}") for p in sorted(inputs.iterdir())],
                   output_files=[OutputFile(name=n) for n in outputs])
    async with ARCBackend(stack.url, ca_file=stack.ca_file, proxy_file=stack.proxy_file) as be:
        job_id = (await be.submit(spec)).job_ids[0]
        (final,) = await until_terminal(be, [job_id])
        assert final.state is JobState.DONE, final
        dest = tmp_path / "dest"
        manifest = await be.fetch(job_id, spec, dest, BOUNDS)

        # within the count bound (20, in declared order: stdout, stderr, the five normal ones, then the rest)
        fetched = {e.name: e for e in manifest.files}
        assert set(NORMAL) <= set(fetched) and "stdout.txt" in fetched
        for name, text in NORMAL.items():
            assert (dest / name).read_text() == text and fetched[name].sha256 == _sha(text)
        counted = 20 - 2 - len(NORMAL) - 1  # big.bin counts too (listed; refused for its size)
        assert [n for n in fetched if n.startswith("many/")] == MANY[:counted]
        for name in MANY[:counted]:
            assert fetched[name].sha256 == _sha(f"{name[-2:]}\n")

        refused = manifest.refused
        assert "control character" in refused["a\nb"]
        assert "symbolic link" in refused["link"]
        assert "over the byte bound of 100000" in refused["big.bin"] and "before transfer" in refused["big.bin"]
        for name in MANY[counted:]:
            assert "over the bound of 20 output files" in refused[name]
        assert set(refused) == {"a\nb", "link", "big.bin", *MANY[counted:]}
        assert not manifest.missing

        assert _on_disk(dest) == set(fetched)  # nothing refused was written, no link, no temporary left
        assert not list(tmp_path.rglob("pwned")) and not Path("pwned").exists()  # noqa: ASYNC240 - a test's check

        with pytest.raises(CommandError, match="symbolic link"):  # peek is contained the same way
            await be.peek(job_id, "link")
        assert await be.peek(job_id, "-rf") == b"leading dash\n"
        await be.purge([job_id])
