"""CloudWatch Logs for local invocations, written the way the Lambda service writes them.

Each worker (execution environment) has its own stream ``YYYY/MM/DD/[$LATEST]<hex>`` in the
group ``/aws/lambda/<function>``; each invocation adds ``START``, the function's own lines,
``END`` and ``REPORT``. Events go straight into moto's logs backend (same process), so they are
readable with ``filter_log_events`` / ``get_log_events`` like on AWS.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid

log = logging.getLogger(__name__)

MAX_EVENTS_PER_PUT = 10_000  # PutLogEvents limits
MAX_BYTES_PER_PUT = 1_048_576
MAX_EVENT_BYTES = 256 * 1024
EVENT_OVERHEAD_BYTES = 26

LogEvent = tuple[int, str]  # (epoch milliseconds, message)


def now_ms() -> int:
    return int(time.time() * 1000)


def new_stream_name(version: str = "$LATEST") -> str:
    return f"{dt.datetime.now(dt.UTC):%Y/%m/%d}/[{version}]{uuid.uuid4().hex}"


def start_line(request_id: str, version: str = "$LATEST") -> str:
    return f"START RequestId: {request_id} Version: {version}"


def end_line(request_id: str) -> str:
    return f"END RequestId: {request_id}"


def report_line(
    request_id: str,
    duration_ms: float,
    memory_mb: int,
    max_memory_mb: int,
    init_ms: float | None,
    status: str | None,
) -> str:
    parts = [
        f"REPORT RequestId: {request_id}",
        f"Duration: {duration_ms:.2f} ms",
        f"Billed Duration: {max(1, int(duration_ms + 0.999999))} ms",
        f"Memory Size: {memory_mb} MB",
        f"Max Memory Used: {max_memory_mb} MB",
    ]
    if init_ms is not None:
        parts.append(f"Init Duration: {init_ms:.2f} ms")
    if status:
        parts.append(f"Status: {status}")
    return "\t".join(parts) + "\t"


def timeout_line(request_id: str, timeout: float) -> str:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return f"{stamp} {request_id} Task timed out after {timeout:.2f} seconds"


class LogSink:
    """Appends events to moto's CloudWatch Logs backend, creating group and stream on demand."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def write(self, account: str, region: str, group: str, stream: str, events: list[LogEvent]) -> None:
        if not events:
            return
        from moto.backends import get_backend

        ordered = _chronological(events)
        from deploy.local.persist import changing

        try:
            with self._lock, changing("logs"):
                backend = get_backend("logs")[account][region]
                backend.ensure_log_group(group)
                backend.ensure_log_stream(group, stream)
                for chunk in _chunks(ordered):
                    backend.put_log_events(group, stream, [{"timestamp": t, "message": m} for t, m in chunk])
        except Exception:  # logs must never break an invocation
            log.exception("writing %d log events to %s %s failed", len(events), group, stream)


def _chronological(events: list[LogEvent]) -> list[LogEvent]:
    out: list[LogEvent] = []
    last = 0
    for stamp, message in events:
        last = max(last, stamp)
        encoded = message.encode("utf-8", "replace")
        if len(encoded) > MAX_EVENT_BYTES - EVENT_OVERHEAD_BYTES:
            message = (
                encoded[: MAX_EVENT_BYTES - EVENT_OVERHEAD_BYTES - 16].decode("utf-8", "ignore")
                + " [truncated]"
            )
        out.append((last, message or " "))
    return out


def _chunks(events: list[LogEvent]) -> list[list[LogEvent]]:
    chunks: list[list[LogEvent]] = [[]]
    size = 0
    for event in events:
        event_size = len(event[1].encode("utf-8", "replace")) + EVENT_OVERHEAD_BYTES
        if len(chunks[-1]) >= MAX_EVENTS_PER_PUT or size + event_size > MAX_BYTES_PER_PUT:
            chunks.append([])
            size = 0
        chunks[-1].append(event)
        size += event_size
    return [c for c in chunks if c]
