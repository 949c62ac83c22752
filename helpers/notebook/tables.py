"""Tables as a notebook reader should see them: no empty columns, numbers formatted, short messages.

A cell's last value is shown as HTML in JupyterLab and as text in an executed notebook viewed
elsewhere; plain DataFrames read well in both (a pandas ``Styler`` prints as
``<pandas.io.formats.style.Styler at 0x...>`` in text). Mismatch messages give counts and the
first few ids, never hundreds of ids on one line.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

__all__ = ["FIRST_IDS", "alerts_mismatch", "alerts_qa_table", "percent", "tidy"]

FIRST_IDS = 5  # ids quoted in a mismatch message; the count says how many there are


def tidy(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` without the columns that hold nothing (all missing or empty strings)."""
    if frame.empty:
        return frame
    empty = [
        column
        for column in frame.columns
        if frame[column].isna().all() or frame[column].astype(str).str.strip().eq("").all()
    ]
    return frame.drop(columns=empty)


def percent(frame: pd.DataFrame, columns: Sequence[str], *, digits: int = 2) -> pd.DataFrame:
    """A copy with ``columns`` (fractions: 0.0123) shown as signed percentages (``+1.23%``)."""
    out = frame.copy()
    for column in columns:
        out[column] = [f"{value:+.{digits}%}" if pd.notna(value) else "" for value in out[column]]
    return out


def _ids(ids: Sequence[str], first: int) -> str:
    shown = ", ".join(ids[:first])
    more = f" and {len(ids) - first} more" if len(ids) > first else ""
    return f"{len(ids)} ({shown}{more})" if ids else "0"


def alerts_mismatch(check: Mapping[str, Any], *, first: int = FIRST_IDS) -> str:
    """One readable line for an :func:`helpers.notebook.alerts.compare` result that is not ok."""
    return (
        f"alerts differ from the deployed rule's crossovers: received {check['received']} of "
        f"{check['expected']} expected; missing {_ids(check['missing'], first)}; "
        f"extra {_ids(check['extra'], first)}; repeated {_ids(check['duplicates'], first)}. "
        "Alerts still in flight: rerun this notebook with a larger WAIT_SECONDS; otherwise see the "
        "trend Lambda's log (/aws/lambda/<trend function>) and `python -m deploy.local status`"
    )


def _keys(items: Iterable[Any]) -> pd.DataFrame:
    rows = [item.to_dict() if hasattr(item, "to_dict") else dict(item) for item in items]
    return pd.DataFrame(rows, columns=["symbol", "timestamp", "signal"])


def alerts_qa_table(received: Iterable[Any], expected: pd.DataFrame) -> pd.DataFrame:
    """Per symbol: signals expected, alerts received, and how many are missing or extra."""
    want = expected[["symbol", "timestamp", "signal"]].drop_duplicates()
    got = _keys(received).drop_duplicates()
    merged = want.merge(got, how="outer", on=["symbol", "timestamp", "signal"], indicator=True)
    table = (
        merged.assign(
            expected=merged["_merge"].isin(["both", "left_only"]),
            received=merged["_merge"].isin(["both", "right_only"]),
            missing=merged["_merge"].eq("left_only"),
            extra=merged["_merge"].eq("right_only"),
        )
        .groupby("symbol")[["expected", "received", "missing", "extra"]]
        .sum()
        .astype("int64")
    )
    return table
