"""The A-REX stacks tests/arc runs against: the contract suite's, shared per session (one per release and LRMS)."""

from tests.contract.cases_arc import arc_6_17, arc_7_0, arc_7_2, arc_htcondor, arc_slurm  # noqa: F401
