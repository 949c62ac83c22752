"""The ``replay`` source: bars of a pinned dataset (:mod:`._datasets`) or of a tape (:mod:`._tape`)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from helpers.core.errors import SourceError
from helpers.core.quotes import Quote, utc_now_timestamp
from helpers.notebook.sources._common import bound, symbol_list
from helpers.notebook.sources._datasets import Bar, bars_by_symbol
from helpers.notebook.sources._tape import read_tape, resolve_tape

__all__ = ["replay"]


def replay(
    dataset: str = "aapl-1m",
    symbols: Sequence[str] | str | None = None,
    start: str | None = None,
    end: str | None = None,
    limit: int | None = None,
    tape: str | Path | None = None,
) -> Iterator[Quote]:
    """Real recorded bars in timestamp order, interleaved across symbols.

    ``start`` is inclusive and ``end`` exclusive (any :func:`parse_timestamp` form, or a date
    ``YYYY-MM-DD``); ``limit`` caps the number of quotes. ``previous_close`` is computed on the
    whole series, so it is right for the first quote after ``start`` too.

    ``tape`` plays a tape a live run recorded instead of ``dataset`` (a path, a file name in
    ``<state_dir>/tapes/`` or ``"latest"``): the quotes in the order they were sent, every
    field as recorded except ``produced_at`` (the time of this send); the same filters apply.
    """
    if tape is not None:
        return _tape(resolve_tape(tape), symbols, start, end, limit)
    per_symbol = bars_by_symbol(dataset)
    wanted = symbol_list(symbols) if symbols is not None else sorted(per_symbol)
    unknown = [s for s in wanted if s not in per_symbol]
    if unknown:
        raise SourceError(f"replay dataset {dataset!r} has no {unknown}; it holds {sorted(per_symbol)}")
    if limit is not None and limit < 0:
        raise SourceError(f"limit={limit!r} must be >= 0 or None")
    lo, hi = bound("start", start), bound("end", end)
    merged = heapq.merge(*(per_symbol[s] for s in wanted), key=lambda b: (b.timestamp, b.symbol))
    selected = (b for b in merged if (lo is None or b.timestamp >= lo) and (hi is None or b.timestamp < hi))
    return _quotes(itertools.islice(selected, limit), f"replay:{dataset}")


def _tape(
    path: Path, symbols: Sequence[str] | str | None, start: str | None, end: str | None, limit: int | None
) -> Iterator[Quote]:
    wanted = None if symbols is None else set(symbol_list(symbols))
    if limit is not None and limit < 0:
        raise SourceError(f"limit={limit!r} must be >= 0 or None")
    lo, hi = bound("start", start), bound("end", end)
    selected = (
        q
        for q in read_tape(path)
        if (wanted is None or q.symbol in wanted)
        and (lo is None or q.timestamp >= lo)
        and (hi is None or q.timestamp < hi)
    )
    return (replace(q, produced_at=utc_now_timestamp()) for q in itertools.islice(selected, limit))


def _quotes(bars: Iterable[Bar], source: str) -> Iterator[Quote]:
    for b in bars:
        yield Quote(
            symbol=b.symbol,
            timestamp=b.timestamp,
            price=b.close,
            previous_close=b.previous_close,
            open=b.open,
            high=b.high,
            low=b.low,
            volume=b.volume,
            source=source,
            produced_at=utc_now_timestamp(),
        )
