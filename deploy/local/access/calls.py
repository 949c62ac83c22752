"""What a signed request asks IAM: the action, the resources (ARNs) and the condition context.

The action is IAM's name for the operation, which is not always the API's (``HeadObject`` is
``s3:GetObject``, ``PublishBatch`` is ``sns:Publish``, ``Invoke`` is ``lambda:InvokeFunction``;
:data:`deploy.iam.IAM_ACTION_OF` and :data:`ACTION_OF` below). The resources are what the
*Service Authorization Reference* lists for the operation, built from the request's own
parameters: a stream, a table (each table of a batch), a bucket or an object (each key of a
DeleteObjects), a queue, a topic, a Glue catalog + database + table (Glue asks for all three),
a log group or stream, a function, a role, a workgroup. Where the request does not name one
(``ListTables``, a Kinesis ``GetRecords`` that carries only its iterator, Athena calls by query
id that the resolver cannot place), the resource is ``*`` and only a statement on ``*`` (or a
pattern that matches ``*``) allows it, as on AWS for actions without resource-level permissions.

The service is the SigV4 credential scope's (``.../<region>/<service>/aws4_request``), the
operation comes from ``X-Amz-Target`` (JSON protocols), the ``Action`` field (query protocol),
or the method and path (S3's REST-XML, Lambda's REST-JSON).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from deploy.iam import IAM_ACTION_OF
from deploy.local.faults.wire import read_body, s3_location

__all__ = ["ACTION_OF", "Call", "identify"]

# API operations whose IAM action is another name, beyond deploy.iam.IAM_ACTION_OF (the runner's)
ACTION_OF = {
    **IAM_ACTION_OF,
    "lambda:Invoke": "lambda:InvokeFunction",
    "lambda:InvokeAsync": "lambda:InvokeAsync",
    "s3:ListBuckets": "s3:ListAllMyBuckets",
    "s3:CopyObject": "s3:PutObject",
    "s3:CreateMultipartUpload": "s3:PutObject",
    "s3:UploadPart": "s3:PutObject",
    "s3:CompleteMultipartUpload": "s3:PutObject",
    "s3:ListParts": "s3:ListMultipartUploadParts",
    "s3:ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "s3:DeleteBucketEncryption": "s3:PutEncryptionConfiguration",
    "s3:DeletePublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "s3:DeleteBucketOwnershipControls": "s3:PutBucketOwnershipControls",
    "s3:DeleteBucketLifecycle": "s3:PutLifecycleConfiguration",
    "s3:GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
    "s3:DeleteBucketTagging": "s3:PutBucketTagging",
    "s3:DeleteBucketCors": "s3:PutBucketCORS",
    "s3:GetBucketCors": "s3:GetBucketCORS",
    "s3:PutBucketCors": "s3:PutBucketCORS",
    "s3:GetBucketNotificationConfiguration": "s3:GetBucketNotification",
    "s3:PutBucketNotificationConfiguration": "s3:PutBucketNotification",
    "s3:GetObjectLockConfiguration": "s3:GetBucketObjectLockConfiguration",
    "s3:PutObjectLockConfiguration": "s3:PutBucketObjectLockConfiguration",
    "s3:GetBucketReplication": "s3:GetReplicationConfiguration",
    "s3:PutBucketReplication": "s3:PutReplicationConfiguration",
    "s3:DeleteBucketReplication": "s3:PutReplicationConfiguration",
}

# Look-ups into the stack's own state that a resource needs (the Athena endpoint registers
# "athena_workgroup_of_query": a query id's workgroup)
Lookups = dict[str, Callable[[str], str | None]]


@dataclass
class Call:
    """One request as IAM evaluates it."""

    service: str  # the signing name: kinesis, dynamodb, s3, ...
    operation: str  # the API's name: PutRecords, HeadObject, ...
    action: str  # IAM's: kinesis:PutRecords, s3:GetObject, ...
    resources: list[str]
    protocol: str  # json, query, rest-xml, rest-json: how to answer with an error
    region: str
    account: str
    context: dict[str, str] = field(default_factory=dict)
    extra: list[tuple[str, list[str], dict[str, str]]] = field(default_factory=list)  # iam:PassRole...


def _arn(service: str, region: str, account: str, resource: str) -> str:
    return f"arn:aws:{service}:{region}:{account}:{resource}"


def _last(name_or_arn: str, sep: str = "/") -> str:
    return name_or_arn.rsplit(sep, 1)[-1] if name_or_arn.startswith("arn:") else name_or_arn


def _json_body(environ: dict[str, Any]) -> dict[str, Any]:
    body = read_body(environ)
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _form(environ: dict[str, Any]) -> dict[str, str]:
    body = read_body(environ)
    text = body.decode("utf-8", "replace") if body else environ.get("QUERY_STRING", "")
    return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}


# --- services speaking JSON (X-Amz-Target) -------------------------------------------------------


def _kinesis(op: str, doc: dict[str, Any], region: str, account: str) -> list[str]:
    if isinstance(doc.get("StreamARN"), str):
        return [doc["StreamARN"]]
    if isinstance(doc.get("ConsumerARN"), str):
        return [doc["ConsumerARN"]]
    if isinstance(doc.get("StreamName"), str):
        return [_arn("kinesis", region, account, f"stream/{doc['StreamName']}")]
    return ["*"]


def _table_arn(name: str, region: str, account: str) -> str:
    return name if name.startswith("arn:") else _arn("dynamodb", region, account, f"table/{name}")


def _dynamodb(op: str, doc: dict[str, Any], region: str, account: str) -> list[str]:
    if isinstance(doc.get("StreamArn"), str):
        return [doc["StreamArn"]]
    if isinstance(doc.get("TableName"), str):
        table = _table_arn(doc["TableName"], region, account)
        if op == "ListStreams":
            return [f"{table}/stream/*"]
        return [f"{table}/index/{doc['IndexName']}" if isinstance(doc.get("IndexName"), str) else table]
    if isinstance(doc.get("RequestItems"), dict):  # BatchWriteItem, BatchGetItem
        return [_table_arn(name, region, account) for name in doc["RequestItems"]]
    if isinstance(doc.get("TransactItems"), list):
        names = [
            op_doc.get("TableName")
            for item in doc["TransactItems"]
            if isinstance(item, dict)
            for op_doc in item.values()
            if isinstance(op_doc, dict)
        ]
        return [_table_arn(n, region, account) for n in dict.fromkeys(n for n in names if isinstance(n, str))]
    if isinstance(doc.get("ResourceArn"), str):  # TagResource, ListTagsOfResource
        return [doc["ResourceArn"]]
    return ["*"]


def _sqs_queue(value: str, region: str, account: str) -> str:
    if value.startswith("http"):  # http://host/<account>/<name>
        parts = value.rstrip("/").split("/")
        owner = parts[-2] if len(parts) >= 2 and re.fullmatch(r"\d{12}", parts[-2]) else account
        return _arn("sqs", region, owner, parts[-1])
    return value if value.startswith("arn:") else _arn("sqs", region, account, value)


def _sqs(op: str, doc: dict[str, Any], region: str, account: str) -> list[str]:
    if isinstance(doc.get("QueueUrl"), str):
        return [_sqs_queue(doc["QueueUrl"], region, account)]
    if isinstance(doc.get("QueueName"), str):
        owner = doc.get("QueueOwnerAWSAccountId") or account
        return [_arn("sqs", region, str(owner), doc["QueueName"])]
    return ["*"]


def _glue(op: str, doc: dict[str, Any], region: str, account: str) -> list[str]:
    catalog = _arn("glue", region, account, "catalog")
    database = doc.get("DatabaseName")
    table = doc.get("TableName")
    if op.endswith("Database") or op == "GetDatabase":
        database = doc.get("Name") or (doc.get("DatabaseInput") or {}).get("Name")
    elif op in ("CreateTable", "UpdateTable"):
        table = (doc.get("TableInput") or {}).get("Name")
    elif op in ("GetTable", "DeleteTable"):
        table = doc.get("Name")
    elif op in ("GetTables", "BatchDeleteTable", "SearchTables"):
        table = "*"
    resources = [catalog]
    if isinstance(database, str):
        resources.append(_arn("glue", region, account, f"database/{database}"))
        if isinstance(table, str):
            resources.append(_arn("glue", region, account, f"table/{database}/{table}"))
    return resources


def _logs(op: str, doc: dict[str, Any], region: str, account: str) -> list[str]:
    if isinstance(doc.get("resourceArn"), str):
        return [doc["resourceArn"]]
    group = doc.get("logGroupName") or doc.get("logGroupIdentifier")
    if not isinstance(group, str):
        return [_arn("logs", region, account, "log-group:*")] if op == "DescribeLogGroups" else ["*"]
    if group.startswith("arn:"):
        group = group.split(":log-group:", 1)[-1].removesuffix(":*")
    stream = doc.get("logStreamName")
    if isinstance(stream, str):
        return [_arn("logs", region, account, f"log-group:{group}:log-stream:{stream}")]
    return [_arn("logs", region, account, f"log-group:{group}:*")]


def _athena(op: str, doc: dict[str, Any], region: str, account: str, lookups: Lookups) -> list[str]:
    group = doc.get("WorkGroup") or doc.get("Name")
    if group is None and op in ("StartQueryExecution", "ListQueryExecutions"):
        group = "primary"
    workgroup_of = lookups.get("athena_workgroup_of_query")
    ids = doc.get("QueryExecutionIds") or ([doc["QueryExecutionId"]] if "QueryExecutionId" in doc else [])
    if group is None and workgroup_of is not None and isinstance(ids, list) and ids:
        groups = [workgroup_of(str(i)) for i in ids]
        if all(groups):  # an unknown id: the call answers InvalidRequestException on "*"
            return [_arn("athena", region, account, f"workgroup/{g}") for g in dict.fromkeys(groups)]
    if isinstance(group, str):
        return [_arn("athena", region, account, f"workgroup/{group}")]
    return ["*"]


def _events(op: str, doc: dict[str, Any], region: str, account: str) -> list[str]:
    name = doc.get("Name") or doc.get("Rule")
    if isinstance(name, str):
        return [_arn("events", region, account, f"rule/{name}")]
    return ["*"]


_JSON: dict[str, Callable[[str, dict[str, Any], str, str], list[str]]] = {
    "kinesis": _kinesis,
    "dynamodb": _dynamodb,
    "sqs": _sqs,
    "glue": _glue,
    "logs": _logs,
    "events": _events,
}


# --- query protocol -------------------------------------------------------------------------------


def _sns(op: str, form: dict[str, str], region: str, account: str) -> list[str]:
    for key in ("TopicArn", "TargetArn", "ResourceArn"):
        if form.get(key):
            return [form[key]]
    if form.get("SubscriptionArn"):
        return [form["SubscriptionArn"].rsplit(":", 1)[0]]
    if op == "CreateTopic" and form.get("Name"):
        return [_arn("sns", region, account, form["Name"])]
    return ["*"]


def _iam(op: str, form: dict[str, str], region: str, account: str) -> list[str]:
    path = form.get("Path", "/") or "/"
    for key, kind in (("RoleName", "role"), ("UserName", "user"), ("GroupName", "group")):
        if form.get(key):
            found = _existing_arn(account, kind, form[key])
            return [found or f"arn:aws:iam::{account}:{kind}{path}{form[key]}"]
    if form.get("PolicyArn"):
        return [form["PolicyArn"]]
    if op == "CreatePolicy" and form.get("PolicyName"):
        return [f"arn:aws:iam::{account}:policy{path}{form['PolicyName']}"]
    return ["*"]


def _existing_arn(account: str, kind: str, name: str) -> str | None:
    """The ARN of an existing role/user/group (its path included), from moto's IAM backend."""
    try:
        from moto.iam.models import iam_backends

        backend = iam_backends[account]["aws"]
        entity: Any
        if kind == "role":
            entity = next((r for r in backend.roles.values() if r.name == name), None)
        else:
            entity = (backend.users if kind == "user" else backend.groups).get(name)
        return str(entity.arn) if entity is not None else None
    except Exception:  # moto's layout changed: construct the ARN instead
        return None


def _sts(op: str, form: dict[str, str], region: str, account: str) -> list[str]:
    return [form["RoleArn"]] if op.startswith("AssumeRole") and form.get("RoleArn") else ["*"]


_QUERY: dict[str, Callable[[str, dict[str, str], str, str], list[str]]] = {
    "sns": _sns,
    "iam": _iam,
    "sts": _sts,
    "sqs": lambda op, form, region, account: _sqs(op, dict(form), region, account),
}


# --- S3 (REST-XML) --------------------------------------------------------------------------------

_S3_BUCKET_SUB: dict[
    str, tuple[str | None, str | None, str | None]
] = {  # sub-resource → (GET, PUT, DELETE) operation names
    "location": ("GetBucketLocation", None, None),
    "versions": ("ListObjectVersions", None, None),
    "publicAccessBlock": ("GetPublicAccessBlock", "PutPublicAccessBlock", "DeletePublicAccessBlock"),
    "encryption": ("GetBucketEncryption", "PutBucketEncryption", "DeleteBucketEncryption"),
    "policy": ("GetBucketPolicy", "PutBucketPolicy", "DeleteBucketPolicy"),
    "policyStatus": ("GetBucketPolicyStatus", None, None),
    "ownershipControls": (
        "GetBucketOwnershipControls",
        "PutBucketOwnershipControls",
        "DeleteBucketOwnershipControls",
    ),
    "lifecycle": (
        "GetBucketLifecycleConfiguration",
        "PutBucketLifecycleConfiguration",
        "DeleteBucketLifecycle",
    ),
    "tagging": ("GetBucketTagging", "PutBucketTagging", "DeleteBucketTagging"),
    "versioning": ("GetBucketVersioning", "PutBucketVersioning", None),
    "acl": ("GetBucketAcl", "PutBucketAcl", None),
    "cors": ("GetBucketCors", "PutBucketCors", "DeleteBucketCors"),
    "uploads": ("ListMultipartUploads", None, None),
    "notification": ("GetBucketNotificationConfiguration", "PutBucketNotificationConfiguration", None),
    "website": ("GetBucketWebsite", "PutBucketWebsite", "DeleteBucketWebsite"),
    "logging": ("GetBucketLogging", "PutBucketLogging", None),
    "object-lock": ("GetObjectLockConfiguration", "PutObjectLockConfiguration", None),
    "replication": ("GetBucketReplication", "PutBucketReplication", "DeleteBucketReplication"),
    "accelerate": ("GetBucketAccelerateConfiguration", "PutBucketAccelerateConfiguration", None),
    "requestPayment": ("GetBucketRequestPayment", "PutBucketRequestPayment", None),
}
_S3_OBJECT_SUB: dict[str, tuple[str | None, str | None, str | None]] = {
    "tagging": ("GetObjectTagging", "PutObjectTagging", "DeleteObjectTagging")
}
_S3_OBJECT_SUB |= {"acl": ("GetObjectAcl", "PutObjectAcl", None)}
_S3_LIST_PARAMS = {"list-type", "prefix", "delimiter", "max-keys", "marker", "continuation-token"}
_S3_LIST_PARAMS |= {"start-after", "encoding-type", "fetch-owner", "x-id", "versionId"}
_S3_DELETE_KEY = re.compile(rb"<Key>(.*?)</Key>", re.DOTALL)
_METHOD_INDEX = {"GET": 0, "HEAD": 0, "PUT": 1, "DELETE": 2}


def _s3(
    environ: dict[str, Any], region: str, account: str
) -> tuple[str, list[str], list[tuple[str, list[str], dict[str, str]]]]:
    method = environ.get("REQUEST_METHOD", "GET")
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    bucket, key = s3_location(environ)
    if not bucket:
        return "ListBuckets", ["*"], []
    bucket_arn = f"arn:aws:s3:::{bucket}"
    extra: list[tuple[str, list[str], dict[str, str]]] = []
    if key is not None:
        arn = f"{bucket_arn}/{key}"
        sub = next((s for s in _S3_OBJECT_SUB if s in query), None)
        if sub is not None and method in _METHOD_INDEX:
            op = _S3_OBJECT_SUB[sub][_METHOD_INDEX[method]] or f"{method.title()}Object{sub.title()}"
        elif method == "PUT":
            op = "UploadPart" if "partNumber" in query else "PutObject"
            source = environ.get("HTTP_X_AMZ_COPY_SOURCE")
            if source:
                op = "CopyObject"
                src = unquote(source).lstrip("/").split("?", 1)[0]
                extra.append(("s3:GetObject", [f"arn:aws:s3:::{src}"], {}))
        elif method == "POST":
            op = "CreateMultipartUpload" if "uploads" in query else "CompleteMultipartUpload"
        elif method == "DELETE":
            op = (
                "AbortMultipartUpload"
                if "uploadId" in query
                else ("DeleteObjectVersion" if "versionId" in query else "DeleteObject")
            )
        elif "uploadId" in query:
            op = "ListParts"
        else:
            op = (
                "HeadObject"
                if method == "HEAD"
                else ("GetObjectVersion" if "versionId" in query else "GetObject")
            )
        return op, [arn], extra
    if method == "POST" and "delete" in query:  # DeleteObjects: s3:DeleteObject on each key
        keys = [unquote(k.decode("utf-8", "replace")) for k in _S3_DELETE_KEY.findall(read_body(environ))]
        return "DeleteObjects", [f"{bucket_arn}/{k}" for k in keys] or [f"{bucket_arn}/*"], []
    sub = next((s for s in _S3_BUCKET_SUB if s in query), None)
    if sub is not None and method in _METHOD_INDEX:
        op = _S3_BUCKET_SUB[sub][_METHOD_INDEX[method]] or f"{method.title()}Bucket{sub[0].upper()}{sub[1:]}"
        return op, [bucket_arn], []
    unknown = set(query) - _S3_LIST_PARAMS
    if unknown:  # a sub-resource this table does not know: a name no policy of ours allows
        sub = sorted(unknown)[0]
        return f"{method.title()}Bucket{sub[0].upper()}{sub[1:]}", [bucket_arn], []
    if method == "GET":
        return ("ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects"), [bucket_arn], []
    op = {"PUT": "CreateBucket", "DELETE": "DeleteBucket", "HEAD": "HeadBucket"}.get(
        method, f"{method}Bucket"
    )
    return op, [bucket_arn], []


# --- Lambda (REST-JSON) ---------------------------------------------------------------------------

_LAMBDA_FN = re.compile(r"^/(?P<version>[0-9-]+)/functions/(?P<fn>[^/]+)(?P<rest>/.*)?$")
_LAMBDA_ESM = re.compile(r"^/[0-9-]+/event-source-mappings/?(?P<uuid>[^/]*)/?$")
_LAMBDA_TAGS = re.compile(r"^/[0-9-]+/tags/(?P<arn>.+)$")
_LAMBDA_FUNCTION_OPS = {  # (method, path after the function) → operation
    ("GET", ""): "GetFunction",
    ("DELETE", ""): "DeleteFunction",
    ("GET", "/configuration"): "GetFunctionConfiguration",
    ("PUT", "/configuration"): "UpdateFunctionConfiguration",
    ("PUT", "/code"): "UpdateFunctionCode",
    ("POST", "/invocations"): "Invoke",
    ("POST", "/invoke-async"): "InvokeAsync",
    ("POST", "/versions"): "PublishVersion",
    ("GET", "/versions"): "ListVersionsByFunction",
    ("POST", "/aliases"): "CreateAlias",
    ("GET", "/aliases"): "ListAliases",
    ("GET", "/policy"): "GetPolicy",
    ("POST", "/policy"): "AddPermission",
    ("PUT", "/concurrency"): "PutFunctionConcurrency",
    ("GET", "/concurrency"): "GetFunctionConcurrency",
    ("DELETE", "/concurrency"): "DeleteFunctionConcurrency",
    ("GET", "/event-invoke-config"): "GetFunctionEventInvokeConfig",
    ("PUT", "/event-invoke-config"): "PutFunctionEventInvokeConfig",
    ("POST", "/event-invoke-config"): "UpdateFunctionEventInvokeConfig",
    ("DELETE", "/event-invoke-config"): "DeleteFunctionEventInvokeConfig",
    ("GET", "/url"): "GetFunctionUrlConfig",
    ("POST", "/url"): "CreateFunctionUrlConfig",
    ("PUT", "/url"): "UpdateFunctionUrlConfig",
    ("DELETE", "/url"): "DeleteFunctionUrlConfig",
}


def _function_arn(fn: str, region: str, account: str) -> str:
    if fn.startswith("arn:"):
        parts = fn.split(":")
        return ":".join(parts[:7])  # unqualified
    name = fn.split(":", 1)[0]
    return _arn("lambda", region, account, f"function:{name}")


def _lambda(
    environ: dict[str, Any], region: str, account: str
) -> tuple[str, list[str], list[tuple[str, list[str], dict[str, str]]]]:
    method = environ.get("REQUEST_METHOD", "GET")
    path = environ.get("PATH_INFO", "/").rstrip("/") or "/"
    extra: list[tuple[str, list[str], dict[str, str]]] = []
    match = _LAMBDA_FN.match(path)
    if match is None and re.fullmatch(r"/[0-9-]+/functions", path):
        if method == "POST":
            doc = _json_body(environ)
            name = str(doc.get("FunctionName", ""))
            if isinstance(doc.get("Role"), str):
                extra.append(_pass_role(doc["Role"]))
            return "CreateFunction", [_function_arn(name, region, account)], extra
        return "ListFunctions", ["*"], extra
    if match is not None:
        fn = unquote(match["fn"])
        rest = match["rest"] or ""
        op = _LAMBDA_FUNCTION_OPS.get((method, rest))
        if op is None and rest.startswith("/aliases/"):
            op = {"GET": "GetAlias", "PUT": "UpdateAlias", "DELETE": "DeleteAlias"}.get(method)
        if op is None and rest.startswith("/policy/"):
            op = "RemovePermission"
        if op == "UpdateFunctionConfiguration":
            doc = _json_body(environ)
            if isinstance(doc.get("Role"), str):
                extra.append(_pass_role(doc["Role"]))
        return op or f"Unknown{method.title()}", [_function_arn(fn, region, account)], extra
    esm = _LAMBDA_ESM.match(path)
    if esm is not None:
        uuid = esm["uuid"]
        if not uuid:
            return (
                ("CreateEventSourceMapping" if method == "POST" else "ListEventSourceMappings"),
                ["*"],
                extra,
            )
        ops = {
            "GET": "GetEventSourceMapping",
            "PUT": "UpdateEventSourceMapping",
            "DELETE": "DeleteEventSourceMapping",
        }
        arn = _arn("lambda", region, account, f"event-source-mapping:{uuid}")
        return ops.get(method, "UnknownEventSourceMapping"), [arn], extra
    tags = _LAMBDA_TAGS.match(path)
    if tags is not None:
        op = {"GET": "ListTags", "POST": "TagResource", "DELETE": "UntagResource"}.get(method, "UnknownTags")
        return op, [unquote(tags["arn"])], extra
    return "Unknown", ["*"], extra


def _pass_role(role_arn: str) -> tuple[str, list[str], dict[str, str]]:
    return ("iam:PassRole", [role_arn], {"iam:PassedToService": "lambda.amazonaws.com"})


# --- entry point ----------------------------------------------------------------------------------


def identify(
    environ: dict[str, Any], service: str, region: str, account: str, lookups: Lookups | None = None
) -> Call:
    """The IAM view of a request signed for ``service`` (its signing name) in ``region``."""
    target = environ.get("HTTP_X_AMZ_TARGET")
    extra: list[tuple[str, list[str], dict[str, str]]] = []
    if target:
        operation = str(target).partition(".")[2]
        doc = _json_body(environ)
        resolve = _JSON.get(service)
        if service == "athena":
            resources = _athena(operation, doc, region, account, lookups or {})
        else:
            resources = resolve(operation, doc, region, account) if resolve else ["*"]
        protocol = "json"
    elif service == "s3":
        operation, resources, extra = _s3(environ, region, account)
        protocol = "rest-xml"
    elif service == "lambda":
        operation, resources, extra = _lambda(environ, region, account)
        protocol = "rest-json"
    else:
        form = _form(environ)
        operation = form.get("Action", "")
        resolve_q = _QUERY.get(service)
        resources = resolve_q(operation, form, region, account) if resolve_q else ["*"]
        protocol = "query"
    api = f"{service}:{operation}"
    context = {"aws:SecureTransport": "false", "aws:RequestedRegion": region}
    return Call(
        service, operation, ACTION_OF.get(api, api), resources, protocol, region, account, context, extra
    )
