"""The local stack's compact moto storage: same answers as moto's own, fewer bytes per record.

Answers are compared with moto's unpatched code on the same requests (``uninstall`` restores it);
bytes are pinned with ``tracemalloc`` (what the stores hold after the writes, garbage collected).
"""

from __future__ import annotations

import contextlib
import gc
import tracemalloc
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from deploy.local import moto_compact, moto_speed

ACCOUNT, REGION = "123456789012", "us-east-1"


@pytest.fixture
def patched() -> Iterator[None]:
    was_installed = moto_speed.installed()
    moto_speed.install()
    yield
    if not was_installed:
        moto_speed.uninstall()


@contextlib.contextmanager
def moto_own() -> Iterator[None]:
    was_installed = moto_speed.installed()
    moto_speed.uninstall()
    try:
        yield
    finally:
        if was_installed:
            moto_speed.install()


def _quote(n: int, symbol: str = "AAPL") -> dict[str, Any]:
    """A processed item as the processor writes it: 13 attributes, numbers as text."""
    return {
        "symbol": {"S": symbol},
        "timestamp": {"S": f"2026-07-29T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z"},
        "price": {"N": f"{190 + n % 97 / 10:.2f}"},
        "previous_close": {"N": "189.98"},
        "open": {"N": "190.01"},
        "high": {"N": f"{191 + n % 13 / 10:.2f}"},
        "low": {"N": "188.5"},
        "volume": {"N": str(1000 + n)},
        "source": {"S": "synthetic"},
        "produced_at": {"S": "2026-12-03T14:00:00.123456Z"},
        "change": {"N": "0.42"},
        "change_pct": {"N": "0.2211"},
        "processed_at": {"S": "2026-12-03T14:00:01.000000Z"},
    }


EVERY_TYPE = {
    "symbol": {"S": "AAPL"},
    "timestamp": {"S": "2026-07-29T13:30:00Z"},
    "n": {"N": "-1.5E+3"},
    "b": {"B": "AAEC"},
    "yes": {"BOOL": True},
    "no": {"BOOL": False},
    "nothing": {"NULL": True},
    "ss": {"SS": ["b", "a"]},
    "ns": {"NS": ["1", "2.5"]},
    "bs": {"BS": ["AA==", "AQ=="]},
    "list": {"L": [{"N": "1"}, {"S": "x"}, {"L": [{"BOOL": False}]}, {"M": {"k": {"SS": ["q"]}}}]},
    "map": {"M": {"z": {"NULL": True}, "a": {"M": {"deep": {"N": "3"}}}, "u": {"S": "é ☃ \u2028"}}},
    "empty_list": {"L": []},
    "empty_map": {"M": {}},
    "text": {"S": 'quote " backslash \\ newline \n'},
}


def _item(attrs: dict[str, Any]) -> Any:
    from moto.dynamodb.models.dynamo_type import DynamoType, Item

    return Item(DynamoType(attrs["symbol"]), DynamoType(attrs["timestamp"]), attrs)


# --------------------------------------------------------------------------- the codec


def test_an_unpacked_item_equals_the_packed_one_for_every_attribute_type() -> None:
    item = _item(EVERY_TYPE)
    blob = moto_compact.pack(item)
    assert blob is not None and len(blob) < 600
    back = moto_compact.unpack(blob, item.hash_key, item.range_key)
    assert back == item
    assert back.to_json() == item.to_json() and list(back.attrs) == list(EVERY_TYPE)
    assert back.size() == item.size()
    for name in ("n", "list", "map", "ss"):  # (moto's to_regular_json fails on BS text itself)
        assert back.attrs[name].to_regular_json() == item.attrs[name].to_regular_json()
    assert type(back.attrs) is type(item.attrs)


def test_values_json_cannot_carry_exactly_are_not_packed() -> None:
    from moto.dynamodb.models.dynamo_type import DynamoType

    raw_bytes = _item({**_quote(1), "blob": {"B": b"\x00\x01"}})  # as boto3-less callers give them
    assert moto_compact.pack(raw_bytes) is None
    odd = _item(_quote(2))
    odd.attrs["price"] = DynamoType({"N": "1"})
    odd.attrs["price"].value = 1.5  # a float, not the wire's text
    assert moto_compact.pack(odd) is None


def test_a_partition_keeps_unpackable_items_as_they_are(patched: None) -> None:
    partition = moto_speed.RangePartition()
    item = _item({**_quote(1), "blob": {"B": b"\x00\x01"}})
    partition[item.range_key] = item
    assert partition[item.range_key] is item  # moto's own behaviour for what cannot be packed
    packed = _item(_quote(2))
    partition[packed.range_key] = packed
    assert type(dict.__getitem__(partition, packed.range_key)) is bytes
    assert partition[packed.range_key] == packed and partition[packed.range_key] is not packed
    assert [i.range_key for i in partition.sorted_values()] == [item.range_key, packed.range_key]
    assert dict(partition) == {item.range_key: item, packed.range_key: packed}  # not the packed bytes


# --------------------------------------------------------------------------- answers through the API


def _scenario(boto3: Any) -> list[Any]:
    """Every item operation the pipeline uses (and a few it does not), each answer recorded."""
    from botocore.exceptions import ClientError

    d = boto3.client("dynamodb", region_name=REGION)
    d.create_table(
        TableName="q",
        KeySchema=[
            {"AttributeName": "symbol", "KeyType": "HASH"},
            {"AttributeName": "timestamp", "KeyType": "RANGE"},
        ],
        AttributeDefinitions=[
            {"AttributeName": "symbol", "AttributeType": "S"},
            {"AttributeName": "timestamp", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
    )
    answers: list[Any] = []

    def call(name: str, **kwargs: Any) -> None:
        try:
            answer = getattr(d, name)(**kwargs)
        except ClientError as err:
            answer = {"error": err.response["Error"]["Code"], "item": err.response.get("Item")}
        answer.pop("ResponseMetadata", None)
        answers.append((name, answer))

    for start in range(0, 60, 25):
        puts = [{"PutRequest": {"Item": _quote(n, "AB"[n % 2])}} for n in range(start, min(start + 25, 60))]
        call("batch_write_item", RequestItems={"q": puts})
    call("put_item", TableName="q", Item=EVERY_TYPE)
    key = {"symbol": {"S": "A"}, "timestamp": _quote(10)["timestamp"]}
    call("put_item", TableName="q", Item=_quote(10, "A"), ReturnValues="ALL_OLD")  # overwrite
    call(
        "put_item", TableName="q", Item=_quote(10, "A"), ConditionExpression="attribute_not_exists(symbol)",
        ReturnValuesOnConditionCheckFailure="ALL_OLD",
    )  # fmt: skip
    call(
        "update_item", TableName="q", Key=key, ReturnValues="ALL_NEW",
        UpdateExpression="SET mark = :m, volume = volume + :one REMOVE high ADD tags :t",
        ExpressionAttributeValues={":m": {"N": "7"}, ":one": {"N": "1"}, ":t": {"SS": ["x", "y"]}},
    )  # fmt: skip
    call(
        "update_item", TableName="q", Key=key, ReturnValues="UPDATED_OLD",
        UpdateExpression="SET mark = :m", ConditionExpression="mark = :seen",
        ExpressionAttributeValues={":m": {"N": "8"}, ":seen": {"N": "7"}},
    )  # fmt: skip
    call(
        "update_item", TableName="q", Key=key, UpdateExpression="SET mark = :m",
        ConditionExpression="mark = :seen", ReturnValuesOnConditionCheckFailure="ALL_OLD",
        ExpressionAttributeValues={":m": {"N": "9"}, ":seen": {"N": "7"}},
    )  # fmt: skip
    new_key = {"symbol": {"S": "A"}, "timestamp": {"S": "2027-01-01T00:00:00Z"}}
    call("update_item", TableName="q", Key=new_key, UpdateExpression="SET n = :n",
         ExpressionAttributeValues={":n": {"N": "1"}}, ReturnValues="ALL_NEW")  # fmt: skip
    call("get_item", TableName="q", Key=key, ConsistentRead=True)
    call("get_item", TableName="q", Key=new_key, ProjectionExpression="n, symbol")
    call("get_item", TableName="q", Key={"symbol": {"S": "A"}, "timestamp": {"S": "nope"}})
    for forward in (True, False):
        call(
            "query", TableName="q", Limit=7, ScanIndexForward=forward,
            KeyConditionExpression="symbol = :s AND #t <= :t", ExpressionAttributeNames={"#t": "timestamp"},
            ExpressionAttributeValues={":s": {"S": "A"}, ":t": {"S": "2026-07-29T00:00:40Z"}},
        )  # fmt: skip
    call(
        "query", TableName="q", KeyConditionExpression="symbol = :s", FilterExpression="volume > :v",
        ProjectionExpression="price, volume",
        ExpressionAttributeValues={":s": {"S": "B"}, ":v": {"N": "1030"}},
    )  # fmt: skip
    call("scan", TableName="q")
    call("scan", TableName="q", Limit=9, FilterExpression="attribute_exists(mark)")
    keys = [key, new_key, {"symbol": {"S": "B"}, "timestamp": _quote(11)["timestamp"]}]
    call("batch_get_item", RequestItems={"q": {"Keys": keys, "ConsistentRead": True}})
    call("delete_item", TableName="q", Key=key, ReturnValues="ALL_OLD")
    call(
        "transact_write_items",
        TransactItems=[
            {"Update": {"TableName": "q", "Key": new_key, "UpdateExpression": "SET n = n + :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}}}},
            {"Put": {"TableName": "q", "Item": _quote(99, "C")}},
        ],
    )  # fmt: skip
    call("get_item", TableName="q", Key=new_key)
    call("query", TableName="q", KeyConditionExpression="symbol = :s",
         ExpressionAttributeValues={":s": {"S": "C"}})  # fmt: skip
    count = d.describe_table(TableName="q")["Table"]["ItemCount"]
    answers.append(("item_count", count))
    streams = boto3.client("dynamodbstreams", region_name=REGION)
    arn = d.describe_table(TableName="q")["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    records = streams.get_records(ShardIterator=iterator["ShardIterator"], Limit=1000)["Records"]
    answers.append(("stream", [(r["eventName"], r["dynamodb"].get("OldImage"), r["dynamodb"].get("NewImage"))
                               for r in records]))  # fmt: skip
    return answers


def test_item_operations_answer_as_motos_own() -> None:
    import boto3
    from moto import mock_aws

    was = moto_speed.installed()
    moto_speed.install()
    try:
        with mock_aws():
            compact = _scenario(boto3)
        with moto_own(), mock_aws():
            own = _scenario(boto3)
    finally:
        if not was:
            moto_speed.uninstall()
    assert [name for name, _ in compact] == [name for name, _ in own]
    for (name, mine), (_, theirs) in zip(compact, own, strict=True):
        assert mine == theirs, name
    answers = dict(compact)
    # 60 quotes + the every-type item + one created by an update + one put - one deleted
    assert answers["item_count"] == 62
    updates = [answer for name, answer in compact if name == "update_item"]
    updated = updates[0]["Attributes"]
    assert updated["mark"] == {"N": "7"} and updated["volume"] == {"N": "1011"} and "high" not in updated
    assert updates[2]["error"] == "ConditionalCheckFailedException"


def test_a_reader_changing_its_item_does_not_change_the_table(patched: None) -> None:
    from moto.dynamodb.models.dynamo_type import DynamoType

    table = _table_with(0)
    table.put_item(_quote(1))
    hash_key, range_key = DynamoType({"S": "AAPL"}), DynamoType(_quote(1)["timestamp"])
    got = table.get_item(hash_key, range_key)
    got.attrs["price"] = DynamoType({"N": "0"})
    assert table.get_item(hash_key, range_key).attrs["price"].value == "190.10"
    assert table.get_item(hash_key, range_key) is not table.get_item(hash_key, range_key)


# --------------------------------------------------------------------------- what is held


def _held(build: Callable[[], Any]) -> tuple[int, Any]:
    gc.collect()
    tracemalloc.start()
    try:
        kept = build()
        gc.collect()
        return tracemalloc.get_traced_memory()[0], kept
    finally:
        tracemalloc.stop()


def _table_with(count: int) -> Any:
    from moto.dynamodb.models.table import Table

    keys = [("symbol", "HASH"), ("timestamp", "RANGE")]
    table = Table(
        "q",
        account_id=ACCOUNT,
        region=REGION,
        schema=[{"AttributeName": name, "KeyType": kind} for name, kind in keys],
        attr=[{"AttributeName": name, "AttributeType": "S"} for name, _ in keys],
    )
    for n in range(count):
        table.put_item(_quote(n, "ABCDE"[n % 5]))
    return table


def test_two_thousand_quote_items_hold_under_a_third_of_motos_own_bytes(patched: None) -> None:
    """Bytes per item do not depend on the count (tracemalloc makes a large count slow to build)."""
    count = 2_000
    compact, table = _held(lambda: _table_with(count))
    with moto_own():
        own, own_table = _held(lambda: _table_with(count))
    assert len(table) == len(own_table) == count
    assert compact / count < 900  # bytes per 13-attribute item, keys and sort order included
    assert compact < own / 3  # moto's own: ~2.8 KB an item, and every Item ever built kept


def test_moto_keeps_no_model_it_no_longer_refers_to(patched: None) -> None:
    from moto.dynamodb.models.dynamo_type import DynamoType, Item

    table = _table_with(100)
    before = len(Item.instances_tracked)
    results, _, _ = table.query(DynamoType({"S": "A"}), None, [], None, None, True, None)
    assert len(results) == 20
    gone = weakref.ref(results[0])
    del results
    gc.collect()
    assert gone() is None and len(Item.instances_tracked) == before
