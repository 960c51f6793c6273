"""The pure views: facade rows, health and actions -> DataFrames, histories, plain-text tables and plots."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from matplotlib import pyplot as plt

from intercede.actors.ce import CEHealth
from intercede.actors.reconciler import ActionRecord
from intercede.backends.capabilities import LoadReport
from intercede.diagnostics import frames, plots, text
from intercede.diagnostics.cecheck import credential_files
from intercede.diagnostics.views import Snapshot, settled

pytestmark = pytest.mark.notebook


def _row(key: str, state: str | None, **kw: object) -> dict[str, object]:
    row: dict[str, object] = {"key": key, "ce": "local", "phase": "running", "state": state, "native_state": "",
                              "exit_code": None, "job_id": None, "last_seen": None, "attempts": 0,
                              "last_error": None, "permanent_error": None, "collected": False, "outputs": None}
    row.update(kw)
    return row


def _health(name: str = "local", **kw: object) -> CEHealth:
    fields: dict[str, object] = {"name": name, "reachable": True, "tracked": 2, "polls": 10, "poll_errors": 1,
                                 "last_poll_at": 1_700_000_000.0, "last_error": "", "poll_latency_p50": 0.01,
                                 "poll_latency_p95": 0.05, "call_errors": 0, "states": {"Running": 1, "Done": 1}}
    fields.update(kw)
    return CEHealth.model_validate(fields)


def test_jobs_frame_is_indexed_by_key_with_typed_columns() -> None:
    frame = frames.jobs_frame([
        _row("a", "Done", exit_code=0, job_id="1@x", last_seen=1_700_000_000.5, collected=True, outputs="/o/a"),
        _row("b", None),
    ])
    assert list(frame.index) == ["a", "b"] and list(frame.columns) == frames.JOB_COLUMNS[1:]
    assert frame.loc["a", "state"] == "Done" and frame.loc["b", "state"] == frames.UNOBSERVED
    assert frame["exit_code"].dtype == "Int64" and frame.loc["a", "exit_code"] == 0
    assert pd.isna(frame.loc["b", "exit_code"])
    assert frame.loc["a", "last_seen"] == pd.Timestamp(1_700_000_000.5, unit="s", tz="UTC")
    assert pd.isna(frame.loc["b", "last_seen"])
    assert frame.loc["a", "outputs"] == "/o/a" and frame.loc["b", "outputs"] is None
    assert frame["collected"].tolist() == [True, False]


def test_jobs_frame_of_no_rows_is_empty_with_the_columns() -> None:
    frame = frames.jobs_frame([])
    assert frame.empty and list(frame.columns) == frames.JOB_COLUMNS[1:]


def test_health_frame_has_error_rate_state_counts_and_the_resources_own_queue() -> None:
    frame = frames.health_frame([_health("a"), _health("b", polls=0, poll_errors=0, reachable=False)],
                                {"a": LoadReport(total_cores=4, free_cores=3, running=1, queued=5), "b": None})
    assert list(frame.index) == ["a", "b"]
    assert frame.loc["a", "error_rate"] == pytest.approx(0.1) and frame.loc["b", "error_rate"] == 0.0
    assert (frame.loc["a", "Running"], frame.loc["a", "Done"], frame.loc["a", "Failed"]) == (1, 1, 0)
    assert (frame.loc["a", "queue_queued"], frame.loc["a", "free_cores"]) == (5, 3)
    assert pd.isna(frame.loc["b", "queue_queued"]) and not frame.loc["b", "reachable"]
    assert frame.loc["a", "last_poll"] == pd.Timestamp(1_700_000_000, unit="s", tz="UTC")


def test_actions_frame_takes_the_facades_records() -> None:
    frame = frames.actions_frame([ActionRecord(1_700_000_000.0, "Submit", "a"), ActionRecord(1_700_000_001.0,
                                                                                             "Cancel", "a")])
    assert frame["kind"].tolist() == ["Submit", "Cancel"]
    assert frame["at"].iloc[1] - frame["at"].iloc[0] == pd.Timedelta(seconds=1)


def test_states_over_time_counts_each_sample_in_progress_order() -> None:
    history = [*frames.state_sample([_row("a", None), _row("b", None)], 100.0),
               *frames.state_sample([_row("a", "Running"), _row("b", "Done", ce="other")], 101.5),
               *frames.state_sample([_row("a", "Failed"), _row("b", "Done", ce="other")], 103.0)]
    table = frames.states_over_time(history)
    assert list(table.index) == [0.0, 1.5, 3.0]
    assert list(table.columns) == [frames.UNOBSERVED, "Running", "Done", "Failed"]
    assert table.loc[0.0, frames.UNOBSERVED] == 2 and table.loc[1.5].sum() == 2 and table.loc[3.0, "Failed"] == 1
    only = frames.states_over_time(history, ce="other")
    assert list(only.index) == [1.5, 3.0] and only["Done"].tolist() == [1, 1]
    assert frames.states_over_time([]).empty


def test_settled_follows_the_wanted_phase() -> None:
    assert settled(_row("a", "Running"), "running") and not settled(_row("a", "Running"), "terminal")
    assert settled(_row("a", "Aborted"), "terminal") and not settled(_row("a", "Aborted"), "collected")
    assert settled(_row("a", None, phase="cancelled"), "terminal")  # cancelled before it was ever submitted
    assert settled(_row("a", None, permanent_error="refused"), "collected")
    assert settled(_row("a", "Done", collected=True), "collected")


def test_a_snapshot_renders_summary_ces_jobs_and_actions_as_html() -> None:
    snap = Snapshot(frames.jobs_frame([_row("a", "Done"), _row("b", "Failed"), _row("c", "Done")]),
                    frames.health_frame([_health()]),
                    frames.actions_frame([ActionRecord(1_700_000_000.0, "Submit", "a")]),
                    {"ticks": 7, "tick_errors": 0}, 1_700_000_000.0)
    summary = snap.summary()
    assert summary.loc["local", "Done"] == 2 and summary.loc["total", "total"] == 3
    assert list(summary.columns) == ["Done", "Failed", "total"]
    html = snap._repr_html_()
    assert html.count("<table") == 4 and "7 reconcile ticks" in html and "Submit" in html
    assert "3 keys (Done 2, Failed 1)" in repr(snap)


def test_plain_text_tables_for_the_terminal() -> None:
    rows = [_row("job-1", "Done", exit_code=0, job_id="1@x", last_seen=95.0, collected=True),
            _row("job-2", None, last_error="ConnectivityError: " + "x" * 100)]
    assert text.state_summary(rows) == "2 keys: Unobserved 1, Done 1"
    jobs = text.jobs_table(rows, now=100.0).splitlines()
    assert jobs[0].split() == ["key", "CE", "wanted", "state", "native", "exit", "job", "id", "tries", "last",
                               "seen", "collected", "error"]
    assert jobs[2].split()[:9] == ["job-1", "local", "running", "Done", "-", "0", "1@x", "0", "5s"]
    assert jobs[3].endswith("…") and len(jobs[3]) < 200
    assert "... and 1 more" in text.jobs_table(rows, limit=1)
    ces = text.ces_table([_health()], now=1_700_000_002.0).splitlines()
    assert ces[2].split()[:7] == ["local", "yes", "2s", "ago", "10ms", "50ms", "1/10"]
    assert "Running 1, Done 1" in ces[2]


def test_plot_states_stacks_one_area_per_state() -> None:
    history = [*frames.state_sample([_row("a", None), _row("b", None)], 0.0),
               *frames.state_sample([_row("a", "Running"), _row("b", "Done")], 2.0)]
    ax = plots.plot_states(history)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [frames.UNOBSERVED, "Running", "Done"] and len(ax.collections) == 3
    assert ax.get_ylim() == (0.0, 2.0)
    empty = plots.plot_states([])
    assert any("no samples yet" in t.get_text() for t in empty.texts)
    plt.close("all")


def test_plot_poll_latency_draws_p50_and_p95_per_ce_in_ms() -> None:
    history = [*frames.latency_sample([_health("a"), _health("b", poll_latency_p50=None)], 10.0),
               *frames.latency_sample([_health("a", poll_latency_p50=0.02), _health("b", poll_latency_p50=0.5)],
                                      11.0)]
    ax = plots.plot_poll_latency(history)
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"a p50", "a p95", "b p50", "b p95"}
    assert list(lines["a p50"].get_ydata()) == [10.0, 20.0] and list(lines["b p50"].get_xdata()) == [1.0]
    assert math.isclose(lines["b p50"].get_ydata()[0], 500.0)
    plt.close("all")


def test_credential_files_are_found_at_any_depth_of_the_transport_options() -> None:
    found = list(credential_files({"endpoint": {"host": "h", "client_keys": ["/k1", "/k2"], "known_hosts": "/kh"},
                                   "jump": {"known_hosts": "/jkh"}, "token_file": "/t", "timeout": 3}))
    assert [(o, str(p)) for o, p in found] == [("endpoint.client_keys", "/k1"), ("endpoint.client_keys", "/k2"),
                                               ("endpoint.known_hosts", "/kh"), ("jump.known_hosts", "/jkh"),
                                               ("token_file", "/t")]


def test_jobs_frame_of_typed_records_holds_plain_strings() -> None:
    from intercede.model import JobState
    from intercede.reconcile import KeyRow, Phase

    frame = frames.jobs_frame([KeyRow("a", "local", Phase.COLLECTED, JobState.DONE, "", 0, "1@x", None, 1, None,
                                      None, collected=True)])
    assert type(frame.loc["a", "state"]) is str and type(frame.loc["a", "phase"]) is str
    assert (frame.loc["a", "state"], frame.loc["a", "phase"], bool(frame.loc["a", "collected"])) == \
        ("Done", "collected", True)
