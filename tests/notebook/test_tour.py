"""``examples/intercede_tour.ipynb`` executed under a real Jupyter kernel (nbclient, kernel ``python3`` of this venv):
declare, watch, cancel, collect and plot on the embedded default, with assertions on the cells' outputs."""

from __future__ import annotations

import ast
import base64
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat import NotebookNode

pytestmark = pytest.mark.notebook

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "intercede_tour.ipynb"


@pytest.fixture(scope="module")
def tour(tmp_path_factory: pytest.TempPathFactory) -> tuple[NotebookNode, Path]:
    """The notebook after a run in a fresh folder, plus one cell of ours telling which Python the kernel ran."""
    folder = tmp_path_factory.mktemp("tour")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}},
                   allow_errors=False).execute()
    return notebook, folder


def _cell(notebook: NotebookNode, start: str) -> NotebookNode:
    cells = [c for c in notebook.cells if c.cell_type == "code" and c.source.startswith(start)]
    assert len(cells) == 1, f"{len(cells)} code cells start with {start!r}"
    return cells[0]


def _data(cell: NotebookNode, mime: str) -> list[Any]:
    return [o["data"][mime] for o in cell.outputs if "data" in o and mime in o["data"]]


def _text(cell: NotebookNode) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def test_the_kernel_is_this_virtualenvs_python(tour: tuple[NotebookNode, Path]) -> None:
    notebook, _ = tour
    assert Path(_text(notebook.cells[-1]).strip()).parent == Path(sys.executable).parent


def test_declaring_shows_a_snapshot_as_html(tour: tuple[NotebookNode, Path]) -> None:
    cell = _cell(tour[0], "jobs = sample_jobs(")
    assert "declared 12 keys" in _text(cell)
    (html,) = _data(cell, "text/html")
    assert "<table" in html and "jobs by state" in html and "Unobserved" in html


def test_after_cancel_the_jobs_table_has_done_failed_and_aborted(tour: tuple[NotebookNode, Path]) -> None:
    cell = _cell(tour[0], "await ic.cancel(doomed)")
    html = _data(cell, "text/html")[-1]  # the execute_result: the jobs DataFrame (the live table came before it)
    assert html.lstrip().startswith("<div") and "dataframe" in html
    for state in ("Done", "Failed", "Aborted"):
        assert f"<td>{state}</td>" in html, state
    assert "Running" not in html and "Unobserved" not in html


def test_the_outputs_were_collected_into_the_notebooks_folder(tour: tuple[NotebookNode, Path]) -> None:
    notebook, folder = tour
    text = _text(_cell(notebook, "outputs = workdir"))
    assert "<- result.txt of demo-" in text and "<- stdout.txt of demo-" in text
    outputs = folder / "intercede-tour" / "outputs"
    assert len([p for p in outputs.iterdir() if (p / "stdout.txt").is_file()]) == 12


def test_the_plots_are_png_images(tour: tuple[NotebookNode, Path]) -> None:
    for start in ("diag.plot_states()", "diag.plot_poll_latency()"):
        (png,) = _data(_cell(tour[0], start), "image/png")
        assert base64.b64decode(png).startswith(b"\x89PNG\r\n\x1a\n"), start


def test_the_summary_by_ce_and_state_counts_every_key(tour: tuple[NotebookNode, Path]) -> None:
    (html,) = _data(_cell(tour[0], "diag.last.summary()"), "text/html")
    assert "<th>total</th>" in html and "<th>local</th>" in html and "<td>12</td>" in html


def test_the_final_summary_has_every_key_in_its_expected_state_and_collected(
        tour: tuple[NotebookNode, Path]) -> None:
    (text,) = _data(_cell(tour[0], "mine = diag.jobs.loc"), "text/plain")
    assert ast.literal_eval(text) == {
        "states": {"done": ["Done"], "failed": ["Failed"], "cancelled": ["Aborted"]}, "collected": 12, "keys": 12}


def test_the_notebook_in_the_repository_carries_no_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    assert all(not c.get("outputs") and c.get("execution_count") is None
               for c in notebook.cells if c.cell_type == "code")
