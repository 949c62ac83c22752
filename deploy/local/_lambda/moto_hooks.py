"""Hooks into moto's Lambda backend so the local runtime, not Docker, handles stream mappings.

moto invokes a mapped function *synchronously inside the producer's request* for every Kinesis
``PutRecord(s)`` record (``moto/kinesis/models.py`` ``Stream.put_record`` ->
``LambdaBackend.send_kinesis_message``) and DynamoDB write (``moto/dynamodb/models/table.py``
``StreamShard.add`` -> ``LambdaBackend.send_dynamodb_items``). Without Docker each of those
attempts writes an "error running docker" log stream into ``/aws/lambda/<function>``, and for
DynamoDB the truthy error text makes ``StreamShard.add`` *clear the stream's records*
(``if result: self.items = []``), so no poller could ever read them. While the runtime runs,
both methods only tell the runtime "new records on <stream ARN>" (its pollers wake up at once
instead of at their next poll), and mapping creation reports the new mapping so
``StartingPosition: LATEST`` means "records after the mapping was created".
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

MappingCallback = Callable[[Any], None]
RecordsCallback = Callable[[str], None]

_lock = threading.Lock()
_callbacks: list[tuple[MappingCallback, RecordsCallback]] = []
_saved: dict[str, Any] = {}


def _notify(source_arn: str) -> None:
    for _, on_records in list(_callbacks):
        try:
            on_records(source_arn)
        except Exception:  # never fail the producer's request because of the runtime
            log.exception("new-records callback failed")


def install(on_mapping_created: MappingCallback, on_records: RecordsCallback) -> None:
    """Patch moto's LambdaBackend (once per process) and register the runtime's callbacks."""
    from moto.awslambda.models import LambdaBackend

    with _lock:
        _callbacks.append((on_mapping_created, on_records))
        if _saved:
            return
        for name in ("send_kinesis_message", "send_dynamodb_items", "create_event_source_mapping"):
            _saved[name] = LambdaBackend.__dict__[name]
        original_create = _saved["create_event_source_mapping"]

        def send_kinesis_message(self: Any, *args: Any, **kwargs: Any) -> None:
            _notify(str(kwargs.get("kinesis_stream", "")))

        def send_dynamodb_items(self: Any, function_arn: str, items: Any, source: str) -> str:
            _notify(source)
            return ""  # falsy: moto keeps the stream records for the poller

        def create_event_source_mapping(self: Any, spec: dict[str, Any]) -> Any:
            esm = original_create(self, spec)
            for on_created, _ in list(_callbacks):
                try:
                    on_created(esm)
                except Exception:  # never fail the API call because of the runtime
                    log.exception("event source mapping callback failed")
            return esm

        LambdaBackend.send_kinesis_message = send_kinesis_message  # type: ignore[method-assign]
        LambdaBackend.send_dynamodb_items = send_dynamodb_items  # type: ignore[method-assign]
        LambdaBackend.create_event_source_mapping = create_event_source_mapping  # type: ignore[method-assign]


def uninstall(on_mapping_created: MappingCallback, on_records: RecordsCallback) -> None:
    """Unregister; the last one out restores moto's original methods."""
    from moto.awslambda.models import LambdaBackend

    with _lock:
        if (on_mapping_created, on_records) in _callbacks:
            _callbacks.remove((on_mapping_created, on_records))
        if _callbacks or not _saved:
            return
        for name, original in _saved.items():
            setattr(LambdaBackend, name, original)
        _saved.clear()
