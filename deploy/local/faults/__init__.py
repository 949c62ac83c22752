"""Fault injector of the local stack: AWS's throttling and errors, latency, worker kills. Off by default.

Set a plan at start (``python -m deploy.local up --faults FILE_OR_JSON``, ``up(settings,
faults=spec)``) or at run time (``python -m deploy.local faults set|show|clear``,
:func:`set_faults` / :func:`get_faults` / :func:`clear_faults` / :func:`faults_applied`, or
``GET|PUT|DELETE /_stp/faults`` on the stack). ``status`` shows the plan and its counters.

The spec (JSON)::

    {
      "seed": 7,                      # default 0; rule i draws from Random("7:i")
      "internal": false,              # default: requests the stack itself makes are exempt
      "description": "20 % throttling on one pipeline",
      "rules": [
        {"service": "kinesis", "operation": "PutRecords", "resource": "stp-chaos-*",
         "entry_error": {"rate": 0.2, "code": "ProvisionedThroughputExceededException"}},
        {"service": "dynamodb", "operation": "BatchWriteItem", "resource": "stp-chaos-*",
         "unprocessed": {"rate": 0.2}},
        {"service": "dynamodb", "operation": ["PutItem", "UpdateItem"],
         "error": {"rate": 0.2, "code": "ProvisionedThroughputExceededException"}},
        {"service": "s3", "operation": "PutObject", "resource": "stp-chaos-raw",
         "key_contains": "symbol=BAD/", "error": {"rate": 1.0, "code": "AccessDenied"}},
        {"service": "s3", "latency": {"ms": [20, 80]}},
        {"service": "lambda", "resource": "stp-chaos-processor",
         "kill": {"rate": 0.1, "delay_ms": [0, 300], "max": 10}}
      ]
    }

A rule names its ``service`` (kinesis, dynamodb, s3, sqs, sns, lambda) and may narrow it by
``operation`` (API name(s) as botocore spells them, default all), ``resource`` (glob(s) on the
stream, table, bucket, queue, topic or function name) and, for S3, ``key_prefix`` /
``key_contains``. Its faults, each with ``rate`` (0-1, default 1) and an optional ``max`` count:

* ``error``: answer with ``code`` (see :data:`wire.ERRORS`; another code needs ``status``) in the
  service's wire format, e.g. Kinesis/DynamoDB ``ProvisionedThroughputExceededException``,
  ``ThrottlingException``, DynamoDB ``InternalServerError`` (500), S3 ``SlowDown`` (503),
  ``InternalError``, ``AccessDenied``, SQS ``RequestThrottled``, SNS ``Throttled``;
* ``entry_error`` (Kinesis PutRecords): per entry, ``ProvisionedThroughputExceededException``
  or ``InternalFailure`` in its Records slot; failed entries are not stored;
* ``unprocessed`` (DynamoDB BatchWriteItem): per request, returned in ``UnprocessedItems`` and
  not applied;
* ``latency``: ``{"ms": 50}`` or ``{"ms": [10, 100]}`` before the call (``"latency": 50`` too);
* ``kill`` (lambda): SIGKILL the worker ``delay_ms`` (number or range) after an invocation
  starts; the mapping's retry semantics take it from there.

Counters per rule: ``seen`` (matching calls or invocations), ``errors``, ``failed_entries``,
``unprocessed_items``, ``delayed`` and ``latency_ms``, ``kills`` (delivered during an invocation).
A plan is validated strictly (:class:`FaultSpecError` names the field); setting a plan resets the
draws and counters.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from deploy.local.faults.injector import ADMIN_PATH, INTERNAL_AGENT, FaultInjector, KillTicket
from deploy.local.faults.spec import FaultSpecError, Plan, parse_plan
from helpers.core.errors import LocalStackError
from helpers.pipeline.config import Settings, load_settings

__all__ = [
    "ADMIN_PATH",
    "INTERNAL_AGENT",
    "FaultInjector",
    "FaultSpecError",
    "KillTicket",
    "Plan",
    "clear_faults",
    "faults_applied",
    "get_faults",
    "load_spec",
    "parse_plan",
    "set_faults",
]

ADMIN_TIMEOUT_SECONDS = 10.0
Spec = Mapping[str, Any] | str | Path


def load_spec(source: Spec) -> dict[str, Any]:
    """A validated spec from a mapping, a JSON text (starting with ``{``) or a JSON file's path."""
    if isinstance(source, Mapping):
        spec: Any = dict(source)
    else:
        text = str(source).strip()
        if not text.startswith("{"):
            path = Path(text)
            try:
                text = path.read_text()
            except OSError as err:
                raise FaultSpecError(
                    "spec",
                    str(source),
                    f"not JSON and not a readable file ({err})",
                    "pass a JSON object or a path to one",
                ) from err
        try:
            spec = json.loads(text)
        except ValueError as err:
            raise FaultSpecError("spec", text[:80], f"not valid JSON ({err})", "fix the JSON") from err
    parse_plan(spec)
    return dict(spec)


def _admin(settings: Settings | None, method: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    s = settings or load_settings()
    url = f"http://127.0.0.1:{s.local_port}{ADMIN_PATH}"
    data = json.dumps(spec).encode() if spec is not None else None
    request = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=ADMIN_TIMEOUT_SECONDS) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
            return answer
    except urllib.error.HTTPError as err:
        detail = json.loads(err.read() or b"{}").get("error", err.reason)
        raise LocalStackError(f"the local stack refused the fault plan: {detail}") from err
    except (urllib.error.URLError, OSError) as err:
        raise LocalStackError(
            f"the local stack does not answer at {url} ({err}); start it with python -m deploy.local up"
        ) from err


def get_faults(settings: Settings | None = None) -> dict[str, Any]:
    """The active plan with its counters (``{"active": false}`` when off)."""
    return _admin(settings, "GET")


def set_faults(settings: Settings | None, spec: Spec) -> dict[str, Any]:
    """Replace the running stack's plan (validated here first); returns it, counters at zero."""
    return _admin(settings, "PUT", load_spec(spec))


def clear_faults(settings: Settings | None = None) -> dict[str, Any]:
    """Switch faults off; returns the plan that was active with its final counters."""
    return _admin(settings, "DELETE")["cleared"]


@contextlib.contextmanager
def faults_applied(settings: Settings | None, spec: Spec) -> Iterator[dict[str, Any]]:
    """``with faults_applied(settings, spec) as final:`` — faults on inside, off after (always).

    ``final`` is filled on exit with the plan's final description (counters included).
    """
    final: dict[str, Any] = {}
    set_faults(settings, spec)
    try:
        yield final
    finally:
        final.update(clear_faults(settings))
