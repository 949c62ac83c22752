"""SMA5/SMA20 crossover signals — the one definition, shared by the trend Lambda and the notebooks.

Pure standard library: this module ships inside the trend Lambda zip.

The crossover definition (DESIGN.md, "Crossover definition"), made exact
--------------------------------------------------------------------------
Per symbol, bars are taken in timestamp order (canonical ``%Y-%m-%dT%H:%M:%SZ`` strings, so
string order is time order; when a timestamp repeats, the last bar given wins, as a
DynamoDB put would).

1. Each price is turned into integer micro-units: ``units = round(float(price) * 1_000_000)``
   (Python ``round``: ties to even, as ``numpy.rint``). Decimal prices are converted to float
   first, so a DynamoDB ``Decimal`` and the float it was written from give the same units.
2. From the 20th bar on, ``state = sign(4 * sum(last 5 units) - sum(last 20 units))``.
   Because ``SMA5 - SMA20 = (4 * sum5 - sum20) / 20``, this *is* ``sign(SMA5 - SMA20)``, but on
   integers: no float rounding, so every implementation (this module, the vectorised pandas
   version in ``helpers.notebook.analysis``, SQL) gets the same state, including exact ties (state 0).
   Other windows (notebook 06 lets a user pick ``1 <= short < long <=`` :data:`MAX_WINDOW`) use
   the weights of :func:`window_weights`; the deployed rule is :data:`SHORT_WINDOW`/:data:`LONG_WINDOW`.
3. A **BUY** at bar t when ``state(t) = +1`` and the last non-zero state before t is ``-1``;
   a **SELL** symmetrically. The first non-zero state is not a signal. State-0 bars neither
   signal nor reset that memory. Signals therefore strictly alternate.

The SMA values carried by a signal (and drawn in charts) are float means of the same units,
``sum(units) / (n * 1_000_000)``: one correctly rounded division of an exact integer, so they
are bit-identical in Python, numpy and SQL (they differ from the mean of the raw floats by less
than 5e-7).

Resuming (the trend Lambda)
---------------------------
A signal at bar t needs the previous ``LONG_WINDOW - 1`` prices *and* the last non-zero state
before t. The latter can lie arbitrarily far back (a flat run keeps the state at 0), so a bounded
window alone cannot always tell it. Either keep it with the symbol (``CrossoverTracker.last_state``
after each batch) and pass it back as ``last_state``, or read further back until
:func:`last_nonzero_state` returns a value. See :func:`lookback_needed` and
:func:`signals_for_new_bars`.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from itertools import islice
from typing import Any, Literal, SupportsFloat

from helpers.core.errors import ParameterError

__all__ = [
    "BUY",
    "LONG_WINDOW",
    "MAX_WINDOW",
    "SELL",
    "SHORT_WINDOW",
    "UNITS_PER_PRICE",
    "Bar",
    "CrossoverTracker",
    "Signal",
    "check_windows",
    "crossovers",
    "crossovers_by_symbol",
    "last_nonzero_state",
    "lookback_needed",
    "price_units",
    "signals_for_new_bars",
    "state_of",
    "window_weights",
]

SHORT_WINDOW = 5  # the deployed rule: the trend Lambda alerts on SMA5/SMA20
LONG_WINDOW = 20
MAX_WINDOW = 200  # windows a notebook may pick: 1 <= short < long <= MAX_WINDOW
UNITS_PER_PRICE = 1_000_000
BUY: Literal["BUY"] = "BUY"
SELL: Literal["SELL"] = "SELL"

SignalKind = Literal["BUY", "SELL"]
Bar = tuple[str, SupportsFloat]
"""One bar: (canonical UTC timestamp, price). Prices may be float, int or Decimal."""


def price_units(price: SupportsFloat) -> int:
    """The price in integer micro-units, ``round(float(price) * 1_000_000)``."""
    value = float(price)
    if not math.isfinite(value):
        raise ValueError(f"price {price!r} is not a finite number; quotes are validated upstream")
    return round(value * UNITS_PER_PRICE)


@dataclass(frozen=True)
class Signal:
    """One crossover signal at one bar; ``alert_id`` makes the published alert idempotent."""

    symbol: str
    timestamp: str
    signal: SignalKind
    price: float
    sma_short: float
    sma_long: float

    @property
    def alert_id(self) -> str:
        return f"{self.symbol}#{self.timestamp}#{self.signal}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the alert message body), ``alert_id`` first."""
        return {"alert_id": self.alert_id, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signal:
        """Rebuild a signal from :meth:`to_dict` output (e.g. an alert read back from SQS)."""
        kind = str(data["signal"])
        if kind not in (BUY, SELL):
            raise ValueError(f"signal must be BUY or SELL, got {kind!r}")
        return cls(
            symbol=str(data["symbol"]),
            timestamp=str(data["timestamp"]),
            signal=BUY if kind == BUY else SELL,
            price=float(data["price"]),
            sma_short=float(data["sma_short"]),
            sma_long=float(data["sma_long"]),
        )


def check_windows(short: int, long: int) -> tuple[int, int]:
    """``(short, long)`` if they are windows a user can pick (``1 <= short < long <= MAX_WINDOW``)."""
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (short, long)):
        raise ParameterError(f"windows must be whole numbers of bars, got short={short!r}, long={long!r}")
    if not 1 <= short < long <= MAX_WINDOW:
        raise ParameterError(
            f"windows must satisfy 1 <= short < long <= {MAX_WINDOW}, got short={short}, long={long}; "
            f"the deployed rule is short={SHORT_WINDOW}, long={LONG_WINDOW}"
        )
    return short, long


def window_weights(short: int = SHORT_WINDOW, long: int = LONG_WINDOW) -> tuple[int, int]:
    """Integer weights ``(w_short, w_long)`` with ``sign(SMA_short - SMA_long) = sign(w_short * sum_short
    - w_long * sum_long)``: ``long // g, short // g`` for ``g = gcd(short, long)`` (5/20: 4 and 1)."""
    check_windows(short, long)
    common = math.gcd(short, long)
    return long // common, short // common


def state_of(sum_short: int, sum_long: int, short: int = SHORT_WINDOW, long: int = LONG_WINDOW) -> int:
    """The crossover state (+1, 0, -1) from the integer unit sums of the last ``short`` and ``long`` bars."""
    weight_short, weight_long = window_weights(short, long)
    return _sign(weight_short * sum_short - weight_long * sum_long)


def _sign(diff: int) -> int:
    # sign(sum_short/short - sum_long/long) on integers; for 5/20 this is sign(4*sum5 - sum20).
    return (diff > 0) - (diff < 0)


def _check_state(state: int) -> int:
    if state not in (-1, 0, 1):
        raise ValueError(f"a crossover state is -1, 0 or +1, got {state!r}")
    return state


class CrossoverTracker:
    """Incremental crossover detector for one symbol: feed bars in timestamp order to :meth:`update`.

    ``last_state`` is the last non-zero state seen (0: none yet) — persist it with the symbol to
    resume later from a bounded window (:meth:`resume`).
    """

    def __init__(self, symbol: str, short: int = SHORT_WINDOW, long: int = LONG_WINDOW) -> None:
        self._weight_short, self._weight_long = window_weights(short, long)
        self.symbol = symbol
        self.short = short
        self.long = long
        self._units: deque[int] = deque(maxlen=long)
        self.last_state = 0
        self.state: int | None = None
        """State at the last bar fed; ``None`` until ``long`` bars have been seen."""
        self.last_timestamp: str | None = None

    @classmethod
    def resume(
        cls,
        symbol: str,
        history: Iterable[Bar],
        *,
        last_state: int = 0,
        short: int = SHORT_WINDOW,
        long: int = LONG_WINDOW,
    ) -> CrossoverTracker:
        """A tracker positioned after ``history`` (see :meth:`warm`)."""
        tracker = cls(symbol, short, long)
        tracker.warm(history, last_state=last_state)
        return tracker

    def warm(self, bars: Iterable[Bar], *, last_state: int = 0) -> None:
        """Feed prior bars without emitting signals.

        ``bars`` is the full prior series, or at least its last ``long - 1`` bars; in the latter
        case pass ``last_state``: the last non-zero state before the bar that follows ``bars``.
        It is used only when the bars themselves do not show a non-zero state.
        """
        _check_state(last_state)
        for timestamp, price in bars:
            self.update(timestamp, price)
        if self.last_state == 0:
            self.last_state = last_state

    def update(self, timestamp: str, price: SupportsFloat) -> Signal | None:
        """Add the next bar; return the signal at this bar, if any."""
        if self.last_timestamp is not None and timestamp <= self.last_timestamp:
            raise ValueError(
                f"{self.symbol}: bar {timestamp!r} is not after {self.last_timestamp!r}; "
                "feed bars in increasing timestamp order (crossovers() sorts and de-duplicates)"
            )
        self._units.append(price_units(price))
        self.last_timestamp = timestamp
        if len(self._units) < self.long:
            return None
        sum_long = sum(self._units)
        sum_short = sum(islice(reversed(self._units), self.short))
        state = _sign(self._weight_short * sum_short - self._weight_long * sum_long)
        self.state = state
        previous, signal = self.last_state, None
        if state != 0:
            self.last_state = state
            if previous == -state:
                signal = Signal(
                    symbol=self.symbol,
                    timestamp=timestamp,
                    signal=BUY if state > 0 else SELL,
                    price=float(price),
                    sma_short=sum_short / (self.short * UNITS_PER_PRICE),
                    sma_long=sum_long / (self.long * UNITS_PER_PRICE),
                )
        return signal


def _ordered(bars: Iterable[Bar]) -> list[Bar]:
    """Bars sorted by timestamp, one per timestamp (the last one given wins)."""
    latest: dict[str, Bar] = {}
    for timestamp, price in bars:
        latest[timestamp] = (timestamp, price)
    return [latest[t] for t in sorted(latest)]


def lookback_needed(long: int = LONG_WINDOW) -> int:
    """Prior bars needed to compute the state at a new bar: ``long - 1`` (19).

    That is enough together with a persisted ``last_state``; without it, read further back until
    :func:`last_nonzero_state` is not ``None`` (or the series starts).
    """
    return long - 1


def last_nonzero_state(
    window: Iterable[Bar], *, short: int = SHORT_WINDOW, long: int = LONG_WINDOW
) -> int | None:
    """The last non-zero state a contiguous window of bars determines, or ``None`` if it shows none.

    ``None`` means the window is too short or all its states are 0: read further back (or, if the
    window is the whole series, the answer is 0 — no non-zero state yet).
    """
    tracker = CrossoverTracker.resume("", _ordered(window), short=short, long=long)
    return tracker.last_state or None


def signals_for_new_bars(
    history: Iterable[Bar],
    new_bars: Iterable[Bar],
    symbol: str,
    *,
    last_state: int = 0,
    short: int = SHORT_WINDOW,
    long: int = LONG_WINDOW,
) -> list[Signal]:
    """Exactly the signals at ``new_bars``, the same as :func:`crossovers` over the whole series.

    ``history`` is either the full prior series (then leave ``last_state`` at 0), or a bounded
    window holding at least the ``long - 1`` bars before the first new bar, with ``last_state``
    the last non-zero state before the first new bar. ``history`` may overlap ``new_bars`` (as when
    the window is read back from the table the new bars were written to); a new bar replaces a
    history bar with the same timestamp.
    """
    new = _ordered(new_bars)
    if not new:
        return []
    first = new[0][0]
    wanted = {timestamp for timestamp, _ in new}
    merged = _ordered([*history, *new])
    prior = [bar for bar in merged if bar[0] < first]
    tracker = CrossoverTracker.resume(symbol, prior, last_state=last_state, short=short, long=long)
    found = []
    for timestamp, price in merged[len(prior) :]:
        signal = tracker.update(timestamp, price)
        if signal is not None and timestamp in wanted:
            found.append(signal)
    return found


def crossovers(
    bars: Iterable[Bar], symbol: str, *, short: int = SHORT_WINDOW, long: int = LONG_WINDOW
) -> list[Signal]:
    """All signals of a whole series (bars in any order; sorted and de-duplicated first)."""
    tracker = CrossoverTracker(symbol, short, long)
    return [s for timestamp, price in _ordered(bars) if (s := tracker.update(timestamp, price))]


def _field(record: Any, name: str) -> Any:
    return record[name] if isinstance(record, Mapping) else getattr(record, name)


def crossovers_by_symbol(
    records: Iterable[Any], *, short: int = SHORT_WINDOW, long: int = LONG_WINDOW
) -> dict[str, list[Signal]]:
    """Signals per symbol for quote-like records (objects or mappings with symbol, timestamp, price)."""
    series: dict[str, list[Bar]] = {}
    for record in records:
        series.setdefault(str(_field(record, "symbol")), []).append(
            (str(_field(record, "timestamp")), _field(record, "price"))
        )
    return {sym: crossovers(bars, sym, short=short, long=long) for sym, bars in sorted(series.items())}
