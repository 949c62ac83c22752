"""API calls the local stack has answered, by caller, service and operation (``GET /_stp/usage``).

What a run would be billed for on AWS is mostly a count of requests (PutRecords, PutObject,
BatchWriteItem, Publish, Lambda invocations) and bytes. The stack counts every request it
answers: the caller is the Lambda function named in the request's user agent (the local runtime
sets ``AWS_SDK_UA_APP_ID`` to the function name, which botocore sends as ``app/<name>``), the
stack itself (its pollers and destinations), or ``client`` (the notebooks, the producer).
Counting costs a header lookup per request (a form parse for the query protocol's SNS/IAM calls).
Counts start with the stack process; :func:`helpers.notebook.cost` turns them into dollars.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from typing import Any

from deploy.local.faults.injector import INTERNAL_AGENT
from deploy.local.faults.wire import identify, service_of

__all__ = ["USAGE_PATH", "Usage"]

USAGE_PATH = "/_stp/usage"
_APP_ID = re.compile(r"\bapp/([A-Za-z0-9_.+-]+)")


def caller_of(environ: dict[str, Any]) -> str:
    """``function:<name>``, ``stack`` or ``client``, from the user agent."""
    agent = environ.get("HTTP_USER_AGENT", "")
    if INTERNAL_AGENT in agent:
        return "stack"
    found = _APP_ID.search(agent)
    return f"function:{found.group(1)}" if found and "exec-env/AWS_Lambda" in agent else "client"


def operation_of(environ: dict[str, Any], service: str) -> str:
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:  # the JSON protocols name it in a header: no body to read
        return target.partition(".")[2]
    return identify(environ, service).operation or "?"  # S3 from the path, the query protocol's form


class Usage:
    """Counts of requests and request bytes per (caller, service, operation)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: Counter[tuple[str, str, str]] = Counter()
        self.bytes: Counter[tuple[str, str, str]] = Counter()
        self.since = time.time()

    def count(self, environ: dict[str, Any]) -> None:
        service = service_of(environ)
        if service is None:
            return
        key = (caller_of(environ), service, operation_of(environ, service))
        size = int(environ.get("CONTENT_LENGTH") or 0)
        with self._lock:
            self.calls[key] += 1
            self.bytes[key] += size

    def describe(self) -> dict[str, Any]:
        with self._lock:
            rows = [
                {"caller": c, "service": s, "operation": o, "calls": n, "bytes": self.bytes[(c, s, o)]}
                for (c, s, o), n in sorted(self.calls.items())
            ]
        return {"since": self.since, "calls": rows}

    def answer(self, start_response: Any) -> list[bytes]:
        body = json.dumps(self.describe()).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
