"""The worker pool: warm workers per function, the extracted code they run, their lifetimes.

A function's workers are reused while its code and configuration (the snapshot's fingerprint)
stay the same; a change, a timeout or a crash means a fresh worker. At most
:data:`MAX_WORKERS_PER_FUNCTION` run per function (one per shard being processed, plus direct
invocations); idle ones are stopped after :data:`IDLE_TTL_SECONDS` or when their function is
deleted. Deployed zips are extracted once under ``<state_dir>/lambda/<function>/<sha256>``;
boto3 and its dependencies, all workers see besides the code and the standard library, are
linked under ``<state_dir>/lambda/.runtime-packages`` when the pool starts.

With a fault injector (:mod:`deploy.local.faults`), each invocation asks it whether to kill the
worker; if so a timer SIGKILLs the worker that long after the invocation started, unless the
invocation has ended by then (the kill is then reported missed, not counted). The invocation
sees its worker die (``Runtime.ExitError``, status ``crash``) as with any crash, and the caller's
Lambda semantics (retry, bisect, on-failure destination) apply.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import threading
import time
import uuid
import zipfile
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol

from deploy.local._lambda import logs
from deploy.local._lambda.models import FunctionSnapshot, Outcome
from deploy.local._lambda.workers import Worker, build_runtime_packages
from deploy.local.access import RoleNotAssumable

log = logging.getLogger(__name__)

MAX_WORKERS_PER_FUNCTION = 4
RUNTIME_PACKAGES_DIR = ".runtime-packages"  # a dot: no function can have this name
IDLE_TTL_SECONDS = 300.0
ACQUIRE_TIMEOUT_SECONDS = 60.0


class KillTicket(Protocol):
    delay: float

    def missed(self) -> None: ...


class KillPlanner(Protocol):
    """What the pool needs of the fault injector."""

    def plan_kill(self, function: str) -> KillTicket | None: ...


class ScheduledKill:
    """SIGKILL ``worker`` after ``ticket.delay`` seconds unless :meth:`disarm` comes first."""

    def __init__(self, worker: Worker, ticket: KillTicket) -> None:
        self.worker = worker
        self.ticket = ticket
        self.fired = False
        self._lock = threading.Lock()
        self._done = False
        self._timer = threading.Timer(ticket.delay, self._fire)
        self._timer.daemon = True
        self._timer.name = f"fault-kill-{worker.pid}"
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if not self._done:
                self.fired = self.worker.signal_kill()
        if self.fired:
            log.warning("fault injector: SIGKILL worker %s of %s", self.worker.pid, self.worker.snap.name)

    def disarm(self) -> None:
        """The invocation is over: no kill from now on; a kill that did not happen is not counted."""
        with self._lock:
            self._done = True
        self._timer.cancel()
        if not self.fired:
            self.ticket.missed()


def _unavailable(request_id: str, code: str, message: str) -> Outcome:
    """An invocation that never reached the function (not a function error)."""
    return Outcome(request_id, "unavailable", error={"errorType": code, "errorMessage": message})


class CodeCache:
    """Deployed zips extracted once under ``<state_dir>/lambda/<function>/<code sha256>``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()

    def ensure(self, snap: FunctionSnapshot) -> Path:
        target = self.root / snap.name / snap.code_digest
        with self._lock:
            if target.is_dir():
                return target
            if not snap.code:
                raise RuntimeError(f"function {snap.name} has no deployment package (zip) to run")
            tmp = target.with_name(f".{snap.code_digest}.{uuid.uuid4().hex[:8]}")
            tmp.mkdir(parents=True)
            try:
                with zipfile.ZipFile(io.BytesIO(snap.code)) as archive:
                    archive.extractall(tmp)
                os.replace(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            return target

    def prune(self, function: str, keep: set[str]) -> None:
        """Remove extracted versions of ``function`` that no live worker uses."""
        folder = self.root / function
        with self._lock:
            for child in folder.iterdir() if folder.is_dir() else []:
                if child.name not in keep and not child.name.startswith("."):
                    shutil.rmtree(child, ignore_errors=True)


class WorkerPool:
    """Warm workers per function: acquire (or start) one, invoke, give it back."""

    def __init__(
        self,
        code_root: Path,
        endpoint: str,
        sink: logs.LogSink,
        *,
        exclude_paths: list[str],
        max_per_function: int = MAX_WORKERS_PER_FUNCTION,
        faults: KillPlanner | None = None,
    ) -> None:
        self.cache = CodeCache(code_root)
        # Built beside the stack's start (0.2 s of package metadata); the first worker waits for it.
        self._runtime_packages: Future[Path] = Future()

        def build() -> None:
            try:
                self._runtime_packages.set_result(build_runtime_packages(code_root / RUNTIME_PACKAGES_DIR))
            except BaseException as err:  # the first worker's start reports it
                self._runtime_packages.set_exception(err)

        threading.Thread(target=build, name="lambda-packages", daemon=True).start()
        self.endpoint = endpoint
        self.sink = sink
        self.exclude = exclude_paths
        self.max_per_function = max_per_function
        self.faults = faults
        self._cond = threading.Condition()
        self._idle: dict[str, list[Worker]] = {}
        self._busy: dict[str, list[Worker]] = {}
        self._starting: dict[str, int] = {}
        self._stopping = False
        self.counters = {"invocations": 0, "cold_starts": 0, "timeouts": 0, "crashes": 0, "errors": 0}
        self.last_cold_start_ms: float | None = None

    def invoke(self, snap: FunctionSnapshot, event: Any, request_id: str | None = None) -> Outcome:
        """Invoke ``snap`` with ``event`` in a warm (or new) worker and wait for the outcome."""
        request_id = request_id or str(uuid.uuid4())
        acquired = self._acquire(snap, request_id)
        if isinstance(acquired, Outcome):
            return acquired
        worker = acquired
        ticket = self.faults.plan_kill(snap.name) if self.faults is not None else None
        scheduled = ScheduledKill(worker, ticket) if ticket is not None else None
        try:
            outcome = worker.invoke(event, request_id, snap.arn)
        finally:
            if scheduled is not None:
                scheduled.disarm()
        with self._cond:
            self.counters["invocations"] += 1
            self.counters["timeouts"] += outcome.status == "timeout"
            self.counters["crashes"] += outcome.status == "crash"
            self.counters["errors"] += outcome.status == "error"
            if self._stopping and outcome.status in ("crash", "timeout"):
                outcome.status = "unavailable"
        self._release(worker)
        return outcome

    def _acquire(self, snap: FunctionSnapshot, request_id: str) -> Worker | Outcome:
        stale: list[Worker] = []
        chosen: Worker | None = None
        deadline = time.monotonic() + ACQUIRE_TIMEOUT_SECONDS
        with self._cond:
            while True:
                if self._stopping:
                    return _unavailable(request_id, "ServiceException", "the local stack is stopping")
                idle = self._idle.setdefault(snap.name, [])
                for old in list(idle):
                    if not old.alive or old.snap.fingerprint != snap.fingerprint:
                        idle.remove(old)
                        stale.append(old)
                busy = self._busy.setdefault(snap.name, [])
                if idle:
                    chosen = idle.pop()
                    busy.append(chosen)
                    break
                if len(busy) + self._starting.get(snap.name, 0) < self.max_per_function:
                    self._starting[snap.name] = self._starting.get(snap.name, 0) + 1
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    busy_message = f"Rate Exceeded: {snap.name} has {self.max_per_function} busy workers"
                    return _unavailable(request_id, "TooManyRequestsException", busy_message)
                self._cond.wait(remaining)
        for old in stale:
            old.kill()
        return chosen if chosen is not None else self._start_worker(snap, request_id)

    @property
    def runtime_packages(self) -> Path:
        """The folder of what the AWS runtime provides (boto3...), once built."""
        return self._runtime_packages.result()

    def _start_worker(self, snap: FunctionSnapshot, request_id: str) -> Worker | Outcome:
        worker: Worker | None = None
        error: dict[str, Any] | None
        try:
            fresh = not (self.cache.root / snap.name / snap.code_digest).is_dir()
            code_dir = self.cache.ensure(snap)
            if fresh:
                self.prune_code(snap.name, snap.code_digest)
            worker = Worker(snap, code_dir, self.endpoint, self.sink, self.exclude, self.runtime_packages)
            error = worker.start()
        except RoleNotAssumable as err:  # IAM enforced: AWS's answer to the invocation
            log.error("starting a worker for %s failed: %s", snap.name, err)
            error = {"errorType": "InvalidParameterValueException", "errorMessage": str(err)}
        except Exception as err:  # bad zip, cannot spawn...
            log.exception("starting a worker for %s failed", snap.name)
            error = {"errorType": "Runtime.InvalidEntrypoint", "errorMessage": f"{type(err).__name__}: {err}"}
        with self._cond:
            self._starting[snap.name] -= 1
            self.counters["cold_starts"] += 1
            if worker is not None and error is None and not self._stopping:
                self.last_cold_start_ms = worker.init_ms
                self._busy.setdefault(snap.name, []).append(worker)
                self._cond.notify_all()
                return worker
            self._cond.notify_all()
        return self._init_failure(snap, worker, error, request_id)

    def _init_failure(
        self, snap: FunctionSnapshot, worker: Worker | None, error: dict[str, Any] | None, request_id: str
    ) -> Outcome:
        """An invocation that failed in the init phase: logged like Lambda, counted as a function error."""
        if self._stopping or error is None:
            if worker is not None:
                worker.kill()
            return _unavailable(request_id, "ServiceException", "the local stack is stopping")
        error = {**error, "requestId": request_id}
        init_ms = worker.init_ms if worker else None
        if worker is not None:
            worker.kill()
            events = list(worker._init_events) + worker._take_lines(None, 0)
            now = logs.now_ms()
            report = logs.report_line(request_id, init_ms or 0.0, snap.memory_mb, 0, init_ms, "error")
            events += [(now, logs.start_line(request_id)), (now, logs.end_line(request_id)), (now, report)]
            self.sink.write(snap.account, snap.region, snap.log_group, worker.log_stream, events)
        return Outcome(request_id, "error", error=error, init_ms=init_ms)

    def _release(self, worker: Worker) -> None:
        with self._cond:
            busy = self._busy.get(worker.snap.name, [])
            if worker in busy:
                busy.remove(worker)
            keep = worker.alive and not self._stopping
            if keep:
                self._idle.setdefault(worker.snap.name, []).append(worker)
            self._cond.notify_all()
        if not keep:
            worker.kill()

    def reap(
        self, idle_ttl: float = IDLE_TTL_SECONDS, exists: Callable[[FunctionSnapshot], bool] | None = None
    ) -> None:
        """Stop workers idle for longer than ``idle_ttl``, dead ones, and those of deleted functions."""
        now = time.monotonic()
        doomed: list[Worker] = []
        with self._cond:
            for idle in self._idle.values():
                for worker in list(idle):
                    gone = exists is not None and not exists(worker.snap)
                    if gone or now - worker.last_used > idle_ttl or not worker.alive:
                        idle.remove(worker)
                        doomed.append(worker)
        for worker in doomed:
            worker.kill()

    def prune_code(self, function: str, current_digest: str) -> None:
        with self._cond:
            live = {w.snap.code_digest for group in (self._idle, self._busy) for w in group.get(function, [])}
        self.cache.prune(function, live | {current_digest})

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            workers = [w for group in (self._idle, self._busy) for ws in group.values() for w in ws]
            self._idle.clear()
            self._cond.notify_all()
        for worker in workers:
            worker.kill()

    def describe(self) -> dict[str, Any]:
        with self._cond:
            rows = [w.describe("idle") for ws in self._idle.values() for w in ws]
            rows += [w.describe("busy") for ws in self._busy.values() for w in ws]
            counters = dict(self.counters)
        last = self.last_cold_start_ms
        return {**counters, "last_cold_start_ms": round(last, 1) if last else None, "workers": rows}
