"""Run folders, reports/latest, report.html and the notebook tables: what a reader of a run gets."""

from __future__ import annotations

import base64
import json
import os
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.figure import Figure

from helpers.notebook import charts, report, tables
from helpers.notebook.report_html import SIGNALS_SHOWN, write_report

SUMMARY = {
    "target": "local",
    "started_at": "2026-12-03T14:00:00Z",
    "run": {"id": "20261203T140000Z", "status": "ok", "finished_at": "2026-12-03T14:01:30Z"},
    "records_produced": 2390,
    "records_accepted": 2382,
    "records_quarantined": {
        "bad_json": 1,
        "invalid_price": 3,
        "invalid_symbol": 2,
        "missing_field": 1,
        "not_utf8": 1,
    },
    "dynamodb_items": 2382,
    "raw_records": 2382,
    "alerts_published": 159,
    "alerts_received": 159,
    "alerts_duplicates": 0,
    "athena": {"anomalies": 390, "crossovers": 159, "daily_ohlc": 7},
    "crossovers": {"windows": [5, 20], "signals": 159, "deployed_signals": 159},
    "notebooks": [
        {"name": "00_setup", "status": "ok", "seconds": 2.6},
        {
            "name": "06_sma_crossovers",
            "status": "failed",
            "seconds": 9.1,
            "error": "AssertionError: <boom> & more",
        },
    ],
}


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture
def run_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "20261203T140000Z"
    folder.mkdir()
    report.write_summary(SUMMARY, folder)
    alerts = pd.DataFrame(
        {
            "symbol": ["AAPL"] * 40,
            "bar time (UTC)": [f"2026-07-29T14:{i:02d}:00Z" for i in range(40)],
            "signal": ["BUY", "SELL"] * 20,
            "price": [300.0 + i for i in range(40)],
        }
    )
    alerts.to_csv(folder / "06_alerts.csv", index=False)
    top = pd.DataFrame(
        {"symbol": ["AAPL"], "timestamp": ["2026-07-31T16:32:00Z"], "change_pct": [-10.115321]}
    )
    days = pd.DataFrame(
        {"symbol": "AAPL", "trading_day": pd.date_range("2026-01-01", periods=30).astype(str)}
    )
    report.save_tables({"top_price_changes": top, "daily_ohlc": days}, "05", folder)
    fig = Figure(figsize=(4, 3), dpi=50)
    fig.add_subplot().plot([1, 2, 3])
    fig.suptitle("Daily close (USD)")
    charts.publish(fig, "05_daily_close", directory=folder)
    return folder


def test_report_is_one_self_contained_page_with_summary_signals_and_charts(run_folder: Path) -> None:
    page = parse(write_report(run_folder))
    text = " ".join(page.text)
    # Summary: counts, quarantine reasons, notebooks (error text escaped, not markup)
    for shown in ("2,390", "2,382", "159", "bad_json", "invalid_price", "not_utf8", "00_setup"):
        assert shown in text, shown
    assert "AssertionError: <boom> & more" in text
    assert "Stock trend pipeline — run 20261203T140000Z" in text
    # Athena results and the signals: per symbol, the latest SIGNALS_SHOWN, all of them folded away
    assert "Rows per query" in text and "anomalies" in text and "-10.1153" in text
    assert f"The latest {SIGNALS_SHOWN} of 40 signals; all in 06_alerts.csv" in text
    assert "2026-07-29T14:39:00Z" in text and "2026-07-29T14:14:00Z" not in text  # the latest 25 only
    assert "Daily open, high, low, close (the last 20 of 30 rows; all in 05_daily_ohlc.csv)" in text
    # Charts embedded as data URIs equal to the saved PNG, captioned with the figure's title
    (img,) = [attrs for tag, attrs in page.tags if tag == "img"]
    src = img["src"] or ""
    assert src.startswith("data:image/png;base64,")
    assert base64.b64decode(src.split(",", 1)[1]) == (run_folder / "05_daily_close.png").read_bytes()
    assert img["alt"] == "Daily close (USD)"
    # Nothing to fetch, nothing to run
    assert not [t for t, _ in page.tags if t in ("script", "link", "iframe")]
    for _, attrs in page.tags:
        for name in ("src", "href"):
            assert not (attrs.get(name) or "").startswith(("http:", "https:", "file:", "//")), attrs


def test_report_of_an_empty_folder_still_opens(tmp_path: Path) -> None:
    page = parse(write_report(tmp_path))
    assert "No counts were recorded." in " ".join(page.text)


# ---------------------------------------------------------------- run folders and latest


def test_run_folders_are_fresh_and_unique(tmp_path: Path) -> None:
    now = 1_796_313_600.0  # 2026-12-03T16:00:00Z
    first = report.new_run_folder(tmp_path, now=now)
    second = report.new_run_folder(tmp_path, now=now)
    assert (first.name, second.name) == ("20261203T160000Z", "20261203T160000Z-2")
    assert list(first.iterdir()) == [] and list(second.iterdir()) == []


def test_latest_is_a_relative_symlink_replaced_per_run(tmp_path: Path) -> None:
    old, new = report.new_run_folder(tmp_path, now=0), report.new_run_folder(tmp_path, now=60)
    report.point_latest(old, tmp_path)
    latest = report.point_latest(new, tmp_path)
    assert latest == tmp_path / "latest" and latest.is_symlink()
    assert os.readlink(latest) == new.name  # relative: the reports folder can move
    assert latest.resolve() == new.resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == [old.name, new.name, "latest"]  # no temp left


def test_latest_is_a_copy_where_symlinks_fail(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = report.new_run_folder(tmp_path, now=0), report.new_run_folder(tmp_path, now=60)
    (old / "06_crossovers_MSFT.png").write_bytes(b"old run")
    (new / "summary.json").write_text("{}")

    def no_symlinks(self: Path, *args: object, **kwargs: object) -> None:
        raise OSError("symbolic links are not supported here")

    monkeypatch.setattr(Path, "symlink_to", no_symlinks)
    report.point_latest(old, tmp_path)
    latest = report.point_latest(new, tmp_path)
    assert latest.is_dir() and not latest.is_symlink()
    assert sorted(p.name for p in latest.iterdir()) == ["summary.json"]  # nothing of the old run mixes in
    monkeypatch.undo()
    assert report.point_latest(new, tmp_path).is_symlink()  # symlinks work again: the copy is replaced


# ---------------------------------------------------------------- tables for notebooks


def test_tidy_drops_only_empty_columns() -> None:
    frame = pd.DataFrame({"a": [1, 2], "none": [None, None], "blank": ["", " "], "some": [None, "x"]})
    assert list(tables.tidy(frame).columns) == ["a", "some"]
    assert tables.tidy(pd.DataFrame()).empty


def test_percent_formats_fractions_without_a_styler() -> None:
    frame = pd.DataFrame({"symbol": ["AAPL", "IBM"], "strategy_return": [-0.0662, 0.5], "n": [1, 2]})
    shown = tables.percent(frame, ["strategy_return"])
    assert shown["strategy_return"].tolist() == ["-6.62%", "+50.00%"]
    assert frame["strategy_return"].tolist() == [-0.0662, 0.5]  # the input is left alone
    assert isinstance(shown, pd.DataFrame)  # prints as a table in any viewer


def test_alerts_mismatch_gives_counts_and_the_first_ids() -> None:
    missing = [f"AAPL#2026-07-29T14:{i:02d}:00Z#BUY" for i in range(338)]
    check = {"ok": False, "received": 2, "expected": 340, "missing": missing, "extra": [], "duplicates": []}
    message = tables.alerts_mismatch(check)
    assert "received 2 of 340 expected; missing 338 (AAPL#2026-07-29T14:00:00Z#BUY, " in message
    assert "AAPL#2026-07-29T14:04:00Z#BUY and 333 more); extra 0; repeated 0" in message
    assert "AAPL#2026-07-29T14:05:00Z#BUY" not in message and len(message) < 600
    assert "WAIT_SECONDS" in message


def test_alerts_qa_table_counts_per_symbol() -> None:
    expected = pd.DataFrame(
        {"symbol": ["AAPL", "AAPL", "IBM"], "timestamp": ["t1", "t2", "t1"], "signal": ["BUY", "SELL", "BUY"]}
    )
    received = [
        {"symbol": "AAPL", "timestamp": "t1", "signal": "BUY", "alert_id": "x"},
        {"symbol": "IBM", "timestamp": "t9", "signal": "SELL"},
    ]
    table = tables.alerts_qa_table(received, expected)
    assert table.loc["AAPL"].to_dict() == {"expected": 2, "received": 1, "missing": 1, "extra": 0}
    assert table.loc["IBM"].to_dict() == {"expected": 1, "received": 1, "missing": 1, "extra": 1}


def test_save_tables_writes_one_csv_each(tmp_path: Path) -> None:
    frames = {"sma": pd.DataFrame({"a": [1]}), "crossovers": pd.DataFrame({"b": ["x"]})}
    paths = report.save_tables(frames, "05", tmp_path)
    assert [p.name for p in paths] == ["05_sma.csv", "05_crossovers.csv"]
    assert pd.read_csv(paths[1]).to_dict("list") == {"b": ["x"]}
    assert json.loads(json.dumps(report.read_summary(tmp_path))) == {}
