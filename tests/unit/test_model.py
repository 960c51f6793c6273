"""The job model refuses bad input with an error naming the field, and keeps secrets out of reprs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from intercede.errors import IntercedeError, InvalidSpecError
from intercede.model import Copy, JobSpec, JobState, OutputFile, Resources, parse_spec


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"executable": ""}, "executable"),
        ({"executable": "x", "output_files": [{"name": "/etc/passwd"}]}, "output_files.0.name"),
        ({"executable": "x", "output_files": [{"name": "a", "destination": "../../x"}]}, "output_files.0.destination"),
        ({"executable": "x", "environment": {"1BAD": "v"}}, "environment"),
        ({"executable": "x", "arguments": ["nul\0byte"]}, "arguments.0"),
        ({"executable": "x", "tag": "has space"}, "tag"),
        ({"executable": "x", "resources": {"cores": 0}}, "resources.cores"),
        ({"executable": "x", "resources": {"wall_time": 0}}, "resources"),
        ({"executable": "x", "copies": []}, "copies"),
        ({"executable": "x", "unknown_field": 1}, "unknown_field"),
    ],
)
def test_invalid_specs_name_the_bad_field(data: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidSpecError) as info:
        parse_spec(data)
    assert field in str(info.value)
    assert isinstance(info.value, IntercedeError) and isinstance(info.value.__cause__, ValidationError)


def test_two_outputs_fetched_to_one_destination_are_refused() -> None:
    with pytest.raises(ValidationError, match="same destination"):
        JobSpec(executable="x", output_files=[OutputFile(name="a", destination="o"), OutputFile(name="o")])


def test_secrets_never_appear_in_reprs_or_dumps() -> None:
    spec = JobSpec(executable="x", copies=[Copy(secrets={"TOKEN": "hunter2"})])
    assert "hunter2" not in repr(spec) and "hunter2" not in spec.model_dump_json()


def test_copy_tags_are_the_tag_or_numbered_per_copy() -> None:
    assert JobSpec(executable="x", tag="k").copy_tag(0) == "k"
    two = JobSpec(executable="x", tag="k", copies=[Copy(), Copy()])
    assert [two.copy_tag(i) for i in range(2)] == ["k.0", "k.1"]
    assert JobSpec(executable="x").copy_tag(0) is None


def test_resources_accept_wall_time_as_seconds() -> None:
    assert Resources(wall_time=90).wall_time == timedelta(seconds=90)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("current", "seen", "after"),
    [
        (JobState.SUBMITTED, JobState.RUNNING, JobState.RUNNING),
        (JobState.RUNNING, JobState.WAITING, JobState.RUNNING),  # never backwards
        (JobState.DONE, JobState.RUNNING, JobState.DONE),
        (JobState.DONE, JobState.FAILED, JobState.DONE),  # terminal is final
        (JobState.RUNNING, JobState.UNKNOWN, JobState.UNKNOWN),  # lost track: say so
        (JobState.UNKNOWN, JobState.WAITING, JobState.WAITING),
    ],
)
def test_state_never_moves_backwards(current: JobState, seen: JobState, after: JobState) -> None:
    assert current.advance(seen) is after
