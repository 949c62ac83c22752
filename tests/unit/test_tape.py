"""Tapes: a live run records exactly what it sent; the replay source plays it back."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.core.errors import SourceError
from helpers.core.quotes import Quote
from helpers.notebook import sources
from helpers.notebook.sources import pace, replay, resolve_tape, tapes_dir
from tests.unit.yahoo_offline import SYMBOLS, fresh_yfinance, live, offline, utc


@pytest.fixture(autouse=True)
def _fresh_yfinance(tmp_path: Path) -> Iterator[None]:
    with fresh_yfinance(tmp_path / "yfinance"):
        yield


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STP_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def without_produced_at(quotes: list[Quote]) -> list[Quote]:
    return [dataclasses.replace(q, produced_at=None) for q in quotes]


def record(tmp_path: Path, tape: object, polls: int = 4) -> list[Quote]:
    """A live run of AAPL/MSFT/GOOG on the offline Yahoo (with a 429 wave), recording a tape."""
    clock, yahoo = offline("2026-08-03T14:00:15Z")
    sent = []
    for quote in live(yahoo, clock, SYMBOLS, tmp_path, max_polls=polls, tape=tape):
        sent.append(quote)
        if len(sent) == 90:
            yahoo.rate_limit_until(utc("2026-08-03T14:01:30Z"))
    assert yahoo.count("chart", status=429) == (4 if polls > 1 else 0)  # two polls backed off
    return sent


def test_a_tape_replays_to_the_records_the_live_run_sent(tmp_path: Path) -> None:
    # GIVEN a live run that recorded its tape
    tape = tmp_path / "day.ndjson"
    sent = record(tmp_path, tape)

    # WHEN the replay source plays it
    played = list(replay(tape=tape))

    # THEN the same records in the same order, every field as sent but the time of sending
    assert len(sent) == len(played) == 3 * 32  # 13:30 .. 14:01, across a 429 wave
    assert without_produced_at(played) == without_produced_at(sent)
    assert [q.source for q in played] == ["yfinance"] * len(sent)
    assert tape.read_bytes() == b"".join(q.to_json() + b"\n" for q in sent)


def test_the_registry_plays_a_tape_with_filters_and_its_count(tmp_path: Path) -> None:
    tape = tmp_path / "day.ndjson"
    sent = record(tmp_path, tape)

    opened = sources.open_from_parameters("replay", tape=str(tape), dataset="aapl-1m", symbols=None)
    msft = list(replay(tape=tape, symbols=["MSFT"], start="2026-08-03T13:45:00Z", end="2026-08-03T13:50:00Z"))

    assert opened.total == len(sent) == 96 and len(list(opened.quotes)) == 96
    assert [q.timestamp for q in msft] == [f"2026-08-03T13:{m}:00Z" for m in range(45, 50)]
    assert {q.symbol for q in msft} == {"MSFT"}
    assert len(list(replay(tape=tape, limit=7))) == 7


def test_a_tape_plays_back_at_any_speed(tmp_path: Path) -> None:
    tape = tmp_path / "aapl.ndjson"
    clock, yahoo = offline("2026-08-03T13:35:10Z", ["AAPL"])
    list(live(yahoo, clock, ["AAPL"], tmp_path, max_polls=1, tape=tape))  # 13:30 .. 13:34
    sleeps: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    out = list(pace(replay(tape=tape), 120.0, sleep=sleep, clock=lambda: now[0]))

    assert len(out) == 5 and sleeps == [0.5] * 4  # recorded minutes at 120x


def test_the_default_tape_is_under_the_state_folder_and_latest_finds_it(
    tmp_path: Path, state_dir: Path
) -> None:
    sent = record(tmp_path, True, polls=1)

    (path,) = (state_dir / "tapes").iterdir()
    assert path.name == "yfinance-20260803T140015Z.ndjson"
    assert tapes_dir() == state_dir / "tapes"
    assert resolve_tape("latest") == path == resolve_tape(path.name) == resolve_tape(path.stem)
    assert without_produced_at(list(replay(tape="latest"))) == without_produced_at(sent)


def test_a_second_tape_in_the_same_second_does_not_overwrite_the_first(
    tmp_path: Path, state_dir: Path
) -> None:
    record(tmp_path, True, polls=1)
    with fresh_yfinance(tmp_path / "yfinance"):
        record(tmp_path, True, polls=1)
    names = sorted(p.name for p in (state_dir / "tapes").iterdir())
    assert names == ["yfinance-20260803T140015Z-2.ndjson", "yfinance-20260803T140015Z.ndjson"]
    newest = state_dir / "tapes" / "yfinance-20260803T140015Z-2.ndjson"
    os.utime(newest, (2e9, 2e9))
    assert resolve_tape("latest") == newest


def test_each_quote_is_on_the_tape_as_soon_as_it_is_sent(tmp_path: Path) -> None:
    tape = tmp_path / "partial.ndjson"
    clock, yahoo = offline("2026-08-03T14:00:15Z", ["AAPL"])
    source = live(yahoo, clock, ["AAPL"], tmp_path, tape=tape)
    first = [next(source) for _ in range(5)]
    # a run that dies here keeps every quote it sent
    assert tape.read_bytes() == b"".join(q.to_json() + b"\n" for q in first)
    assert source.summary["tape"] == str(tape) and source.summary["tape_records"] == 5
    source.close()


def test_no_quote_no_tape(tmp_path: Path) -> None:
    tape = tmp_path / "none.ndjson"
    clock, yahoo = offline("2026-08-03T13:30:10Z", ["AAPL"])  # the first bar is still forming
    assert list(live(yahoo, clock, ["AAPL"], tmp_path, max_polls=1, tape=tape)) == []
    assert not tape.exists()


def test_tape_errors_name_the_tape_and_the_fix(tmp_path: Path, state_dir: Path) -> None:
    with pytest.raises(
        SourceError, match=r"tape='latest': no tape in .*tapes; record one with SOURCE='yfinance'"
    ):
        replay(tape="latest")
    with pytest.raises(SourceError, match=r"tape='missing.ndjson': no such file"):
        replay(tape="missing.ndjson")
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"symbol":"AAPL"}\n')
    with pytest.raises(SourceError, match=r"bad.ndjson line 1: missing_field"):
        list(replay(tape=bad))
