"""The Lambda ``Invoke`` API on the wire (``POST /2015-03-31/functions/<name>/invocations``).

moto would try to run the function in Docker; the runtime claims these requests and runs them
in its workers. Answers follow AWS: 200 with the function's JSON result (or its error object and
``X-Amz-Function-Error: Unhandled``), ``X-Amz-Executed-Version``, ``X-Amz-Log-Result`` (the last
4 KB of the log, base64) for ``LogType=Tail``; 202 for ``InvocationType=Event`` (run in the
background); 204 for ``DryRun``; ``ResourceNotFoundException`` for an unknown function.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterable
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote

from deploy.local._lambda.models import LATEST, MOTO_ACCOUNT_ID, FunctionSnapshot, Outcome

INVOKE_PATH = re.compile(r"^/2015-03-31/functions/(?P<function>[^/]+)/invocations/?$")
CREDENTIAL_SCOPE = re.compile(
    r"Credential=[^/,]+/\d{8}/(?P<region>[a-z0-9-]+)/(?P<service>[a-z0-9-]+)/aws4_request"
)
TAIL_BYTES = 4096
MAX_REQUEST_BYTES = 6_291_456


class Invoker(Protocol):
    region: str

    def function(self, name: str, region: str, qualifier: str | None = None) -> FunctionSnapshot | None: ...

    def invoke_function(self, snap: FunctionSnapshot, event: Any) -> Outcome: ...

    def invoke_async(self, snap: FunctionSnapshot, event: Any) -> bool: ...


def claims(environ: dict[str, Any]) -> bool:
    """True for a signed (or unsigned) Lambda Invoke request."""
    if environ.get("REQUEST_METHOD") != "POST" or not INVOKE_PATH.match(environ.get("PATH_INFO", "")):
        return False
    scope = CREDENTIAL_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    return scope is None or scope["service"] == "lambda"


def handle(runtime: Invoker, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    match = INVOKE_PATH.match(environ.get("PATH_INFO", ""))
    assert match is not None
    name = unquote(match["function"])
    scope = CREDENTIAL_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    region = scope["region"] if scope else runtime.region
    if name.startswith("arn:"):
        region = name.split(":")[3]
    qualifier = (parse_qs(environ.get("QUERY_STRING", "")).get("Qualifier") or [None])[0]
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length > MAX_REQUEST_BYTES:
        message = f"Request must be smaller than {MAX_REQUEST_BYTES} bytes for the InvokeFunction operation"
        return _error(start_response, "413 Request Entity Too Large", "RequestTooLargeException", message)
    body = environ["wsgi.input"].read(length) if length else b""
    snap = runtime.function(name, region, qualifier)
    if snap is None:
        arn = (
            name if name.startswith("arn:") else f"arn:aws:lambda:{region}:{MOTO_ACCOUNT_ID}:function:{name}"
        )
        return _error(
            start_response, "404 Not Found", "ResourceNotFoundException", f"Function not found: {arn}"
        )
    try:
        event = json.loads(body) if body.strip() else {}
    except ValueError as err:
        return _error(
            start_response,
            "400 Bad Request",
            "InvalidRequestContentException",
            f"Could not parse request body into json: {err}",
        )
    invocation_type = environ.get("HTTP_X_AMZ_INVOCATION_TYPE", "RequestResponse")
    if invocation_type == "DryRun":
        return _respond(start_response, "204 No Content", b"", {})
    if invocation_type == "Event":
        if not runtime.invoke_async(snap, event):
            return _error(
                start_response, "429 Too Many Requests", "TooManyRequestsException", "Rate Exceeded."
            )
        return _respond(start_response, "202 Accepted", b"", {})
    outcome = runtime.invoke_function(snap, event)
    if outcome.status == "unavailable":
        error = outcome.error or {}
        code = error.get("errorType", "ServiceException")
        status = "429 Too Many Requests" if code == "TooManyRequestsException" else "503 Service Unavailable"
        return _error(start_response, status, code, error.get("errorMessage", "the local stack is stopping"))
    headers = {"X-Amz-Executed-Version": LATEST, "x-amzn-RequestId": outcome.request_id}
    if environ.get("HTTP_X_AMZ_LOG_TYPE") == "Tail":
        tail = ("\n".join(outcome.log_lines) + "\n").encode()[-TAIL_BYTES:]
        headers["X-Amz-Log-Result"] = base64.b64encode(tail).decode()
    if outcome.ok:
        return _respond(start_response, "200 OK", outcome.payload.encode(), headers)
    headers["X-Amz-Function-Error"] = "Unhandled"
    return _respond(start_response, "200 OK", outcome.error_payload(), headers)


def _respond(
    start_response: Callable[..., Any], status: str, body: bytes, headers: dict[str, str]
) -> Iterable[bytes]:
    pairs = [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers.items()]
    start_response(status, pairs)
    return [body]


def _error(start_response: Callable[..., Any], status: str, code: str, message: str) -> Iterable[bytes]:
    body = json.dumps({"Type": "User", "message": message}).encode()
    return _respond(start_response, status, body, {"x-amzn-ErrorType": code})
