"""Quote records: the one wire format on Kinesis, its validation and derived fields.

Pure stdlib: this module ships inside the processor Lambda. Every source yields
:class:`Quote`; every consumer gates raw records through :func:`parse_record`, which
never raises and returns either a :class:`Quote` or a :class:`Rejected` whose ``reason``
is a stable code (a key of the quarantine counts in ``reports/summary.json``).

Validation is strict on purpose, nothing is stripped or coerced:

- ``symbol`` must match :data:`SYMBOL_PATTERN` exactly (``" AAPL"``, ``"AAPL\\u200b"``,
  ``"aapl"`` and ``"AAPL\\n"`` are rejected);
- prices are JSON numbers (``bool`` and numeric strings such as ``"190.5"`` are rejected),
  finite and within ``[MIN_PRICE, MAX_PRICE]``; the bounds keep every derived value
  inside DynamoDB's number range;
- ``volume`` is an integer (a float with an integral value is accepted), ``0 <= v <= MAX_VOLUME``
  (Athena ``BIGINT``);
- ``timestamp`` (and ``produced_at`` when present) is parsed by :func:`parse_timestamp`
  and stored in the canonical fixed-width form ``2026-07-29T13:30:00Z``;
- unknown extra keys are ignored.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

__all__ = [
    "MAX_PRICE",
    "MAX_VOLUME",
    "MIN_PRICE",
    "PRICE_FIELDS",
    "QUOTE_FIELDS",
    "REJECT_REASONS",
    "REQUIRED_FIELDS",
    "SYMBOL_PATTERN",
    "TIMESTAMP_FORMAT",
    "Quote",
    "Rejected",
    "canonical_timestamp",
    "derive",
    "format_timestamp",
    "parse_record",
    "parse_timestamp",
    "to_decimal",
    "utc_now_timestamp",
]

TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
SYMBOL_PATTERN = r"^[A-Z0-9.^=-]{1,15}$"
QUOTE_FIELDS = (
    "symbol",
    "timestamp",
    "price",
    "previous_close",
    "open",
    "high",
    "low",
    "volume",
    "source",
    "produced_at",
)
PRICE_FIELDS = ("price", "previous_close", "open", "high", "low")
REQUIRED_FIELDS = QUOTE_FIELDS[:-1]  # produced_at is optional
REJECT_REASONS = (
    "not_utf8",
    "bad_json",
    "not_an_object",
    "missing_field",
    "invalid_symbol",
    "invalid_price",
    "invalid_volume",
    "invalid_timestamp",
    "invalid_field",
)
MIN_PRICE = 1e-6
MAX_PRICE = 1e12
MAX_VOLUME = 2**63 - 1

_SYMBOL = re.compile(SYMBOL_PATTERN)
_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?"
    r"(?:([Zz])|([+-])(\d{2})(?::?(\d{2}))?)?",
    re.ASCII,
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------------- timestamps


def format_timestamp(dt: datetime) -> str:
    """Canonical fixed-width UTC form ``YYYY-MM-DDTHH:MM:SSZ``; naive means UTC; fractions dropped."""
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC)
    return f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:{dt.second:02d}Z"


def parse_timestamp(value: object) -> datetime:
    """Aware UTC datetime from an ISO-8601 string or epoch seconds; ``ValueError`` otherwise.

    Accepted: ``2026-07-29T13:30:00Z``, ``2026-07-29T09:30:00-04:00``, fractions
    (``...00.123456Z``), ``2026-07-29 13:30:00`` (naive means UTC) and ``int``/``float``
    epoch seconds. Not accepted: bools, date-only strings, surrounding whitespace.
    """
    try:
        if isinstance(value, bool):
            raise ValueError("a boolean is not a timestamp")
        if isinstance(value, int | float):
            if not math.isfinite(value):
                raise ValueError("epoch seconds must be finite")
            return _EPOCH + timedelta(seconds=value)
        if isinstance(value, datetime):
            return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        if not isinstance(value, str):
            raise ValueError(f"expected an ISO-8601 string or epoch seconds, got {type(value).__name__}")
        return _parse_iso(value)
    except (OverflowError, OSError) as err:  # out-of-range epoch or offset at year 1/9999
        raise ValueError(f"timestamp {value!r} is out of range") from err


def _parse_iso(text: str) -> datetime:
    m = _ISO.fullmatch(text)
    if m is None:
        raise ValueError(f"{text!r} is not an ISO-8601 date-time such as '2026-07-29T13:30:00Z'")
    year, month, day, hour, minute, second, frac, _z, sign, off_h, off_m = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    dt = datetime(
        int(year), int(month), int(day), int(hour), int(minute), int(second or 0), micro, tzinfo=UTC
    )
    if sign:
        offset = timedelta(hours=int(off_h), minutes=int(off_m or 0))
        if offset >= timedelta(hours=24):
            raise ValueError(f"{text!r} has an impossible UTC offset")
        dt = dt - offset if sign == "+" else dt + offset
    return dt


def canonical_timestamp(value: object) -> str:
    """:func:`parse_timestamp` then :func:`format_timestamp`."""
    return format_timestamp(parse_timestamp(value))


def utc_now_timestamp() -> str:
    """The current time in canonical form (``produced_at``, ``processed_at``)."""
    return format_timestamp(datetime.now(UTC))


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class Quote:
    """One quote event: a bar's close as ``price`` plus its OHLCV context."""

    symbol: str
    timestamp: str
    price: float
    previous_close: float
    open: float
    high: float
    low: float
    volume: int
    source: str
    produced_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict with keys in :data:`QUOTE_FIELDS` order."""
        return {name: getattr(self, name) for name in QUOTE_FIELDS}

    def to_json(self) -> bytes:
        """Compact, deterministic UTF-8 JSON (field order of :data:`QUOTE_FIELDS`).

        A non-finite number is written as ``NaN``/``Infinity``, which :func:`parse_record`
        rejects as ``invalid_price``: a bad quote reaches the quarantine, not an exception.
        """
        return json.dumps(self.to_dict(), separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a record was quarantined: a stable ``reason`` code and a readable ``detail``."""

    reason: str
    detail: str


class _Reject(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.rejected = Rejected(reason, detail)


def parse_record(data: bytes | bytearray | memoryview | str | dict[str, Any]) -> Quote | Rejected:
    """Validate one raw record (Kinesis bytes, JSON text or a dict). Never raises."""
    try:
        return _parse(data)
    except _Reject as rej:
        return rej.rejected


def _parse(data: object) -> Quote:
    if isinstance(data, bytes | bytearray | memoryview):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as err:
            raise _Reject("not_utf8", f"record is not valid UTF-8: {err}") from None
    if isinstance(data, str):
        text = data
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as err:  # JSONDecodeError, int digit limit, nesting
            raise _Reject("bad_json", f"record is not valid JSON: {err}; starts {text[:80]!r}") from None
    if not isinstance(data, dict):
        raise _Reject("not_an_object", f"record must be a JSON object, got {type(data).__name__}")
    missing = [name for name in REQUIRED_FIELDS if name not in data]
    if missing:
        raise _Reject("missing_field", f"missing field(s) {', '.join(missing)}")

    symbol = data["symbol"]
    if not isinstance(symbol, str) or _SYMBOL.fullmatch(symbol) is None:
        raise _Reject("invalid_symbol", f"symbol={symbol!r} does not match {SYMBOL_PATTERN}")
    timestamp = _timestamp("timestamp", data["timestamp"])
    prices = {name: _price(name, data[name]) for name in PRICE_FIELDS}
    volume = _volume(data["volume"])
    source = data["source"]
    if not isinstance(source, str) or not source:
        raise _Reject("invalid_field", f"source={source!r} must be a non-empty string")
    produced = data.get("produced_at")
    produced_at = None if produced is None else _timestamp("produced_at", produced)
    return Quote(
        symbol=symbol,
        timestamp=timestamp,
        volume=volume,
        source=source,
        produced_at=produced_at,
        **prices,
    )


def _timestamp(name: str, value: object) -> str:
    try:
        return canonical_timestamp(value)
    except ValueError as err:
        raise _Reject("invalid_timestamp", f"{name}={value!r} is not a timestamp: {err}") from None


def _price(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Reject("invalid_price", f"{name}={value!r} must be a JSON number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise _Reject("invalid_price", f"{name}={value!r} must be finite")
    if not MIN_PRICE <= number <= MAX_PRICE:
        raise _Reject("invalid_price", f"{name}={value!r} must be between {MIN_PRICE} and {MAX_PRICE:g}")
    return number


def _volume(value: object) -> int:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Reject("invalid_volume", f"volume={value!r} must be an integer")
    if not 0 <= value <= MAX_VOLUME:
        raise _Reject("invalid_volume", f"volume={value!r} must be between 0 and {MAX_VOLUME}")
    return value


# --------------------------------------------------------------------------- derived fields


def derive(quote: Quote) -> dict[str, float]:
    """Processed fields: ``change`` (6 dp) and ``change_pct`` (4 dp) against ``previous_close``."""
    change = quote.price - quote.previous_close
    change_pct = change / quote.previous_close * 100.0
    # "+ 0.0" turns a rounded -0.0 into 0.0
    return {"change": round(change, 6) + 0.0, "change_pct": round(change_pct, 4) + 0.0}


def to_decimal(x: float) -> Decimal:
    """Exact Decimal of a float's shortest repr (``0.1`` -> ``Decimal('0.1')``), for DynamoDB."""
    if isinstance(x, bool) or not math.isfinite(x):
        raise ValueError(f"{x!r} cannot be stored as a DynamoDB number")
    return Decimal(repr(x)) if isinstance(x, float) else Decimal(x)
