"""The ADL builder: what a JobSpec becomes at A-REX (pure)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import timedelta
from pathlib import Path

from pydantic import SecretStr

from intercede.backends.arc import _adl
from intercede.model import Copy, InputFile, JobSpec, OutputFile, Resources

NS = {"a": _adl.ADL}


def parse(xml: str) -> ET.Element:
    return ET.fromstring(xml)


def test_a_plain_spec_is_described_natively_with_its_tag_resources_and_outputs() -> None:
    spec = JobSpec(executable="/bin/echo", arguments=["a", "b c"], environment={"X": "1"}, tag="t1",
                   output_files=[OutputFile(name="d/out.txt")],
                   resources=Resources(cores=2, memory_mb=100, wall_time=timedelta(minutes=2), queue="fork"))
    plan = _adl.plan(spec, 0)
    root = parse(plan.xml)
    assert root.findtext("a:ActivityIdentification/a:Name", namespaces=NS) == "t1"
    assert root.findtext("a:Application/a:Executable/a:Path", namespaces=NS) == "/bin/echo"
    assert [a.text for a in root.findall("a:Application/a:Executable/a:Argument", NS)] == ["a", "b c"]
    assert root.findtext("a:Resources/a:SlotRequirement/a:NumberOfSlots", namespaces=NS) == "2"
    assert root.findtext("a:Resources/a:IndividualPhysicalMemory", namespaces=NS) == str(100 << 20)
    assert root.findtext("a:Resources/a:WallTime", namespaces=NS) == "120"
    assert root.findtext("a:Resources/a:QueueName", namespaces=NS) == "fork"
    outs = [o.text for o in root.findall("a:DataStaging/a:OutputFile/a:Name", NS)]
    assert outs == ["stdout.txt", "stderr.txt", "d/out.txt"]
    assert plan.uploads == {} and plan.files == {}


def test_hostile_strings_and_secrets_go_through_the_uploaded_launcher_never_the_description(tmp_path: Path) -> None:
    (tmp_path / "in").write_text("x")
    spec = JobSpec(executable="run.sh", arguments=["a\nb", "$(id)"], environment={"E": "'\"\t"},
                   input_files=[InputFile(source=tmp_path / "in", name="run.sh")],
                   copies=[Copy(secrets={"TOKEN": "s3cr3t"}), Copy(variables={"V": "2"})], tag="t")
    plan = _adl.plan(spec, 0)
    root = parse(plan.xml)
    assert [a.text for a in root.findall("a:Application/a:Executable/a:Argument", NS)] == [_adl.LAUNCHER]
    pushed = {n.text for n in root.findall("a:DataStaging/a:InputFile/a:Name", NS)}
    assert pushed == {"run.sh", ".secrets/TOKEN", _adl.LAUNCHER}
    assert "s3cr3t" not in plan.xml and "s3cr3t" not in repr(plan) and "$(id)" not in plan.xml
    script = plan.uploads[_adl.LAUNCHER].decode()
    assert "TOKEN_FILE=" in script and "s3cr3t" not in script and "exec ./run.sh 'a\nb' '$(id)'" in script
    assert plan.uploads[".secrets/TOKEN"] == b"s3cr3t"
    assert root.findtext("a:ActivityIdentification/a:Name", namespaces=NS) == "t.0"
    assert "V=2" in _adl.plan(spec, 1).uploads[_adl.LAUNCHER].decode()


def test_what_arc_cannot_express_is_refused_with_a_reason() -> None:
    assert "container" in (_adl.refusal(JobSpec(executable="x", container="docker://a")) or "")
    assert "GPU" in (_adl.refusal(JobSpec(executable="x", resources=Resources(gpus=1))) or "")
    assert _adl.refusal(JobSpec(executable="x")) is None


def test_untagged_copies_share_one_description_their_differences_only_in_uploaded_files() -> None:
    spec = JobSpec(executable="/bin/echo", arguments=["x"],
                   copies=[Copy(variables={"N": str(i)}, secrets={"K": SecretStr(f"v{i}")}) for i in range(3)])
    plans = _adl.plans(spec)
    one = _adl.shared(plans)
    assert one is not None and "v0" not in one and ">N<" not in one
    assert [p.uploads[".secrets/K"] for p in plans] == [b"v0", b"v1", b"v2"]
    assert [b"N=%d" % i in p.uploads[_adl.LAUNCHER] for i, p in enumerate(plans)] == [True] * 3


def test_tagged_or_single_copies_share_no_description() -> None:
    tagged = JobSpec(executable="/bin/true", copies=[Copy(), Copy()], tag="t")
    assert _adl.shared(_adl.plans(tagged)) is None  # each copy's Name is its own tag
    assert _adl.shared(_adl.plans(JobSpec(executable="/bin/true"))) is None
    plain = JobSpec(executable="/bin/true", copies=[Copy(), Copy()])
    assert _adl.shared(_adl.plans(plain)) == _adl.plans(plain)[0].xml
    assert _adl.LAUNCHER not in _adl.plans(plain)[0].uploads  # identical plain copies need no launcher
