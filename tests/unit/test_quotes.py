"""Quote records: timestamps, validation with stable reject reasons, derived fields."""

from __future__ import annotations

import dataclasses
import json
import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers.core.quotes import (
    QUOTE_FIELDS,
    REJECT_REASONS,
    REQUIRED_FIELDS,
    Quote,
    Rejected,
    canonical_timestamp,
    derive,
    format_timestamp,
    parse_record,
    parse_timestamp,
    to_decimal,
    utc_now_timestamp,
)

GOOD = {
    "symbol": "AAPL",
    "timestamp": "2026-07-29T13:30:00Z",
    "price": 341.5953,
    "previous_close": 339.69,
    "open": 339.69,
    "high": 341.72,
    "low": 339.6522,
    "volume": 1864881,
    "source": "replay:aapl-1m",
    "produced_at": "2026-11-24T18:00:00Z",
}


def with_(**changes: object) -> dict[str, object]:
    return {**GOOD, **changes}


def without(name: str) -> dict[str, object]:
    return {k: v for k, v in GOOD.items() if k != name}


# --------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-07-29T13:30:00Z", "2026-07-29T13:30:00Z"),
        ("2026-07-29T09:30:00-04:00", "2026-07-29T13:30:00Z"),
        ("2026-07-29T15:30:00+0200", "2026-07-29T13:30:00Z"),
        ("2026-07-29T13:30:00.999999Z", "2026-07-29T13:30:00Z"),
        ("2026-07-29T13:30:00.123456789+00:00", "2026-07-29T13:30:00Z"),
        ("2026-07-29 13:30:00", "2026-07-29T13:30:00Z"),
        ("2026-07-29T13:30Z", "2026-07-29T13:30:00Z"),
        ("2026-07-29T23:30:00-05:00", "2026-07-30T04:30:00Z"),
        (1785331800, "2026-07-29T13:30:00Z"),
        (1785331800.75, "2026-07-29T13:30:00Z"),
        (0, "1970-01-01T00:00:00Z"),
    ],
)
def test_canonical_timestamp_accepts_documented_forms(value: object, expected: str) -> None:
    assert canonical_timestamp(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "2026-07-29",  # date only
        "2026-13-01T00:00:00Z",
        "2026-07-29T24:00:00Z",
        "2026-07-29T23:59:60Z",  # leap second
        " 2026-07-29T13:30:00Z",
        "2026-07-29T13:30:00Z\n",
        "2026-07-29T13:30:00+24:00",
        "２０２６-07-29T13:30:00Z",  # fullwidth digits
        "yesterday",
        "",
        "1785331800",  # epoch as text
        "9999-12-31T23:00:00-05:00",  # beyond year 9999 in UTC
        True,
        None,
        math.nan,
        math.inf,
        10**20,
        [2026, 7, 29],
    ],
)
def test_parse_timestamp_rejects_with_value_error(value: object) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(value)


def test_parse_timestamp_returns_aware_utc() -> None:
    parsed = parse_timestamp("2026-07-29T09:30:00.5-04:00")
    assert parsed == datetime(2026, 7, 29, 13, 30, 0, 500000, tzinfo=UTC)
    assert parsed.utcoffset() == timedelta(0)


def test_format_timestamp_is_fixed_width_and_naive_means_utc() -> None:
    eastern = timezone(timedelta(hours=-4))
    assert format_timestamp(datetime(2026, 7, 29, 9, 30, 0, 999999, tzinfo=eastern)) == "2026-07-29T13:30:00Z"
    assert format_timestamp(datetime(2026, 7, 29, 13, 30)) == "2026-07-29T13:30:00Z"
    assert format_timestamp(datetime(999, 1, 2, 3, 4, 5)) == "0999-01-02T03:04:05Z"


@given(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)))
def test_timestamp_round_trip(dt: datetime) -> None:
    text = format_timestamp(dt)
    assert len(text) == 20
    assert parse_timestamp(text) == dt.replace(microsecond=0)
    assert canonical_timestamp(text) == text


def test_utc_now_timestamp_is_canonical_and_current() -> None:
    now = parse_timestamp(utc_now_timestamp())
    assert abs((datetime.now(UTC) - now).total_seconds()) < 5
    assert canonical_timestamp(utc_now_timestamp())[-1] == "Z"


# --------------------------------------------------------------------------- valid records


def test_valid_record_from_bytes_str_and_dict() -> None:
    raw = json.dumps(GOOD)
    for data in (raw.encode("utf-8"), raw, GOOD, bytearray(raw.encode())):
        quote = parse_record(data)
        assert quote == Quote(**GOOD)  # type: ignore[arg-type]


def test_to_json_is_compact_ordered_and_round_trips() -> None:
    quote = Quote(**GOOD)  # type: ignore[arg-type]
    assert quote.to_json() == (
        b'{"symbol":"AAPL","timestamp":"2026-07-29T13:30:00Z","price":341.5953,"previous_close":339.69,'
        b'"open":339.69,"high":341.72,"low":339.6522,"volume":1864881,"source":"replay:aapl-1m",'
        b'"produced_at":"2026-11-24T18:00:00Z"}'
    )
    assert list(quote.to_dict()) == list(QUOTE_FIELDS)
    assert parse_record(quote.to_json()) == quote


def test_values_are_canonicalised() -> None:
    quote = parse_record(with_(timestamp="2026-07-29T09:30:00-04:00", price=341, volume=100.0, produced_at=0))
    assert isinstance(quote, Quote)
    assert quote.timestamp == "2026-07-29T13:30:00Z"
    assert quote.price == 341.0 and isinstance(quote.price, float)
    assert quote.volume == 100 and isinstance(quote.volume, int)
    assert quote.produced_at == "1970-01-01T00:00:00Z"


def test_produced_at_optional_and_extra_keys_ignored() -> None:
    assert parse_record(without("produced_at")) == Quote(**{**GOOD, "produced_at": None})  # type: ignore[arg-type]
    assert isinstance(parse_record(with_(produced_at=None)), Quote)
    assert isinstance(parse_record(with_(exchange="NASDAQ")), Quote)


@pytest.mark.parametrize("symbol", ["A", "BRK.B", "^GSPC", "EURUSD=X", "BTC-USD", "7203", "ABCDEFGHIJKLMNO"])
def test_valid_symbols(symbol: str) -> None:
    assert isinstance(parse_record(with_(symbol=symbol)), Quote)


def test_quote_is_frozen_with_slots() -> None:
    quote = Quote(**GOOD)  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        quote.price = 1.0  # type: ignore[misc]
    assert not hasattr(quote, "__dict__")


# --------------------------------------------------------------------------- rejects

REJECTS: list[tuple[object, str, str]] = [
    # (record, reason, text the detail must contain)
    (b"\xff\xfe{}", "not_utf8", "not valid UTF-8"),
    (json.dumps(GOOD).encode("utf-16"), "not_utf8", "UTF-8"),
    (b'{"symbol": "AAPL",', "bad_json", "not valid JSON"),
    (b"", "bad_json", "not valid JSON"),
    (b"\xef\xbb\xbf" + json.dumps(GOOD).encode(), "bad_json", "BOM"),
    ("{'symbol': 'AAPL'}", "bad_json", "starts"),
    ("[" * 100_000, "bad_json", "JSON"),
    ("1" * 5000, "bad_json", "JSON"),
    (b"[1, 2]", "not_an_object", "list"),
    ("42", "not_an_object", "int"),
    ("null", "not_an_object", "NoneType"),
    ([GOOD], "not_an_object", "list"),
    ({}, "missing_field", "symbol, timestamp, price"),
    (without("symbol"), "missing_field", "symbol"),
    (without("timestamp"), "missing_field", "timestamp"),
    (without("price"), "missing_field", "price"),
    (without("previous_close"), "missing_field", "previous_close"),
    (without("open"), "missing_field", "open"),
    (without("high"), "missing_field", "high"),
    (without("low"), "missing_field", "low"),
    (without("volume"), "missing_field", "volume"),
    (without("source"), "missing_field", "source"),
    (with_(symbol="AAPL "), "invalid_symbol", "'AAPL '"),
    (with_(symbol=" AAPL"), "invalid_symbol", "' AAPL'"),
    (with_(symbol="AAPL\u200b"), "invalid_symbol", "'AAPL\\u200b'"),
    (with_(symbol="\ufeffAAPL"), "invalid_symbol", "\\ufeff"),
    (with_(symbol="aapl"), "invalid_symbol", "'aapl'"),
    (with_(symbol="AAPL\n"), "invalid_symbol", "'AAPL\\n'"),
    (with_(symbol=""), "invalid_symbol", "''"),
    (with_(symbol="A" * 16), "invalid_symbol", "AAAA"),
    (with_(symbol="ÄAPL"), "invalid_symbol", "ÄAPL"),
    (with_(symbol=123), "invalid_symbol", "123"),
    (with_(symbol=None), "invalid_symbol", "None"),
    (with_(price=math.nan), "invalid_price", "price=nan"),
    (with_(price=math.inf), "invalid_price", "price=inf"),
    (with_(price=-math.inf), "invalid_price", "-inf"),
    (with_(price=-1.5), "invalid_price", "price=-1.5"),
    (with_(price=0), "invalid_price", "price=0"),
    (with_(price=0.0), "invalid_price", "price=0.0"),
    (with_(price=True), "invalid_price", "price=True"),
    (with_(price=False), "invalid_price", "price=False"),
    (with_(price="190.5"), "invalid_price", "price='190.5'"),
    (with_(price=None), "invalid_price", "price=None"),
    (with_(price=[1.0]), "invalid_price", "[1.0]"),
    (with_(price=10**400), "invalid_price", "finite"),
    (with_(price=1e13), "invalid_price", "between"),
    (with_(price=1e-7), "invalid_price", "between"),
    (with_(previous_close=0), "invalid_price", "previous_close=0"),
    (with_(open=-2), "invalid_price", "open=-2"),
    (with_(high="1"), "invalid_price", "high='1'"),
    (with_(low=math.nan), "invalid_price", "low=nan"),
    (json.dumps(with_(price=math.nan)), "invalid_price", "price=nan"),  # the NaN token
    ('{"price": 1e999' + json.dumps(without("price")).replace("{", ",", 1), "invalid_price", "inf"),
    (with_(volume=-1), "invalid_volume", "volume=-1"),
    (with_(volume=1.5), "invalid_volume", "volume=1.5"),
    (with_(volume=True), "invalid_volume", "volume=True"),
    (with_(volume="100"), "invalid_volume", "volume='100'"),
    (with_(volume=None), "invalid_volume", "volume=None"),
    (with_(volume=math.nan), "invalid_volume", "volume=nan"),
    (with_(volume=2**63), "invalid_volume", "between"),
    (with_(timestamp="2026-07-29"), "invalid_timestamp", "timestamp='2026-07-29'"),
    (with_(timestamp="29/07/2026 13:30"), "invalid_timestamp", "29/07/2026"),
    (with_(timestamp=None), "invalid_timestamp", "timestamp=None"),
    (with_(timestamp=True), "invalid_timestamp", "timestamp=True"),
    (with_(produced_at="later"), "invalid_timestamp", "produced_at='later'"),
    (with_(source=""), "invalid_field", "source=''"),
    (with_(source=5), "invalid_field", "source=5"),
    (with_(source=None), "invalid_field", "source=None"),
]


@pytest.mark.parametrize(("record", "reason", "detail"), REJECTS)
def test_rejects_with_stable_reason_and_readable_detail(record: object, reason: str, detail: str) -> None:
    result = parse_record(record)  # type: ignore[arg-type]
    assert isinstance(result, Rejected), result
    assert result.reason == reason
    assert detail in result.detail


def test_every_reject_reason_is_exercised() -> None:
    assert {reason for _, reason, _ in REJECTS} == set(REJECT_REASONS)
    assert len(REJECT_REASONS) == 9


def test_first_failure_in_field_order_wins() -> None:
    result = parse_record(with_(symbol="aapl", price=-1, volume=-1))
    assert result == Rejected("invalid_symbol", "symbol='aapl' does not match ^[A-Z0-9.^=-]{1,15}$")


@given(st.binary(max_size=300))
def test_parse_record_never_raises_on_bytes(data: bytes) -> None:
    result = parse_record(data)
    assert isinstance(result, Quote) or result.reason in REJECT_REASONS


SCALAR = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
ODD = {name: st.just(GOOD[name]) | SCALAR | st.lists(SCALAR, max_size=3) for name in QUOTE_FIELDS}


@given(st.fixed_dictionaries({}, optional=ODD))
def test_parse_record_never_raises_on_odd_field_values(record: dict[str, object]) -> None:
    result = parse_record(record)
    assert isinstance(result, Quote) or result.reason in REJECT_REASONS
    if isinstance(result, Rejected) and not set(REQUIRED_FIELDS) <= set(record):
        assert result.reason == "missing_field"


PRICES = st.floats(min_value=1e-6, max_value=1e12)


@given(
    symbol=st.from_regex(r"[A-Z0-9.^=-]{1,15}", fullmatch=True),
    prices=st.tuples(PRICES, PRICES, PRICES, PRICES, PRICES),
    volume=st.integers(min_value=0, max_value=2**63 - 1),
    ts=st.integers(min_value=0, max_value=253_402_300_799),
)
def test_valid_quotes_round_trip_through_json(
    symbol: str, prices: tuple[float, ...], volume: int, ts: int
) -> None:
    price, previous_close, open_, high, low = prices
    quote = Quote(
        symbol, canonical_timestamp(ts), price, previous_close, open_, high, low, volume, "synthetic"
    )
    assert parse_record(quote.to_json()) == quote
    assert parse_record(quote.to_dict()) == quote


# --------------------------------------------------------------------------- derived fields


def test_derive_change_and_percent() -> None:
    quote = Quote(**{**GOOD, "price": 105.0, "previous_close": 100.0})  # type: ignore[arg-type]
    assert derive(quote) == {"change": 5.0, "change_pct": 5.0}
    quote = Quote(**{**GOOD, "price": 341.5953, "previous_close": 339.69})  # type: ignore[arg-type]
    assert derive(quote) == {"change": 1.9053, "change_pct": 0.5609}
    quote = Quote(**{**GOOD, "price": 1.0, "previous_close": 3.0})  # type: ignore[arg-type]
    assert derive(quote) == {"change": -2.0, "change_pct": -66.6667}


def test_derive_has_no_negative_zero() -> None:
    quote = Quote(**{**GOOD, "price": 100.0, "previous_close": 100.0000001})  # type: ignore[arg-type]
    fields = derive(quote)
    assert fields == {"change": 0.0, "change_pct": 0.0}
    assert math.copysign(1.0, fields["change"]) == 1.0
    assert str(to_decimal(fields["change_pct"])) == "0.0"


def test_to_decimal_uses_the_shortest_repr() -> None:
    assert to_decimal(0.1) == Decimal("0.1")
    assert to_decimal(0.1) != Decimal(0.1)  # noqa: RUF032 - the trap to_decimal avoids
    assert to_decimal(-66.6667) == Decimal("-66.6667")
    assert to_decimal(341.5953) == Decimal("341.5953")
    assert to_decimal(1864881) == Decimal(1864881)
    assert to_decimal(1e20) == Decimal("1e20")
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="DynamoDB"):
            to_decimal(bad)
