"""One shard of one stream mapping: gather a batch, invoke, checkpoint, retry, bisect, discard.

The rules are Lambda's for Kinesis and DynamoDB Streams:

* a batch holds up to ``BatchSize`` records (and at most 6 MB); with
  ``MaximumBatchingWindowInSeconds`` the poller keeps reading until the batch is full or the
  window, counted from the first record seen, has passed;
* ``FilterCriteria`` drop the records no filter matches before batching (:mod:`.filters`);
* success checkpoints the batch's last sequence number; one batch at a time per shard, in order;
* with ``ReportBatchItemFailures`` a ``batchItemFailures`` answer checkpoints just before the
  lowest failed sequence number and retries from there; an empty or null list is success, an
  unknown, empty or missing ``itemIdentifier`` fails the whole batch;
* a function error (exception, timeout, crash) with ``BisectBatchOnFunctionError`` splits the
  batch in two halves, processed in order; splitting does not use up the retry quota;
* otherwise each retry counts against ``MaximumRetryAttempts`` (-1: no limit); once exceeded, or
  once records are older than ``MaximumRecordAgeInSeconds``, the batch's metadata goes to
  ``DestinationConfig.OnFailure`` (if any) and the checkpoint moves past it;
* with IAM enforced the shard is read only while the function's role may read the source
  (:func:`deploy.local.access.source_read_problem`); otherwise the mapping reports Lambda's
  ``PROBLEM: The provided execution role does not have permissions ...`` and tries again.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deploy.local import access
from deploy.local._lambda.destinations import RECORD_AGE_EXCEEDED, RETRIES_EXHAUSTED, failure_record
from deploy.local._lambda.filters import FilterError, compile_filters
from deploy.local._lambda.models import FunctionSnapshot, MappingConfig, Outcome
from deploy.local._lambda.sources import SourceRecord, StreamSource
from deploy.local._lambda.state import RuntimeState, ShardState

log = logging.getLogger(__name__)

POLL_INTERVAL_SECONDS = 0.25
MAX_FILTERED_READS = 20  # reads per poll while every record read is filtered out
WINDOW_STEP_SECONDS = 0.05
MAX_PAYLOAD_BYTES = 6_291_456  # synchronous invocation payload limit
RETRY_BACKOFF_SECONDS = 0.2
MAX_RETRY_BACKOFF_SECONDS = 5.0
UNAVAILABLE_BACKOFF_SECONDS = 1.0
READ_CHECK_SECONDS = 1.0  # how often a poller asks IAM whether the function's role may read the source


@dataclass
class Batch:
    records: list[SourceRecord]
    attempts: int = 0  # retries used
    invokes: int = 0  # invocations with exactly (a superset of) these records
    last_outcome: Outcome | None = None


@dataclass(frozen=True)
class PollerContext:
    """What a shard poller needs from the runtime, as plain callables."""

    mapping: Callable[[], MappingConfig | None]
    function: Callable[[str], FunctionSnapshot | None]
    invoke: Callable[[FunctionSnapshot, dict[str, Any]], Outcome]
    send_failure: Callable[[str, dict[str, Any], str], bool]


def initial_position(cfg: MappingConfig, source: StreamSource, shard_id: str, state: RuntimeState) -> int:
    """The checkpoint a new (mapping, shard) starts from, per ``StartingPosition``."""
    if cfg.starting_position == "TRIM_HORIZON":
        return source.trim_horizon(shard_id)
    if cfg.starting_position == "AT_TIMESTAMP" and cfg.starting_timestamp is not None:
        return source.at_timestamp(shard_id, cfg.starting_timestamp)
    recorded, position = state.created_position(cfg.uuid, shard_id)
    if recorded:  # LATEST as of the mapping's creation; shards born later from their start
        return position if position is not None else source.trim_horizon(shard_id)
    return source.latest(shard_id)


def item_failure_index(result: Any, records: list[SourceRecord]) -> int | None:
    """Index of the lowest failed record in a ``batchItemFailures`` answer; None if all succeeded.

    Raises ValueError for an answer Lambda treats as a complete failure.
    """
    if not isinstance(result, dict):
        return None
    failures = result.get("batchItemFailures")
    if not failures:
        return None
    if not isinstance(failures, list):
        raise ValueError("batchItemFailures is not a list")
    positions = {str(r.seq): i for i, r in enumerate(records)}
    lowest: int | None = None
    for failure in failures:
        identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
        if not isinstance(identifier, str) or identifier not in positions:
            raise ValueError(f"invalid itemIdentifier {identifier!r}")
        lowest = positions[identifier] if lowest is None else min(lowest, positions[identifier])
    return lowest


class ShardPoller(threading.Thread):
    """Polls one shard for one mapping until stopped, the mapping is deleted or disabled."""

    def __init__(
        self, cfg: MappingConfig, shard_id: str, source: StreamSource, state: ShardState, ctx: PollerContext
    ):
        super().__init__(name=f"lambda-esm-{cfg.uuid[:8]}-{shard_id[-12:]}", daemon=True)
        self.uuid = cfg.uuid
        self.shard_id = shard_id
        self.source = source
        self.state = state
        self.ctx = ctx
        self.stop_event = threading.Event()
        self.wake = threading.Event()  # set when the source has new records (or on stop)
        self.pending: collections.deque[Batch] = collections.deque()
        self.generation = source.generation()
        self._filter_key = ""
        self._filter: Callable[[dict[str, Any]], bool] | None = None
        self._read_denied: str | None = None
        self._read_checked_until = 0.0

    def stop(self) -> None:
        self.stop_event.set()
        self.wake.set()

    def run(self) -> None:
        while not self.stop_event.is_set():
            cfg = self.ctx.mapping()
            if cfg is None or not cfg.enabled:
                return
            try:
                busy = self.step(cfg)
            except Exception as err:  # keep polling: a bug here must not stop the shard forever
                log.exception("mapping %s shard %s: poll failed", self.uuid, self.shard_id)
                self.state.last_error = f"{type(err).__name__}: {err}"
                busy = False
            if not busy:
                self.wake.wait(POLL_INTERVAL_SECONDS)
                self.wake.clear()

    # --- one step ---------------------------------------------------------------------------
    def step(self, cfg: MappingConfig) -> bool:
        """Handle at most one batch; False when there was nothing to do (the caller waits)."""
        self.state.last_poll = time.time()
        self._check_generation()
        if not self.pending:
            problem = self._read_problem(cfg)
            if problem is not None:  # the role may not read the source: no records at all
                self.state.last_error = problem
                self.stop_event.wait(UNAVAILABLE_BACKOFF_SECONDS)
                return False
            records = self._gather(cfg)
            if not records:
                self.state.iterator_age_ms = 0
                return False
            self.pending.append(Batch(records))
        batch = self.pending[0]
        if not self._drop_expired(cfg, batch):
            self.pending.popleft()
            return True
        function = self.ctx.function(cfg.function_arn)
        if function is None:  # before invocation: retried, no retry quota used
            self.state.last_error = f"function {cfg.function_arn} not found"
            self.stop_event.wait(UNAVAILABLE_BACKOFF_SECONDS)
            return False
        now = time.time()
        self.state.iterator_age_ms = int((now - batch.records[-1].arrival) * 1000)
        if batch.invokes == 0 and batch.attempts == 0:
            self.state.last_latency_ms = round((now - batch.records[-1].arrival) * 1000, 1)
        outcome = self.ctx.invoke(function, self._event(cfg, function, batch.records))
        if outcome.status == "unavailable" or self.stop_event.is_set():
            self.stop_event.wait(UNAVAILABLE_BACKOFF_SECONDS)
            return False
        batch.invokes += 1
        batch.last_outcome = outcome
        self.state.invocations += 1
        self.state.last_batch_size = len(batch.records)
        self._settle(cfg, batch, outcome)
        return True

    def _settle(self, cfg: MappingConfig, batch: Batch, outcome: Outcome) -> None:
        failed_from: int | None = 0
        if outcome.ok:
            try:
                failed_from = (
                    item_failure_index(outcome.result(), batch.records) if cfg.report_item_failures else None
                )
            except ValueError as err:
                self.state.last_error = f"batch failed: {err}"
        else:
            self.state.function_errors += 1
            error = outcome.error or {}
            self.state.last_error = (
                f"{error.get('errorType', outcome.status)}: {error.get('errorMessage', '')}"[:500]
            )
        if failed_from is None:
            self._done(batch.records)
            self.state.batches_ok += 1
            self.pending.popleft()
            return
        if outcome.ok and failed_from > 0:  # partial success: keep what worked
            self.state.partial_failures += 1
            self._done(batch.records[:failed_from])
            batch.records = batch.records[failed_from:]
        elif not outcome.ok and cfg.bisect and len(batch.records) > 1:
            middle = len(batch.records) // 2
            self.pending.popleft()
            self.pending.extendleft(
                [Batch(batch.records[middle:], batch.attempts), Batch(batch.records[:middle], batch.attempts)]
            )
            self.state.bisections += 1
            return
        batch.attempts += 1
        if 0 <= cfg.max_retries < batch.attempts:
            self._discard(cfg, batch.records, RETRIES_EXHAUSTED, outcome, batch.invokes)
            self.pending.popleft()
            return
        self.state.retries += 1
        backoff = min(MAX_RETRY_BACKOFF_SECONDS, RETRY_BACKOFF_SECONDS * 2 ** (batch.attempts - 1))
        self.stop_event.wait(backoff)

    # --- helpers ----------------------------------------------------------------------------
    def _read_problem(self, cfg: MappingConfig) -> str | None:
        """With IAM enforced, why the function's role may not read the source (checked each second)."""
        now = time.monotonic()
        if now < self._read_checked_until:
            return self._read_denied
        function = self.ctx.function(cfg.function_arn)
        problem = None
        if function is not None:
            why = access.source_read_problem(function.role, cfg.source_kind, cfg.source_arn)
            problem = f"PROBLEM: {why} ({function.role})" if why else None
        if problem is not None and problem != self._read_denied:
            log.warning("mapping %s: %s", self.uuid, problem)
        if problem is None and self._read_denied is not None and self.state.last_error == self._read_denied:
            self.state.last_error = None  # fixed: the mapping reads again
        self._read_denied, self._read_checked_until = problem, now + READ_CHECK_SECONDS
        return problem

    def _check_generation(self) -> None:
        """A stream deleted and re-created under the same ARN starts over from its beginning."""
        generation = self.source.generation()
        if generation is None or generation == self.generation:
            return
        if self.generation is not None:
            log.warning(
                "mapping %s: %s was re-created; reading it from the start", self.uuid, self.source.arn
            )
            self.pending.clear()
            self.state.checkpoint = self.source.trim_horizon(self.shard_id)
        self.generation = generation

    def _matcher(self, cfg: MappingConfig) -> Callable[[dict[str, Any]], bool] | None:
        """The mapping's FilterCriteria as a predicate (recompiled only when they change)."""
        key = json.dumps(cfg.filter_criteria, sort_keys=True, default=str) if cfg.filter_criteria else ""
        if key != self._filter_key:
            try:
                self._filter = compile_filters(cfg.filter_criteria, cfg.source_kind)
            except FilterError:
                self._filter = None  # the runtime reports it on the mapping; every record is delivered
            self._filter_key = key
        return self._filter

    def _read(self, cfg: MappingConfig, after: int, limit: int) -> tuple[list[SourceRecord], int]:
        """Up to ``limit`` records after ``after`` that pass the filters, and the last one looked at.

        Filtered records do not count towards the batch: reading goes on (a bounded number of
        reads) until there are matching records or nothing more; a run of filtered records with
        nothing after it moves the checkpoint past them.
        """
        matcher = self._matcher(cfg)
        kept: list[SourceRecord] = []
        for _ in range(MAX_FILTERED_READS):
            raw = self.source.read(self.shard_id, after, limit - len(kept))
            if not raw:
                break
            after = raw[-1].seq
            if matcher is None:
                return raw, after
            passed = [r for r in raw if matcher(r.event)]
            self.state.records_filtered += len(raw) - len(passed)
            kept += passed
            if kept:
                break
            self.state.checkpoint = max(self.state.checkpoint, after)  # nothing delivered: move on
        return kept, after

    def _gather(self, cfg: MappingConfig) -> list[SourceRecord]:
        records, position = self._read(cfg, self.state.checkpoint, cfg.batch_size)
        if records and cfg.window_seconds > 0:
            deadline = time.monotonic() + cfg.window_seconds
            while len(records) < cfg.batch_size and not self.stop_event.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.stop_event.wait(min(WINDOW_STEP_SECONDS, remaining))
                more, position = self._read(cfg, position, cfg.batch_size - len(records))
                records += more
        batch: list[SourceRecord] = []
        size = 0
        for record in records:
            if batch and size + record.size > MAX_PAYLOAD_BYTES:
                break
            batch.append(record)
            size += record.size
        return batch

    def _event(
        self, cfg: MappingConfig, function: FunctionSnapshot, records: list[SourceRecord]
    ) -> dict[str, Any]:
        if cfg.source_kind == "kinesis":
            return {"Records": [{**r.event, "invokeIdentityArn": function.role} for r in records]}
        return {"Records": [r.event for r in records]}

    def _drop_expired(self, cfg: MappingConfig, batch: Batch) -> bool:
        """Discard records past ``MaximumRecordAgeInSeconds``; False if none are left."""
        if cfg.max_record_age < 0:
            return True
        cutoff = time.time() - cfg.max_record_age
        count = next((i for i, r in enumerate(batch.records) if r.arrival >= cutoff), len(batch.records))
        if count:  # records arrive in order: the expired ones are a prefix
            self._discard(cfg, batch.records[:count], RECORD_AGE_EXCEEDED, batch.last_outcome, batch.invokes)
            batch.records = batch.records[count:]
        return bool(batch.records)

    def _done(self, records: list[SourceRecord]) -> None:
        if records:
            self.state.checkpoint = max(self.state.checkpoint, records[-1].seq)
            self.state.records_ok += len(records)

    def _discard(
        self,
        cfg: MappingConfig,
        records: list[SourceRecord],
        condition: str,
        outcome: Outcome | None,
        invokes: int,
    ) -> None:
        log.warning(
            "mapping %s shard %s: discarding %d records (%s..%s): %s",
            cfg.uuid,
            self.shard_id,
            len(records),
            records[0].seq,
            records[-1].seq,
            condition,
        )
        self.state.records_discarded += len(records)
        if cfg.on_failure:
            document = failure_record(cfg, self.shard_id, records, condition, outcome, invokes, time.time())
            if self.ctx.send_failure(cfg.on_failure, document, cfg.uuid):
                self.state.on_failure_sent += 1
        self.state.checkpoint = max(self.state.checkpoint, records[-1].seq)
