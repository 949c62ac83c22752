"""The whole workbook, headless, against a local stack of its own — what `make demo` does."""

from __future__ import annotations

import json
import re

import pytest

from deploy.local import status
from deploy.workbook import discover, run_workbook
from helpers.pipeline.config import load_settings

pytestmark = pytest.mark.notebooks

EXPECTED = [
    "00_setup",
    "01_provision",
    "02_deploy",
    "03_produce",
    "04_verify",
    "05_athena_analysis",
    "06_sma_crossovers",
    "07_teardown",
]


@pytest.fixture(scope="module")
def workbook(tmp_path_factory, free_port):
    state = tmp_path_factory.mktemp("workbook-state")
    reports = tmp_path_factory.mktemp("workbook-reports")
    settings = load_settings(environ={}, local_port=free_port(), state_dir=str(state))
    runs = run_workbook(settings, output_dir=reports)
    return settings, runs, reports


def test_every_notebook_runs(workbook) -> None:
    settings, runs, _ = workbook
    assert [p.stem for p in discover()] == EXPECTED
    assert [(r.name, r.status) for r in runs] == [(n, "ok") for n in EXPECTED], [r.error for r in runs]
    assert not status(settings).running  # the run stopped the stack it started


def test_summary_counts_are_consistent_and_measured_from_the_stores(workbook) -> None:
    _, _, reports = workbook
    summary = json.loads((reports / "summary.json").read_text())
    quarantined = summary["records_quarantined"]
    assert summary["records_produced"] > 2000
    assert sum(quarantined.values()) > 0
    assert summary["records_produced"] == summary["records_accepted"] + sum(quarantined.values())
    assert summary["dynamodb_items"] == summary["records_accepted"]
    assert summary["raw_records"] == summary["records_accepted"]
    assert summary["alerts_published"] > 0
    assert summary["alerts_duplicates"] == 0  # repeats dropped by alert_id: none on the happy path
    assert summary["athena"] and all(isinstance(v, int) for v in summary["athena"].values())
    assert [n["name"] for n in summary["notebooks"]] == EXPECTED


def test_reports_hold_executed_notebooks_and_charts_without_credentials(workbook) -> None:
    _, _, reports = workbook
    for name in EXPECTED:
        text = (reports / f"{name}.ipynb").read_text()
        assert "aws_secret_access_key" not in text.lower()
        assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text)
    pngs = sorted(reports.glob("*.png"))
    assert pngs and all(p.stat().st_size > 10_000 for p in pngs)


@pytest.fixture(scope="module")
def workbook_10_30(tmp_path_factory, free_port):
    """Notebook 06 with other windows (05 is not needed for it; 04 waits for the processor)."""
    state = tmp_path_factory.mktemp("workbook-1030-state")
    reports = tmp_path_factory.mktemp("workbook-1030-reports")
    settings = load_settings(environ={}, local_port=free_port(), state_dir=str(state))
    runs = run_workbook(
        settings,
        only=["00", "01", "02", "03", "04", "06", "07"],
        parameters={"SHORT_WINDOW": 10, "LONG_WINDOW": 30},
        output_dir=reports,
    )
    return runs, json.loads((reports / "summary.json").read_text())


def test_notebook_06_windows_change_the_signal_count_not_the_alerts(workbook, workbook_10_30) -> None:
    _, _, reports = workbook
    default = json.loads((reports / "summary.json").read_text())
    runs, other = workbook_10_30
    assert [(r.name, r.status) for r in runs] == [(n, "ok") for n in EXPECTED if n[:2] != "05"], [
        r.error for r in runs
    ]
    published = default["alerts_published"]
    assert default["crossovers"] == {"windows": [5, 20], "signals": published, "deployed_signals": published}
    assert other["crossovers"]["windows"] == [10, 30]
    assert other["crossovers"]["signals"] != default["crossovers"]["signals"]  # 85 vs 159 measured
    assert (
        other["crossovers"]["deployed_signals"] == other["alerts_published"] == published
    )  # alerts stay 5/20


def test_every_parameter_is_visible_to_papermill() -> None:
    """A comment papermill cannot parse (e.g. one holding `<=`) silently drops that parameter."""
    import ast

    import papermill

    for path in discover():
        nb = json.loads(path.read_text())
        (cell,) = [c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", [])]
        tree = ast.parse("".join(cell["source"]))
        assigned = {
            t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)
        }
        assert set(papermill.inspect_notebook(str(path))) == assigned, path.name
