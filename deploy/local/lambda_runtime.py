"""The local stack's Lambda runtime: runs deployed functions for their event source mappings.

moto registers functions and event source mappings but never polls or runs anything without
Docker. This component, living in the stack process beside moto, does what the Lambda service
does:

* a supervisor thread lists the mappings created *through the Lambda API* (moto's registry)
  every :data:`POLL_INTERVAL_SECONDS` and keeps one poller thread per (enabled mapping, shard)
  of a Kinesis stream or DynamoDB stream (:mod:`deploy.local._lambda.poller`: batching window,
  checkpoints, ReportBatchItemFailures, bisect, retries, record age, on-failure destinations);
  pollers read every :data:`POLL_INTERVAL_SECONDS` and are also woken by moto as soon as a
  record is written to their stream (:mod:`deploy.local._lambda.moto_hooks`);
* functions run from their *deployed zip* in warm worker processes, children of the stack, with
  the function's environment and timeout (:mod:`deploy.local._lambda.workers`);
* every invocation is logged to CloudWatch Logs ``/aws/lambda/<function>`` (START, the
  function's output, END, REPORT), readable with ``filter_log_events``;
* ``Invoke`` API requests are served too (RequestResponse, Event, DryRun).

``health()`` reports each mapping's shards (checkpoint, last poll, invocations, errors, iterator
age) and the workers; ``python -m deploy.local status`` shows it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from deploy.local._lambda import invoke_api, moto_hooks
from deploy.local._lambda.destinations import Destinations
from deploy.local._lambda.filters import FilterError, compile_filters
from deploy.local._lambda.logs import LogSink
from deploy.local._lambda.models import (
    FunctionSnapshot,
    MappingConfig,
    Outcome,
    find_function,
    lambda_backends,
)
from deploy.local._lambda.poller import POLL_INTERVAL_SECONDS, PollerContext, ShardPoller, initial_position
from deploy.local._lambda.pool import IDLE_TTL_SECONDS, WorkerPool
from deploy.local._lambda.sources import source_for
from deploy.local._lambda.state import RuntimeState
from helpers.pipeline.config import PROJECT_ROOT

__all__ = ["MAX_ASYNC_INVOCATIONS", "MAX_SHARD_POLLERS", "POLL_INTERVAL_SECONDS", "LambdaRuntime"]

log = logging.getLogger(__name__)

MAX_SHARD_POLLERS = 64
MAX_ASYNC_INVOCATIONS = 100
ASYNC_THREADS = 2
STOP_JOIN_SECONDS = 10.0


class LambdaRuntime:
    """Stack component ``lambda``: polls stream mappings and runs functions in workers."""

    name = "lambda"

    def __init__(self, stack: Any, *, poll_interval: float = POLL_INTERVAL_SECONDS) -> None:
        self.stack = stack
        self.region: str = stack.region
        self.poll_interval = poll_interval
        self.state = RuntimeState()
        self.sink = LogSink()
        self.pool: WorkerPool | None = None
        self.destinations: Destinations | None = None
        self._stop = threading.Event()
        self._pollers: dict[tuple[str, str], ShardPoller] = {}
        self._supervisor: threading.Thread | None = None
        self._async: ThreadPoolExecutor | None = None
        self._async_slots = threading.BoundedSemaphore(MAX_ASYNC_INVOCATIONS)

    # --- component protocol -----------------------------------------------------------------
    def persisted(self) -> tuple[str, Callable[[], Any], Callable[[Any], None], Callable[[], Any]]:
        """The part of the stack's persistence the runtime owns: checkpoints and mapping notes."""

        def load(saved: RuntimeState) -> None:
            self.state = saved

        return "lambda-runtime", lambda: self.state, load, lambda: self.state.version()

    def start(self) -> None:
        moto_hooks.install(self._on_mapping_created, self._on_records)
        code_root = Path(self.stack.state_dir) / "lambda"
        # the project itself never leaks onto a worker's sys.path (e.g. from an editable install)
        self.pool = WorkerPool(
            code_root,
            self.stack.endpoint,
            self.sink,
            exclude_paths=[str(PROJECT_ROOT)],
            faults=getattr(self.stack, "faults", None),  # worker kills of the fault plan
        )
        self.destinations = Destinations(self.stack.endpoint)
        self._async = ThreadPoolExecutor(ASYNC_THREADS, thread_name_prefix="lambda-async")
        self._supervisor = threading.Thread(target=self._supervise, name="lambda-supervisor", daemon=True)
        self._supervisor.start()

    def stop(self) -> None:
        """Stop polling, kill every worker, join every thread (bounded)."""
        self._stop.set()
        for poller in list(self._pollers.values()):
            poller.stop()
        if self.pool is not None:
            self.pool.stop()  # in-flight invocations end at once, without checkpointing
        if self._supervisor is not None:
            self._supervisor.join(STOP_JOIN_SECONDS)
        for poller in list(self._pollers.values()):
            poller.join(STOP_JOIN_SECONDS / max(1, len(self._pollers)))
        if self._async is not None:
            self._async.shutdown(wait=False, cancel_futures=True)
        moto_hooks.uninstall(self._on_mapping_created, self._on_records)

    def health(self) -> dict[str, Any]:
        return {
            "status": "stopped" if self._stop.is_set() else "ok",
            "poll_interval_seconds": self.poll_interval,
            "pollers": sum(1 for p in self._pollers.values() if p.is_alive()),
            "mappings": self.state.describe(),
            "workers": self.pool.describe() if self.pool else {},
        }

    def handles(self, environ: dict[str, Any]) -> bool:
        return invoke_api.claims(environ)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return invoke_api.handle(self, environ, start_response)

    # --- invoking -----------------------------------------------------------------------------
    def function(self, name: str, region: str, qualifier: str | None = None) -> FunctionSnapshot | None:
        """The deployed function ``name`` (or ARN) as it is now, or None."""
        return find_function(name, region, qualifier=qualifier)

    def invoke_function(self, snap: FunctionSnapshot, event: Any) -> Outcome:
        """Run ``snap`` with ``event`` synchronously in a worker."""
        if self.pool is None:
            return Outcome(
                "", "unavailable", error={"errorType": "ServiceException", "errorMessage": "not started"}
            )
        return self.pool.invoke(snap, event)

    def invoke_async(self, snap: FunctionSnapshot, event: Any) -> bool:
        """Queue an ``Event`` invocation; False when the queue is full."""
        if self._async is None or self._stop.is_set() or not self._async_slots.acquire(blocking=False):
            return False

        def run() -> None:
            try:
                outcome = self.invoke_function(snap, event)
                if outcome.function_error:
                    log.warning("async invocation of %s failed: %s", snap.name, outcome.error)
            finally:
                self._async_slots.release()

        self._async.submit(run)
        return True

    # --- supervising mappings ---------------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._stop.wait(self.poll_interval):
            try:
                self._sync()
                if self.pool is not None:
                    self.pool.reap(IDLE_TTL_SECONDS, exists=self._exists)
            except Exception:
                log.exception("lambda runtime supervisor pass failed")

    @staticmethod
    def _exists(snap: FunctionSnapshot) -> bool:
        return find_function(snap.name, snap.region, snap.account) is not None

    def _mappings(self) -> list[Any]:
        found: list[Any] = []
        for per_account in list(dict.values(lambda_backends())):
            for backend in list(dict.values(per_account)):
                found.extend(backend.list_event_source_mappings("", ""))
        return found

    def _sync(self) -> None:
        enabled: set[str] = set()
        seen: set[str] = set()
        for esm in self._mappings():
            cfg = MappingConfig.from_moto(esm)
            source = source_for(cfg.source_arn)
            if source is None:
                continue  # SQS and other sources are not polled here
            seen.add(cfg.uuid)
            if not cfg.enabled:
                self.state.note(cfg.uuid, cfg.function_arn, cfg.source_arn, "Disabled")
                continue
            shards = source.shard_ids()
            problem = None if shards is not None else f"event source {cfg.source_arn} not found"
            if cfg.filter_criteria:
                try:
                    compile_filters(cfg.filter_criteria, cfg.source_kind)
                except FilterError as err:
                    problem = f"FilterCriteria not applied ({err}): every record is delivered"
            self.state.note(cfg.uuid, cfg.function_arn, cfg.source_arn, "Enabled", problem)
            enabled.add(cfg.uuid)
            for shard_id in shards or []:
                self._ensure_poller(cfg, source, shard_id)
        for key, poller in list(self._pollers.items()):
            if key[0] not in enabled:
                poller.stop()
            if not poller.is_alive() and poller.stop_event.is_set():
                del self._pollers[key]
        for uuid in self.state.known() - seen:
            self.state.forget(uuid)

    def _ensure_poller(self, cfg: MappingConfig, source: Any, shard_id: str) -> None:
        key = (cfg.uuid, shard_id)
        poller = self._pollers.get(key)
        if poller is not None and poller.is_alive():
            return
        if len(self._pollers) >= MAX_SHARD_POLLERS:
            log.error(
                "not polling %s %s: %d shard pollers already run", cfg.uuid, shard_id, MAX_SHARD_POLLERS
            )
            return
        initial = (
            0
            if self.state.has_shard(cfg.uuid, shard_id)
            else initial_position(cfg, source, shard_id, self.state)
        )
        shard_state = self.state.shard(cfg.uuid, shard_id, initial)
        poller = ShardPoller(cfg, shard_id, source, shard_state, self._context(cfg))
        self._pollers[key] = poller
        poller.start()

    def _context(self, cfg: MappingConfig) -> PollerContext:
        uuid, account, region = cfg.uuid, cfg.account, cfg.region

        def mapping() -> MappingConfig | None:
            if self._stop.is_set():
                return None
            esm = lambda_backends()[account][region].get_event_source_mapping(uuid)
            return MappingConfig.from_moto(esm) if esm is not None else None

        def send_failure(destination: str, document: dict[str, Any], mapping_uuid: str) -> bool:
            return self.destinations.send(destination, document, mapping_uuid) if self.destinations else False

        return PollerContext(
            mapping=mapping,
            function=lambda arn: find_function(arn, region, account),
            invoke=self.invoke_function,
            send_failure=send_failure,
        )

    def _on_records(self, source_arn: str) -> None:
        """Called by moto (request thread) for each write to a mapped stream: wake its pollers."""
        for poller in list(self._pollers.values()):
            if poller.source.arn == source_arn:
                poller.wake.set()

    def _on_mapping_created(self, esm: Any) -> None:
        """Called by moto (request thread) when a mapping is created: remember LATEST positions."""
        source = source_for(esm.event_source_arn)
        if source is not None:
            positions = {shard_id: source.latest(shard_id) for shard_id in source.shard_ids() or []}
            self.state.remember_created(esm.uuid, positions)
