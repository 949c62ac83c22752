"""Put quotes on the Kinesis stream: batched PutRecords within AWS limits, streaming, rate-capped.

``produce(quotes)`` consumes any iterable of :class:`~helpers.core.quotes.Quote` chunk by chunk
(memory holds one batch, whatever the number of records), sends batches of at most
:data:`MAX_RECORDS_PER_PUT` records and :data:`MAX_BYTES_PER_PUT` bytes with
``PartitionKey = symbol``, packs up to :data:`AGGREGATE_QUOTES` consecutive quotes of a symbol
into one Kinesis record (a JSON text sequence, RFC 7464), resends only the records PutRecords
reports as failed (exponential backoff: ``aws.backoff_seconds``) while keeping each symbol's
order (:func:`_put_batch`), and returns a :class:`ProduceSummary` of what was sent.
Whole-call errors (throttling, 5xx) are retried by botocore's ``standard`` mode.

No record waits long in a partial batch: a batch is sent when it is full, when the source has
nothing new, or at the latest :data:`LINGER_SECONDS` after its first record was read, whichever
comes first -- a busy source gets full batches, a paced or polling one (a replay at
``rate``, live quotes) gets its records on the stream within that bound. ``put_raw`` sends arbitrary
bytes (deliberately malformed records for the quarantine demo and tests).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import itertools
import json
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from helpers.core.batch_plan import RS
from helpers.core.batch_plan import aggregate as aggregate_data
from helpers.core.errors import ProducerError
from helpers.core.quotes import Quote, utc_now_timestamp
from helpers.core.shard_limits import ShardPacer, ShardRange
from helpers.pipeline import aws
from helpers.pipeline.config import Settings, load_settings

__all__ = [
    "AGGREGATE_BYTES",
    "AGGREGATE_QUOTES",
    "LINGER_SECONDS",
    "MAX_BYTES_PER_PUT",
    "MAX_PARTITION_KEY_CHARS",
    "MAX_RECORDS_PER_PUT",
    "MAX_RECORD_BYTES",
    "ProduceSummary",
    "malformed_records",
    "produce",
    "put_raw",
]

log = logging.getLogger(__name__)

# PutRecords limits: 500 entries; 1 MiB per entry and 5 MiB per request, partition keys included.
MAX_RECORDS_PER_PUT = 500
MAX_RECORD_BYTES = 1024 * 1024
MAX_BYTES_PER_PUT = 5 * 1024 * 1024
MAX_PARTITION_KEY_CHARS = 256
DEFAULT_MAX_ATTEMPTS = 8  # PutRecords calls per entry, the first one included
BACKOFF_BASE_SECONDS = 0.05
BACKOFF_CAP_SECONDS = 2.0
LINGER_SECONDS = 0.1  # the longest a record waits in a partial batch before it is sent
AGGREGATE_QUOTES = 25  # quotes of one symbol packed into one Kinesis record (NDJSON), at most
AGGREGATE_BYTES = 32 * 1024  # and at most this many bytes of them
PREFETCH_RECORDS = 2 * MAX_RECORDS_PER_PUT  # bound of the read-ahead queue

Entry = tuple[bytes, str, str | None]  # (data, partition key, quote timestamp)


@dataclass
class ProduceSummary:
    """What one ``produce``/``put_raw`` call sent (measured from the PutRecords answers)."""

    stream: str
    records: int = 0
    stream_records: int = 0  # Kinesis records: an aggregate holds several quotes
    batches: int = 0
    calls: int = 0
    retried: int = 0
    failed: int = 0
    bytes: int = 0
    seconds: float = 0.0
    per_key: dict[str, int] = field(default_factory=dict)
    shards: dict[str, int] = field(default_factory=dict)
    first_timestamp: str | None = None
    last_timestamp: str | None = None

    @property
    def records_per_second(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["records_per_second"] = round(self.records_per_second, 1)
        data["seconds"] = round(self.seconds, 3)
        return data


# --------------------------------------------------------------------------- public API


def produce(
    quotes: Iterable[Quote],
    settings: Settings | None = None,
    *,
    kinesis: Any = None,
    rate: float | None = None,
    progress: bool = False,
    total: int | None = None,
    duration: float | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    stamp: bool = True,
    linger: float | None = LINGER_SECONDS,
    aggregate: int = AGGREGATE_QUOTES,
    sleep: Callable[[float], Any] = time.sleep,
) -> ProduceSummary:
    """Send quotes to the stream; raises :class:`ProducerError` if entries still fail after retries.

    ``rate`` caps records/s; ``duration`` stops reading the source after that many seconds;
    ``stamp`` sets ``produced_at`` to the moment each quote is taken from the source;
    ``linger`` bounds how long a record waits in a partial batch (see the module docstring);
    ``linger=None`` reads the source in the calling thread (no read-ahead, no time bound: a
    batch is sent when full or at the end, or when ``rate`` makes the sender wait);
    ``aggregate`` is how many consecutive quotes of a symbol may share one Kinesis record
    (NDJSON lines; 1: one quote per record), see :func:`_put_batch`.
    """
    if not (isinstance(aggregate, int) and 1 <= aggregate <= MAX_RECORDS_PER_PUT):
        raise ProducerError(f"aggregate={aggregate!r} must be a whole number of quotes from 1 to 500")

    def entries() -> Iterator[Entry]:
        for quote in quotes:
            if stamp:
                quote = dataclasses.replace(quote, produced_at=utc_now_timestamp())
            yield quote.to_json(), quote.symbol, quote.timestamp

    return _send(
        entries(), settings, kinesis, rate, progress, total, duration, max_attempts, linger, aggregate, sleep
    )


def put_raw(
    records: Iterable[bytes],
    settings: Settings | None = None,
    *,
    partition_key: str = "MALFORMED",
    kinesis: Any = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    sleep: Callable[[float], Any] = time.sleep,
) -> ProduceSummary:
    """Send raw bytes unchanged (e.g. deliberately malformed records), all under one partition key."""
    entries = ((bytes(data), partition_key, None) for data in records)
    return _send(entries, settings, kinesis, None, False, None, None, max_attempts, None, 1, sleep)


def malformed_records() -> list[tuple[str, bytes]]:
    """A handful of deliberately invalid records, ``(expected quarantine reason, bytes)``.

    Each is a valid quote with one defect, so the quarantine demo shows one reason per defect.
    """
    base = {
        "symbol": "AAPL",
        "timestamp": "2026-07-29T13:30:00Z",
        "price": 190.5,
        "previous_close": 189.0,
        "open": 190.0,
        "high": 191.0,
        "low": 189.5,
        "volume": 1000,
        "source": "malformed-demo",
    }

    def variant(**changes: Any) -> bytes:
        record = {**base, **changes}
        for name in [k for k, v in changes.items() if v is _DROP]:
            del record[name]
        return json.dumps(record).encode("utf-8")

    return [
        ("bad_json", b'{"symbol": "AAPL", "price": 190.5,'),
        ("not_utf8", b'{"symbol": "AAPL", "price": \xff\xfe}'),
        ("invalid_price", variant(price=float("nan"))),
        ("invalid_price", variant(price=-1.0)),
        ("invalid_price", variant(price=True)),
        ("missing_field", variant(volume=_DROP)),
        ("invalid_symbol", variant(symbol="AAPL\u200b")),
        ("invalid_symbol", variant(symbol="AAPL ")),
    ]


_DROP = object()


# --------------------------------------------------------------------------- engine


class _Batch:
    def __init__(self) -> None:
        self.entries: list[Entry] = []
        self.bytes = 0

    def fits(self, size: int) -> bool:
        return len(self.entries) < MAX_RECORDS_PER_PUT and self.bytes + size <= MAX_BYTES_PER_PUT

    def add(self, entry: Entry, size: int) -> None:
        self.entries.append(entry)
        self.bytes += size


def _entry_size(entry: Entry, stream: str) -> int:
    data, key, _ = entry
    if not key or len(key) > MAX_PARTITION_KEY_CHARS:
        raise ProducerError(
            f"partition key {key!r} for stream {stream} must be 1-{MAX_PARTITION_KEY_CHARS} characters"
        )
    size = len(data) + len(key.encode("utf-8"))
    if size > MAX_RECORD_BYTES:
        raise ProducerError(
            f"a record of {size} bytes (key {key!r}) exceeds Kinesis' {MAX_RECORD_BYTES}-byte "
            f"limit per record on stream {stream}; split or shrink it"
        )
    return size


def _send(
    entries: Iterator[Entry],
    settings: Settings | None,
    kinesis: Any,
    rate: float | None,
    progress: bool,
    total: int | None,
    duration: float | None,
    max_attempts: int,
    linger: float | None,
    aggregate: int,
    sleep: Callable[[float], Any],
) -> ProduceSummary:
    s = settings or load_settings()
    kinesis = kinesis or aws.client("kinesis", s)
    if max_attempts < 1:
        raise ProducerError(f"max_attempts={max_attempts!r} must be >= 1")
    if rate is not None and not rate > 0:
        raise ProducerError(f"rate={rate!r} must be a positive number of records per second, or None")
    summary = ProduceSummary(stream=s.stream_name)
    started = time.monotonic()
    deadline = None if duration is None else started + duration
    bar = _progress(total) if progress else None
    batch = _Batch()
    opened = 0.0  # when the current batch's first record was read
    pacer = shard_pacer(kinesis, s.stream_name, sleep)

    def flush() -> None:
        nonlocal batch
        if batch.entries:
            _put_batch(kinesis, s.stream_name, batch.entries, summary, max_attempts, sleep, aggregate, pacer)
            if bar is not None:
                bar.update(len(batch.entries))
            batch = _Batch()

    def wait_bound() -> float | None:
        """How long the reader may wait for the next record before the batch is due."""
        if linger is None:
            return None
        return max(0.0, opened + linger - time.monotonic()) if batch.entries else linger

    try:
        with _reader(entries, wait_bound) as items:
            for item in items:
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if item is None:  # the source is idle or the batch is due: do not hold records back
                    flush()
                    continue
                size = _entry_size(item, s.stream_name)
                if rate is not None:
                    due = started + (summary.records + len(batch.entries)) / rate
                    if due > time.monotonic():
                        if linger is None or (batch.entries and due > opened + linger):
                            flush()  # sending now keeps the wait bound
                        sleep(max(0.0, due - time.monotonic()))
                if not batch.fits(size) or (
                    linger is not None and batch.entries and time.monotonic() >= opened + linger
                ):
                    flush()
                if not batch.entries:
                    opened = time.monotonic()
                batch.add(item, size)
        flush()
    finally:
        summary.seconds = time.monotonic() - started
        if bar is not None:
            bar.close()
    log.info(
        "put %d records on %s in %d batches (%d calls, %d retried) in %.2f s",
        summary.records, s.stream_name, summary.batches, summary.calls, summary.retried, summary.seconds,
    )  # fmt: skip
    return summary


def _put_batch(
    kinesis: Any,
    stream: str,
    entries: list[Entry],
    summary: ProduceSummary,
    max_attempts: int,
    sleep: Callable[[float], Any],
    aggregate: int = 1,
    pacer: ShardPacer | None = None,
) -> None:
    """One batch, in rounds that keep each partition key's order through retries.

    PutRecords does not keep order across a partial failure: a resent entry lands after the later
    entries of its key that succeeded in the same call. So each round holds at most ONE Kinesis
    record per key (many keys per call), and a key's next record is sent only once the previous
    one is on the stream; a failed one is resent (with backoff) before its key's next. Bars of a
    symbol therefore reach Kinesis, and the pipeline, in the order the source gave them, which
    the crossover alerts need (:mod:`helpers.pipeline.trend`).

    That record is an **aggregate**: up to ``aggregate`` (:data:`AGGREGATE_QUOTES`) consecutive
    quotes of the key, at most :data:`AGGREGATE_BYTES`, as a JSON text sequence (RFC 7464: each
    quote after a ``0x1E`` record separator, ending in a newline; the Kinesis Producer Library
    aggregates user records the same way, in its own format). It succeeds or fails whole, so
    order holds within it too, and a symbol sent in bulk takes one call per ``aggregate`` quotes
    instead of one per quote; the processor splits it (:func:`helpers.core.batch_plan.decode`).
    A lone quote stays plain JSON; data holding ``0x1E`` is never aggregated.
    """
    summary.batches += 1
    queues: dict[str, collections.deque[Entry]] = {}
    for entry in entries:
        queues.setdefault(entry[1], collections.deque()).append(entry)
    attempts: Counter[str] = Counter()  # failed attempts of each key's head record
    codes: Counter[str] = Counter()
    while queues:
        runs = [_run(q, aggregate) for q in queues.values()][:MAX_RECORDS_PER_PUT]
        retry = max((attempts[run[0][1]] for run in runs), default=0)
        if retry:
            summary.retried += sum(len(run) for run in runs if attempts[run[0][1]])
            sleep(aws.backoff_seconds(retry, base=BACKOFF_BASE_SECONDS, cap=BACKOFF_CAP_SECONDS))
        packed = [_packed(run) for run in runs]
        if pacer is not None:  # each shard's share of the call fits its write limits
            pacer.before_put((key, len(data) + len(key.encode())) for data, key, _ in packed)
        response = _put_records(kinesis, stream, packed)
        summary.calls += 1
        codes = Counter()
        for run, result in zip(runs, response["Records"], strict=True):
            key = run[0][1]
            if result.get("ErrorCode"):
                codes[str(result["ErrorCode"])] += 1
                attempts[key] += 1
                if attempts[key] >= max_attempts:
                    summary.failed += sum(len(q) for q in queues.values())
                    raise ProducerError(
                        f"a record (key {key!r}) could not be put on stream {stream} after {max_attempts} "
                        f"attempts (error codes {dict(codes)}); {summary.failed} record(s) not sent; lower "
                        "the rate or add shards, then send them again"
                    )
                continue
            attempts.pop(key, None)
            queue_ = queues[key]
            for _ in run:
                queue_.popleft()
            if not queue_:
                del queues[key]
            summary.stream_records += 1
            shard = str(result.get("ShardId", ""))
            for data, _, timestamp in run:
                summary.records += 1
                summary.bytes += len(data)
                summary.per_key[key] = summary.per_key.get(key, 0) + 1
                summary.shards[shard] = summary.shards.get(shard, 0) + 1
                if timestamp is not None:
                    summary.first_timestamp = min(timestamp, summary.first_timestamp or timestamp)
                    summary.last_timestamp = max(timestamp, summary.last_timestamp or timestamp)
        if codes:
            log.debug(
                "PutRecords on %s: %d of %d entries failed (%s)",
                stream,
                sum(codes.values()),
                len(runs),
                codes,
            )


def shard_pacer(kinesis: Any, stream: str, sleep: Callable[[float], Any] = time.sleep) -> ShardPacer | None:
    """A pacer holding puts on ``stream`` under each open shard's write limits (one ListShards).

    Without it a bulk send (``SPEED=0``) would rely on throttling and retries: on AWS a shard
    takes 1,000 records and 1 MiB per second. ``None`` when the shards cannot be listed (the
    limits are then left to retries).
    """
    shards: list[ShardRange] = []
    try:
        answer = kinesis.list_shards(StreamName=stream)
        while True:
            for shard in answer.get("Shards", []):
                if "EndingSequenceNumber" in shard.get("SequenceNumberRange", {}):
                    continue  # closed by a reshard: takes no writes
                keys = shard["HashKeyRange"]
                shards.append(
                    ShardRange(shard["ShardId"], int(keys["StartingHashKey"]), int(keys["EndingHashKey"]))
                )
            if not answer.get("NextToken"):
                break
            answer = kinesis.list_shards(NextToken=answer["NextToken"])
    except (AttributeError, ClientError, BotoCoreError) as err:
        log.info("not pacing puts on %s by shard: its shards could not be listed (%s)", stream, err)
        return None
    return ShardPacer(shards, sleep=sleep)


def _run(queue_: collections.deque[Entry], aggregate: int) -> list[Entry]:
    """The key's next Kinesis record: its head entry and the consecutive ones that fit with it."""
    run = [queue_[0]]
    size = len(queue_[0][0]) + 2
    if aggregate > 1 and RS not in queue_[0][0]:
        for entry in itertools.islice(queue_, 1, aggregate):
            size += len(entry[0]) + 2
            if size > AGGREGATE_BYTES or RS in entry[0]:
                break
            run.append(entry)
    return run


def _packed(run: list[Entry]) -> Entry:
    """One PutRecords entry holding the run's quotes (a JSON text sequence when there are several)."""
    first = run[0]
    return first if len(run) == 1 else (aggregate_data(data for data, _, _ in run), first[1], first[2])


def _put_records(kinesis: Any, stream: str, entries: list[Entry]) -> Any:
    """One PutRecords call; whole-call errors become :class:`ProducerError` with a hint."""
    request = [{"Data": data, "PartitionKey": key} for data, key, _ in entries]
    try:
        return kinesis.put_records(StreamName=stream, Records=request)
    except ClientError as err:
        hint = "run 01_provision first" if aws.is_missing(err) else "check the stream"
        if aws.error_code(err) in ("AccessDeniedException", "AccessDenied"):
            hint = "the credentials' policy must allow kinesis:PutRecords on it (deploy/runner-policy.json)"
        raise ProducerError(
            f"PutRecords on stream {stream} failed: {aws.error_code(err)}: {err}; {hint}"
        ) from err
    except BotoCoreError as err:
        raise ProducerError(f"PutRecords on stream {stream} failed: {err}; is the endpoint up?") from err


# --------------------------------------------------------------------------- source reading


_END = object()


@contextlib.contextmanager
def _reader(
    entries: Iterator[Entry], wait_bound: Callable[[], float | None]
) -> Iterator[Iterator[Entry | None]]:
    """Iterate the source; unless ``wait_bound()`` is None, read ahead in a thread and yield None
    when no record came within ``wait_bound()`` seconds."""
    if wait_bound() is None:
        yield iter(entries)
        return
    buffer: queue.Queue[Any] = queue.Queue(maxsize=PREFETCH_RECORDS)
    stop = threading.Event()

    def pump() -> None:
        try:
            for entry in entries:
                while not stop.is_set():
                    try:
                        buffer.put(entry, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            item: Any = _END
        except BaseException as err:  # handed to the consumer, which re-raises it
            item = err
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    thread = threading.Thread(target=pump, name="producer-source", daemon=True)
    thread.start()

    def items() -> Iterator[Entry | None]:
        while True:
            try:
                item = buffer.get(timeout=wait_bound())
            except queue.Empty:
                yield None  # idle or due: flush, check the deadline, wait again
                continue
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    try:
        yield items()
    finally:
        stop.set()
        thread.join(timeout=1.0)


class LineProgress:
    """Progress as a few plain lines on stdout: at each quarter of ``total`` (or every
    ``every_seconds`` when the total is unknown) and a last line with the rate."""

    def __init__(
        self,
        total: int | None,
        desc: str = "PutRecords",
        *,
        every_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        write: Callable[[str], Any] = print,
    ) -> None:
        self.total, self.desc, self.every, self.clock, self.write = total, desc, every_seconds, clock, write
        self.n, self.started = 0, clock()
        self._next_quarter, self._last_line = 1, self.started

    def update(self, n: int) -> None:
        self.n += n
        now = self.clock()
        if self.total:
            if self.n >= self.total:
                return  # close() says it, with the rate
            quarter = 4 * self.n // self.total
            if quarter >= self._next_quarter:
                self._next_quarter = quarter + 1
                share = 100 * self.n // self.total
                self.write(f"{self.desc}: {self.n:,} of {self.total:,} records ({share} %)")
        elif now - self._last_line >= self.every:
            self._last_line = now
            self.write(f"{self.desc}: {self.n:,} records in {now - self.started:.0f} s")

    def close(self) -> None:
        seconds = max(self.clock() - self.started, 1e-9)
        of = f" of {self.total:,}" if self.total else ""
        self.write(f"{self.desc}: {self.n:,}{of} records in {seconds:.1f} s ({self.n / seconds:,.0f} rec/s)")


def _progress(total: int | None) -> Any:
    """tqdm's notebook widget in JupyterLab when ipywidgets is installed; plain lines otherwise
    and in headless runs (the workbook runner sets ``STP_REPORTS_DIR``), never a text bar on stderr."""
    import importlib.util
    import os

    from helpers.notebook.report import REPORTS_ENV

    if importlib.util.find_spec("ipywidgets") is not None and not os.environ.get(REPORTS_ENV):
        from tqdm.auto import tqdm

        return tqdm(total=total, unit="rec", desc="PutRecords")
    return LineProgress(total)
