"""``report.html``: one self-contained page a reader can open or send, built from a run folder.

The page holds the run's summary (records produced, accepted and quarantined by reason, what the
stores hold, alerts), the Athena results, the signals table and every chart of the folder,
images embedded as ``data:`` URIs — no code, no scripts, no external files, so it opens
offline and survives being mailed. It reads only files the notebooks wrote: ``summary.json``,
the CSV tables (``05_*.csv``, ``06_*.csv``; long ones cut to their latest rows, the CSV has all)
and the PNG charts with their captions
(``charts.json``, written by :func:`helpers.notebook.charts.publish`).
"""

from __future__ import annotations

import base64
import html
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from helpers.notebook.charts import CAPTIONS_FILE
from helpers.notebook.report import read_summary, reports_dir

__all__ = ["REPORT_FILE", "SIGNALS_SHOWN", "TABLE_ROWS_SHOWN", "write_report"]

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
COST_CSV = "07_cost.csv"  # notebook 07's month, line by line
SIGNALS_SHOWN = 25  # signal rows in the page (the latest); every one is in 06_alerts.csv next to it
TABLE_ROWS_SHOWN = 20  # rows of an Athena result in the page (the latest); the CSV next to it has all
ATHENA_TABLES = (
    ("05_top_price_changes.csv", "Top price changes"),
    ("05_avg_volume_by_symbol.csv", "Average volume by symbol"),
    ("05_daily_ohlc.csv", "Daily open, high, low, close"),
)

_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #222;
       max-width: 1180px; margin: 2em auto; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
.meta { color: #666; } .ok { color: #1a7f37; } .failed, .interrupted { color: #c62828; font-weight: 600; }
.skipped { color: #888; }
.cards { display: flex; flex-wrap: wrap; gap: 0.8em; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 0.6em 1em; min-width: 9em; }
.card b { display: block; font-size: 1.5em; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border-bottom: 1px solid #e5e5e5; padding: 0.25em 0.7em; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(rows: Iterable[Mapping[str, Any]], columns: list[str], numeric: Iterable[str] = ()) -> str:
    numeric = set(numeric)
    head = "".join(f'<th class="num">{_e(c)}</th>' if c in numeric else f"<th>{_e(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for c in columns:
            value = row.get(c, "")
            value = "" if value is None or (isinstance(value, float) and pd.isna(value)) else value
            if c in numeric and isinstance(value, int | float) and not isinstance(value, bool):
                text = f"{value:,}" if isinstance(value, int) else f"{value:,.4f}".rstrip("0").rstrip(".")
                cells.append(f'<td class="num">{_e(text)}</td>')
            else:
                cells.append(f"<td>{_e(value)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _frame_table(frame: pd.DataFrame) -> str:
    frame = frame.dropna(axis=1, how="all")
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
    rows = [
        {c: (v.item() if hasattr(v, "item") else v) for c, v in row.items()} for _, row in frame.iterrows()
    ]
    return _table(rows, list(frame.columns), numeric)


def _csv(folder: Path, name: str) -> pd.DataFrame | None:
    path = folder / name
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except (ValueError, pd.errors.EmptyDataError) as err:
        log.warning("report: %s is not a readable CSV (%s); left out", path, err)
        return None


def _cards(summary: Mapping[str, Any]) -> str:
    quarantined = summary.get("records_quarantined")
    cards = [
        ("records produced", summary.get("records_produced")),
        ("records accepted", summary.get("records_accepted")),
        ("records quarantined", sum(quarantined.values()) if isinstance(quarantined, dict) else None),
        ("DynamoDB items", summary.get("dynamodb_items")),
        ("raw archive records", summary.get("raw_records")),
        ("alerts published", summary.get("alerts_published")),
    ]
    shown = [
        f'<div class="card">{_e(label)}<b>{value:,}</b></div>'
        for label, value in cards
        if isinstance(value, int) and not isinstance(value, bool)
    ]
    return f'<div class="cards">{"".join(shown)}</div>' if shown else "<p>No counts were recorded.</p>"


def _run_section(summary: Mapping[str, Any]) -> str:
    notebooks = summary.get("notebooks") or []
    if not notebooks:
        return ""
    rows = []
    for n in notebooks:
        status = str(n.get("status", ""))
        error = n.get("error") or ""
        cells = (
            f"<td>{_e(n.get('name', ''))}</td><td class='{_e(status)}'>{_e(status)}</td>"
            f"<td class='num'>{float(n.get('seconds') or 0):.1f}</td><td>{_e(error)}</td>"
        )
        rows.append(f"<tr>{cells}</tr>")
    head = "<tr><th>notebook</th><th>status</th><th class='num'>seconds</th><th>error</th></tr>"
    return f"<h2>Notebooks</h2><table><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def _quarantine_section(summary: Mapping[str, Any]) -> str:
    quarantined = summary.get("records_quarantined")
    if not isinstance(quarantined, dict):
        return ""
    if not quarantined:
        return "<h3>Quarantined records</h3><p>None: every record was valid.</p>"
    rows = [{"reason": k, "records": v} for k, v in sorted(quarantined.items())]
    return "<h3>Quarantined records, by reason</h3>" + _table(rows, ["reason", "records"], ["records"])


def _athena_section(folder: Path, summary: Mapping[str, Any]) -> str:
    counts = summary.get("athena")
    parts = []
    if isinstance(counts, dict) and counts:
        rows = [{"query": k, "rows": v} for k, v in sorted(counts.items())]
        parts.append("<h3>Rows per query</h3>" + _table(rows, ["query", "rows"], ["rows"]))
    for name, title in ATHENA_TABLES:
        frame = _csv(folder, name)
        if frame is not None and not frame.empty:
            shown = frame.tail(TABLE_ROWS_SHOWN)
            cut = len(frame) > len(shown)
            note = f" (the last {len(shown)} of {len(frame):,} rows; all in {name})" if cut else ""
            parts.append(f"<h3>{_e(title)}{_e(note)}</h3>" + _frame_table(shown))
    return ("<h2>Athena results</h2>" + "".join(parts)) if parts else ""


def _signals_section(folder: Path, summary: Mapping[str, Any]) -> str:
    alerts = _csv(folder, "06_alerts.csv")
    crossovers = summary.get("crossovers") if isinstance(summary.get("crossovers"), dict) else {}
    parts = []
    if crossovers:
        short, long = (crossovers.get("windows") or [None, None])[:2]
        parts.append(
            f"<p>Crossover signals of SMA{_e(short)}/SMA{_e(long)}: {_e(crossovers.get('signals'))}; "
            f"of the deployed rule: {_e(crossovers.get('deployed_signals'))}; alerts received: "
            f"{_e(summary.get('alerts_received', '–'))} (repeats dropped: "
            f"{_e(summary.get('alerts_duplicates', 0))}).</p>"
        )
    if alerts is not None and not alerts.empty:
        if {"symbol", "signal"} <= set(alerts.columns):
            counts = alerts.groupby(["symbol", "signal"]).size().unstack(fill_value=0).reset_index()
            parts.append("<h3>Signals per symbol</h3>" + _frame_table(counts))
        latest = alerts.tail(SIGNALS_SHOWN)
        where = "; all in 06_alerts.csv" if len(alerts) > len(latest) else ""
        heading = f"The latest {len(latest)} of {len(alerts):,} signals{where}"
        parts.append(f"<h3>{_e(heading)}</h3>" + _frame_table(latest))
    backtest = _csv(folder, "06_backtest.csv")
    if backtest is not None and not backtest.empty:
        parts.append("<h3>Illustrative backtest (not a trading result)</h3>" + _frame_table(backtest))
    return ("<h2>Signals</h2>" + "".join(parts)) if parts else ""


def _cost_section(folder: Path, summary: Mapping[str, Any]) -> str:
    priced = summary.get("cost")
    if not isinstance(priced, dict):
        return ""
    usd = {k: float(priced.get(k) or 0) for k in priced if k.endswith("_usd")}
    text = (
        f"At {priced.get('records_per_month', 0):,} quotes a month: <b>{usd.get('this_design_usd', 0):,.2f}"
        f" USD</b> with this design, {usd.get('per_record_usd', 0):,.2f} USD with one call per record;"
        f" at 1,000 quotes a second {usd.get('busy_this_design_usd', 0):,.0f} USD against"
        f" {usd.get('busy_per_record_usd', 0):,.0f} USD. Priced by 07 from this run's measurements"
        f" (us-east-1 list prices of {_e(priced.get('prices_as_of', '?'))}, free tiers left out)."
    )
    table = _csv(folder, COST_CSV)
    return f"<h2>Cost a month on AWS</h2><p>{text}</p>" + (_frame_table(table) if table is not None else "")


def _charts_section(folder: Path) -> str:
    captions_file = folder / CAPTIONS_FILE
    captions: dict[str, str] = {}
    if captions_file.is_file():
        try:
            captions = json.loads(captions_file.read_text())
        except ValueError:
            log.warning("report: %s is not valid JSON; charts are captioned by file name", captions_file)
    figures = []
    for png in sorted(folder.glob("*.png")):
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        caption = captions.get(png.stem) or png.stem.replace("_", " ")
        figures.append(
            f'<figure id="{_e(png.stem)}"><img alt="{_e(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{_e(caption)} · {_e(png.stem)}.png / .svg</figcaption></figure>"
        )
    return ("<h2>Charts</h2>" + "".join(figures)) if figures else ""


def write_report(path: str | Path | None = None) -> Path:
    """Write ``report.html`` into the run folder from what the notebooks recorded there; return it."""
    folder = reports_dir(path)
    summary = read_summary(folder)
    run: dict[str, Any] = summary["run"] if isinstance(summary.get("run"), dict) else {}
    status = str(run.get("status", "unknown"))
    title = f"Stock trend pipeline — run {run.get('id', folder.name)}"
    meta = (
        f"target <b>{_e(summary.get('target', '?'))}</b> · started {_e(summary.get('started_at', '?'))}"
        f" · finished {_e(run.get('finished_at', '–'))}"
        f" · status <span class='{_e(status)}'>{_e(status)}</span>"
    )
    body = "".join(
        [
            f"<h1>{_e(title)}</h1><p class='meta'>{meta}</p>",
            "<h2>Summary</h2>",
            _cards(summary),
            _quarantine_section(summary),
            _run_section(summary),
            _athena_section(folder, summary),
            _signals_section(folder, summary),
            _cost_section(folder, summary),
            _charts_section(folder),
        ]
    )
    page = (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>\n"
    )
    target = folder / REPORT_FILE
    target.write_text(page, encoding="utf-8")
    log.info("wrote %s (%d KB)", target, target.stat().st_size // 1024)
    return target
