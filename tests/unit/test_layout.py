"""The storage layout (helpers.core.layout): one definition the processor, Glue and readers share."""

from __future__ import annotations

from helpers.core import layout
from helpers.pipeline import catalog, processor
from helpers.pipeline.config import load_settings

SETTINGS = load_settings(environ={})
SHARD = "shardId-000000000000"


def test_keys_of_the_raw_archive_quarantine_and_manifests() -> None:
    assert layout.raw_key("AAPL", "2026-07-29", SHARD, "42") == (
        "raw/symbol=AAPL/dt=2026-07-29/shardId-000000000000-42.ndjson"
    )
    assert (
        layout.quarantine_key("2026-07-29", SHARD, "7")
        == "quarantine/dt=2026-07-29/shardId-000000000000-7.ndjson"
    )
    assert layout.manifest_key(SHARD, "1") == "manifests/shardId-000000000000/1.json"
    assert (
        layout.raw_key("A", "2026-01-02", "s", "1", prefix="archive/")
        == "archive/symbol=A/dt=2026-01-02/s-1.ndjson"
    )


def test_settings_prefixes_and_the_processors_names_follow_the_layout() -> None:
    assert (SETTINGS.raw_prefix, SETTINGS.quarantine_prefix) == (layout.RAW_PREFIX, layout.QUARANTINE_PREFIX)
    assert processor.MANIFEST_PREFIX == layout.MANIFEST_PREFIX == "manifests/"
    assert processor.raw_key(SETTINGS, "AAPL", "2026-07-29", SHARD, "42") == layout.raw_key(
        "AAPL", "2026-07-29", SHARD, "42"
    )
    assert processor.quarantine_key(SETTINGS, "2026-07-29", SHARD, "7") == layout.quarantine_key(
        "2026-07-29", SHARD, "7"
    )


def test_partition_folders_round_trip_through_the_pattern() -> None:
    key = layout.raw_key("EURUSD=X", "2026-07-30", SHARD, "9")
    assert layout.partition_dir("EURUSD=X", "2026-07-30") == "symbol=EURUSD=X/dt=2026-07-30/"
    assert layout.partitions_from_keys([key, "raw/symbol=AAPL/", "quarantine/dt=2026-07-30/x.ndjson"]) == {
        ("EURUSD=X", "2026-07-30")
    }
    assert catalog.partition_location(SETTINGS, ("AAPL", "2026-07-29")) == (
        f"s3://{SETTINGS.raw_bucket}/raw/symbol=AAPL/dt=2026-07-29/"
    )


def test_the_glue_table_is_declared_from_the_layout_columns() -> None:
    table = catalog.table_input(SETTINGS)
    assert [c["Name"] for c in table["StorageDescriptor"]["Columns"]] == [n for n, _ in layout.DATA_COLUMNS]
    assert [(c["Name"], c["Type"]) for c in table["PartitionKeys"]] == list(layout.PARTITION_KEYS)
    assert catalog.DATA_COLUMNS is layout.DATA_COLUMNS and catalog.PARTITION_KEYS is layout.PARTITION_KEYS
    assert catalog.partitions_from_keys is layout.partitions_from_keys
