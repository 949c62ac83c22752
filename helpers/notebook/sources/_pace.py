"""Pacing: replay quotes with their recorded spacing, sped up."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from helpers.core.quotes import Quote, parse_timestamp

__all__ = ["MAX_PACE_SLEEP_SECONDS", "pace"]

MAX_PACE_SLEEP_SECONDS = 2.0


def pace(
    quotes: Iterable[Quote],
    speed: float,
    *,
    sleep: Callable[[float], Any] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    max_sleep: float = MAX_PACE_SLEEP_SECONDS,
) -> Iterator[Quote]:
    """Yield quotes with their recorded spacing divided by ``speed`` (60 = a minute per second).

    ``speed`` <= 0, NaN or infinite means as fast as possible. Each gap counts for at most
    ``max_sleep`` seconds, so nights and weekends do not stall a replay; a slow consumer is
    caught up without sleeping.
    """
    if not (speed > 0 and math.isfinite(speed)):
        yield from quotes
        return
    started: float | None = None
    budget = 0.0  # seconds after `started` at which the current quote is due
    latest: datetime | None = None
    for quote in quotes:
        ts = parse_timestamp(quote.timestamp)
        if started is None:
            started = clock()
        else:
            assert latest is not None
            gap = (ts - latest).total_seconds()
            if gap > 0:
                budget += min(gap / speed, max_sleep)
            delay = started + budget - clock()
            if delay > 0:
                sleep(min(delay, max_sleep))
        latest = ts if latest is None else max(latest, ts)
        yield quote
