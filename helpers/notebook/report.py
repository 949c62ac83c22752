"""The machine-readable outcome of a workbook run: ``reports/summary.json``.

Notebooks record what they measured with :func:`record`; the workbook runner adds the
per-notebook status. Writes are atomic (temp file + rename) so a crashed cell never leaves
half a file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from helpers.core.errors import PipelineError
from helpers.pipeline.config import PROJECT_ROOT

__all__ = ["SUMMARY_FILE", "read_summary", "record", "reports_dir", "write_summary"]

SUMMARY_FILE = "summary.json"
REPORTS_ENV = "STP_REPORTS_DIR"


def reports_dir(path: str | Path | None = None) -> Path:
    """The reports folder: explicit path, ``STP_REPORTS_DIR``, or ``<project>/reports``."""
    folder = Path(path or os.environ.get(REPORTS_ENV) or PROJECT_ROOT / "reports").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def read_summary(path: str | Path | None = None) -> dict[str, Any]:
    """The summary recorded so far (``{}`` before the first :func:`record`)."""
    file = reports_dir(path) / SUMMARY_FILE
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text())
    except ValueError as err:
        raise PipelineError(
            f"{file} is not valid JSON ({err}): delete it and rerun the notebooks, which record it again"
        ) from err
    if not isinstance(data, dict):
        raise PipelineError(
            f"{file} holds a {type(data).__name__}, not an object: delete it and rerun the notebooks"
        )
    return data


def write_summary(data: dict[str, Any], path: str | Path | None = None) -> Path:
    """Replace the summary with ``data`` (atomically); returns the file."""
    folder = reports_dir(path)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".summary-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")
    target = folder / SUMMARY_FILE
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; the summary is a report, not a secret
    os.replace(tmp, target)
    return target


def record(path: str | Path | None = None, **values: Any) -> dict[str, Any]:
    """Merge measured values into the summary (nested dicts are merged one level deep)."""
    data = read_summary(path)
    for key, value in values.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    write_summary(data, path)
    return data
