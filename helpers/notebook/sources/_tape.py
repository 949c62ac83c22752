"""Tapes: what a live run sent, one quote per line (NDJSON, the quote schema), replayable.

A live source writes every quote it hands to the producer to a tape under
``<state_dir>/tapes/`` (``yfinance-20260803T133000Z.ndjson``), one flushed line per quote, in
the order they were sent; a run that dies keeps every line written before. The ``replay``
source plays a tape back (``replay(tape="latest")``) at any speed, so a day recorded live
becomes a reproducible data set for CI and the charts.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO

from helpers.core.errors import SourceError
from helpers.core.quotes import Quote, Rejected, parse_record

__all__ = [
    "LATEST",
    "TAPE_SUFFIX",
    "TapeWriter",
    "count_tape",
    "new_tape_path",
    "read_tape",
    "resolve_tape",
    "tapes_dir",
]

TAPE_SUFFIX = ".ndjson"
LATEST = "latest"  # the tape name that means the newest tape of the tapes folder


def tapes_dir(state_dir: str | Path | None = None) -> Path:
    """``<state_dir>/tapes`` (default: the resolved settings' state folder)."""
    if state_dir is None:
        from helpers.pipeline.config import load_settings

        state_dir = load_settings().state_dir
    return Path(state_dir) / "tapes"


def new_tape_path(source: str, started: datetime, state_dir: str | Path | None = None) -> Path:
    """``<tapes>/<source>-<UTC start, basic ISO>.ndjson``; a second tape in the same second gets ``-2``."""
    folder = tapes_dir(state_dir)
    stem = f"{source}-{started.strftime('%Y%m%dT%H%M%SZ')}"
    path = folder / f"{stem}{TAPE_SUFFIX}"
    n = 2
    while path.exists():
        path = folder / f"{stem}-{n}{TAPE_SUFFIX}"
        n += 1
    return path


class TapeWriter:
    """Appends quotes to a tape; the file is created with the first quote (no quote, no file)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.records = 0
        self._file: IO[bytes] | None = None

    def write(self, quote: Quote) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab")
        self._file.write(quote.to_json() + b"\n")
        self._file.flush()
        self.records += 1

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def resolve_tape(tape: str | Path, state_dir: str | Path | None = None) -> Path:
    """A tape by path, by file name in the tapes folder, or ``"latest"`` (the newest there)."""
    if str(tape) == LATEST:
        folder = tapes_dir(state_dir)
        found = sorted(folder.glob(f"*{TAPE_SUFFIX}"), key=lambda p: (p.stat().st_mtime, p.name))
        if not found:
            raise SourceError(
                f"tape={LATEST!r}: no tape in {folder}; record one with SOURCE='yfinance' first, "
                "or give the tape's path"
            )
        return found[-1]
    path = Path(tape)
    if not path.exists() and not path.is_absolute():
        candidate = tapes_dir(state_dir) / path
        if candidate.exists() or candidate.with_suffix(TAPE_SUFFIX).exists():
            path = candidate if candidate.exists() else candidate.with_suffix(TAPE_SUFFIX)
    if not path.is_file():
        raise SourceError(
            f"tape={str(tape)!r}: no such file ({path}); list the tapes in {tapes_dir(state_dir)}"
        )
    return path


def read_tape(path: str | Path) -> Iterator[Quote]:
    """The quotes of a tape in recorded order; a line that is not a valid quote is refused."""
    with Path(path).open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            quote = parse_record(line)
            if isinstance(quote, Rejected):
                raise SourceError(f"tape {path} line {number}: {quote.reason}: {quote.detail}")
            yield quote


def count_tape(path: str | Path) -> int:
    """Quotes on a tape (non-empty lines)."""
    with Path(path).open("rb") as lines:
        return sum(1 for line in lines if line.strip())
