"""The storage layout (helpers.core.layout): one definition the processor, Glue and readers share."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from helpers.core import layout
from helpers.pipeline import catalog, processor
from helpers.pipeline.config import load_settings

SETTINGS = load_settings(environ={})
SHARD = "shardId-000000000000"


def test_keys_of_the_raw_archive_quarantine_and_manifests() -> None:
    assert layout.raw_key("AAPL", "2026", SHARD, "42") == (
        "raw/symbol=AAPL/year=2026/shardId-000000000000-42.ndjson"
    )
    assert (
        layout.quarantine_key("2026-07-29", SHARD, "7")
        == "quarantine/dt=2026-07-29/shardId-000000000000-7.ndjson"
    )
    assert layout.manifest_key(SHARD, "1") == "manifests/shardId-000000000000/1.json"
    assert layout.raw_key("A", "2026", "s", "1", prefix="archive/") == "archive/symbol=A/year=2026/s-1.ndjson"


def test_settings_prefixes_and_the_processors_names_follow_the_layout() -> None:
    assert (SETTINGS.raw_prefix, SETTINGS.quarantine_prefix) == (layout.RAW_PREFIX, layout.QUARANTINE_PREFIX)
    assert processor.MANIFEST_PREFIX == layout.MANIFEST_PREFIX == "manifests/"
    assert processor.raw_key(SETTINGS, "AAPL", "2026", SHARD, "42") == layout.raw_key(
        "AAPL", "2026", SHARD, "42"
    )
    assert processor.quarantine_key(SETTINGS, "2026-07-29", SHARD, "7") == layout.quarantine_key(
        "2026-07-29", SHARD, "7"
    )


def test_partition_folders_round_trip_through_the_pattern() -> None:
    key = layout.raw_key(*layout.raw_partition("EURUSD=X", "2026-07-30T13:30:00Z"), SHARD, "9")
    assert layout.partition_dir("EURUSD=X", "2026") == "symbol=EURUSD=X/year=2026/"
    old_layout = "raw/symbol=AAPL/dt=2026-07-30/x.ndjson"
    keys = [key, "raw/symbol=AAPL/", "quarantine/dt=2026-07-30/x.ndjson", old_layout]
    assert layout.partitions_from_keys(keys) == {("EURUSD=X", "2026")}
    assert catalog.partition_location(SETTINGS, ("AAPL", "2026")) == (
        f"s3://{SETTINGS.raw_bucket}/raw/symbol=AAPL/year=2026/"
    )


def test_a_quote_is_archived_under_its_symbol_and_utc_year() -> None:
    assert layout.raw_partition("AAPL", "2013-12-31T23:59:59Z") == ("AAPL", "2013")
    assert layout.raw_partition("AAPL", "2014-01-01T00:00:00Z") == ("AAPL", "2014")
    assert layout.TIME_PARTITION == layout.PARTITION_KEYS[1][0] == "year"


@pytest.mark.parametrize(
    ("start", "end", "years"),
    [
        ("2013-05-01", "2013-05-02", ["2013"]),
        ("2013", "2014", ["2013"]),  # the end is exclusive: 2014's first instant
        ("2013-01-01", "2014-01-01T00:00:00Z", ["2013"]),
        ("2012-12-31T23:00:00Z", "2013-01-01T00:00:01Z", ["2012", "2013"]),
        ("2000-01-03", "2013-12-31", [str(y) for y in range(2000, 2014)]),
        ("2014", "2013", []),
    ],
)
def test_a_time_range_touches_the_years_it_overlaps(start: str, end: str, years: list[str]) -> None:
    assert layout.partition_values(start, end) == years


@given(st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2040, 12, 31)),
       st.timedeltas(min_value=dt.timedelta(seconds=1), max_value=dt.timedelta(days=800)))  # fmt: skip
def test_partition_values_keep_the_partition_of_every_time_in_the_range(
    start: dt.datetime, width: dt.timedelta
) -> None:
    stamps = [(start + width * k / 8).strftime("%Y-%m-%dT%H:%M:%SZ") for k in range(8)]
    first, end = stamps[0], (start + width).strftime("%Y-%m-%dT%H:%M:%SZ")
    years = layout.partition_values(first, end)
    assert {layout.raw_partition("A", t)[1] for t in stamps} <= set(years)
    assert years == sorted(years) and (not years or years[0] == first[:4])


def test_the_glue_table_is_declared_from_the_layout_columns() -> None:
    table = catalog.table_input(SETTINGS)
    assert [c["Name"] for c in table["StorageDescriptor"]["Columns"]] == [n for n, _ in layout.DATA_COLUMNS]
    assert [(c["Name"], c["Type"]) for c in table["PartitionKeys"]] == list(layout.PARTITION_KEYS)
    assert catalog.DATA_COLUMNS is layout.DATA_COLUMNS and catalog.PARTITION_KEYS is layout.PARTITION_KEYS
    assert catalog.partitions_from_keys is layout.partitions_from_keys
