"""The outcome of a workbook run: its run folder, ``summary.json`` and the tables the report shows.

Each workbook run writes into a fresh run folder ``reports/<run-id>/`` (:func:`new_run_folder`)
and ``reports/latest`` points at it (:func:`point_latest`: a symlink, or a copy where symlinks
cannot be made), so nothing from an earlier run mixes in. Notebooks receive the folder as their
``REPORTS_DIR`` parameter; run by hand (``REPORTS_DIR = None``) they write to ``STP_REPORTS_DIR``
or ``reports/``.

Notebooks record what they measured with :func:`record`; the workbook runner adds the
per-notebook status. Writes are atomic (temp file + rename) so a crashed cell never leaves
half a file behind. :func:`save_tables` keeps result tables as CSV for ``report.html``
(:mod:`helpers.notebook.report_html`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from helpers.core.errors import PipelineError
from helpers.pipeline.config import PROJECT_ROOT

__all__ = [
    "LATEST",
    "REPORTS_ENV",
    "SUMMARY_FILE",
    "new_run_folder",
    "point_latest",
    "read_summary",
    "record",
    "reports_dir",
    "save_tables",
    "write_summary",
]

SUMMARY_FILE = "summary.json"
REPORTS_ENV = "STP_REPORTS_DIR"
LATEST = "latest"
RUN_ID_FORMAT = "%Y%m%dT%H%M%SZ"  # UTC start time: run folders sort in the order they ran


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


def save_tables(
    frames: Mapping[str, Any], prefix: str, path: str | Path | None = None, *, index: bool = False
) -> list[Path]:
    """Write each DataFrame as ``<prefix>_<name>.csv`` in the reports folder (the report reads them)."""
    folder = reports_dir(path)
    written = []
    for name, frame in frames.items():
        target = folder / f"{prefix}_{name}.csv"
        frame.to_csv(target, index=index)
        written.append(target)
    return written


# --------------------------------------------------------------------------- run folders


def new_run_folder(root: str | Path | None = None, *, now: float | None = None) -> Path:
    """Create and return an empty ``<root>/<run-id>/`` (run id: the UTC start time, made unique)."""
    base = reports_dir(root)
    run_id = time.strftime(RUN_ID_FORMAT, time.gmtime(now))
    for n in range(1, 1000):
        folder = base / (run_id if n == 1 else f"{run_id}-{n}")
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    raise PipelineError(f"{base} already holds 999 runs started at {run_id}; remove some old run folders")


def point_latest(folder: str | Path, root: str | Path | None = None) -> Path:
    """Make ``<root>/latest`` point at ``folder``: a relative symlink, replaced atomically.

    Where symlinks cannot be made (some Windows setups, some mounted file systems) ``latest`` is
    a copy of the folder instead; call this again when the run is over to refresh the copy.
    """
    target = Path(folder).resolve()
    base = reports_dir(root) if root is not None else target.parent
    latest = base / LATEST
    tmp = base / f".{LATEST}-{os.getpid()}"
    try:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(os.path.relpath(target, base), target_is_directory=True)
    except OSError:
        return _copy_latest(target, latest, base)
    if latest.is_dir() and not latest.is_symlink():  # an earlier copy: a symlink cannot replace a folder
        shutil.rmtree(latest)
    os.replace(tmp, latest)
    return latest


def _copy_latest(target: Path, latest: Path, base: Path) -> Path:
    staging = Path(tempfile.mkdtemp(dir=base, prefix=f".{LATEST}-copy-"))
    shutil.copytree(target, staging, dirs_exist_ok=True)
    if latest.is_symlink() or latest.is_file():
        latest.unlink()
    elif latest.exists():
        shutil.rmtree(latest)
    os.replace(staging, latest)
    return latest
