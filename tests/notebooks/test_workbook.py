"""The whole workbook, headless, against a local stack of its own — what `make demo` does."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from deploy.local import status
from deploy.local.access import ENV as IAM_ENV
from deploy.workbook import discover, run_workbook
from helpers.pipeline import aws
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
    calls = state / "api-calls.txt"  # every AWS call of the runner and the kernels (aws.record_calls)
    os.environ[aws.CALLS_ENV] = str(calls)
    try:
        with _iam_enforced():
            runs = run_workbook(settings, output_dir=reports)
    finally:
        del os.environ[aws.CALLS_ENV]
    return settings, runs, reports


@contextlib.contextmanager
def _iam_enforced() -> Iterator[None]:
    """As make demo: the stack enforces the runner policy and the roles' (tests' stacks do not)."""
    os.environ[IAM_ENV] = "1"
    try:
        yield
    finally:
        os.environ[IAM_ENV] = "0"


def test_the_workbook_ran_as_the_runner_with_iam_enforced(workbook) -> None:
    settings, runs, _ = workbook
    keys = json.loads((Path(settings.state_dir) / aws.RUNNER_CREDENTIALS_FILE).read_text())
    assert keys["user_arn"].endswith(":user/stp-runner")
    assert [r.status for r in runs] == ["ok"] * len(EXPECTED)


def test_the_runner_policy_allows_every_call_the_workbook_makes(workbook) -> None:
    from deploy import iam

    settings, _, _ = workbook
    calls = set((Path(settings.state_dir) / "api-calls.txt").read_text().split())
    assert {"kinesis:PutRecords", "lambda:CreateFunction", "athena:StartQueryExecution"} <= calls
    allowed = iam.runner_actions(iam.runner_policy_template())
    assert sorted(c for c in calls if iam.iam_action(c) not in allowed) == []


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


def test_07_prices_a_month_from_the_calls_the_functions_made(workbook) -> None:
    _, _, reports = workbook
    priced = json.loads((reports / "summary.json").read_text())["cost"]
    assert priced["records_per_month"] == 16_380  # the seed's cadence: one symbol every 30 s, 6.5 h, 21 days
    # the stack counted the processor's own PutObject calls (raw object, manifest, checkpoint)
    assert priced["processor_s3_puts_per_invocation"] >= 2
    # nearly all of it the on-demand stream's 730 hours (29.20 USD)
    assert 29.2 < priced["this_design_usd"] < 31 and 29.2 < priced["per_record_usd"] < 31
    assert priced["busy_per_record_usd"] > 5 * priced["busy_this_design_usd"]


def test_reports_hold_executed_notebooks_and_charts_without_credentials(workbook) -> None:
    _, _, reports = workbook
    for name in EXPECTED:
        text = (reports / f"{name}.ipynb").read_text()
        assert "aws_secret_access_key" not in text.lower()
        assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text)
    pngs = sorted(reports.glob("*.png"))
    assert pngs and all(p.stat().st_size > 10_000 for p in pngs)


CHARTS = ["05_daily_close", "06_alerts_qa", "06_crossovers_AAPL", "06_sessions_AAPL"]


def outputs(reports, name):
    nb = json.loads((reports / f"{name}.ipynb").read_text())
    return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c["outputs"]]


def test_every_saved_chart_is_shown_inline_as_png(workbook) -> None:
    _, _, reports = workbook
    saved = {p.stem: p.read_bytes() for p in reports.glob("*.png")}
    assert sorted(saved) == CHARTS and all((reports / f"{stem}.svg").is_file() for stem in saved)
    shown = Counter(
        base64.b64decode(o["data"]["image/png"])
        for name in EXPECTED
        for o in outputs(reports, name)
        if "image/png" in o.get("data", {})
    )
    # each chart file is displayed exactly once (the same bytes), and nothing else is
    assert shown == Counter(saved.values())
    per_notebook = {n: sum("image/png" in o.get("data", {}) for o in outputs(reports, n)) for n in EXPECTED}
    assert per_notebook["05_athena_analysis"] == 1 and per_notebook["06_sma_crossovers"] == 3
    for name in ("05_athena_analysis", "06_sma_crossovers"):
        text = json.dumps(outputs(reports, name))
        assert "<Figure size" not in text and "pandas.io.formats.style.Styler" not in text, name


def test_report_html_shows_the_run(workbook) -> None:
    _, _, reports = workbook
    summary = json.loads((reports / "summary.json").read_text())
    page = (reports / "report.html").read_text(encoding="utf-8")
    assert summary["run"]["status"] == "ok" and summary["run"]["finished_at"]
    assert (
        f"<b>{summary['records_produced']:,}</b>" in page
        and f"<b>{summary['alerts_published']:,}</b>" in page
    )
    for reason in summary["records_quarantined"]:
        assert f"<td>{reason}</td>" in page
    for query in summary["athena"]:
        assert f"<td>{query}</td>" in page
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)">', page)
    assert sorted(base64.b64decode(i) for i in images) == sorted(
        p.read_bytes() for p in reports.glob("*.png")
    )
    assert "Signals per symbol" in page and "<script" not in page
    assert "Cost a month on AWS" in page and f"<b>{summary['cost']['this_design_usd']:,.2f} USD</b>" in page
    assert "<td>on-demand stream</td>" in page  # 07's month, line by line
    assert not re.search(r'(src|href)="(https?:|//|file:)', page)  # nothing to fetch
    alerts = pd.read_csv(reports / "06_alerts.csv")
    assert len(alerts) == summary["alerts_published"] and not alerts.isna().all().any()  # no empty column


BROWSERS = ("chromium", "chromium-browser", "google-chrome")
BROWSER_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--no-pings",
    "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",  # nothing leaves loopback
]  # fmt: skip


def on_screen(shot: Path, color: str) -> int:
    """Pixels of ``shot`` within 6 % of ``color`` per channel."""
    import matplotlib.image
    import numpy as np

    pixels = matplotlib.image.imread(shot)[..., :3]
    rgb = np.array([int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(pixels - rgb).max(axis=2) < 0.06).sum())


def test_report_html_renders_in_a_headless_browser(workbook, tmp_path) -> None:
    """Chromium opens report.html from disk: the summary, the signals and the charts are on screen.

    The chart colours (SMA5 orange, SMA20 blue, BUY/SELL) appear in the screenshot only if the
    embedded images decode and render; the page's own styles use none of them.
    """
    from helpers.core.indicators import BUY, SELL
    from helpers.notebook.charts import COLORS

    browser = next((found for name in BROWSERS if (found := shutil.which(name))), None)
    if browser is None:
        if os.environ.get("STP_REQUIRE_BROWSER"):
            pytest.fail("STP_REQUIRE_BROWSER is set but no Chromium is on PATH")
        pytest.skip("no Chromium on PATH (apt-get install chromium; .ci/run installs it)")
    _, _, reports = workbook
    url = (reports / "report.html").resolve().as_uri()
    flags = [browser, *BROWSER_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    summary = json.loads((reports / "summary.json").read_text())
    for heading in ("Summary", "Athena results", "Signals per symbol", "Cost a month on AWS", "Charts"):
        assert heading in dom.stdout, heading
    assert f"{summary['alerts_published']:,}" in dom.stdout
    shot = tmp_path / "report.png"
    subprocess.run(
        [*flags, "--window-size=1280,16000", f"--screenshot={shot}", url], capture_output=True, timeout=120
    )
    counts = {k: on_screen(shot, COLORS[k]) for k in ("sma_short", "sma_long", BUY, SELL)}
    assert all(n > 300 for n in counts.values()), counts


@pytest.fixture(scope="module")
def workbook_10_30(tmp_path_factory, free_port):
    """Notebook 06 with other windows, and the local stack stopped after 03 and started again from
    its saved state before 04 (so 04-06 read what a restarted stack gives back)."""
    state = tmp_path_factory.mktemp("workbook-1030-state")
    reports = tmp_path_factory.mktemp("workbook-1030-reports")
    settings = load_settings(environ={}, local_port=free_port(), state_dir=str(state))
    with _iam_enforced():  # the runner's key and the roles' sessions across a restart
        runs = run_workbook(
            settings,
            parameters={"SHORT_WINDOW": 10, "LONG_WINDOW": 30},
            output_dir=reports,
            restart_stack_after="03",
        )
    return runs, json.loads((reports / "summary.json").read_text())


def test_notebook_06_windows_change_the_signal_count_not_the_alerts(workbook, workbook_10_30) -> None:
    _, _, reports = workbook
    default = json.loads((reports / "summary.json").read_text())
    runs, other = workbook_10_30
    assert [(r.name, r.status) for r in runs] == [(n, "ok") for n in EXPECTED], [r.error for r in runs]
    published = default["alerts_published"]
    assert default["crossovers"] == {"windows": [5, 20], "signals": published, "deployed_signals": published}
    assert other["crossovers"]["windows"] == [10, 30]
    assert other["crossovers"]["signals"] != default["crossovers"]["signals"]  # 85 vs 159 measured
    assert (
        other["crossovers"]["deployed_signals"] == other["alerts_published"] == published
    )  # alerts stay 5/20


def test_a_restart_of_the_stack_after_03_changes_no_count(workbook, workbook_10_30) -> None:
    """The second run stopped and restarted its stack between 03 and 04: every count equals the
    first run's, alerts equal the crossover definition (above) and none is sent twice."""
    _, _, reports = workbook
    default = json.loads((reports / "summary.json").read_text())
    _, restarted = workbook_10_30
    keys = ("records_produced", "records_accepted", "records_quarantined", "dynamodb_items", "raw_records",
            "alerts_published")  # fmt: skip
    assert {k: restarted[k] for k in keys} == {k: default[k] for k in keys}
    assert restarted["athena"] == default["athena"]  # 05's queries over the restored catalog and objects
    assert restarted["alerts_duplicates"] == 0


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
