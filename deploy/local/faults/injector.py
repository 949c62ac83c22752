"""The fault injector as a WSGI layer in front of moto, its admin endpoint and worker kills.

:class:`FaultInjector` holds the active :class:`~deploy.local.faults.spec.Plan` (``None`` when
off). The stack's ``Dispatcher`` calls it only when a plan is set, so the disabled path is one
attribute test per request. With a plan, a request for a service no rule names is passed on after
reading one header; otherwise :func:`~deploy.local.faults.wire.identify` names the call and every
matching rule, in order, may

1. add latency (a seeded draw from its range; the request thread sleeps before moto sees it);
2. answer with an AWS error instead of moto (the first rule whose draw fires wins);
3. fail some entries of a Kinesis ``PutRecords`` or leave some requests of a DynamoDB
   ``BatchWriteItem`` unprocessed: moto gets a request with only the surviving entries and the
   answer is merged back in the original order, so a failed entry or unprocessed item is never
   stored, exactly as on AWS.

Requests the stack makes itself (on-failure destination sends, the Athena engine's Glue and S3
reads) carry :data:`INTERNAL_AGENT` in their ``User-Agent`` and are exempt unless the plan says
``"internal": true``: they stand for AWS's own plumbing, which the user's throttling does not hit.

Worker kills are asked for by the Lambda worker pool: :meth:`FaultInjector.plan_kill` draws, per
invocation, whether to SIGKILL the worker and after what delay; the pool arms a timer and reports
a kill that came too late (the invocation had ended) so it is not counted.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from deploy.local.faults.spec import FaultSpecError, Plan, Rule, parse_plan
from deploy.local.faults.wire import (
    ACCOUNT,
    Call,
    error_response,
    identify,
    json_headers,
    read_body,
    replace_body,
    service_of,
    status_line,
)

log = logging.getLogger(__name__)

ADMIN_PATH = "/_stp/faults"
INTERNAL_AGENT = "stp-local-stack"
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Response = tuple[str, list[tuple[str, str]], bytes]


@dataclass
class KillTicket:
    """A kill the plan drew for one invocation: SIGKILL the worker ``delay`` seconds after it starts."""

    rule: Rule
    delay: float

    def missed(self) -> None:
        """The invocation ended before the delay: the kill did not happen and is not counted."""
        self.rule.count("kills", -1)


class FaultInjector:
    """The active fault plan, applied to requests on their way to moto."""

    def __init__(self, plan: Plan | None = None) -> None:
        self.plan = plan
        self._lock = threading.Lock()

    # --- the plan ------------------------------------------------------------------------------
    def set(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Replace the plan (fresh draws and counters); raises FaultSpecError for a bad spec."""
        plan = parse_plan(spec)
        with self._lock:
            self.plan = plan
        log.warning("fault plan set: %s", json.dumps(spec, sort_keys=True))
        return plan.describe()

    def clear(self) -> dict[str, Any]:
        """Switch faults off; returns the plan that was active, with its final counters."""
        with self._lock:
            plan, self.plan = self.plan, None
        if plan is not None:
            log.warning("fault plan cleared")
        return plan.describe() if plan is not None else {"active": False}

    def describe(self) -> dict[str, Any]:
        plan = self.plan
        return plan.describe() if plan is not None else {"active": False}

    # --- admin endpoint ----------------------------------------------------------------------
    def admin(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """``GET`` the plan and counters, ``PUT`` a new spec (JSON body), ``DELETE`` to clear."""
        method = environ.get("REQUEST_METHOD", "GET")
        status, answer = 200, {}
        if method == "GET":
            answer = self.describe()
        elif method in ("PUT", "POST"):
            try:
                answer = self.set(json.loads(read_body(environ) or b"null"))
            except FaultSpecError as err:
                status, answer = 400, {"error": str(err), "field": err.field}
            except ValueError as err:
                status, answer = 400, {"error": f"the fault spec is not JSON: {err}", "field": "spec"}
        elif method == "DELETE":
            answer = {"cleared": self.clear()}
        else:
            status, answer = 405, {"error": f"{method} is not GET, PUT or DELETE"}
        body = json.dumps(answer).encode()
        reason = {200: "200 OK", 400: "400 Bad Request", 405: "405 Method Not Allowed"}[status]
        start_response(reason, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    # --- requests ------------------------------------------------------------------------------
    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any], downstream: WSGIApp
    ) -> Iterable[bytes]:
        plan = self.plan
        service = service_of(environ) if plan is not None else None
        if plan is None or service not in plan.services:
            return downstream(environ, start_response)
        if not plan.internal and INTERNAL_AGENT in environ.get("HTTP_USER_AGENT", ""):
            return downstream(environ, start_response)
        assert service is not None
        call = identify(environ, service)
        rules = plan.for_call(call)
        if not rules:
            return downstream(environ, start_response)
        for rule in rules:
            rule.count("seen")
        self._delay(rules)
        for rule in rules:
            if rule.draw("error", "errors"):
                action = rule.actions["error"]
                if call.body is None:
                    read_body(environ)  # an S3 body is never left on the connection
                return _send(start_response, error_response(call, action.code, action.status, action.message))
        if call.operation == "PutRecords" and any("entry_error" in r.actions for r in rules):
            return _send(start_response, self._put_records(call, rules, environ, downstream))
        if call.operation == "BatchWriteItem" and any("unprocessed" in r.actions for r in rules):
            return _send(start_response, self._batch_write(call, rules, environ, downstream))
        return downstream(environ, start_response)

    @staticmethod
    def _delay(rules: list[Rule]) -> None:
        total = 0.0
        for rule in rules:
            if rule.draw("latency", "delayed"):
                ms = rule.span_ms("latency")
                rule.count("latency_ms", ms)
                total += ms
        if total:
            time.sleep(total / 1000)

    def _put_records(self, call: Call, rules: list[Rule], environ: dict[str, Any], app: WSGIApp) -> Response:
        """Fail a seeded fraction of the entries; moto stores only the others."""
        records = call.document.get("Records")
        if not isinstance(records, list):
            return _forward(app, environ)
        errors: list[dict[str, str] | None] = []
        for _ in records:
            fired = next((r for r in rules if r.draw("entry_error", "failed_entries")), None)
            action = fired.actions["entry_error"] if fired else None
            message = action.message.replace("{resource}", call.resource) if action else ""
            errors.append({"ErrorCode": action.code, "ErrorMessage": message} if action else None)
        if not any(errors):
            return _forward(app, environ)
        survivors = [record for record, error in zip(records, errors, strict=True) if error is None]
        failed = len(records) - len(survivors)
        if survivors:
            replace_body(environ, json.dumps({**call.document, "Records": survivors}).encode())
            status, headers, body = _forward(app, environ)
            if not status.startswith("200"):
                return status, headers, body
            stored = json.loads(body)
            answered = iter(stored.get("Records", []))
            merged = [error or next(answered) for error in errors]
            document = {**stored, "FailedRecordCount": stored.get("FailedRecordCount", 0) + failed}
            document["Records"] = merged
        else:
            document = {"FailedRecordCount": failed, "Records": errors, "EncryptionType": "NONE"}
        return _json_answer(call, document)

    def _batch_write(self, call: Call, rules: list[Rule], environ: dict[str, Any], app: WSGIApp) -> Response:
        """Return a seeded fraction of the write requests as UnprocessedItems; moto applies the rest."""
        items = call.document.get("RequestItems")
        if not isinstance(items, dict):
            return _forward(app, environ)
        kept: dict[str, list[Any]] = {}
        unprocessed: dict[str, list[Any]] = {}
        for table, requests in items.items():
            name = table.rsplit("/", 1)[-1]
            table_rules = [r for r in rules if "unprocessed" in r.actions and r.applies_to(name)]
            for request in requests if isinstance(requests, list) else []:
                skip = any(r.draw("unprocessed", "unprocessed_items") for r in table_rules)
                (unprocessed if skip else kept).setdefault(table, []).append(request)
        if not unprocessed:
            return _forward(app, environ)
        document: dict[str, Any] = {"UnprocessedItems": {}}
        if kept:
            replace_body(environ, json.dumps({**call.document, "RequestItems": kept}).encode())
            status, headers, body = _forward(app, environ)
            if not status.startswith("200"):
                return status, headers, body
            document = json.loads(body)
        left = document.setdefault("UnprocessedItems", {})
        for table, requests in unprocessed.items():
            left.setdefault(table, []).extend(requests)
        return _json_answer(call, document)

    # --- worker kills ------------------------------------------------------------------------------
    def plan_kill(self, function: str) -> KillTicket | None:
        """Whether to kill the worker of this invocation of ``function``, and when (None: don't)."""
        plan = self.plan
        if plan is None or not plan.kill_rules:
            return None
        for rule in plan.kill_rules:
            if rule.applies_to(function):
                rule.count("seen")
                if rule.draw("kill", "kills"):
                    return KillTicket(rule, rule.span_ms("kill") / 1000)
        return None


def _forward(app: WSGIApp, environ: dict[str, Any]) -> Response:
    """Call moto and collect its whole answer."""
    captured: list[Any] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[..., Any]:
        captured[:] = [status, list(headers)]
        return chunks.append

    chunks: list[bytes] = []
    result = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return captured[0], captured[1], b"".join(chunks)


def _json_answer(call: Call, document: dict[str, Any]) -> Response:
    body = json.dumps(document).encode()
    request_id = f"fault-{ACCOUNT}-{time.monotonic_ns()}"
    return status_line(200), json_headers(call.service, body, request_id), body


def _send(start_response: Callable[..., Any], response: Response) -> Iterable[bytes]:
    """Answer with ``response``; its length (and DynamoDB's body CRC, if present) recomputed."""
    status, headers, body = response
    fixed = [("Content-Length", str(len(body)))]
    if any(k.lower() == "x-amz-crc32" for k, _ in headers):
        fixed.append(("x-amz-crc32", str(zlib.crc32(body) & 0xFFFFFFFF)))
    skip = {"content-length", "x-amz-crc32"}
    start_response(status, [(k, v) for k, v in headers if k.lower() not in skip] + fixed)
    return [body]
