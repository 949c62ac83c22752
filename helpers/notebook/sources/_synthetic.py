"""The ``synthetic`` source: a seeded geometric random walk, for scale."""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

from helpers.core.errors import SourceError
from helpers.core.quotes import Quote, format_timestamp, parse_timestamp, utc_now_timestamp
from helpers.notebook.sources._common import bound, symbol_list

__all__ = ["synthetic"]


def synthetic(
    symbols: Sequence[str] | int,
    count: int,
    seed: int = 7,
    start: str = "2026-01-02T14:30:00Z",
    step_seconds: int = 60,
) -> Iterator[Quote]:
    """Seeded geometric random walk: ``count`` quotes round-robin over the symbols.

    An int gives that many tickers ``SYN0001``...; every round shares one timestamp and
    rounds are ``step_seconds`` apart. The same arguments always give the same quotes
    (``produced_at`` aside). Memory is one price per symbol, whatever ``count``.
    """
    if isinstance(symbols, int):
        if isinstance(symbols, bool) or symbols < 1:
            raise SourceError(f"symbols={symbols!r}: need a list of symbols or a count >= 1")
        names = [f"SYN{i:04d}" for i in range(1, symbols + 1)]
    else:
        names = symbol_list(symbols)
    if count < 0:
        raise SourceError(f"count={count!r} must be >= 0")
    if step_seconds < 1 or int(step_seconds) != step_seconds:
        raise SourceError(f"step_seconds={step_seconds!r} must be a whole number of seconds >= 1")
    t0 = parse_timestamp(bound("start", start) or "")
    return _synthetic(names, count, seed, t0, int(step_seconds))


_SIGMA = 0.002  # per-step log-return volatility


def _synthetic(names: list[str], count: int, seed: int, t0: datetime, step: int) -> Iterator[Quote]:
    rng = random.Random(seed)
    closes = [round(rng.uniform(20.0, 500.0), 2) for _ in names]
    timestamp = ""
    for i in range(count):
        k = i % len(names)
        if k == 0:
            timestamp = format_timestamp(t0 + timedelta(seconds=step * (i // len(names))))
        opening = closes[k]
        close = round(min(max(opening * math.exp(rng.gauss(0.0, _SIGMA)), 1.0), 1e6), 4)
        high = round(max(opening, close) * (1.0 + abs(rng.gauss(0.0, _SIGMA / 2))), 4)
        low = round(min(opening, close) * (1.0 - abs(rng.gauss(0.0, _SIGMA / 2))), 4)
        closes[k] = close
        yield Quote(
            symbol=names[k],
            timestamp=timestamp,
            price=close,
            previous_close=opening,
            open=opening,
            high=high,
            low=low,
            volume=int(rng.lognormvariate(8.0, 1.0)),
            source="synthetic",
            produced_at=utc_now_timestamp(),
        )
