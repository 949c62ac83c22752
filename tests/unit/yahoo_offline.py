"""Offline Yahoo for the live-source tests: a simulated clock and a fresh yfinance per test.

yfinance keeps process-wide state (a singleton holding the session, cookie and crumb, an LRU
cache of time-zone answers, a counter of info look-ups); :func:`fresh_yfinance` resets it so
each test counts its own requests.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from helpers.notebook.sources._recorded_yahoo import RecordedYahoo, recorded_bars
from helpers.notebook.sources._yahoo import LivePoller, yfinance_live

SYMBOLS = ["AAPL", "MSFT", "GOOG"]  # MSFT and GOOG are the real AAPL series scaled by 1.5 and 2


@dataclass
class SimClock:
    """Aware UTC time that moves only when the code under test sleeps."""

    now: datetime
    sleeps: list[float] = field(default_factory=list)

    def __call__(self) -> datetime:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += timedelta(seconds=seconds)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


@contextmanager
def fresh_yfinance(cache_dir: Path) -> Iterator[None]:
    import yfinance as yf
    from yfinance import base, cache
    from yfinance.data import YfData

    def reset() -> None:
        YfData._instances.pop(YfData, None)
        YfData.cache_get.cache_clear()
        base._tz_info_fetch_ctr = 0
        # the cache objects keep the database they opened first, whatever the location says
        cache._TzCacheManager._tz_cache = None
        cache._CookieCacheManager._Cookie_cache = None

    before = cache._TzDBManager.get_location()
    yf.set_tz_cache_location(str(cache_dir))
    reset()
    try:
        yield
    finally:
        yf.set_tz_cache_location(before)
        reset()


def live(
    yahoo: RecordedYahoo, clock: SimClock, symbols: list[str], tmp_path: Path, **kwargs: Any
) -> LivePoller:
    """The live source on the offline Yahoo, seeded jitter, no tape unless asked."""
    options: dict[str, Any] = {"tape": None, "rng": random.Random(7), **kwargs}
    return yfinance_live(
        symbols, session=yahoo, cache_dir=tmp_path / "yfinance", sleep=clock.sleep, clock=clock, **options
    )


def offline(start: str, symbols: list[str] = SYMBOLS) -> tuple[SimClock, RecordedYahoo]:
    clock = SimClock(utc(start))
    return clock, RecordedYahoo(recorded_bars(symbols), clock)
