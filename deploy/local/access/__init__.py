"""IAM enforced on the local stack: who signed each request, and whether their policies allow it.

On (the default; ``STP_LOCAL_IAM=0`` or ``up --no-iam`` turns it off), the stack answers every
AWS request as AWS does for an identity with only its own policies:

* **The runner.** At start the stack holds an IAM user ``stp-runner`` whose one inline policy is
  :func:`deploy.iam.runner_policy` for the stack's settings (what ``deploy/runner-policy.json``
  ships, the placeholders filled), and an access key written to
  ``<state_dir>/iam/runner-credentials.json`` (mode 0600). Clients of target ``local``
  (:func:`helpers.pipeline.aws.session`) sign with that key, so the notebooks run with exactly
  the runner policy, ``iam:PassRole`` of the two execution roles to Lambda included.
* **The functions.** Each Lambda worker starts with credentials of ``sts:AssumeRole`` on its
  function's execution role (session name: the function, as on AWS), in the reserved
  ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN`` variables; a role that
  does not exist, or whose trust policy does not let ``lambda.amazonaws.com`` assume it, fails
  the invocation. Policies are read at each request, so ``PutRolePolicy`` applies at once.
* **Lambda's own calls with the role.** The runtime reads a mapping's stream only while the
  function's role may (:func:`source_read_problem`: otherwise the shard reports Lambda's
  ``PROBLEM: The provided execution role does not have permissions to call GetRecords on
  Kinesis`` and tries again each second), and signs on-failure records with the role.
* **The stack's own plumbing** (the queue URL look-up of a destination, the Athena engine's
  reads) signs with a key that exists only in the stack's memory and passes; so do ``/_stp/``
  and ``/moto-api/`` admin paths.

The decision (:mod:`.policies`) is IAM's for identity policies: explicit deny wins, else some
statement must allow the action (:mod:`.calls` names it as IAM does) on *every* resource the
request touches, with the conditions' keys from the request (``iam:PassedToService`` for
PassRole, ``aws:SecureTransport`` false). A refusal is the service's own error on the wire
(``AccessDeniedException`` for JSON services and Lambda, ``AccessDenied`` for S3, SQS, IAM and
STS, ``AuthorizationError`` for SNS) with AWS's message: "User: <arn> is not authorized to
perform: <action> on resource: <arn> because no identity-based policy allows the <action>
action". An unknown key is ``UnrecognizedClientException``/``InvalidClientTokenId``/
``InvalidAccessKeyId``, a wrong secret ``InvalidSignatureException``/``SignatureDoesNotMatch``.

``CreateEventSourceMapping`` checks the function's role may read the source, as Lambda does
(``InvalidParameterValueException``: "The provided execution role does not have permissions to
call GetRecords on Kinesis").

Not evaluated (AWS would): resource-based policies (bucket, queue and topic policies, Lambda
permissions), permission boundaries, SCPs and session policies; condition operators other
than ``String*``, ``Arn*``, ``Bool`` and ``Null`` (an unknown one never grants). moto's own
check (``INITIAL_NO_AUTH_ACTION_COUNT``) stays off: it passes ``*`` as the resource for most
services, so a policy scoped to ARNs (all of this pipeline's) would allow nothing there.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from deploy.local.access import principals
from deploy.local.access.calls import Call, Lookups, identify
from deploy.local.access.policies import EXPLICIT_DENY, evaluate
from deploy.local.faults import wire
from helpers.pipeline.aws import LOCAL_CREDENTIALS, RUNNER_CREDENTIALS_FILE

log = logging.getLogger(__name__)

__all__ = [
    "ADMIN_PATH",
    "ENV",
    "RUNNER_POLICY_NAME",
    "RUNNER_USER",
    "AccessGate",
    "RoleNotAssumable",
    "enabled_by_default",
    "function_credentials",
    "gate",
    "install",
    "internal_credentials",
    "source_read_problem",
]

ENV = "STP_LOCAL_IAM"
ADMIN_PATH = "/_stp/iam"
MOTO_ADMIN_PREFIX = "/moto-api/"  # moto's own dashboard and reset: the stack's, like /_stp/
RUNNER_USER = "stp-runner"
RUNNER_POLICY_NAME = "runner"
ACCOUNT = wire.ACCOUNT
LAMBDA_PRINCIPAL = "lambda.amazonaws.com"
ROLE_SESSION_SECONDS = 43_200  # the longest a role session may last
RECENT_DENIALS = 20

_NOT_AUTHORIZED = "User: {arn} is not authorized to perform: {action}{on} because {why}"
_WHY = {
    EXPLICIT_DENY: "with an explicit deny in an identity-based policy",
    "implicit deny": "no identity-based policy allows the {action} action",
}
# (code, HTTP status) by protocol and service: what AWS answers
_DENIED = {"json": ("AccessDeniedException", 400), "rest-json": ("AccessDeniedException", 403)}
_DENIED_BY_SERVICE = {
    "s3": ("AccessDenied", 403), "sqs": ("AccessDenied", 403), "iam": ("AccessDenied", 403),
    "sts": ("AccessDenied", 403), "sns": ("AuthorizationError", 403),
}  # fmt: skip
_INVALID_KEY = {
    "json": ("UnrecognizedClientException", 400),
    "rest-json": ("UnrecognizedClientException", 403),
}
_INVALID_KEY_BY_SERVICE = {"s3": ("InvalidAccessKeyId", 403)}
_BAD_SIGNATURE = {"json": ("InvalidSignatureException", 400), "rest-json": ("InvalidSignatureException", 403)}
_BAD_SIGNATURE_BY_SERVICE = {"s3": ("SignatureDoesNotMatch", 403)}
_MESSAGES = {
    "key": "The security token included in the request is invalid.",
    "s3key": "The AWS Access Key Id you provided does not exist in our records.",
    "signature": (
        "The request signature we calculated does not match the signature you provided. Check your AWS "
        "Secret Access Key and signing method. Consult the service documentation for details."
    ),
    "missing": "Missing Authentication Token",
}


def enabled_by_default(environ: dict[str, str] | None = None) -> bool:
    """``STP_LOCAL_IAM`` (``1``/``0``), on when unset."""
    value = (os.environ if environ is None else environ).get(ENV, "1").strip().lower()
    return value not in ("0", "false", "no", "off")


def _code(
    protocol: str,
    service: str,
    by_protocol: dict[str, tuple[str, int]],
    by_service: dict[str, tuple[str, int]],
    default: tuple[str, int],
) -> tuple[str, int]:
    return by_service.get(service) or by_protocol.get(protocol) or default


class AccessGate:
    """The check in front of every AWS request (see the module docstring); off, it passes all."""

    def __init__(self, enabled: bool = False) -> None:
        self.enabled = enabled
        # the stack's own requests: a key that exists only in this process
        self.internal_key = "STPINTERNAL" + secrets.token_hex(8).upper()
        self.internal_secret = secrets.token_hex(20)
        self.state_dir: Path | None = None
        self.runner_arn = ""
        self.region = "us-east-1"
        self._lock = threading.Lock()
        self.counters = {"allowed": 0, "denied": 0, "invalid_key": 0, "bad_signature": 0, "unsigned": 0}
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_DENIALS)
        self.check_seconds = 0.0
        self.lookups: Lookups = {}  # set by the stack's components (see deploy.local.access.calls)

    # --- start ------------------------------------------------------------------------------
    def start(self, state_dir: Path, region: str) -> None:
        """Create (or refresh) the runner and its key file; remove the file when off."""
        self.state_dir = Path(state_dir)
        self.region = region
        path = self.credentials_path
        if not self.enabled:
            path.unlink(missing_ok=True)
            return
        self.runner_arn = _ensure_runner(path, region, self.runner_policy())

    @property
    def credentials_path(self) -> Path:
        assert self.state_dir is not None
        return self.state_dir / RUNNER_CREDENTIALS_FILE

    def runner_policy(self) -> dict[str, Any]:
        """The shipped runner policy for the stack's settings (its environment's)."""
        from deploy.iam import Arns, runner_policy
        from helpers.pipeline.config import load_settings

        settings = load_settings(region=self.region)
        return runner_policy(Arns.for_account(settings, ACCOUNT))

    def set_runner_policy(self, document: dict[str, Any] | None) -> None:
        """Replace the runner's policy (``None``: the shipped one again)."""
        from moto.iam.models import iam_backends

        doc = self.runner_policy() if document is None else document
        iam_backends[ACCOUNT]["aws"].put_user_policy(RUNNER_USER, RUNNER_POLICY_NAME, json.dumps(doc))

    # --- the check ----------------------------------------------------------------------------
    def check(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes] | None:
        """None when the request may go on, else AWS's error answer (status, headers, body)."""
        if not self.enabled:
            return None
        started = time.perf_counter()
        try:
            return self._check(environ)
        finally:
            with self._lock:
                self.check_seconds += time.perf_counter() - started

    def _check(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes] | None:
        if str(environ.get("PATH_INFO", "")).startswith(MOTO_ADMIN_PREFIX):
            return None
        header = str(environ.get("HTTP_AUTHORIZATION", ""))
        query = str(environ.get("QUERY_STRING", ""))
        if header.startswith("AWS4-HMAC-SHA256 "):
            auth = principals.parse_authorization(header)
            token = environ.get("HTTP_X_AMZ_SECURITY_TOKEN")
            presigned = False
        elif "X-Amz-Credential=" in query:  # a presigned URL: the key's owner, signature not checked
            from urllib.parse import parse_qs

            q = {k: v[0] for k, v in parse_qs(query).items()}
            auth = principals.parse_authorization("X Credential=" + q.get("X-Amz-Credential", ""))
            token = q.get("X-Amz-Security-Token")
            presigned = True
        else:
            service = wire.service_of(environ) or "s3"
            return self._refuse(
                environ, service, "unsigned", "MissingAuthenticationToken", 403, _MESSAGES["missing"]
            )
        if "key" not in auth:
            return self._refuse(
                environ, "s3", "unsigned", "MissingAuthenticationToken", 403, _MESSAGES["missing"]
            )
        if auth["key"] == self.internal_key:
            return None
        service, region = auth["service"], auth["region"]
        protocol = "rest-xml" if service == "s3" else ("rest-json" if service == "lambda" else "query")
        if environ.get("HTTP_X_AMZ_TARGET"):
            protocol = "json"
        try:
            principal = principals.find(auth["key"], token)
        except principals.UnknownKey:
            code, status = _code(
                protocol, service, _INVALID_KEY, _INVALID_KEY_BY_SERVICE, ("InvalidClientTokenId", 403)
            )
            message = _MESSAGES["s3key"] if service == "s3" else _MESSAGES["key"]
            return self._refuse(environ, service, "invalid_key", code, status, message, protocol)
        if not presigned:
            body = None if service == "s3" else wire.read_body(environ)
            try:
                principals.verify_signature(environ, auth, principal, body)
            except principals.SignatureError:
                code, status = _code(
                    protocol,
                    service,
                    _BAD_SIGNATURE,
                    _BAD_SIGNATURE_BY_SERVICE,
                    ("SignatureDoesNotMatch", 403),
                )
                return self._refuse(
                    environ, service, "bad_signature", code, status, _MESSAGES["signature"], protocol
                )
        call = identify(environ, service, region, principal.account, self.lookups)
        if call.action == "sts:GetCallerIdentity":  # always allowed, as on AWS
            self._count_allowed()
            return None
        documents = principal.documents()
        for action, resources, context in [(call.action, call.resources, {}), *call.extra]:
            decision = evaluate(documents, action, resources, {**call.context, **context})
            if not decision.allowed:
                return self._deny(environ, call, principal.arn, action, decision.resource, decision.outcome)
        self._count_allowed()
        if call.service == "lambda" and call.operation == "CreateEventSourceMapping":
            problem = _mapping_problem(environ, call)
            if problem is not None:
                return _answer(
                    "lambda", call.operation, "rest-json", "InvalidParameterValueException", 400, problem
                )
        return None

    def _count_allowed(self) -> None:
        with self._lock:
            self.counters["allowed"] += 1

    def _deny(
        self, environ: dict[str, Any], call: Call, arn: str, action: str, resource: str, outcome: str
    ) -> tuple[str, list[tuple[str, str]], bytes]:
        on = "" if resource == "*" else f" on resource: {resource}"
        why = _WHY.get(outcome, _WHY["implicit deny"]).format(action=action)
        message = _NOT_AUTHORIZED.format(arn=arn, action=action, on=on, why=why)
        code, status = _code(call.protocol, call.service, _DENIED, _DENIED_BY_SERVICE, ("AccessDenied", 403))
        with self._lock:
            self.counters["denied"] += 1
            self.recent.append(
                {"principal": arn, "action": action, "resource": resource, "operation": call.operation,
                 "at": round(time.time(), 3)}
            )  # fmt: skip
        log.warning("IAM: %s", message)
        return _answer(call.service, call.operation, call.protocol, code, status, message)

    def _refuse(
        self, environ: dict[str, Any], service: str, counter: str, code: str, status: int, message: str,
        protocol: str | None = None,
    ) -> tuple[str, list[tuple[str, str]], bytes]:  # fmt: skip
        with self._lock:
            self.counters[counter] += 1
        if protocol is None:
            protocol = (
                "json" if environ.get("HTTP_X_AMZ_TARGET") else ("rest-xml" if service == "s3" else "query")
            )
        return _answer(service, "", protocol, code, status, message)

    # --- admin and health -------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "enabled": self.enabled,
                "runner": self.runner_arn or None,
                "credentials_file": str(self.credentials_path) if self.enabled and self.state_dir else None,
                **self.counters,
                "check_seconds": round(self.check_seconds, 3),
                "recent_denials": list(self.recent),
            }

    def admin(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """``GET /_stp/iam``: the state; ``PUT`` ``{"runner_policy": {...} | null}``: replace it."""
        status = "200 OK"
        if environ.get("REQUEST_METHOD") == "PUT":
            try:
                spec = json.loads(wire.read_body(environ) or b"{}")
                if not self.enabled:
                    raise ValueError("IAM enforcement is off on this stack")
                self.set_runner_policy(spec.get("runner_policy"))
                answer: dict[str, Any] = self.describe()
            except (ValueError, AttributeError) as err:
                status, answer = "400 Bad Request", {"error": str(err)}
        else:
            answer = self.describe()
        body = json.dumps(answer).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


def _answer(
    service: str, operation: str, protocol: str, code: str, status: int, message: str
) -> tuple[str, list[tuple[str, str]], bytes]:
    wire_protocol = "json" if protocol in ("json", "rest-json") else protocol
    line, headers, body = wire.error_response(
        wire.Call(service, operation, wire_protocol), code, status, message
    )
    if protocol == "rest-json":
        headers.append(("x-amzn-ErrorType", code))
    return line, headers, body


def _ensure_runner(path: Path, region: str, policy: dict[str, Any]) -> str:
    """The runner user with ``policy`` and a key in ``path`` (kept when the stack still holds it)."""
    from moto.iam.models import iam_backends

    backend = iam_backends[ACCOUNT]["aws"]
    user = backend.users.get(RUNNER_USER) or backend.create_user(region, RUNNER_USER)
    backend.put_user_policy(RUNNER_USER, RUNNER_POLICY_NAME, json.dumps(policy))
    try:
        saved = json.loads(path.read_text())
        key_id = saved["aws_access_key_id"]
    except (OSError, ValueError, KeyError, TypeError):
        key_id = None
    held = {k.access_key_id: k for k in user.access_keys}
    if key_id in held and held[key_id].secret_access_key == saved.get("aws_secret_access_key"):
        return str(user.arn)
    for old in list(user.access_keys):
        backend.delete_access_key(old.access_key_id, RUNNER_USER)
    key = backend.create_access_key(RUNNER_USER)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(
            {"aws_access_key_id": key.access_key_id, "aws_secret_access_key": key.secret_access_key,
             "user_arn": str(user.arn)}, fh,
        )  # fmt: skip
    os.replace(tmp, path)
    return str(user.arn)


# --- the process's gate and what the stack's parts ask of it -----------------------------------

_gate = AccessGate(enabled=False)


def gate() -> AccessGate:
    return _gate


def install(enabled: bool) -> AccessGate:
    """The stack's gate (one per process, like moto's state)."""
    global _gate
    _gate = AccessGate(enabled)
    return _gate


def internal_credentials() -> dict[str, str]:
    """boto3 keyword arguments for the stack's own requests (exempt from the check)."""
    return {"aws_access_key_id": _gate.internal_key, "aws_secret_access_key": _gate.internal_secret}


class RoleNotAssumable(Exception):
    """Lambda cannot assume the function's execution role."""


def function_credentials(role_arn: str, function: str, region: str) -> dict[str, str]:
    """The reserved credential variables of a worker of ``function``: its role's session when
    the gate is on (:class:`RoleNotAssumable` when Lambda could not assume it), else dummies."""
    if not _gate.enabled:
        return {
            "AWS_ACCESS_KEY_ID": LOCAL_CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": LOCAL_CREDENTIALS["aws_secret_access_key"],
            "AWS_SESSION_TOKEN": "testing",
        }
    from moto.iam.models import iam_backends
    from moto.sts.models import sts_backends

    account = role_arn.split(":")[4] if role_arn.count(":") >= 5 else ACCOUNT
    try:
        role = iam_backends[account]["aws"].get_role_by_arn(role_arn)
    except Exception as err:
        raise RoleNotAssumable(
            f"The role defined for the function cannot be assumed by Lambda: {role_arn} does not exist"
        ) from err
    if not _trusts_lambda(str(role.assume_role_policy_document)):
        raise RoleNotAssumable(
            f"The role defined for the function cannot be assumed by Lambda: the trust policy of {role_arn} "
            f"does not let {LAMBDA_PRINCIPAL} call sts:AssumeRole"
        )
    session = sts_backends[account]["aws"].assume_role(
        region_name=region, role_session_name=function, role_arn=str(role.arn), policy="",
        duration=ROLE_SESSION_SECONDS, external_id="",
    )  # fmt: skip
    return {
        "AWS_ACCESS_KEY_ID": session.access_key_id,
        "AWS_SECRET_ACCESS_KEY": session.secret_access_key,
        "AWS_SESSION_TOKEN": session.session_token,
    }


# What Lambda's poller calls on a mapping's source with the function's role (AWS's documented
# minimum for Kinesis and DynamoDB Streams event sources)
SOURCE_READ_ACTIONS = {
    "kinesis": ("kinesis:DescribeStream", "kinesis:DescribeStreamSummary", "kinesis:GetShardIterator",
                "kinesis:GetRecords", "kinesis:ListShards"),
    "dynamodb": ("dynamodb:DescribeStream", "dynamodb:GetShardIterator", "dynamodb:GetRecords"),
}  # fmt: skip
_SOURCE_NAME = {"kinesis": "Kinesis", "dynamodb": "DynamoDB"}


def source_read_problem(role_arn: str, kind: str, source_arn: str) -> str | None:
    """Why the function's role may not read its mapping's source (Lambda's message), or None.

    Lambda polls the stream with the execution role, so a role without these actions gets no
    records at all: the mapping reports the problem and retries, as on AWS."""
    if not _gate.enabled or kind not in SOURCE_READ_ACTIONS:
        return None
    account = role_arn.split(":")[4] if role_arn.count(":") >= 5 else ACCOUNT
    role = principals.Principal(role_arn, "assumed-role", role_arn.split("/")[-1], account, "")
    documents = role.documents()
    for action in SOURCE_READ_ACTIONS[kind]:
        if not evaluate(documents, action, [source_arn]).allowed:
            return (
                f"The provided execution role does not have permissions to call "
                f"{action.split(':')[1]} on {_SOURCE_NAME[kind]}"
            )
    return None


def _mapping_problem(environ: dict[str, Any], call: Call) -> str | None:
    """CreateEventSourceMapping's check of the function's role against the source (as Lambda's)."""
    try:
        doc = json.loads(wire.read_body(environ) or b"{}")
        name = str(doc.get("FunctionName", ""))
        source = str(doc.get("EventSourceArn", ""))
        from moto.backends import get_backend

        name = name.split(":")[6] if name.startswith("arn:") else name.split(":")[0]
        function = get_backend("lambda")[call.account][call.region].get_function(name)  # type: ignore[index]
        role = str(function.role)
    except Exception:  # no such function, a bad body: Lambda's own answer follows
        return None
    return source_read_problem(role, source.split(":")[2] if source.count(":") >= 5 else "", source)


def _trusts_lambda(document: str) -> bool:
    from urllib.parse import unquote

    from deploy.local.access.policies import parse

    text = document if document.lstrip().startswith("{") else unquote(document)
    for statement in parse(text):
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        principal = statement.get("Principal", {})
        services = principal.get("Service", []) if isinstance(principal, dict) else []
        services = [services] if isinstance(services, str) else services
        if (
            statement.get("Effect") == "Allow"
            and "sts:AssumeRole" in actions
            and LAMBDA_PRINCIPAL in services
        ):
            return True
    return False
