"""Plain-text tables for the terminal (``intercede status``). Pure functions; no pandas, so the command line needs none.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from intercede.diagnostics.records import STATES, UNOBSERVED, as_dict

__all__ = ["ces_table", "counts_summary", "jobs_table", "state_summary", "table"]


def table(rows: Iterable[Sequence[Any]], headers: Sequence[str], *, right: Sequence[str] = ()) -> str:
    """Columns padded to their widest cell; ``right`` names the right-aligned columns; None shows as ``-``."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if h in right else v.ljust(w)
                         for v, w, h in zip(values, widths, headers, strict=True)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _age(epoch: float | None, now: float) -> str | None:
    if epoch is None:
        return None
    seconds = max(0.0, now - epoch)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.0f}h ago"


def _short(text: str | None, width: int = 60) -> str | None:
    if not text:
        return None
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[:width - 1] + "…"


def _ms(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return f"{seconds * 1000:.1f}ms" if seconds < 0.01 else f"{seconds * 1000:.0f}ms"


def state_summary(rows: Iterable[Mapping[str, Any]]) -> str:
    """``12 keys: Running 3, Done 8, Failed 1`` (states in progress order)."""
    return _summary(Counter(str(as_dict(r).get("state") or UNOBSERVED) for r in rows))


def _summary(counts: Counter[str]) -> str:
    total = sum(counts.values())
    parts = [f"{s} {counts[s]}" for s in STATES if counts[s]] + \
        [f"{s} {n}" for s, n in sorted(counts.items()) if s not in STATES]
    return f"{total} keys" + (": " + ", ".join(parts) if parts else "")


def counts_summary(counts: Iterable[tuple[str, str | None, str, int]]) -> str:
    """:func:`state_summary` from the facade's ``counts()`` ``(ce, state, phase, n)``: no row needed."""
    summed: Counter[str] = Counter()
    for _, state, _, n in counts:
        summed[state or UNOBSERVED] += n
    return _summary(summed)


def ces_table(health: Iterable[Any], now: float | None = None) -> str:
    """One line per CE: reachable, last poll, poll latency p50/p95, poll errors, jobs tracked by state, last error."""
    now = time.time() if now is None else now
    rows = []
    for item in health:
        h = as_dict(item)
        states: Mapping[str, int] = h.get("states") or {}
        jobs = ", ".join(f"{s} {states[s]}" for s in STATES if states.get(s)) or None
        rows.append([h["name"], bool(h.get("reachable")), _age(h.get("last_poll_at"), now),
                     _ms(h.get("poll_latency_p50")), _ms(h.get("poll_latency_p95")),
                     f"{h.get('poll_errors', 0)}/{h.get('polls', 0)}", h.get("tracked", 0), jobs,
                     _short(h.get("last_error"), 50)])
    return table(rows, ["CE", "reachable", "last poll", "p50", "p95", "poll errors", "tracked", "jobs",
                        "last error"], right=["p50", "p95", "poll errors", "tracked"])


def jobs_table(rows: Iterable[Any], now: float | None = None, limit: int | None = None,
               total: int | None = None) -> str:
    """One line per key (rows as records or mappings): CE, wanted phase, observed state, native state, exit code,
    job id, attempts, last seen, and why it is where it is (an error, else why its CE's limits hold it back or why
    intercede ended it); at most ``limit`` lines. A final line says how many were left out: of ``total`` keys when
    given (the rows are then the first ones only, as ``rows(limit=...)`` answers), else of the rows."""
    now = time.time() if now is None else now
    items = [as_dict(r) for r in rows]
    shown = items if limit is None else items[:limit]
    lines = [[r["key"], r["ce"], r["phase"], r.get("state") or UNOBSERVED, r.get("native_state") or None,
              r.get("exit_code"), r.get("job_id"), r.get("attempts", 0), _age(r.get("last_seen"), now),
              "yes" if r.get("collected") else None,
              _short(r.get("permanent_error") or r.get("last_error") or r.get("waiting_reason")
                     or r.get("policy_reason"))]
             for r in shown]
    text = table(lines, ["key", "CE", "wanted", "state", "native", "exit", "job id", "tries", "last seen",
                         "collected", "error"], right=["exit", "tries"])
    left = (len(items) if total is None else max(total, len(items))) - len(shown)
    if left > 0:
        text += f"\n... and {left} more (--limit)"
    return text
