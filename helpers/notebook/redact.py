"""Mask the AWS account id in executed notebooks and reports before they are shared.

An executed notebook on ``target=aws`` carries the account id in ARNs, queue URLs and tables (34
places in a local run). :func:`redact_notebook` replaces every occurrence in the outputs (text,
HTML, JSON, errors) and in cell sources with :data:`MASK`; :func:`redact_text` does the same for
one string (a report page). Images are left alone (no text in them names the account).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

__all__ = ["MASK", "redact_notebook", "redact_text"]

MASK = "<account-id>"
_TEXT_MIMES = ("text/", "application/json", "application/javascript", "image/svg+xml")


def _pattern(account_id: str) -> re.Pattern[str]:
    if not re.fullmatch(r"\d{12}", account_id):
        raise ValueError(f"not an AWS account id: {account_id!r} (12 digits)")
    return re.compile(rf"(?<!\d){account_id}(?!\d)")  # not inside a longer number


def redact_text(text: str, account_id: str) -> str:
    """``text`` with every occurrence of ``account_id`` (as a whole number) replaced by :data:`MASK`."""
    return _pattern(account_id).sub(MASK, text)


def _scrub(value: Any, pattern: re.Pattern[str]) -> tuple[Any, int]:
    if isinstance(value, str):
        new, count = pattern.subn(MASK, value)
        return new, count
    if isinstance(value, list):
        items = [_scrub(v, pattern) for v in value]
        return [v for v, _ in items], sum(n for _, n in items)
    if isinstance(value, dict):
        items2 = {k: _scrub(v, pattern) for k, v in value.items()}
        return {k: v for k, (v, _) in items2.items()}, sum(n for _, n in items2.values())
    return value, 0


def redact_notebook(path: str | Path, account_id: str) -> int:
    """Mask ``account_id`` in the notebook at ``path`` in place; returns how many were masked."""
    pattern = _pattern(account_id)
    file = Path(path)
    nb = json.loads(file.read_text(encoding="utf-8"))
    masked = 0
    for cell in nb.get("cells", []):
        cell["source"], n = _scrub(cell.get("source", ""), pattern)
        masked += n
        for output in cell.get("outputs", []):
            for key in ("text", "traceback", "evalue", "ename"):
                if key in output:
                    output[key], n = _scrub(output[key], pattern)
                    masked += n
            data = output.get("data", {})
            for mime in list(data):
                if mime.startswith(_TEXT_MIMES):
                    data[mime], n = _scrub(data[mime], pattern)
                    masked += n
    if masked:
        file.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return masked
