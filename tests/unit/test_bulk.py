"""Native bulk submission, pure parts: the staging script (run by a real ``sh``), Slurm array names, ids and working
directories, HTCondor per-proc item data, and the queue parser's fast path (same answers as the checked path)."""

from __future__ import annotations

import dataclasses
import os
import stat
import subprocess
from pathlib import Path

import pytest

from intercede.backends import staging
from intercede.backends.batch import BatchBackend
from intercede.backends.htcondor import _htcondor as core
from intercede.backends.schedulers import slurm
from intercede.backends.schedulers.base import BatchJob, BulkRequest
from intercede.backends.schedulers.direct import DirectScheduler
from intercede.backends.schedulers.htcondor import HTCondorScheduler
from intercede.backends.schedulers.slurm import SlurmScheduler, array_names, queue_states
from intercede.backends.transports.base import CommandResult
from intercede.backends.transports.local import LocalTransport
from intercede.errors import CommandError, InvalidSpecError
from intercede.model import Copy, JobSpec, JobState, Resources

SLURM_DATA = Path(__file__).resolve().parents[1] / "data" / "slurm"
SECRET = "s3cr3t\n\nwith 'quotes' $(x) é\n"


def _request(root: str = "/r", count: int = 3, first: int = 0, tag: str | None = "t") -> BulkRequest:
    prefix = "0123456789ab"
    workdirs = tuple(f"{root}/{prefix}{k:04d}" for k in range(count))
    return BulkRequest(root, prefix, first, count, tag, Resources(), workdirs,
                       tuple(f"{w}/job.sh" for w in workdirs), f"{root}/{prefix}ffff")


def _run(script: str, *argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["sh", "-s", "--", *argv], input=script.encode(), capture_output=True, check=False)


def test_the_staging_script_writes_each_copy_and_runs_the_submit_command(tmp_path: Path) -> None:
    root = tmp_path / "jobs root"
    dirs = [staging.StagedDir(f"{root}/{i:016x}", f"#!/bin/sh\necho copy {i}\n", f"t.{i}", {"TOKEN": SECRET})
            for i in range(3)]
    done = _run(staging.script(str(root), dirs, anchor=f"{root}/anchor", launcher="#!/bin/sh\nexit 0\n"),
                "sh", "-c", 'echo "submitted $#"', "sh", "a", "b")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"submitted 2\n"
    for i, d in enumerate(dirs):
        folder = Path(d.workdir)
        assert (folder / "job.sh").read_text() == f"#!/bin/sh\necho copy {i}\n"
        assert (folder / ".tag").read_text() == f"t.{i}"
        secret = folder / ".secrets" / "TOKEN"
        assert secret.read_text() == SECRET
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert (root / "anchor" / "array.sh").read_text() == "#!/bin/sh\nexit 0\n"


def test_a_copy_without_tag_file_or_secrets_gets_its_directory_and_job_script_only(tmp_path: Path) -> None:
    root = tmp_path / "jobs"
    dirs = [staging.StagedDir(f"{root}/plain", "#!/bin/sh\n", None), staging.StagedDir(f"{root}/tagged", "x\n", "")]
    done = _run(staging.script(str(root), dirs))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (root / "plain").iterdir()) == ["job.sh"]
    assert sorted(p.name for p in (root / "tagged").iterdir()) == [".tag", "job.sh"]
    assert (root / "tagged" / ".tag").read_text() == ""


def test_only_a_scheduler_that_finds_jobs_by_their_tag_file_gets_one(tmp_path: Path) -> None:
    spec = JobSpec(executable="true", tag="k", copies=[Copy(), Copy(secrets={"K": SECRET})])
    for scheduler, tags in ((DirectScheduler(str(tmp_path)), ["k.0", "k.1"]), (SlurmScheduler(), [None, None]),
                            (HTCondorScheduler(), [None, None])):
        backend = BatchBackend(LocalTransport(), scheduler, str(tmp_path))
        staged = [backend._staged(spec, i, f"{tmp_path}/{i}") for i in range(2)]
        assert [d.tag for d in staged] == tags, scheduler.name
        assert [set(d.secrets) for d in staged] == [set(), {"K"}]


def test_the_staging_script_keeps_secrets_off_every_command_line(tmp_path: Path) -> None:
    text = staging.script(str(tmp_path), [staging.StagedDir(f"{tmp_path}/a", "x\n", None, {"K": SECRET})])
    # Only builtins see the value: the one exec'd process is cat (here-document input), and mkdir, with paths.
    assert "printf '%s' " in text and not any(SECRET.splitlines()[0] in line and line.startswith(("cat", "mkdir"))
                                              for line in text.splitlines())


def test_an_existing_directory_is_an_attempt_used_and_nothing_is_submitted(tmp_path: Path) -> None:
    (tmp_path / "used").mkdir()
    done = _run(staging.script(str(tmp_path), [staging.StagedDir(f"{tmp_path}/used", "x\n", None)]),
                "sh", "-c", "echo submitted")
    assert done.returncode == staging.ATTEMPT_USED and staging.MARK.encode() in done.stderr
    assert done.stdout == b""


def test_an_unwritable_root_fails_staging_with_its_own_status(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        root = "/proc/intercede-cannot-write"
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        root = str(tmp_path / "ro" / "jobs")
    done = _run(staging.script(root, [staging.StagedDir(f"{root}/a", "x\n", None)]), "sh", "-c", "echo submitted")
    assert done.returncode == staging.STAGE_FAILED and staging.MARK.encode() in done.stderr
    assert done.stdout == b""


def test_a_job_script_holding_a_here_document_delimiter_is_written_unchanged(tmp_path: Path) -> None:
    text = "#!/bin/sh\ncat <<'EOF'\nINTERCEDE_EOF_\nEOF\n"
    done = _run(staging.script(str(tmp_path), [staging.StagedDir(f"{tmp_path}/a", text, None)]))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a" / "job.sh").read_text() == text


def test_a_slurm_array_is_one_sbatch_with_a_throttle_and_per_task_ids() -> None:
    slurm = SlurmScheduler(array_throttle=4)
    request = _request(count=3)
    argv = slurm.submit_bulk_argv(request)
    assert argv[:3] == ["sbatch", "--parsable", "--array=0-2%4"]
    assert "--job-name=t.*" in argv and f"--chdir={request.anchor}" in argv and argv[-1] == request.launcher
    result = CommandResult(tuple(argv), 0, b"41\n", b"", 0.1)
    assert slurm.parse_submit_bulk(result, request) == ["41_0", "41_1", "41_2"]
    refused = CommandResult(tuple(argv), 1, b"", b"sbatch: error: Batch job submission failed: Invalid partition\n", 0)
    with pytest.raises(CommandError, match="partition"):
        slurm.parse_submit_bulk(refused, request)


def test_slurm_status_asks_for_an_array_once_whatever_its_tasks() -> None:
    jobs = [BatchJob(f"41_{k}", "/w") for k in range(10_000)] + [BatchJob("42", "/w")]
    argv = SlurmScheduler().status_argv(jobs)
    assert "--jobs=41,42" in argv and "--array" in argv
    assert "--jobs=41,42" in SlurmScheduler().history_argv(jobs)  # type: ignore[operator]


def test_a_copy_tag_is_searched_under_its_array_name_and_found_with_its_directory() -> None:
    assert array_names("t.7", 1000) == ["t.*"] and array_names("t.1007", 1000) == ["t.*1000"]
    assert array_names("plain", 1000) == [] and array_names("t.x", 1000) == []
    slurm = SlurmScheduler()
    names = next(a for a in slurm.find_argvs(["t.2", "one"])[0] if a.startswith("--name="))
    assert names == "--name=t.2,one,t.*"
    queue = CommandResult((), 0, b"41_2|t.*|/r/0123456789abffff\n50|one|/r/fedcba9876543210\n"
                                 b"41_1|t.*|/r/0123456789abffff\n", b"", 0.1)
    history = CommandResult((), 0, b"60_5|t.*1000|/r/aaaaaaaaaaaaffff\n", b"", 0.1)
    found = slurm.parse_find([queue, history], ["t.2", "t.1", "one", "t.1005"])
    assert found == {"t.2": [BatchJob("41_2", "/r/0123456789ab0002")],
                     "t.1": [BatchJob("41_1", "/r/0123456789ab0001")],
                     "one": [BatchJob("50", "/r/fedcba9876543210")],
                     "t.1005": [BatchJob("60_5", "/r/aaaaaaaaaaaa0005")]}


def test_the_array_launcher_runs_the_task_s_copy() -> None:
    text = SlurmScheduler().bulk_launcher(_request(root="/jobs"))
    assert text is not None
    assert 'cd /jobs/0123456789ab"$k" || exit 97' in text and "exec /bin/sh ./job.sh" in text


def test_the_queue_parser_fast_path_agrees_with_the_checked_path() -> None:
    lines = b"41_0|RUNNING|None\n 41_1|PENDING|Priority\n41_2|COMPLETED|None\n99|FAILED|x|y\n"
    found = queue_states(CommandResult((), 0, lines, b"", 0.1), {"41_0", "41_1", "41_2", "99"})
    assert {k: (v.state, v.reason) for k, v in found.items()} == {
        "41_0": (JobState.RUNNING, ""), "41_1": (JobState.WAITING, "Priority"), "41_2": (JobState.DONE, ""),
        "99": (JobState.FAILED, "x|y")}
    with pytest.raises(CommandError, match="unexpected output line"):
        queue_states(CommandResult(("squeue",), 0, b"41_0|RUNNING|None\ngarbage\n", b"", 0.1), {"41_0"})
    with pytest.raises(CommandError, match="unexpected output line"):
        queue_states(CommandResult(("squeue",), 0, b"41_0|RUNNING\n", b"", 0.1), {"41_0"})


def _recorded_queue(version: str, copies: int) -> tuple[CommandResult, set[str], list[tuple[str, str]]]:
    """The recorded ``%i|%T|%r`` lines of ``version``, ``copies`` times over with distinct ids; (state, reason) each."""
    shapes = [line.split("|", 1)[1] for name in ("squeue_mixed.txt", "squeue_final.txt")
              for line in (SLURM_DATA / version / name).read_text().splitlines() if line.strip()]
    pairs = [(s.split("|", 1)[0], s.split("|", 1)[1]) for s in shapes] * copies
    ids = [f"{500 + k}_{k}" for k in range(len(pairs))]
    text = "".join(f"{i}|{state}|{reason}\n" for i, (state, reason) in zip(ids, pairs, strict=True))
    return CommandResult(("squeue",), 0, text.encode(), b"", 0.1), set(ids), pairs


@pytest.mark.parametrize("version", ["22.05", "24.11", "26.05"])
def test_ids_in_one_state_share_one_frozen_status_across_polls(version: str) -> None:
    result, ids, pairs = _recorded_queue(version, 3)
    first, second = queue_states(result, ids), queue_states(result, ids)
    by_pair: dict[tuple[str, str], list[object]] = {}
    for job_id, pair in zip(sorted(ids, key=lambda i: int(i.split("_")[1])), pairs, strict=True):
        assert first[job_id] == slurm._status(*pair)  # the same answer as mapping the line on its own
        by_pair.setdefault(pair, []).extend([first[job_id], second[job_id]])
    assert len(by_pair) > 3 and all(len({id(s) for s in shared}) == 1 for shared in by_pair.values())
    shared = next(iter(first.values()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        shared.reason = "changed"  # type: ignore[misc]  # sharing is safe only because nobody can do this


def test_the_status_memo_refilled_mid_parse_still_maps_every_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slurm, "_STATUSES", {})
    monkeypatch.setattr(slurm, "_STATUSES_MAX", 2)
    lines = b"1|RUNNING|None\n2|PENDING|Priority\n"
    assert {k: v.state for k, v in queue_states(CommandResult((), 0, lines, b"", 0.1), {"1", "2"}).items()} == {
        "1": JobState.RUNNING, "2": JobState.WAITING}
    more = lines + b"3|PENDING|Resources\n4|COMPLETED|None\n"  # two pairs the memo lacks: it is dropped and refilled
    found = queue_states(CommandResult((), 0, more, b"", 0.1), {"1", "2", "3", "4"})
    assert {k: (v.state, v.reason) for k, v in found.items()} == {
        "1": (JobState.RUNNING, ""), "2": (JobState.WAITING, "Priority"), "3": (JobState.WAITING, "Resources"),
        "4": (JobState.DONE, "")}
    assert sum(map(len, slurm._STATUSES.values())) == 4


def test_an_htcondor_cluster_queues_every_copy_with_its_own_directory_and_tag() -> None:
    request = _request(root="/home/u/jobs", count=500)
    argv = HTCondorScheduler().submit_bulk_argv(request)
    assert argv[-2:] == ["-queue", "500"]
    assert '-append' in argv and 'initialdir = /home/u/jobs/0123456789ab$INT(ProcId,%04d)' in argv
    assert 'MY.IntercedeTag = "t.$(ProcId)"' in argv
    result = CommandResult(tuple(argv), 0, b"77.0 - 77.499\n", b"", 0.1)
    assert HTCondorScheduler().parse_submit_bulk(result, request)[498:] == ["77.498", "77.499"]


def test_per_proc_item_data_carries_only_what_differs() -> None:
    descs = [{"universe": "vanilla", "initialdir": f"/s/{i}", "MY.IntercedeTag": f'"t.{i}"'} for i in range(3)]
    common, items = core.per_proc(descs)
    assert common == {"universe": "vanilla", "initialdir": "$(intercede_a)", "MY.IntercedeTag": "$(intercede_b)"}
    assert items[2] == {"intercede_a": "/s/2", "intercede_b": '"t.2"'}
    with pytest.raises(InvalidSpecError):
        core.per_proc([{"a": "$(x)"}, {"a": "y"}])
