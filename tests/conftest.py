"""Test-session wiring shared by every folder: how the suite is split across pytest-xdist workers.

``scripts/test.sh`` runs the suite on two workers with ``--dist loadgroup``; each group runs whole on one worker:

* every test that starts Ray (the service, its CLI, notebooks, the fault suite) is in one group, ``ray``: Ray clusters
  started side by side on one machine can find each other (``ray.init()`` and ``intercede run`` join the cluster
  recorded under /tmp/ray), so they never run at the same time;
* the contract suite is grouped by case (``slurm-24.11``, ``arc-7.2``, ...), so a stack starts on one worker only;
* the journal suite (tests/journal/) is one group, ``journal``, so its PostgreSQL server starts on one worker only;
* every other module is a group of its own.

The stacks' start-up and their schedulers' latency, not the client's CPU, set most tests' duration, so two workers on
two cores halve the wall time. Without xdist (``-p no:xdist`` or ``-n 0``) the markers are inert.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from stacks.postgres_stack import PostgresStack

_RAY_FOLDERS = ("tests/actors/", "tests/cli/", "tests/faults/", "tests/notebook/")
_RAY_MODULES = ("tests/hostile/test_input_api.py", "tests/hostile/test_outputs_service.py")
_JOURNAL_FOLDER = "tests/journal/"


def _group(item: pytest.Item) -> str:
    path = item.nodeid.split("::", 1)[0]
    if path.startswith(_RAY_FOLDERS) or path in _RAY_MODULES:
        return "ray"
    if path.startswith(_JOURNAL_FOLDER):
        return "journal"
    callspec = getattr(item, "callspec", None)
    case = callspec.params.get("case") if callspec is not None else None
    case_id = getattr(case, "id", None)
    return f"case-{case_id}" if isinstance(case_id, str) else path


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        marker = item.get_closest_marker("xdist_group")
        if marker is None:
            item.add_marker(pytest.mark.xdist_group(_group(item)))
        group = marker.args[0] if marker is not None and marker.args else _group(item)
        item.user_properties.append(("group", group))  # carried to the controller with each report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The ten groups that took longest (set-up, call and teardown summed): where CI's wall time goes."""
    totals: dict[str, float] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            props = dict(getattr(report, "user_properties", ()) or ())
            if isinstance(props.get("group"), str) and isinstance(getattr(report, "duration", None), float):
                totals[props["group"]] = totals.get(props["group"], 0.0) + report.duration
    if totals:
        terminalreporter.section("slowest test groups (s)")
        for group, seconds in sorted(totals.items(), key=lambda kv: -kv[1])[:10]:
            terminalreporter.write_line(f"{seconds:8.1f}  {group}")


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresStack]:
    """A real PostgreSQL 15 server (stacks/postgres_stack.py), started once per worker on first use.

    ``postgres.new_database()`` gives the DSN of a fresh database (no password in it) and ``postgres.passfile`` the
    libpq password file to pass with it, e.g. ``Settings(journal=postgres.new_database(),
    journal_passfile=postgres.passfile, ...)`` or ``PostgresJournal(dsn, passfile=postgres.passfile)``.
    """
    from stacks import harness
    from stacks.postgres_stack import start_postgres

    harness.engine()
    with start_postgres() as pg:
        yield pg
