"""The one factory for AWS clients, bound to the settings' region and endpoint.

Every helper takes an optional ``settings`` (and often an optional client); when omitted,
settings come from :func:`helpers.pipeline.config.load_settings`. Clients use botocore's
``standard`` retry mode, so throttling and transient errors are retried by botocore.
"""

from __future__ import annotations

import functools
import json
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from helpers.pipeline.config import Settings, load_settings

__all__ = [
    "BUCKET_MISSING_CODES",
    "CALLS_ENV",
    "LOCAL_CREDENTIALS",
    "QUEUE_MISSING_CODES",
    "RUNNER_CREDENTIALS_FILE",
    "account_id",
    "backoff_seconds",
    "client",
    "error_code",
    "function_call_budget_seconds",
    "in_function",
    "is_missing",
    "local_credentials",
    "record_calls",
    "resource",
    "session",
    "wait_until",
]

# A local stack without IAM enforcement accepts any credentials; these well-known dummies keep
# real keys out of it. With enforcement (deploy.local.access) the stack writes its runner's key
# to this file under its state folder, and local clients sign with it.
LOCAL_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
RUNNER_CREDENTIALS_FILE = "iam/runner-credentials.json"
RETRY_CONFIG = {"mode": "standard", "max_attempts": 8}
CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = 60

# Inside a function the budget is its timeout (60 s, deploy/function_specs.py): one slow call must
# fail well within it, so the function reports those records as failed (retried alone) instead of
# timing out, which fails the whole batch and bisects it. Worst case of one call: attempts x
# (connect + read) plus the retry backoffs, see function_call_budget_seconds().
FUNCTION_ATTEMPTS = 3  # the first try included
FUNCTION_RETRY_CONFIG = {"mode": "standard", "total_max_attempts": FUNCTION_ATTEMPTS}
FUNCTION_CONNECT_TIMEOUT_SECONDS = 2
FUNCTION_READ_TIMEOUT_SECONDS = 5
STANDARD_MODE_BACKOFF_CAP_SECONDS = 20  # botocore standard mode: min(20, 2**attempt) with full jitter


def in_function() -> bool:
    """True inside a Lambda execution environment (AWS's or the local stack's)."""
    return bool(os.environ.get("AWS_LAMBDA_FUNCTION_NAME"))


def function_call_budget_seconds() -> float:
    """The longest one client call can take inside a function, retries included."""
    attempts = FUNCTION_ATTEMPTS
    waits = sum(min(STANDARD_MODE_BACKOFF_CAP_SECONDS, 2**n) for n in range(attempts - 1))
    return attempts * (FUNCTION_CONNECT_TIMEOUT_SECONDS + FUNCTION_READ_TIMEOUT_SECONDS) + waits


# Error codes meaning "no such resource", where a service has several spellings.
QUEUE_MISSING_CODES = ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist")
BUCKET_MISSING_CODES = ("404", "NoSuchBucket", "NotFound")

_lock = threading.Lock()


_credentials_cache: dict[str, tuple[int, dict[str, str]]] = {}


def local_credentials(settings: Settings | None = None) -> dict[str, str]:
    """The keys local clients sign with: the runner's, when the stack enforces IAM (its key file
    under ``state_dir``), else :data:`LOCAL_CREDENTIALS`. Re-read when the file changes."""
    s = settings or load_settings()
    path = os.path.join(s.state_dir, RUNNER_CREDENTIALS_FILE)
    try:
        stamp = os.stat(path).st_mtime_ns
    except OSError:
        return dict(LOCAL_CREDENTIALS)
    cached = _credentials_cache.get(path)
    if cached is not None and cached[0] == stamp:
        return dict(cached[1])
    try:
        with open(path, encoding="utf-8") as fh:
            saved = json.load(fh)
        keys = {name: str(saved[name]) for name in ("aws_access_key_id", "aws_secret_access_key")}
    except (OSError, ValueError, KeyError, TypeError):
        return dict(LOCAL_CREDENTIALS)
    _credentials_cache[path] = (stamp, keys)
    return dict(keys)


def session(settings: Settings | None = None) -> Any:
    """A boto3 session for the target. Local: the runner's key (or dummies, see
    :func:`local_credentials`); inside a local function, its role's keys from the environment,
    as on AWS. AWS: the profile / default chain."""
    import boto3

    s = settings or load_settings()
    if s.is_local:
        if in_function() and os.environ.get("AWS_ACCESS_KEY_ID"):
            return record_calls(boto3.session.Session(region_name=s.region))
        return record_calls(boto3.session.Session(region_name=s.region, **local_credentials(s)))
    return record_calls(boto3.session.Session(region_name=s.region, profile_name=s.profile))


CALLS_ENV = "STP_RECORD_CALLS"  # a file: every "<service>:<Operation>" the session's clients call
_recorded: set[str] = set()
_recorded_lock = threading.Lock()


def record_calls(session: Any) -> Any:
    """With ``STP_RECORD_CALLS`` set, append each new ``<signing name>:<operation>`` that the
    session's clients call to that file (how the runner policy is checked against the workbook)."""
    path = os.environ.get(CALLS_ENV)
    if not path:
        return session

    def before_call(model: Any, **_: Any) -> None:
        action = f"{model.service_model.signing_name}:{model.name}"
        with _recorded_lock:
            if action in _recorded:
                return
            _recorded.add(action)
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(action + "\n")

    session.events.register("before-call", before_call)
    return session


@functools.lru_cache(maxsize=64)
def _cached_client(settings: Settings, service: str, key: str | None = None) -> Any:
    return _new_client(settings, service)  # ``key``: a client per local key (a restarted stack's)


def _new_client(settings: Settings, service: str) -> Any:
    from botocore.config import Config

    function = in_function()
    config = Config(
        region_name=settings.region,
        retries=dict(FUNCTION_RETRY_CONFIG if function else RETRY_CONFIG),
        connect_timeout=FUNCTION_CONNECT_TIMEOUT_SECONDS if function else CONNECT_TIMEOUT_SECONDS,
        read_timeout=FUNCTION_READ_TIMEOUT_SECONDS if function else READ_TIMEOUT_SECONDS,
        max_pool_connections=32,
    )
    with _lock:  # boto3 session creation is not thread-safe
        return session(settings).client(service, endpoint_url=settings.resolved_endpoint, config=config)


def client(service: str, settings: Settings | None = None, *, cached: bool = True) -> Any:
    """A boto3 client for ``service`` bound to the settings' region and endpoint."""
    s = settings or load_settings()
    if not cached:
        return _new_client(s, service)
    key = local_credentials(s)["aws_access_key_id"] if s.is_local and not in_function() else None
    return _cached_client(s, service, key)


def resource(service: str, settings: Settings | None = None) -> Any:
    """A boto3 resource (used sparingly; clients are the default)."""
    from botocore.config import Config

    s = settings or load_settings()
    with _lock:
        return session(s).resource(
            service,
            endpoint_url=s.resolved_endpoint,
            config=Config(retries=dict(RETRY_CONFIG)),
        )


def account_id(settings: Settings | None = None) -> str:
    """The account the credentials belong to (the local stack answers 123456789012)."""
    return str(client("sts", settings).get_caller_identity()["Account"])


def error_code(err: BaseException) -> str:
    """The AWS error code of a botocore ``ClientError`` (``""`` for any other exception)."""
    response = getattr(err, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def is_missing(err: BaseException, *codes: str) -> bool:
    """True if ``err`` is a ``ClientError`` whose code is one of ``codes`` (default: ResourceNotFound)."""
    return error_code(err) in (codes or ("ResourceNotFoundException",))


def backoff_seconds(attempt: int, *, base: float, cap: float) -> float:
    """Full-jitter exponential backoff before retry ``attempt``: ``U(0, min(cap, base * 2**attempt))``.

    For retries botocore cannot do itself: entries a batch call reports as failed
    (PutRecords' failed records, BatchWriteItem's UnprocessedItems).
    """
    return random.uniform(0, min(cap, base * 2**attempt))


def wait_until(
    check: Callable[[], bool],
    what: str,
    timeout: float,
    *,
    poll: float = 0.5,
    error: type[Exception] = TimeoutError,
    hint: str = "",
) -> None:
    """Poll ``check`` until it is true; raise ``error`` naming ``what`` after ``timeout`` seconds.

    For states botocore has no waiter for (stream deletion, mapping updates).
    """
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise error(f"{what} did not become ready within {timeout:.0f} s" + (f"; {hint}" if hint else ""))
        time.sleep(poll)
