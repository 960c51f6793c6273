"""The pure HTCondor core: state map, submit descriptions, the sandbox wrapper (run here with /bin/sh) and the bounded
materialisation of retrieved outputs. No HTCondor needed."""

from __future__ import annotations

import os
import subprocess
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from intercede.backends.htcondor import _htcondor as core
from intercede.backends.htcondor import _sandbox
from intercede.backends.htcondor._client import _claims
from intercede.backends.schedulers.base import SubmitRequest
from intercede.errors import InvalidSpecError, OutputBoundError, TransferError
from intercede.model import Copy, InputFile, JobSpec, JobState, OutputBounds, OutputFile, Resources

pytestmark = pytest.mark.htcondor


@pytest.mark.parametrize(("ad", "state"), [
    ({"JobStatus": 1}, JobState.WAITING),
    ({"JobStatus": 2}, JobState.RUNNING),
    ({"JobStatus": 3, "RemoveReason": "by admin"}, JobState.ABORTED),
    ({"JobStatus": 4, "ExitCode": 0}, JobState.DONE),
    ({"JobStatus": 4, "ExitCode": 1}, JobState.FAILED),
    ({"JobStatus": 4, "ExitBySignal": True, "ExitSignal": 9}, JobState.FAILED),
    ({"JobStatus": 5, "HoldReasonCode": 16}, JobState.WAITING),
    ({"JobStatus": 5, "HoldReasonCode": 15}, JobState.WAITING),
    ({"JobStatus": 5, "HoldReasonCode": 3, "ExitCode": 2}, JobState.FAILED),
    ({"JobStatus": 5, "HoldReasonCode": 3}, JobState.ABORTED),
    ({"JobStatus": 5, "HoldReasonCode": 1, "HoldReason": "site"}, JobState.ABORTED),
    ({"JobStatus": 5, "HoldReasonCode": 12}, JobState.ABORTED),
    ({"JobStatus": 6}, JobState.RUNNING),
    ({"JobStatus": 7}, JobState.WAITING),
    ({"JobStatus": 42}, JobState.UNKNOWN),
    ({}, JobState.UNKNOWN),
])
def test_the_state_map(ad: dict[str, object], state: JobState) -> None:
    assert core.native_status(ad).state is state


def test_a_held_job_says_why_with_its_codes() -> None:
    status = core.native_status({"JobStatus": 5, "HoldReason": "site maintenance", "HoldReasonCode": 1,
                                 "HoldReasonSubCode": 0})
    assert "site maintenance" in status.reason and "UserRequest" in status.reason and status.native_state == "Held"


def test_a_job_missing_from_queue_and_history_is_unknown_only_after_the_grace_period() -> None:
    assert core.missing_status("1.0", None, 5, 120).state is JobState.SUBMITTED
    assert core.missing_status("1.0", None, 121, 120).state is JobState.UNKNOWN


@pytest.mark.parametrize("job_id", ["1.0", "123.45"])
def test_job_ids_are_cluster_dot_proc(job_id: str) -> None:
    assert core.parse_job_id(job_id) is not None


@pytest.mark.parametrize("job_id", ["1", "1.0@abc", "a.b", "", "1.0 || true", "-1.0"])
def test_anything_else_is_not_a_job_id(job_id: str) -> None:
    assert core.parse_job_id(job_id) is None


def test_resources_map_to_submit_commands_and_ce_attributes() -> None:
    res = Resources(cores=4, memory_mb=2000, wall_time=timedelta(minutes=90), gpus=1, queue="short", account="vo",
                    native=["+Extra = 1", "priority = 5"])
    cmds = core.resource_commands(res, ce=True)
    assert cmds["request_cpus"] == "4" and cmds["request_memory"] == "2000" and cmds["request_gpus"] == "1"
    assert cmds["allowed_job_duration"] == "5400" and cmds["MY.maxWallTime"] == "90"
    assert cmds["MY.xcount"] == "4" and cmds["MY.maxMemory"] == "2000" and cmds["MY.queue"] == '"short"'
    assert cmds["accounting_group"] == "vo" and cmds["+Extra"] == "1" and cmds["priority"] == "5"
    assert "MY.xcount" not in core.resource_commands(res)


@pytest.mark.parametrize("res", [Resources(nodes=2), Resources(native=["no equals sign"]),
                                 Resources(native=["a = b\nqueue 100"])])
def test_what_htcondor_cannot_express_is_refused(res: Resources) -> None:
    with pytest.raises(InvalidSpecError):
        core.resource_commands(res)


def test_a_spooled_description_names_no_user_file_and_allows_only_its_outputs() -> None:
    spec = JobSpec(executable="x", output_files=[OutputFile(name="a,b $(HOME).txt")], tag="t-1")
    desc = core.spooled_description(spec, executable="/s/_intercede_job.sh", iwd="/s", inputs=[],
                                    outputs=_sandbox.output_names(spec), tag="t-1", keep_seconds=60)
    assert desc["transfer_output_files"] == "_intercede_index,_intercede_o0,_intercede_o1,_intercede_o2"
    assert "$(HOME)" not in core.render(desc)
    assert desc["leave_in_queue"] == core.leave_in_queue(60) and desc["MY.IntercedeTag"] == '"t-1"'
    with pytest.raises(InvalidSpecError):
        core.spooled_description(spec, executable="/s/x", iwd="/s", inputs=["a,b"], outputs=[], tag=None,
                                 keep_seconds=60)


def test_the_batch_description_passes_the_script_as_one_argument() -> None:
    desc = core.batch_description(SubmitRequest("/h/it's \"odd\"/job.sh", "/h/w", "t", Resources()))
    assert desc["arguments"] == '"\'/h/it\'\'s ""odd""/job.sh\'"' and desc["should_transfer_files"] == "NO"


def _run_wrapper(spec: JobSpec, copy: Copy, sandbox: Path) -> int:
    """Stage ``spec`` into ``stage`` and run the wrapper the way a starter would: in a scratch directory holding the
    transferred inputs under their flat names."""
    staged = _sandbox.stage(spec, copy, sandbox / "stage")
    scratch = sandbox / "scratch"
    scratch.mkdir()
    for path in [staged.executable, *staged.inputs]:
        (scratch / Path(path).name).write_bytes(Path(path).read_bytes())
    env = {"PATH": os.environ["PATH"]}
    return subprocess.run(["/bin/sh", _sandbox.WRAPPER], cwd=scratch, env=env, check=False).returncode


def test_the_wrapper_runs_the_payload_byte_for_byte_and_collects_only_what_was_declared(tmp_path: Path) -> None:
    source = tmp_path / "in.dat"
    source.write_bytes(b"\x00input")
    script = ('printf "%s\\0" "$@"; printf "%s" "$V" >&2; cat sub/in.dat > out.bin; cat "$K_FILE" > s.txt; '
              'ls -l "$K_FILE" | cut -c1-10 >> s.txt; ln -s /etc/passwd link; mkdir d; echo x > d/f; '
              'echo extra > undeclared; exit 5')
    args = ["-c", script, "sh", "a b", "'", "$(id)", "", "x\ny"]
    spec = JobSpec(executable="/bin/sh", arguments=args, environment={"V": "é $HOME `x`"},
                   input_files=[InputFile(source=source, name="sub/in.dat")],
                   output_files=[OutputFile(name="out.bin"), OutputFile(name="s.txt"), OutputFile(name="link"),
                                 OutputFile(name="d"), OutputFile(name="never", destination="n/never")])
    copy = Copy(secrets={"K": "s3cr3t"})
    assert _run_wrapper(spec, copy, tmp_path) == 5
    scratch = tmp_path / "scratch"
    manifest = _sandbox.materialise("1.0", spec, scratch, tmp_path / "dest", OutputBounds())
    dest = tmp_path / "dest"
    assert (dest / "stdout.txt").read_bytes().split(b"\0")[:-1] == [a.encode() for a in args[3:]]
    assert (dest / "stderr.txt").read_text() == "é $HOME `x`"
    assert (dest / "out.bin").read_bytes() == b"\x00input"
    assert (dest / "s.txt").read_text() == "s3cr3t-rw-------\n"
    assert manifest.missing == ["never"] and set(manifest.refused) == {"link", "d"}
    assert sorted(f.name for f in manifest.files) == ["out.bin", "s.txt", "stderr.txt", "stdout.txt"]
    assert not any(p.name.startswith("_intercede_") for p in scratch.iterdir())  # cleared after materialising
    assert not (dest / "undeclared").exists()


def test_staged_secrets_are_private_files(tmp_path: Path) -> None:
    staged = _sandbox.stage(JobSpec(executable="true"), Copy(secrets={"K": "v"}), tmp_path / "s")
    (secret,) = staged.inputs
    assert oct(os.stat(secret).st_mode & 0o777) == "0o600" and oct(os.stat(tmp_path / "s").st_mode & 0o777) == "0o700"


def test_a_missing_input_is_refused_at_staging(tmp_path: Path) -> None:
    spec = JobSpec(executable="true", input_files=[InputFile(source=tmp_path / "nope", name="x")])
    with pytest.raises(TransferError, match="nope"):
        _sandbox.stage(spec, Copy(), tmp_path / "s")


@pytest.mark.parametrize("bounds", [OutputBounds(max_bytes=10), OutputBounds(max_files=1)])
def test_outputs_over_a_bound_are_refused_before_anything_is_moved(tmp_path: Path, bounds: OutputBounds) -> None:
    spec = JobSpec(executable="/bin/sh", arguments=["-c", "head -c 100 /dev/zero; echo err >&2"])
    _run_wrapper(spec, Copy(), tmp_path)
    with pytest.raises(OutputBoundError, match="over the bound"):
        _sandbox.materialise("1.0", spec, tmp_path / "scratch", tmp_path / "dest", bounds)
    assert not (tmp_path / "dest").exists() or not any((tmp_path / "dest").iterdir())


def test_a_retrieval_that_brought_nothing_back_is_a_transfer_error(tmp_path: Path) -> None:
    with pytest.raises(TransferError, match="no outputs"):
        _sandbox.materialise("1.0", JobSpec(executable="x"), tmp_path, tmp_path / "dest", OutputBounds())


@settings(max_examples=25, deadline=None)
@given(st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\0/"), min_size=1, max_size=20))
def test_any_file_name_survives_the_wrapper(name: str) -> None:
    import tempfile

    if name in (".", "..") or name.startswith("_intercede_"):
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec = JobSpec(executable="/bin/sh", arguments=["-c", 'printf %s "$1" > "./$1"', "sh", name],
                       output_files=[OutputFile(name=name)])
        assert _run_wrapper(spec, Copy(), root) == 0
        manifest = _sandbox.materialise("1.0", spec, root / "scratch", root / "dest", OutputBounds())
        assert (root / "dest" / name).read_bytes() == name.encode() and name in {f.name for f in manifest.files}


def test_token_claims_are_read_only_to_explain_a_refusal() -> None:
    assert _claims("not a token") == {}
    assert _claims("e30.eyJleHAiOjF9.sig") == {"exp": 1}


# -- jobs_constraint: the ids of a status query as one short, shallow constraint ---------------------------------------

def _depth(expression: str) -> int:
    depth = deepest = 0
    for ch in expression:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        deepest = max(deepest, depth)
    return deepest


@settings(max_examples=60, deadline=None)
@given(st.sets(st.tuples(st.integers(1, 12), st.integers(0, 12)), min_size=1, max_size=60))
def test_jobs_constraint_matches_exactly_its_jobs_as_the_classad_library_evaluates_it(
        ids: set[tuple[int, int]]) -> None:
    import classad2

    expression = classad2.ExprTree(core.jobs_constraint(sorted(ids)))
    matched = {(c, p) for c in range(0, 14) for p in range(0, 14)
               if expression.eval(classad2.ClassAd({"ClusterId": c, "ProcId": p})) is True}
    assert matched == ids


def test_jobs_constraint_is_one_range_for_a_bulk_cluster_and_for_consecutive_one_job_clusters() -> None:
    assert core.jobs_constraint([(7, p) for p in range(500)]) == "(ClusterId == 7 && (ProcId >= 0 && ProcId <= 499))"
    assert core.jobs_constraint([(c, 0) for c in range(100, 600)]) == \
        "((ClusterId >= 100 && ClusterId <= 599) && ProcId == 0)"


def test_jobs_constraint_stays_shallow_for_thousands_of_scattered_ids() -> None:
    # Each cluster asks for other procs: one term per cluster, ORed as a balanced tree (HTCondor's tools match
    # nothing once a constraint is a chain of ~400 ORs).
    ids = [(c, p) for c in range(1, 2001) for p in (0, c + 1)]
    expression = core.jobs_constraint(ids)
    assert expression.count("||") == 2000 - 1 and _depth(expression) <= 16
