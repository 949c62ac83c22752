"""Deploy the processor and trend Lambda functions and their event source mappings.

``deploy_functions(settings)`` is idempotent, on AWS and on the local stack alike:

* each function is created, or its configuration updated when it differs (runtime, handler,
  role, timeout, memory, ``STP_*`` environment), and its code uploaded only when the freshly
  built zip's SHA-256 differs from the deployed ``CodeSha256``;
* each function has exactly one event source mapping to its stream (Kinesis -> processor,
  the processed table's DynamoDB stream -> trend), created or updated to the desired settings;
  duplicates and mappings left on an old stream are deleted.

Everything the functions need (IAM roles, stream, table stream, failure queue) comes from
``01_provision``; a missing piece raises :class:`ResourceMissingError` before anything changes.
``remove_functions`` deletes the mappings, then the functions.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from deploy.function_specs import (
    ARCHITECTURES,
    FUNCTION_SPECS,
    MAPPING_SPECS,
    RUNTIME,
    FunctionSpec,
    MappingSpec,
)
from deploy.package import FUNCTIONS, build_zip, sha256_b64
from helpers.core.errors import DeployError, ResourceMissingError
from helpers.pipeline import aws, resources
from helpers.pipeline.config import Settings, load_settings

__all__ = [
    "FUNCTION_SPECS",
    "MAPPING_SPECS",
    "RUNTIME",
    "FunctionSpec",
    "MappingSpec",
    "deploy_functions",
    "remove_functions",
]

log = logging.getLogger(__name__)

WAIT_SECONDS = 300.0  # function updates and mapping state changes
ROLE_PROPAGATION_SECONDS = 90.0  # a new IAM role can take this long to be assumable by Lambda
ROLE_RETRY_BASE_SECONDS = 1.0  # backoff between attempts while the role propagates
ROLE_RETRY_CAP_SECONDS = 10.0
_POLL_SECONDS = 1.0


def _poll_seconds(s: Settings) -> float:
    return 0.1 if s.is_local else _POLL_SECONDS


# --- prerequisites (from 01_provision) ----------------------------------------------------------


def _require(s: Settings, field: str, account: str) -> dict[str, Any]:
    """The registry probe's answer for the resource named by ``field``; missing: run 01_provision."""
    res = resources.by_field(field)
    found = resources.find(res, s, account)
    if found is None:
        raise ResourceMissingError(f"{res.kind} {res.name(s)} does not exist: run 01_provision first")
    return found


def _source_arn(s: Settings, kind: str, account: str) -> str:
    if kind == "processor":
        return str(_require(s, "stream_name", account)["StreamDescriptionSummary"]["StreamARN"])
    table = _require(s, "table_name", account)["Table"]
    arn = table.get("LatestStreamArn")
    if not arn or not table.get("StreamSpecification", {}).get("StreamEnabled"):
        raise ResourceMissingError(
            f"DynamoDB table {s.table_name} has no stream enabled: run 01_provision first"
        )
    return str(arn)


def _queue_arn(s: Settings, account: str) -> str:
    url = _require(s, "failure_queue_name", account)["QueueUrl"]
    attributes = aws.client("sqs", s).get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return str(attributes["Attributes"]["QueueArn"])


# --- functions ------------------------------------------------------------------------------------


def _retry_while_role_propagates(call: Callable[[], Any], s: Settings) -> Any:
    """Retry ``call`` while IAM reports a just-created role as not yet usable by Lambda.

    A bounded retry with :func:`aws.backoff_seconds` for up to ``ROLE_PROPAGATION_SECONDS``
    (on AWS; the local stack knows a role as soon as it exists): no botocore waiter covers it.
    """
    deadline = time.monotonic() + (ROLE_PROPAGATION_SECONDS if not s.is_local else 0)
    attempt = 0
    while True:
        try:
            return call()
        except ClientError as err:
            propagating = (
                aws.error_code(err) == "InvalidParameterValueException" and "role" in str(err).lower()
            )
            if not propagating or time.monotonic() > deadline:
                raise
            log.info("waiting for the IAM role to propagate: %s", err)
            time.sleep(aws.backoff_seconds(attempt, base=ROLE_RETRY_BASE_SECONDS, cap=ROLE_RETRY_CAP_SECONDS))
            attempt += 1


def _differs(current: dict[str, Any], desired: dict[str, Any]) -> list[str]:
    changed = []
    for key, value in desired.items():
        have = current.get(key)
        if key == "Environment":
            have, value = (have or {}).get("Variables", {}), value["Variables"]
        if have != value:
            changed.append(key)
    return changed


def _ensure_function(s: Settings, spec: FunctionSpec, role_arn: str, zip_path: Path) -> dict[str, Any]:
    lam = aws.client("lambda", s)
    name = getattr(s, spec.name_field)
    sha = sha256_b64(zip_path)
    desired = {
        "Runtime": RUNTIME,
        "Role": role_arn,
        "Handler": spec.handler,
        "Timeout": spec.timeout,
        "MemorySize": spec.memory_mb,
        "Environment": {"Variables": s.lambda_environment()},
        "Description": spec.description,
    }
    waiter_config = {"Delay": 1, "MaxAttempts": int(WAIT_SECONDS)}
    try:
        current = lam.get_function(FunctionName=name)["Configuration"]
    except ClientError as err:
        if not aws.is_missing(err):
            raise
        current = None
    actions: list[str] = []
    if current is None:
        code = zip_path.read_bytes()
        created = _retry_while_role_propagates(
            lambda: lam.create_function(
                FunctionName=name, Code={"ZipFile": code}, Architectures=ARCHITECTURES, **desired
            ),
            s,
        )
        lam.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig=waiter_config)
        arn, actions = created["FunctionArn"], ["created"]
    else:
        arn = current["FunctionArn"]
        if current.get("LastUpdateStatus") == "InProgress":
            lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig=waiter_config)
        changed = _differs(current, desired)
        if changed:
            _retry_while_role_propagates(
                lambda: lam.update_function_configuration(FunctionName=name, **desired), s
            )
            lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig=waiter_config)
            actions.append("configuration:" + ",".join(changed))
        if current.get("CodeSha256") != sha:
            lam.update_function_code(FunctionName=name, ZipFile=zip_path.read_bytes())
            lam.get_waiter("function_updated_v2").wait(FunctionName=name, WaiterConfig=waiter_config)
            actions.append("code")
    log.info("function %s: %s", name, ", ".join(actions) or "unchanged")
    return {
        "name": name,
        "arn": arn,
        "handler": spec.handler,
        "code_sha256": sha,
        "zip_bytes": zip_path.stat().st_size,
        "action": "+".join(actions) or "unchanged",
    }


# --- event source mappings ------------------------------------------------------------------------


def _mappings(lam: Any, function: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for page in lam.get_paginator("list_event_source_mappings").paginate(FunctionName=function):
        found.extend(page.get("EventSourceMappings", []))
    return found


def _mapping_state(lam: Any, uuid: str) -> str:
    try:
        return str(lam.get_event_source_mapping(UUID=uuid).get("State", ""))
    except ClientError as err:
        if aws.is_missing(err):
            return "Deleted"
        raise


def _wait_mapping(lam: Any, uuid: str, states: tuple[str, ...], s: Settings) -> None:
    aws.wait_until(
        lambda: _mapping_state(lam, uuid) in states,
        f"event source mapping {uuid}",
        WAIT_SECONDS,
        poll=_poll_seconds(s),
        error=DeployError,
        hint="check it in the Lambda console and retry",
    )


def _mapping_differs(current: dict[str, Any], desired: dict[str, Any]) -> list[str]:
    changed = []
    for key, value in desired.items():
        if key == "Enabled":
            have: Any = current.get("State") in ("Enabled", "Enabling", "Creating", "Updating")
        elif key == "DestinationConfig":
            have = ((current.get(key) or {}).get("OnFailure") or {}).get("Destination")
            value = value["OnFailure"]["Destination"]
        elif key == "FunctionResponseTypes":
            have, value = sorted(current.get(key) or []), sorted(value)
        elif key == "FilterCriteria":
            have, value = _patterns(current.get(key)), _patterns(value)
        else:
            have = current.get(key)
        if have != value:
            changed.append(key)
    return changed


def _patterns(criteria: Any) -> list[Any]:
    """FilterCriteria as parsed patterns, to compare whatever their JSON spacing."""
    filters = (criteria or {}).get("Filters") or [] if isinstance(criteria, dict) else []
    return sorted(
        (json.loads(f.get("Pattern") or "{}") for f in filters), key=lambda p: json.dumps(p, sort_keys=True)
    )


def _ensure_mapping(
    s: Settings, kind: str, function: str, source_arn: str, failure_queue_arn: str
) -> dict[str, Any]:
    lam = aws.client("lambda", s)
    spec = MAPPING_SPECS[kind]
    desired = spec.desired(failure_queue_arn)
    service = source_arn.split(":")[2]
    existing = [m for m in _mappings(lam, function) if m["EventSourceArn"].split(":")[2] == service]
    keep = [m for m in existing if m["EventSourceArn"] == source_arn]
    extra = keep[1:] + [m for m in existing if m["EventSourceArn"] != source_arn]
    for mapping in extra:  # duplicates, or mappings left on a deleted/re-created stream
        log.info(
            "deleting surplus mapping %s of %s (%s)", mapping["UUID"], function, mapping["EventSourceArn"]
        )
        _delete_mapping(lam, mapping["UUID"], s)
    if not keep:
        created = _retry_while_role_propagates(
            lambda: lam.create_event_source_mapping(
                FunctionName=function,
                EventSourceArn=source_arn,
                StartingPosition=spec.starting_position,
                **desired,
            ),
            s,
        )
        uuid, action = created["UUID"], "created"
        _wait_mapping(lam, uuid, ("Enabled",), s)
    else:
        uuid = keep[0]["UUID"]
        current = lam.get_event_source_mapping(UUID=uuid)
        changed = _mapping_differs(current, desired)
        action = "unchanged"
        if changed:
            _wait_mapping(lam, uuid, ("Enabled", "Disabled"), s)
            lam.update_event_source_mapping(UUID=uuid, FunctionName=function, **desired)
            _wait_mapping(lam, uuid, ("Enabled",), s)
            action = "updated:" + ",".join(changed)
    log.info("mapping %s -> %s: %s", source_arn, function, action)
    return {
        "uuid": uuid,
        "function": function,
        "source_arn": source_arn,
        "action": action,
        "removed": len(extra),
    }


def _delete_mapping(lam: Any, uuid: str, s: Settings) -> None:
    try:
        lam.delete_event_source_mapping(UUID=uuid)
    except ClientError as err:
        if not aws.is_missing(err):
            raise
    _wait_mapping(lam, uuid, ("Deleted",), s)


# --- public API -----------------------------------------------------------------------------------


def deploy_functions(
    settings: Settings | None = None,
    *,
    functions: Iterable[str] = FUNCTIONS,
    build_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Create or update the functions and their mappings; returns what was done, per function."""
    s = settings or load_settings()
    kinds = list(functions)
    unknown = [k for k in kinds if k not in FUNCTION_SPECS]
    if unknown:
        raise DeployError(f"unknown functions {unknown}: use {list(FUNCTION_SPECS)}")
    build = Path(build_dir) if build_dir is not None else Path(s.state_dir) / "build"
    # Resolve every prerequisite before changing anything.
    account = aws.account_id(s)
    roles = {
        kind: str(_require(s, FUNCTION_SPECS[kind].role_field, account)["Role"]["Arn"]) for kind in kinds
    }
    sources = {kind: _source_arn(s, kind, account) for kind in kinds}
    failure_queue = _queue_arn(s, account)
    zips = {kind: build_zip(kind, build) for kind in kinds}
    summary: dict[str, Any] = {"functions": {}, "mappings": {}, "failure_queue_arn": failure_queue}
    for kind in kinds:
        spec = FUNCTION_SPECS[kind]
        summary["functions"][kind] = _ensure_function(s, spec, roles[kind], zips[kind])
        name = summary["functions"][kind]["name"]
        summary["mappings"][kind] = _ensure_mapping(s, kind, name, sources[kind], failure_queue)
    return summary


def remove_functions(
    settings: Settings | None = None, *, functions: Iterable[str] = FUNCTIONS
) -> dict[str, Any]:
    """Delete the functions' event source mappings, then the functions. Safe to run again."""
    s = settings or load_settings()
    lam = aws.client("lambda", s)
    result: dict[str, Any] = {}
    for kind in functions:
        name = getattr(s, FUNCTION_SPECS[kind].name_field)
        try:
            mappings = _mappings(lam, name)
        except ClientError as err:
            if not aws.is_missing(err):
                raise
            mappings = []
        for mapping in mappings:
            _delete_mapping(lam, mapping["UUID"], s)
        try:
            lam.delete_function(FunctionName=name)
            action = "deleted"
        except ClientError as err:
            if not aws.is_missing(err):
                raise
            action = "absent"
        log.info("function %s: %s (%d mappings deleted)", name, action, len(mappings))
        result[kind] = {"name": name, "function": action, "mappings_deleted": len(mappings)}
    return result
