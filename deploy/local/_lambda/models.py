"""Value objects of the local Lambda runtime, read from moto's Lambda registry.

A :class:`FunctionSnapshot` is a function as deployed at one instant (code, handler, environment,
timeout...); a :class:`MappingConfig` is an event source mapping's settings at one instant; an
:class:`Outcome` is what one invocation produced. Snapshots are taken for every batch, so an
``update_function_configuration`` or ``update_event_source_mapping`` applies to the next batch.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Literal

MOTO_ACCOUNT_ID = "123456789012"
LATEST = "$LATEST"

Status = Literal["ok", "error", "timeout", "crash", "unavailable"]


def lambda_backends() -> Any:
    from moto.backends import get_backend

    return get_backend("lambda")


@dataclass(frozen=True)
class FunctionSnapshot:
    """One Lambda function as deployed (moto's ``LambdaFunction``), immutable."""

    name: str
    arn: str
    region: str
    account: str
    handler: str
    runtime: str
    role: str
    timeout: float
    memory_mb: int
    environment: tuple[tuple[str, str], ...]
    code_digest: str  # sha256 hex of the zip: names the extracted folder
    code: bytes = field(repr=False, compare=False)

    @property
    def log_group(self) -> str:
        return f"/aws/lambda/{self.name}"

    @property
    def fingerprint(self) -> tuple[Any, ...]:
        """What a warm worker depends on: a change means a fresh worker."""
        return (
            self.code_digest,
            self.handler,
            self.runtime,
            self.timeout,
            self.memory_mb,
            self.environment,
            self.role,
        )

    @classmethod
    def from_moto(cls, fn: Any) -> FunctionSnapshot:
        return cls(
            name=fn.function_name,
            arn=fn.function_arn,
            region=fn.region,
            account=fn.account_id,
            handler=fn.handler or "",
            runtime=fn.run_time or "",
            role=fn.role or "",
            timeout=float(fn.timeout or 3),
            memory_mb=int(fn.memory_size or 128),
            environment=tuple(sorted((str(k), str(v)) for k, v in (fn.environment_vars or {}).items())),
            code_digest=getattr(fn, "code_digest", "") or "",
            code=fn.code_bytes or b"",
        )


def find_function(
    name_or_arn: str, region: str, account: str = MOTO_ACCOUNT_ID, qualifier: str | None = None
) -> FunctionSnapshot | None:
    """The function named (or ARN'd) in moto's registry, or None if it does not exist."""
    if name_or_arn.startswith("arn:"):
        parts = name_or_arn.split(":")
        region, account = parts[3], parts[4]
    try:
        fn = lambda_backends()[account][region].get_function(name_or_arn, qualifier)
    except Exception:  # moto raises its own UnknownFunctionException / ValueError
        return None
    return FunctionSnapshot.from_moto(fn) if fn is not None else None


@dataclass(frozen=True)
class MappingConfig:
    """An event source mapping's settings (moto's ``EventSourceMapping``), with AWS defaults."""

    uuid: str
    function_arn: str
    source_arn: str
    region: str
    account: str
    enabled: bool
    batch_size: int
    window_seconds: float
    starting_position: str
    starting_timestamp: float | None
    report_item_failures: bool
    bisect: bool
    max_retries: int  # -1: until the record expires
    max_record_age: int  # -1: no limit
    on_failure: str | None
    filter_criteria: Any = None

    @property
    def source_kind(self) -> str:
        return self.source_arn.split(":")[2] if self.source_arn.count(":") >= 5 else ""

    @classmethod
    def from_moto(cls, esm: Any) -> MappingConfig:
        destination = ((esm.destination_config or {}).get("OnFailure") or {}).get("Destination") or None
        return cls(
            uuid=esm.uuid,
            function_arn=esm.function_arn,
            source_arn=esm.event_source_arn,
            region=esm.region,
            account=esm.account_id,
            enabled=bool(esm.enabled),
            batch_size=int(esm.batch_size or 100),
            window_seconds=float(esm.max_batch_window or 0),
            starting_position=str(esm.starting_position or "TRIM_HORIZON"),
            starting_timestamp=_epoch(esm.starting_position_timestamp),
            report_item_failures="ReportBatchItemFailures" in (esm.function_response_types or []),
            bisect=bool(esm.bisect_on_error),
            max_retries=_int_or(esm.max_retry_attempts, -1),
            max_record_age=_int_or(esm.max_record_age, -1),
            on_failure=destination,
            filter_criteria=esm.filter_criteria or None,
        )


def _int_or(value: Any, default: int) -> int:
    return default if value is None else int(value)


def _epoch(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.datetime):
        return value.timestamp()
    try:
        return float(value)
    except (TypeError, ValueError):
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


@dataclass
class Outcome:
    """What one invocation produced, as the Lambda service reports it."""

    request_id: str
    status: Status
    payload: str = "null"  # the handler's JSON result (status "ok")
    error: dict[str, Any] | None = None  # errorType / errorMessage / stackTrace
    duration_ms: float = 0.0
    init_ms: float | None = None
    log_lines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def function_error(self) -> bool:
        """An error of the function itself (``X-Amz-Function-Error: Unhandled``)."""
        return self.status in ("error", "timeout", "crash")

    def result(self) -> Any:
        import json

        return json.loads(self.payload) if self.ok else None

    def error_payload(self) -> bytes:
        import json

        return json.dumps(self.error or {}).encode()
