"""The reconciler's WMS API refuses bad batches as a whole, and says why (issue 14, item 5), without Ray: the same
checks the facade tests prove on real Ray, here in milliseconds and with the journal read back."""

from __future__ import annotations

from pathlib import Path

import pytest

from intercede.errors import InvalidSpecError, UnknownKeyError
from intercede.model import Copy, JobSpec
from intercede.reconcile import Journal, Phase, Reconciler
from intercede.reconcile.reconciler import Declaration
from tests.reconcile.fakes import FakeGateway, FakeResource

pytestmark = pytest.mark.hostile

SPEC = JobSpec(executable="/bin/true")


class Req:
    def __init__(self, key: str, ce: str = "ce", spec: JobSpec = SPEC, phase: Phase = Phase.RUNNING,
                 destination: Path | None = None) -> None:
        self.key, self.ce, self.spec, self.phase, self.destination = key, ce, spec, phase, destination


def _reconciler(tmp_path: Path) -> Reconciler:
    return Reconciler(Journal(tmp_path / "journal.db"), {"ce": FakeGateway(FakeResource())})


def test_a_batch_with_bad_entries_journals_nothing_and_names_every_bad_entry(tmp_path: Path) -> None:
    rec = _reconciler(tmp_path)
    rec.declare("known", "ce", SPEC)
    two_copies = JobSpec(executable="/bin/true", copies=[Copy(), Copy()])
    batch: list[Declaration] = [
        Req("a"), Req("b", ce="elsewhere"), Req("c d"), Req("known", spec=JobSpec(executable="/bin/false")),
        Req("e", spec=two_copies), Req("f", phase=Phase.COLLECTED), Req("a", spec=JobSpec(executable="/bin/ls")),
        Req("g")]
    with pytest.raises(InvalidSpecError) as info:
        rec.declare_many(batch)
    message = str(info.value)
    assert "6 of 8" in message and "nothing was declared" in message
    for named in ("'elsewhere'", "'c d'", "'known'", "'e'", "'f'", "declared twice"):
        assert named in message, named
    problems = rec.check_declarations(batch)  # the same answer, without raising
    assert len(problems) == 6 and all(problem in message for problem in problems)
    assert [r.key for r in rec.snapshot()] == ["known"]
    rec.close()
    with Journal(tmp_path / "journal.db") as journal:
        assert list(journal.load()[0]) == ["known"]  # nothing of the batch reached the journal


def test_phase_changes_of_unknown_keys_change_nothing_and_are_still_key_errors(tmp_path: Path) -> None:
    rec = _reconciler(tmp_path)
    rec.declare("k", "ce", SPEC)
    with pytest.raises(UnknownKeyError, match="'ghost'") as info:
        rec.set_phases(["k", "ghost"], Phase.CANCELLED)
    assert isinstance(info.value, KeyError) and str(info.value).startswith("1 job key(s)")
    assert rec.desired("k").phase is Phase.RUNNING
    with pytest.raises(InvalidSpecError, match="absolute"):
        rec.set_phases(["k"], Phase.COLLECTED, {"k": Path("relative")})
    assert rec.desired("k").phase is Phase.RUNNING
