"""Patches that keep moto's cost per request flat as the local stack's data grows.

moto is written for unit tests with a few items; several of its paths cost O(everything stored)
per request, so a pipeline run slows down as it runs (measured on moto 5.2, 5 symbols, two cores:
PutRecords fell from 15,008 to 439 records/s between 5k and 200k records in the stream; a Query
took 35 ms at 1k items, 641 ms at 50k). Each patch below keeps moto's answers and replaces only
how they are found; ``install()`` applies them once per process, ``uninstall()`` restores moto.

* **Kinesis** (``moto/kinesis/models.py``): ``Shard.put_record`` asks
  ``get_max_sequence_number()``, which is ``list(self.records.keys())[-1]``: a copy of every key
  of the shard for every record, so producing was quadratic. The records are an insertion-ordered
  dict with increasing integer keys; the last key is ``next(reversed(records))`` (O(1)), the first
  ``next(iter(records))``. ``Shard.get_records`` (the GetRecords API) scanned the shard from its
  first record to find the iterator's position; it now looks the next sequence numbers up
  directly, falling back to moto's scan when they are not contiguous.
* **DynamoDB Query** (``moto/dynamodb/models/table.py``): ``Table.query`` without an index
  filters ``self.all_items()``, which sorts the **whole table**, then sorts the partition and
  walks it from the start. Each partition of a table with a sort key is now a
  :class:`RangePartition`: the same dict (range key -> item) that also keeps its keys in sort
  order on every insert and delete, so a Query bisects to its key condition and its
  ``ExclusiveStartKey`` and reads only the items it returns (O(log n + page)). Queries this path
  does not cover (indexes, legacy ``QueryFilter``, multi-attribute keys) run moto's own code.
  ``Table.all_items`` (Scan) sorts the partition keys only, the partitions being sorted already.
* **DynamoDB keys** (``moto/dynamodb/models/dynamo_type.py``): ``DynamoType.__hash__`` and
  ``__eq__`` go through ``cast_value``, five type tests per call, for every dict lookup of an item
  and every key a restored table re-hashes (0.53 of the 1.41 s a 100k-item table took to load).
  For strings, binary and booleans ``cast_value`` is the value itself, so they hash and compare it
  directly (the same hash as moto's); other types take moto's path.
* **DynamoDB stream records** (``moto/dynamodb/models/table.py``, ``StreamRecord``): each one
  keeps its record as nested dicts, 4.4 KB per processed item (13 attributes), more than the
  item itself (2.8 KB), and moto never drops them. Each is now kept as compact JSON bytes
  (~0.7 KB) and decoded when read (``record``, ``to_json()``), the same dict every time.
* **Sequence numbers** (``Shard.put_record`` in ``moto/kinesis/models.py``, ``StreamShard.add``
  in ``moto/dynamodb/models/table.py``): each computes the next number from what is stored, builds
  the record, then stores it ("not safe for concurrency", says moto). The stack answers requests in
  threads, so two writes to one shard could take the same number: a Kinesis record overwrote
  another (lost), a DynamoDB stream record was appended far from its number (measured at 100k
  items: a trend mark numbered 26,414 stored at a later position, so the trend mapping's
  checkpoint stopped there and the mark was delivered again every second). Both now hold one lock
  from the number to the store.
* **SQS** (``moto/sqs/models.py``): every SendMessage (each SNS delivery to a queue) reads
  ``queue.attributes`` for one flag, which counts the queue's messages three times, calling
  ``unix_time_millis()`` twice per message: 2.5 ms per alert with 300 messages waiting in the
  inbox. The counts (and ``Queue.messages``) now read the clock once per call.
* **Large JSON answers** (``moto/core/responses.py``, ``ActionResult.execute_result``): moto
  writes every answer by walking the operation's botocore output shape in Python, ~0.4 ms per
  DynamoDB item or stream record: a 1,000-record GetRecords took 400 ms of the server's time
  (9 ms to find the records), a 1,000-item Query 220 ms. For the read operations that return
  many items (:data:`FAST_JSON`), whose results are already in wire form (attribute values as
  ``{"S": ...}``), the body is ``json.dumps`` of the result, timestamps as epoch seconds as the
  JSON protocol has them; what a client parses is the same (checked against moto's serializer).
* **Routing** (``moto/moto_server/werkzeug_app.py``): ``get_backend_for_host`` lists moto's
  package directory (``os.listdir`` + ``isdir`` for ~200 modules) on every request, under the
  dispatcher's global lock (~0.4 ms a request); its answer depends on the host only, so it is
  remembered per host.
* **Backends** (``moto/core/base_backend.py``): ``BackendDict[account]`` takes the global
  ``backend_lock`` and copies the account list on every lookup, which DynamoDB's stream does for
  every written item; an account that exists is now returned without the lock.
"""

from __future__ import annotations

import bisect
import copy
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from deploy.local import moto_compact

__all__ = ["RangePartition", "install", "installed", "uninstall"]

_lock = threading.Lock()
_saved: list[tuple[Any, str, Any]] = []  # (owner, attribute, original)

# Key-condition operators the bisecting Query handles, in moto's spellings.
_OPERATORS = {
    "EQ": "EQ", "=": "EQ",
    "LT": "LT", "<": "LT",
    "LE": "LE", "<=": "LE",
    "GT": "GT", ">": "GT",
    "GE": "GE", ">=": "GE",
    "BETWEEN": "BETWEEN",
    "BEGINS_WITH": "BEGINS_WITH",
}  # fmt: skip


class RangePartition(dict):  # type: ignore[type-arg]
    """One partition of a table with a sort key: range key -> item, keys also kept in sort order.

    moto mutates partitions with ``partition[key] = item`` and ``partition.pop(key)``; every
    mutation keeps ``_keys`` (the range keys) and ``_order`` (their ``cast_value``, which is how
    moto compares range keys) sorted, so :meth:`span` finds a key condition by bisection.
    Appending in key order (a symbol's bars arriving in time order) costs O(1); an earlier key
    costs one list insert.

    Items are stored packed (:func:`deploy.local.moto_compact.pack`, ~0.45 KB instead of ~2.3 KB)
    and every read (``partition[key]``, ``get``, ``values``, ``items``, ``pop``, ...) returns a new
    ``Item`` unpacked from them, so a reader may change what it got without changing the table:
    :func:`_install_dynamodb` stores an updated item again. An item that cannot be packed is kept
    as it is and returned as it is (moto's own behaviour).
    """

    __slots__ = ("_hash", "_keys", "_order")

    def __init__(self, items: Iterable[tuple[Any, Any]] = ()) -> None:
        super().__init__()
        self._hash: Any = None  # the partition's hash key (a DynamoType), from its first item
        self._keys: list[Any] = []
        self._order: list[Any] = []
        for key, value in items:
            self[key] = value

    def __reduce__(self) -> Any:  # copy, deepcopy and pickle: packed values and the order as they are
        return (_rebuilt_partition, (self._hash, self._keys, self._order, dict(dict.items(self))))

    def __setitem__(self, key: Any, value: Any) -> None:
        if not dict.__contains__(self, key):
            rank = key.cast_value
            if not self._order or rank > self._order[-1]:
                self._keys.append(key)
                self._order.append(rank)
            else:
                at = bisect.bisect_left(self._order, rank)
                self._keys.insert(at, key)
                self._order.insert(at, rank)
        if type(value) is not bytes:
            hash_key = getattr(value, "hash_key", None)
            if hash_key is not None and (self._hash is None or self._hash == hash_key):
                packed = moto_compact.pack(value)
                if packed is not None:
                    self._hash = hash_key
                    value = packed
        dict.__setitem__(self, key, value)

    def __setstate__(self, state: Any) -> None:  # what the older reduce saved: the hash key
        self._hash = state

    def _restore(self, hash_key: Any, keys: list[Any], order: list[Any], stored: dict[Any, Any]) -> None:
        self._hash, self._keys, self._order = hash_key, list(keys), list(order)
        dict.update(self, stored)

    def _unpack(self, key: Any, value: Any) -> Any:
        return moto_compact.unpack(value, self._hash, key) if type(value) is bytes else value

    def __getitem__(self, key: Any) -> Any:
        return self._unpack(key, dict.__getitem__(self, key))

    def __iter__(self) -> Iterator[Any]:  # also keeps dict(partition) from copying packed values
        return dict.__iter__(self)

    def get(self, key: Any, default: Any = None) -> Any:
        if dict.__contains__(self, key):
            return self[key]
        return default

    def values(self) -> list[Any]:  # type: ignore[override]
        return [self._unpack(key, value) for key, value in dict.items(self)]

    def items(self) -> list[tuple[Any, Any]]:  # type: ignore[override]
        return [(key, self._unpack(key, value)) for key, value in dict.items(self)]

    def copy(self) -> RangePartition:
        twin = RangePartition()
        twin._hash = self._hash
        for key, value in dict.items(self):
            twin[key] = value
        return twin

    def _forget(self, key: Any) -> None:
        at = bisect.bisect_left(self._order, key.cast_value)
        while self._keys[at] != key:  # equal ranks of different types cannot share a table
            at += 1
        del self._keys[at], self._order[at]

    def __delitem__(self, key: Any) -> None:
        dict.__delitem__(self, key)
        self._forget(key)

    _missing = object()

    def pop(self, key: Any, default: Any = _missing) -> Any:
        if dict.__contains__(self, key):
            value = self[key]
            dict.__delitem__(self, key)
            self._forget(key)
            return value
        if default is RangePartition._missing:
            raise KeyError(key)
        return default

    def popitem(self) -> tuple[Any, Any]:
        key, value = dict.popitem(self)
        self._forget(key)
        return key, self._unpack(key, value)

    def clear(self) -> None:
        dict.clear(self)
        self._keys.clear()
        self._order.clear()

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if not dict.__contains__(self, key):
            self[key] = default
        return self[key]

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def sorted_values(self) -> Iterator[Any]:
        """The items in range-key order."""
        return (self[key] for key in self._keys)

    def span(self, operator: str | None, values: list[Any]) -> tuple[int, int]:
        """Positions [lo, hi) of the keys that satisfy the key condition (casts of DynamoTypes)."""
        order = self._order
        if operator is None:
            return 0, len(order)
        if operator == "EQ":
            return bisect.bisect_left(order, values[0]), bisect.bisect_right(order, values[0])
        if operator == "LT":
            return 0, bisect.bisect_left(order, values[0])
        if operator == "LE":
            return 0, bisect.bisect_right(order, values[0])
        if operator == "GT":
            return bisect.bisect_right(order, values[0]), len(order)
        if operator == "GE":
            return bisect.bisect_left(order, values[0]), len(order)
        if operator == "BETWEEN":
            lo = bisect.bisect_left(order, values[0])
            return lo, max(lo, bisect.bisect_right(order, values[1]))
        # BEGINS_WITH: the keys with the prefix are contiguous from the prefix's position
        lo = hi = bisect.bisect_left(order, values[0])
        while hi < len(order) and order[hi].startswith(values[0]):
            hi += 1
        return lo, hi

    def key_at(self, position: int) -> Any:
        return self._keys[position]

    def own_copy_at(self, position: int) -> Any:
        """The item at ``position`` as an ``Item`` the caller owns (unpacked, or a deep copy)."""
        key = self._keys[position]
        value = dict.__getitem__(self, key)
        return moto_compact.unpack(value, self._hash, key) if type(value) is bytes else copy.deepcopy(value)

    def rank_position(self, rank: Any, *, after: bool) -> int:
        return (bisect.bisect_right if after else bisect.bisect_left)(self._order, rank)


def installed() -> bool:
    return bool(_saved)


def _patch(owner: Any, name: str, replacement: Any) -> None:
    _saved.append((owner, name, owner.__dict__[name]))
    setattr(owner, name, replacement)


def install() -> None:
    """Apply the patches (once per process; later calls do nothing)."""
    with _lock:
        if _saved:
            return
        _install_kinesis()
        _install_sequence_locks()
        _install_dynamodb()
        _install_stream_records()
        _install_sqs()
        _install_json()
        _install_routing()
        _install_backends()
        moto_compact.install_untracked(_patch)


def uninstall() -> None:
    """Restore moto's own methods (tables created meanwhile keep their sorted partitions)."""
    with _lock:
        while _saved:
            owner, name, original = _saved.pop()
            if original is None:  # added by install, not moto's: records compacted meanwhile still decode
                continue
            setattr(owner, name, original)


# --------------------------------------------------------------------------- Kinesis


def _install_kinesis() -> None:
    from moto.kinesis.models import Shard

    original_get_records = Shard.__dict__["get_records"]

    def get_max_sequence_number(self: Any) -> int:
        return next(reversed(self.records)) if self.records else 0

    def get_min_sequence_number(self: Any) -> int:
        return next(iter(self.records)) if self.records else 0

    def get_records(self: Any, last_sequence_id: str, limit: int | None) -> tuple[list[Any], int, int]:
        records = self.records
        after = int(last_sequence_id)
        if not records or (after + 1 not in records and after < next(reversed(records))):
            return original_get_records(self, last_sequence_id, limit)  # a gap: moto's scan
        newest = records[next(reversed(records))]
        found = []
        seq = after + 1
        while (limit is None or len(found) < limit) and seq in records:
            found.append(records[seq])
            seq += 1
        last = found[-1].sequence_number if found else after
        behind = newest.created_at - found[-1].created_at if found else 0.0
        return found, last, int(behind * 1000)

    _patch(Shard, "get_max_sequence_number", get_max_sequence_number)
    _patch(Shard, "get_min_sequence_number", get_min_sequence_number)
    _patch(Shard, "get_records", get_records)


# --------------------------------------------------------------------------- sequence numbers

_sequence_lock = threading.RLock()  # one for every shard: a number and its store are one step


def _install_sequence_locks() -> None:
    from moto.dynamodb.models.table import StreamShard
    from moto.kinesis.models import Shard

    original_put_record = Shard.__dict__["put_record"]
    original_add = StreamShard.__dict__["add"]

    def put_record(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _sequence_lock:
            return original_put_record(self, *args, **kwargs)

    def add(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _sequence_lock:
            return original_add(self, *args, **kwargs)

    _patch(Shard, "put_record", put_record)
    _patch(StreamShard, "add", add)


# --------------------------------------------------------------------------- DynamoDB


_PLAIN_TYPES = frozenset({"S", "B", "BOOL"})  # DynamoType.cast_value returns .value for these


def _install_dynamodb() -> None:
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models import table as table_module
    from moto.dynamodb.models.dynamo_type import DynamoType

    Table = table_module.Table
    original_init = Table.__dict__["__init__"]
    original_query = Table.__dict__["query"]
    original_update_item = DynamoDBBackend.__dict__["update_item"]

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        if self.range_key_attr:
            self.items = defaultdict(RangePartition)

    def all_items(self: Any) -> list[Any]:
        if not self.range_key_attr:
            return sorted(self.items.values(), key=lambda item: item.hash_key)
        found: list[Any] = []
        for hash_key in sorted(self.items):
            partition = self.items[hash_key]
            if isinstance(partition, RangePartition):
                found.extend(partition.sorted_values())
            else:
                found.extend(sorted(partition.values(), key=lambda item: item.range_key))
        return found

    def query(
        self: Any,
        hash_key: Any,
        range_comparison: str | None,
        range_objs: list[Any],
        limit: int,
        exclusive_start_key: dict[str, Any] | None,
        scan_index_forward: bool,
        projection_expressions: Any,
        index_name: str | None = None,
        consistent_read: bool = False,
        filter_expression: Any = None,
        hash_key_conditions: Any = None,
        range_key_conditions: Any = None,
        **filter_kwargs: Any,
    ) -> Any:
        operator = _OPERATORS.get(range_comparison.upper()) if range_comparison else None
        partition = self.items.get(hash_key) if hash_key is not None else None
        if (
            index_name
            or filter_kwargs
            or not self.range_key_attr
            or (range_comparison and operator is None)
            or (range_key_conditions and len(range_key_conditions) > 1)
            or not isinstance(partition, RangePartition)
        ):
            return original_query(
                self, hash_key, range_comparison, range_objs, limit, exclusive_start_key,
                scan_index_forward, projection_expressions, index_name=index_name,
                consistent_read=consistent_read, filter_expression=filter_expression,
                hash_key_conditions=hash_key_conditions, range_key_conditions=range_key_conditions,
                **filter_kwargs,
            )  # fmt: skip
        lo, hi = partition.span(operator, [obj.cast_value for obj in range_objs])
        if exclusive_start_key is not None:
            start = exclusive_start_key.get(self.range_key_attr)
            if start is not None:
                rank = (start if isinstance(start, DynamoType) else DynamoType(start)).cast_value
                if scan_index_forward is False:
                    hi = min(hi, partition.rank_position(rank, after=False))
                else:
                    lo = max(lo, partition.rank_position(rank, after=True))
        positions = range(hi - 1, lo - 1, -1) if scan_index_forward is False else range(lo, hi)
        results: list[Any] = []
        size = 0
        last_evaluated_key = None
        for position in positions:
            if len(results) == limit:
                last_evaluated_key = self._get_last_evaluated_key(results[-1], None)
                break
            item = partition.own_copy_at(position)
            item_size = item.size()
            if size + item_size > table_module.RESULT_SIZE_LIMIT:
                last_evaluated_key = self._get_last_evaluated_key(results[-1], None)
                break
            results.append(item)
            size += item_size
        else:  # moto answers a full page with a key when the partition goes on past the condition
            beyond = lo > 0 if scan_index_forward is False else hi < len(partition)
            if results and len(results) == limit and beyond:
                last_evaluated_key = self._get_last_evaluated_key(results[-1], None)
        scanned_count = len(results)  # each result is the caller's own copy already
        if filter_expression is not None:
            results = [item for item in results if filter_expression.expr(item)]
        if projection_expressions:
            results = [item.project(projection_expressions) for item in results]
        return results, scanned_count, last_evaluated_key

    def update_item(self: Any, table_name: str, *args: Any, **kwargs: Any) -> Any:
        item = original_update_item(self, table_name, *args, **kwargs)
        partition = self.get_table(table_name).items.get(item.hash_key)
        if isinstance(partition, RangePartition) and dict.__contains__(partition, item.range_key):
            partition[item.range_key] = item  # moto changed the Item it read; a read is a copy here
        return item

    original_hash = DynamoType.__dict__["__hash__"]
    original_eq = DynamoType.__dict__["__eq__"]

    def __hash__(self: Any) -> int:  # moto's own value: for these types cast_value is the value
        return hash((self.type, self.value)) if self.type in _PLAIN_TYPES else original_hash(self)

    def __eq__(self: Any, other: Any) -> bool:
        if self.type in _PLAIN_TYPES and type(other) is DynamoType and other.type in _PLAIN_TYPES:
            return bool(self.type == other.type and self.value == other.value)
        return bool(original_eq(self, other))

    _patch(DynamoType, "__hash__", __hash__)
    _patch(DynamoType, "__eq__", __eq__)
    _patch(Table, "__init__", __init__)
    _patch(Table, "all_items", all_items)
    _patch(Table, "query", query)
    _patch(DynamoDBBackend, "update_item", update_item)


def _install_stream_records() -> None:
    import json

    from moto.dynamodb.models.table import StreamRecord

    original_init = StreamRecord.__dict__["__init__"]

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        record = self.__dict__["record"]
        body = record.get("dynamodb", {})
        created = body.pop("ApproximateCreationDateTime", None)
        try:
            blob = json.dumps(record, separators=(",", ":")).encode()
        except (TypeError, ValueError):  # not plain JSON: keep moto's dict
            if created is not None:
                body["ApproximateCreationDateTime"] = created
            return
        del self.__dict__["record"]
        self._stp_blob, self._stp_created = blob, created

    def __getattr__(self: Any, name: str) -> Any:
        if name != "record" or "_stp_blob" not in self.__dict__:
            raise AttributeError(name)
        record = json.loads(self._stp_blob)
        if self._stp_created is not None:
            record["dynamodb"]["ApproximateCreationDateTime"] = self._stp_created
        return record

    _patch(StreamRecord, "__init__", __init__)
    StreamRecord.__getattr__ = __getattr__  # type: ignore[attr-defined]
    _saved.append((StreamRecord, "__getattr__", None))


# --------------------------------------------------------------------------- JSON answers

FAST_JSON = frozenset(
    {
        ("dynamodb", "Query"),
        ("dynamodb", "Scan"),
        ("dynamodb", "BatchGetItem"),
        ("dynamodbstreams", "GetRecords"),
    }
)


def _json_default(value: Any) -> Any:
    import datetime as dt
    from decimal import Decimal

    if isinstance(value, dt.datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)
        return int(aware.timestamp() * 1000) / 1000  # milliseconds, as moto's serializer writes them
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes | bytearray):  # blobs are base64 text in the JSON protocol
        import base64

        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def _install_json() -> None:
    import json

    from moto.core.responses import ActionResult

    original = ActionResult.__dict__["execute_result"]

    def execute_result(self: Any, context: Any) -> Any:
        key = (context.service_model.service_name, context.operation_model.name)
        result = self.result
        if key in FAST_JSON and isinstance(result, dict) and not isinstance(result, Exception):
            body = json.dumps(
                {k: v for k, v in result.items() if v is not None},
                default=_json_default,
                separators=(",", ":"),
            )
            return 200, {"Content-Type": "application/x-amz-json-1.0"}, body
        return original(self, context)

    _patch(ActionResult, "execute_result", execute_result)


# --------------------------------------------------------------------------- SQS


def _install_sqs() -> None:
    from moto.core.utils import unix_time_millis
    from moto.sqs.models import Queue

    def messages(self: Any) -> list[Any]:
        now = unix_time_millis()
        return [m for m in self._messages if now > m.visible_at and not now < m.delayed_until]

    def approximate_number_of_messages(self: Any) -> int:
        now = unix_time_millis()
        return sum(1 for m in self._messages if now > m.visible_at and not now < m.delayed_until)

    def approximate_number_of_messages_delayed(self: Any) -> int:
        now = unix_time_millis()
        return sum(1 for m in self._messages if now < m.delayed_until)

    def approximate_number_of_messages_not_visible(self: Any) -> int:
        now = unix_time_millis()
        return sum(1 for m in self._messages if not now > m.visible_at)

    for function in (
        messages,
        approximate_number_of_messages,
        approximate_number_of_messages_delayed,
        approximate_number_of_messages_not_visible,
    ):
        _patch(Queue, function.__name__, property(function))


# --------------------------------------------------------------------------- routing and backends


def _install_routing() -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    original: Callable[[Any, str | None], Any] = DomainDispatcherApplication.__dict__["get_backend_for_host"]
    hosts: dict[str | None, Any] = {}

    def get_backend_for_host(self: Any, host: str | None) -> Any:
        try:
            return hosts[host]
        except KeyError:
            backend = hosts[host] = original(self, host)
            return backend

    _patch(DomainDispatcherApplication, "get_backend_for_host", get_backend_for_host)


def _install_backends() -> None:
    from moto.core.base_backend import BackendDict

    original = BackendDict.__dict__["_create_account_specific_backend"]

    def _create_account_specific_backend(self: Any, account_id: str) -> None:
        if not dict.__contains__(self, account_id):  # exists: registered when it was created
            original(self, account_id)

    _patch(BackendDict, "_create_account_specific_backend", _create_account_specific_backend)


def _rebuilt_partition(
    hash_key: Any, keys: list[Any], order: list[Any], stored: dict[Any, Any]
) -> RangePartition:
    """A :class:`RangePartition` from its saved parts, without re-sorting or re-packing anything."""
    partition = RangePartition()
    partition._restore(hash_key, keys, order, stored)
    return partition
