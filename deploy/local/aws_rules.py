"""AWS behaviours moto forgives, reproduced in the local stack so code that works here works there.

* **A deleted SQS queue's name is unavailable for a while.** AWS: "when you delete a queue, the
  deletion process takes up to 60 seconds"; CreateQueue with that name answers
  ``QueueDeletedRecently`` until then, and requests naming the dying queue "might succeed"
  meanwhile. Here CreateQueue is refused for :data:`QUEUE_DELETION_ENV` seconds (default 60, as
  on AWS) and GetQueueUrl still finds the dying queue for :data:`QUEUE_DYING_ENV` seconds
  (default 2), so provisioning right after a teardown meets both, as it would on AWS.

Both windows are read from the stack process's environment when it starts (``0`` turns a rule
off). :func:`install` patches moto's SQS backend once per process; the state lives on each backend.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

__all__ = ["QUEUE_DELETED_RECENTLY", "QUEUE_DELETION_ENV", "QUEUE_DYING_ENV", "install", "windows"]

QUEUE_DELETION_ENV = "STP_LOCAL_QUEUE_DELETION_SECONDS"
QUEUE_DYING_ENV = "STP_LOCAL_QUEUE_DYING_SECONDS"
DEFAULT_QUEUE_DELETION_SECONDS = 60.0
DEFAULT_QUEUE_DYING_SECONDS = 2.0

_installed = False
_lock = threading.Lock()


def windows(environ: dict[str, str] | None = None) -> dict[str, float]:
    """The rules' windows in seconds, from ``environ`` (default: this process's environment)."""
    env = os.environ if environ is None else environ

    def seconds(name: str, default: float) -> float:
        text = env.get(name, "")
        try:
            value = float(text) if text.strip() else default
        except ValueError as err:
            raise ValueError(f"{name}={text!r}: give a number of seconds (0 turns the rule off)") from err
        if value < 0:
            raise ValueError(f"{name}={text!r}: give a number of seconds >= 0")
        return value

    return {
        "queue_deletion_seconds": seconds(QUEUE_DELETION_ENV, DEFAULT_QUEUE_DELETION_SECONDS),
        "queue_dying_seconds": seconds(QUEUE_DYING_ENV, DEFAULT_QUEUE_DYING_SECONDS),
    }


def _queue_deleted_recently() -> Exception:
    from moto.sqs.exceptions import SQSException

    class QueueDeletedRecentlyError(SQSException):
        def __init__(self) -> None:
            super().__init__(
                QUEUE_DELETED_RECENTLY,
                "You must wait 60 seconds after deleting a queue before you can create another "
                "with the same name.",
            )

    return QueueDeletedRecentlyError()


QUEUE_DELETED_RECENTLY = "AWS.SimpleQueueService.QueueDeletedRecently"  # the error code boto3 shows


def install(environ: dict[str, str] | None = None) -> dict[str, float]:
    """Patch moto's SQS backend with the queue-deletion rules; returns the windows in force."""
    global _installed
    rules = windows(environ)
    from moto.sqs.models import SQSBackend

    with _lock:
        SQSBackend._stp_rules = rules  # type: ignore[attr-defined]
        if _installed:
            return rules
        original_create, original_delete, original_get = (
            SQSBackend.create_queue,
            SQSBackend.delete_queue,
            SQSBackend.get_queue,
        )

        def dying(backend: Any) -> dict[str, tuple[Any, float]]:
            table: dict[str, tuple[Any, float]] | None = backend.__dict__.get("_stp_dying")
            if table is None:
                table = backend.__dict__.setdefault("_stp_dying", {})
            return table

        def create_queue(self: Any, name: str, tags: Any = None, **kwargs: Any) -> Any:
            gone = dying(self).get(name)
            if gone is not None and name not in self.queues:
                if time.monotonic() - gone[1] < self._stp_rules["queue_deletion_seconds"]:
                    raise _queue_deleted_recently()
                dying(self).pop(name, None)
            return original_create(self, name, tags, **kwargs)

        def delete_queue(self: Any, queue_name: str) -> None:
            queue = self.queues.get(queue_name)
            if queue is None:
                self.get_queue(queue_name)  # a dying queue: deleting it again succeeds, as on AWS
                return
            original_delete(self, queue_name)
            if queue is not None and self._stp_rules["queue_deletion_seconds"] > 0:
                dying(self)[queue_name] = (queue, time.monotonic())

        def get_queue(self: Any, queue_name: str) -> Any:
            queue = self.queues.get(queue_name)
            if queue is not None:
                return queue
            gone = dying(self).get(queue_name)
            if gone is not None and time.monotonic() - gone[1] < self._stp_rules["queue_dying_seconds"]:
                return gone[0]  # AWS: requests naming a queue being deleted "might succeed"
            return original_get(self, queue_name)

        SQSBackend.create_queue = create_queue  # type: ignore[method-assign]
        SQSBackend.delete_queue = delete_queue  # type: ignore[method-assign]
        SQSBackend.get_queue = get_queue  # type: ignore[method-assign]
        _installed = True
    return rules
