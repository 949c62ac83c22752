"""The local stack's moto patches: same answers as moto's own code, cost that does not grow with the data.

Answers are checked against moto's unpatched methods on the same data (``uninstall`` restores
them); cost is pinned by the peak memory a request allocates (``tracemalloc``), which for moto's
own code grows with everything stored (a copy of every key, a sorted copy of the table) and for
the patched code with the request's own page only. No wall-clock timing.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from deploy.local import moto_speed

ACCOUNT, REGION = "123456789012", "us-east-1"


@pytest.fixture
def patched() -> Iterator[None]:
    was_installed = moto_speed.installed()
    moto_speed.install()
    yield
    if not was_installed:
        moto_speed.uninstall()


@pytest.fixture
def unpatched() -> Iterator[Callable[[], Any]]:
    """A context manager factory: moto's own methods for the duration of a ``with``."""
    import contextlib

    @contextlib.contextmanager
    def moto_own() -> Iterator[None]:
        moto_speed.uninstall()
        try:
            yield
        finally:
            moto_speed.install()

    yield moto_own


def _table(range_type: str = "S") -> Any:
    from moto.dynamodb.models.table import Table

    return Table(
        "quotes",
        account_id=ACCOUNT,
        region=REGION,
        schema=[
            {"AttributeName": "symbol", "KeyType": "HASH"},
            {"AttributeName": "ts", "KeyType": "RANGE"},
        ],
        attr=[
            {"AttributeName": "symbol", "AttributeType": "S"},
            {"AttributeName": "ts", "AttributeType": range_type},
        ],
    )


def _put(table: Any, symbol: str, ts: str | int, price: int = 1, type_: str = "S") -> None:
    value = {"S": str(ts)} if type_ == "S" else {"N": str(ts)}
    table.put_item({"symbol": {"S": symbol}, "ts": value, "price": {"N": str(price)}})


def _dt(value: Any) -> Any:
    from moto.dynamodb.models.dynamo_type import DynamoType

    return DynamoType(value)


Page = tuple[list[Any], int, Any]


def _query(table: Any, symbol: str, op: str | None, values: list[Any], **kw: Any) -> Page:
    items, scanned, last = table.query(
        _dt({"S": symbol}),
        op,
        [_dt(v) for v in values],
        kw.get("limit"),
        kw.get("start"),
        kw.get("forward", True),
        None,
    )
    return [item.to_json() for item in items], scanned, last


# --------------------------------------------------------------------------- DynamoDB answers


CONDITIONS: list[tuple[str | None, list[dict[str, str]]]] = [
    (None, []),
    ("=", [{"S": "0050"}]),
    ("<", [{"S": "0050"}]),
    ("<=", [{"S": "0050"}]),
    (">", [{"S": "0050"}]),
    (">=", [{"S": "0050"}]),
    ("BETWEEN", [{"S": "0020"}, {"S": "0070"}]),
    ("BETWEEN", [{"S": "0070"}, {"S": "0020"}]),
    ("BEGINS_WITH", [{"S": "003"}]),
    ("BEGINS_WITH", [{"S": "9"}]),
    ("<", [{"S": ""}]),
]


def test_query_answers_equal_motos_own_for_every_key_condition_direction_and_page(
    patched: None, unpatched: Callable[[], Any]
) -> None:
    # GIVEN two partitions written out of order, overwritten and with deletions
    table = _table()
    rng = random.Random(7)
    keys = [f"{n:04d}" for n in range(0, 100)]
    rng.shuffle(keys)
    for n, key in enumerate(keys):
        _put(table, "AAPL", key, price=n)
        _put(table, "MSFT", key, price=-n)
    for key in keys[:15]:
        table.delete_item(_dt({"S": "AAPL"}), _dt({"S": key}))
    for key in keys[15:25]:
        _put(table, "AAPL", key, price=1000)  # overwrite: no duplicate keys
    cases = [
        (op, values, limit, forward)
        for op, values in CONDITIONS
        for limit in (None, 1, 7)
        for forward in (True, False)
    ]

    def pages(op: str | None, values: list[Any], limit: int | None, forward: bool) -> list[Any]:
        out, start = [], None
        for _ in range(200):  # bounded paging
            page = _query(table, "AAPL", op, values, limit=limit, start=start, forward=forward)
            items, scanned, last = page
            out.append((items, scanned, last))
            if not last:
                return out
            start = {name: value.to_json() for name, value in last.items()}
        raise AssertionError("paging did not end")

    # WHEN each case is paged through with the patch and with moto's own Query
    fast = [pages(*case) for case in cases]
    with unpatched():
        slow = [pages(*case) for case in cases]

    # THEN the pages, counts and continuation keys are the same
    assert fast == slow
    assert sum(len(items) for items, _, _ in fast[0]) == 85  # 100 written, 15 deleted
    assert _query(table, "NONE", None, [])[0] == []


def test_number_range_keys_sort_numerically(patched: None) -> None:
    table = _table("N")
    for ts in (10, 9, 100, -1, 2.5):
        _put(table, "X", ts, type_="N")
    items, _, _ = _query(table, "X", ">=", [{"N": "2.5"}])
    assert [item["Attributes"]["ts"]["N"] for item in items] == ["2.5", "9", "10", "100"]


def test_scan_order_is_motos_own(patched: None, unpatched: Callable[[], Any]) -> None:
    table = _table()
    for n in range(60):
        _put(table, random.Random(n).choice("ABCD"), f"{(n * 37) % 60:03d}")
    fast = [item.to_json() for item in table.all_items()]
    with unpatched():
        slow = [item.to_json() for item in table.all_items()]
    assert fast == slow and len(fast) == 60


def test_partitions_survive_copy_and_pickle(patched: None) -> None:
    import copy
    import pickle

    table = _table()
    for ts in ("3", "1", "2"):
        _put(table, "A", ts)
    for clone in (copy.deepcopy(table.items), pickle.loads(pickle.dumps(table.items))):
        partition = clone[_dt({"S": "A"})]
        assert isinstance(partition, moto_speed.RangePartition)
        assert [item.range_key.value for item in partition.sorted_values()] == ["1", "2", "3"]


# --------------------------------------------------------------------------- cost


def _peak_bytes(call: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        call()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _filled(count: int) -> Any:
    table = _table()
    for n in range(count):
        _put(table, "AAPL", f"{n:08d}", price=n)
    return table


def _last_bars(table: Any) -> Callable[[], Any]:
    return lambda: _query(table, "AAPL", "<=", [{"S": "99999999"}], limit=60, forward=False)


def test_a_query_on_a_large_partition_costs_what_it_costs_on_a_small_one(
    patched: None, unpatched: Callable[[], Any]
) -> None:
    small, large = _filled(1_000), _filled(30_000)
    fast_small, fast_large = _peak_bytes(_last_bars(small)), _peak_bytes(_last_bars(large))
    with unpatched():
        slow_large = _peak_bytes(_last_bars(large))
    assert fast_large < 1.5 * fast_small  # 30x the data, about the same work
    assert slow_large > 10 * fast_large  # moto's own: the whole table sorted per Query


def _stream_with(records: int) -> Any:
    from moto.kinesis.models import Shard

    shard = Shard(0, 0, 2**128 - 1)
    for n in range(records):
        shard.put_record(f"k{n % 5}", "eA==", "1")
    return shard


def _put_100(shard: Any) -> Callable[[], Any]:
    return lambda: [shard.put_record("k", "eA==", "1") for _ in range(100)]


def test_a_kinesis_put_costs_the_same_on_a_long_shard(patched: None, unpatched: Callable[[], Any]) -> None:
    short, long = _stream_with(1_000), _stream_with(50_000)
    fast_short, fast_long = _peak_bytes(_put_100(short)), _peak_bytes(_put_100(long))
    with unpatched():
        slow_long = _peak_bytes(_put_100(long))
    assert fast_long < 1.5 * fast_short
    assert slow_long > 10 * fast_long  # moto's own: a copy of every key per record
    assert long.get_max_sequence_number() == 50_200 and long.get_min_sequence_number() == 1


def test_kinesis_get_records_equals_motos_own_and_reads_only_its_page(
    patched: None, unpatched: Callable[[], Any]
) -> None:
    shard = _stream_with(20_000)
    reads = [("0", 5), ("19990", 100), ("20000", 10), ("123", None)]
    fast = [shard.get_records(after, limit)[:2] for after, limit in reads]
    with unpatched():
        slow = [shard.get_records(after, limit)[:2] for after, limit in reads]
        slow_peak = _peak_bytes(lambda: shard.get_records("19000", 10))
    assert [([r.sequence_number for r in recs], last) for recs, last in fast] == [
        ([r.sequence_number for r in recs], last) for recs, last in slow
    ]
    assert _peak_bytes(lambda: shard.get_records("19000", 10)) <= slow_peak
    assert [r.sequence_number for r in fast[0][0]] == [1, 2, 3, 4, 5]


def test_routing_remembers_each_hosts_backend(patched: None) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    app = DomainDispatcherApplication(create_backend_app)
    assert app.get_backend_for_host("kinesis.us-east-1.amazonaws.com") == "kinesis"
    assert app.get_backend_for_host("s3.us-east-1.amazonaws.com") == "s3"
    assert app.get_backend_for_host("dynamodb") == "dynamodb"
    assert app.get_backend_for_host(None) is None


def test_install_is_idempotent_and_uninstall_restores_moto() -> None:
    from moto.kinesis.models import Shard

    was = moto_speed.installed()
    moto_speed.install()
    moto_speed.install()
    patched_method = Shard.get_max_sequence_number
    moto_speed.uninstall()
    assert Shard.get_max_sequence_number is not patched_method and not moto_speed.installed()
    if was:
        moto_speed.install()


def _queue_with(messages: int) -> Any:
    from moto.sqs.models import sqs_backends

    backend = sqs_backends[ACCOUNT][REGION]
    name = f"speed-{messages}-{random.Random(messages).randrange(10**9)}"
    backend.create_queue(name)
    for n in range(messages):
        backend.send_message(name, f"m{n}")
    return backend, name


def test_sqs_counts_equal_motos_own_and_a_send_reads_the_clock_once(
    patched: None, unpatched: Callable[[], Any]
) -> None:
    from moto.core import utils

    backend, name = _queue_with(300)
    queue = backend.get_queue(name)
    backend.receive_message(name, 10, 0, 30)  # 10 in flight
    fast = {k: v for k, v in queue.attributes.items() if k.startswith("Approximate")}
    with unpatched():
        slow = {k: v for k, v in queue.attributes.items() if k.startswith("Approximate")}
    assert fast == slow and fast["ApproximateNumberOfMessages"] == 290
    assert fast["ApproximateNumberOfMessagesNotVisible"] == 10

    calls = [0]
    original = utils.unix_time

    def counting(dt: Any = None) -> float:
        calls[0] += 1
        return original(dt)

    utils.unix_time = counting
    try:
        backend.send_message(name, "one more")
    finally:
        utils.unix_time = original
    assert calls[0] < 20  # moto's own: 2 per waiting message, 600 here


def test_large_json_answers_parse_the_same_as_motos_serializer(unpatched: Callable[[], Any]) -> None:
    import boto3
    from moto import mock_aws

    was = moto_speed.installed()
    moto_speed.install()
    try:
        with mock_aws():
            answers = _read_answers(boto3)
            with unpatched():
                own = _read_answers(boto3, fresh=False)
    finally:
        if not was:
            moto_speed.uninstall()
    assert answers == own
    stream, query, scan, batch = answers
    assert len(stream["Records"]) == 10 and query["Count"] == 5 and "LastEvaluatedKey" in query
    assert scan["Count"] == 3 and len(batch["Responses"]["t"]) == 1 and batch["UnprocessedKeys"] == {}


def _read_answers(boto3: Any, fresh: bool = True) -> list[dict[str, Any]]:
    """GetRecords, Query, Scan and BatchGetItem over items of every attribute type."""
    d = boto3.client("dynamodb", region_name=REGION)
    if fresh:
        d.create_table(
            TableName="t",
            KeySchema=[
                {"AttributeName": "s", "KeyType": "HASH"},
                {"AttributeName": "ts", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "s", "AttributeType": "S"},
                {"AttributeName": "ts", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
        )
        item = {
            "p": {"N": "1.5"}, "b": {"B": b"\x00\x01"}, "l": {"L": [{"N": "1"}, {"SS": ["a", "b"]}]},
            "m": {"M": {"x": {"BOOL": True}, "n": {"NULL": True}}},
        }  # fmt: skip
        requests = [
            {"PutRequest": {"Item": {"s": {"S": "A"}, "ts": {"S": f"{i:04d}"}, **item}}} for i in range(25)
        ]
        d.batch_write_item(RequestItems={"t": requests})
    streams = boto3.client("dynamodbstreams", region_name=REGION)
    arn = d.describe_table(TableName="t")["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    stream = streams.get_records(ShardIterator=iterator["ShardIterator"], Limit=10)
    stream.pop("NextShardIterator")
    for record in stream["Records"]:
        record.pop("eventID")  # random per call
    query = d.query(
        TableName="t", KeyConditionExpression="s = :s", ExpressionAttributeValues={":s": {"S": "A"}}, Limit=5
    )
    scan = d.scan(TableName="t", Limit=3)
    keys = [{"s": {"S": "A"}, "ts": {"S": "0001"}}, {"s": {"S": "A"}, "ts": {"S": "9999"}}]
    batch = d.batch_get_item(RequestItems={"t": {"Keys": keys}})
    answers = [stream, query, scan, batch]
    for answer in answers:
        answer.pop("ResponseMetadata")
    return answers


def _stream_records(count: int) -> tuple[list[dict[str, Any]], int]:
    """``count`` items written to a table with a NEW_IMAGE stream: its records as read, bytes held."""
    table = _table()
    table.stream_specification = {"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    table.set_stream_specification(table.stream_specification)
    tracemalloc.start()
    try:
        for n in range(count):
            item = {"symbol": {"S": "AAPL"}, "ts": {"S": f"{n:08d}"}, "price": {"N": "190.5"}}
            table.put_item({**item, "tags": {"SS": ["a"]}})
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    records = [r.to_json() for r in table.stream_shard.items]
    for record in records:
        record.pop("eventID")
        record["dynamodb"].pop("ApproximateCreationDateTime")
        record["dynamodb"].pop("SizeBytes")  # moto counts the creation time's text in it
    return records, held


def test_stream_records_read_as_motos_own_and_hold_less(patched: None, unpatched: Callable[[], Any]) -> None:
    fast, fast_bytes = _stream_records(500)
    with unpatched():
        slow, slow_bytes = _stream_records(500)
    assert fast == slow and fast[0]["dynamodb"]["NewImage"]["price"] == {"N": "190.5"}
    assert fast_bytes < 0.75 * slow_bytes


# --------------------------------------------------------------------------- sequence numbers


@contextlib.contextmanager
def _slow_init(owner: Any) -> Iterator[None]:
    """Building a record yields to other threads (as a busy stack's scheduler may) for a ``with``."""
    original = owner.__dict__["__init__"]

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        time.sleep(0.001)

    owner.__init__ = init
    try:
        yield
    finally:
        owner.__init__ = original


def _in_threads(work: Callable[[int], Any], threads: int = 8) -> None:
    started = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join(timeout=60)


def _concurrent_stream_writes() -> list[int]:
    """Stream sequence numbers (from the shard's start) of 8 threads writing 20 items each."""
    from moto.dynamodb.models.table import StreamRecord

    table = _table()
    table.set_stream_specification({"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"})
    with _slow_init(StreamRecord):
        _in_threads(lambda n: [_put(table, f"S{n}", f"{i:04d}") for i in range(20)])
    start = int(table.stream_shard.starting_sequence_number)
    return [int(r.to_json()["dynamodb"]["SequenceNumber"]) - start for r in table.stream_shard.items]


def test_concurrent_writes_number_stream_records_by_their_position(
    patched: None, unpatched: Callable[[], Any]
) -> None:
    # every record's sequence number is its position (the local runtime reads by position)
    assert _concurrent_stream_writes() == list(range(160))
    with unpatched():  # moto's own: numbers taken twice, records stored away from their number
        assert _concurrent_stream_writes() != list(range(160))


def _concurrent_kinesis_puts() -> list[int]:
    """Sequence numbers stored after 8 threads put 20 records each on one shard."""
    from moto.kinesis.models import Record, Shard

    shard = Shard(0, 0, 2**128 - 1)
    with _slow_init(Record):
        _in_threads(lambda n: [shard.put_record(f"k{n}", "eA==", "1") for _ in range(20)])
    return list(shard.records)


def test_concurrent_kinesis_puts_keep_every_record(patched: None, unpatched: Callable[[], Any]) -> None:
    assert _concurrent_kinesis_puts() == list(range(1, 161))
    with unpatched():  # moto's own: two puts take one number, the first record is overwritten
        assert len(_concurrent_kinesis_puts()) < 160


def _hash_or_error(value: dict[str, Any]) -> Any:
    try:
        return hash(_dt(value))
    except TypeError as err:  # moto's own for sets: unhashable
        return str(err)


def test_key_hashes_and_equality_are_motos_own(patched: None, unpatched: Callable[[], Any]) -> None:
    values = [{"S": "AAPL"}, {"S": ""}, {"B": b"\x00x"}, {"BOOL": True}, {"N": "1.50"}, {"N": "1.5"},
              {"SS": ["a", "b"]}, {"NULL": True}, {"L": [{"S": "a"}]}, {"M": {"k": {"N": "2"}}}]  # fmt: skip

    def answers() -> list[Any]:
        return [(_hash_or_error(a), _dt(a) == _dt(b), _dt(a) != _dt(b)) for a in values for b in values]

    fast = answers()
    with unpatched():
        own = answers()
    assert fast == own and fast[0][1] and fast[4 * 10 + 5][1]  # "1.50" == "1.5" as numbers
