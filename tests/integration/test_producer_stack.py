"""The producer against the local stack's Kinesis: batches land on the stream, malformed bytes too."""

from __future__ import annotations

import pytest

from helpers.core import batch_plan
from helpers.notebook.producer import produce, put_raw
from helpers.notebook.sources import synthetic
from helpers.pipeline import aws
from helpers.pipeline.config import Settings, load_settings

pytestmark = pytest.mark.integration


def test_produce_puts_quotes_on_the_local_stream(local_stack: Settings) -> None:
    s = load_settings(
        local_port=local_stack.local_port, state_dir=local_stack.state_dir, stream_name="prod-test"
    )
    kinesis = aws.client("kinesis", s)
    kinesis.create_stream(StreamName=s.stream_name, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName=s.stream_name, WaiterConfig={"Delay": 0.2})

    summary = produce(synthetic(["AAA", "BBB"], 620), s, progress=True, total=620)
    bad = put_raw([b"\xff", b"{"], s)

    shard = kinesis.list_shards(StreamName=s.stream_name)["Shards"][0]["ShardId"]
    iterator = kinesis.get_shard_iterator(
        StreamName=s.stream_name, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
    )
    records = kinesis.get_records(ShardIterator=iterator["ShardIterator"], Limit=1000)["Records"]
    # 620 quotes in batches of 500 + 120: 250 + 60 a symbol, aggregates of up to 25 quotes
    assert summary.records == 620 and summary.batches == 2 and bad.records == 2
    assert summary.stream_records == 2 * (10 + 3) and len(records) == 26 + 2
    assert records[-1]["PartitionKey"] == "MALFORMED" and records[-2]["Data"] == b"\xff"
    quotes = [part for r in records[:26] for part in batch_plan.split(r["Data"])]
    assert len(quotes) == 620 and {r["PartitionKey"] for r in records[:26]} == {"AAA", "BBB"}
