"""The fault injector's wire side: which call a request is, and AWS's error answer to it.

:func:`identify` names a request's service, operation and resources the way AWS routes it:

* JSON protocols by ``X-Amz-Target`` (``Kinesis_20131202.PutRecords``,
  ``DynamoDB_20120810.BatchWriteItem``, ``AmazonSQS.SendMessage`` — botocore 1.43 speaks JSON
  1.0 to SQS, with ``awsQueryCompatible``), the resource from the JSON body (``StreamName`` /
  ``StreamARN``, ``TableName`` / ``RequestItems``, ``QueueUrl`` / ``QueueName``);
* the query protocol (SNS, and SQS from an older botocore) by the form field ``Action``, the
  resource from ``TopicArn`` / ``QueueUrl``;
* S3 (REST-XML) by method, path and sub-resource query (path-style ``/bucket/key`` as botocore
  uses against ``http://127.0.0.1:port``, or a virtual-hosted ``bucket.host``).

The service comes from the target prefix or, failing that, from the SigV4 credential scope
(``Credential=.../<region>/<service>/aws4_request``). The body is read only for the JSON and
query protocols (the resource is in it) and handed on to moto unchanged.

:func:`error_response` builds the answer AWS gives, in the format the protocol's botocore parser
reads into a ``ClientError`` with that code: JSON ``{"__type": ..., "message": ...}`` (plus
``x-amzn-query-error: Code;Sender`` for SQS, which botocore prefers as the code), REST-XML
``<Error><Code>`` for S3, query ``<ErrorResponse><Error><Type><Code>`` for SNS. ``ERRORS`` lists
each service's codes with the HTTP status and message AWS uses.
"""

from __future__ import annotations

import io
import json
import re
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

ACCOUNT = "123456789012"  # moto's default account
JSON_TARGETS = {"Kinesis_20131202": "kinesis", "DynamoDB_20120810": "dynamodb", "AmazonSQS": "sqs"}
JSON_VERSION = {"kinesis": "1.1", "dynamodb": "1.0", "sqs": "1.0"}
DYNAMODB_TYPE_PREFIX = "com.amazonaws.dynamodb.v20120810#"
SQS_TYPE_PREFIX = "com.amazonaws.sqs#"
SERVICES = ("kinesis", "dynamodb", "s3", "sqs", "sns", "lambda")
PROTOCOL = {"kinesis": "json", "dynamodb": "json", "sqs": "json", "s3": "rest-xml", "sns": "query"}
CREDENTIAL_SCOPE = re.compile(r"Credential=[^/,&]+/\d{8}/[a-z0-9-]+/(?P<service>[a-z0-9-]+)/aws4_request")
_SCOPE_QUERY = re.compile(r"X-Amz-Credential=[^&]*?%2F(?P<service>[a-z0-9-]+)%2Faws4_request")

# service -> code -> (HTTP status, message); ``{resource}`` is replaced by the call's resource
ERRORS: dict[str, dict[str, tuple[int, str]]] = {
    "kinesis": {
        "ProvisionedThroughputExceededException": (
            400,
            "Rate exceeded for stream {resource} under account " + ACCOUNT + ".",
        ),
        "LimitExceededException": (400, "Rate exceeded for stream {resource} under account " + ACCOUNT + "."),
        "KMSThrottlingException": (400, "KMS request rate exceeded for stream {resource}."),
        "ThrottlingException": (400, "Rate exceeded"),
        "InternalFailureException": (500, "Internal service failure."),
        "ServiceUnavailable": (503, "Service Unavailable"),
    },
    "dynamodb": {
        "ProvisionedThroughputExceededException": (
            400,
            "The level of configured provisioned throughput for the table was exceeded. "
            "Consider increasing your provisioning level with the UpdateTable API.",
        ),
        "ThrottlingException": (
            400,
            "Throughput exceeds the current capacity of your table or index. DynamoDB is automatically "
            "scaling your table or index so please try again shortly.",
        ),
        "RequestLimitExceeded": (
            400,
            "Throughput exceeds the current throughput limit for your account. "
            "Please contact AWS Support at https://aws.amazon.com/support request a limit increase",
        ),
        "InternalServerError": (500, "Internal server error"),
        "ServiceUnavailable": (503, "Service Unavailable"),
    },
    "s3": {
        "SlowDown": (503, "Please reduce your request rate."),
        "ServiceUnavailable": (503, "Service is unable to handle request."),
        "InternalError": (500, "We encountered an internal error. Please try again."),
        "AccessDenied": (403, "Access Denied"),
        "RequestTimeout": (
            400,
            "Your socket connection to the server was not read from or written to within the timeout period.",
        ),
    },
    "sqs": {
        "RequestThrottled": (400, "Request is throttled."),
        "KmsThrottled": (400, "The request was denied due to request throttling."),
        "OverLimit": (403, "The specified action violates a limit."),
        "InternalError": (500, "We encountered an internal error. Please try again."),
        "ServiceUnavailable": (503, "Service Unavailable"),
    },
    "sns": {
        "Throttled": (429, "Rate exceeded"),
        "KMSThrottling": (400, "The request was denied due to request throttling."),
        "InternalError": (500, "Internal error"),
        "ServiceUnavailable": (503, "Service Unavailable"),
    },
}
# what Kinesis puts in a failed PutRecords entry
ENTRY_ERRORS = {
    "ProvisionedThroughputExceededException": "Rate exceeded for shard in stream {resource} under account "
    + ACCOUNT
    + ".",
    "InternalFailure": "Internal service failure.",
}
# S3 operations the injector recognises (and so a rule may name)
S3_OPERATIONS = frozenset(
    {
        "ListBuckets", "CreateBucket", "DeleteBucket", "HeadBucket", "ListObjects", "ListObjectsV2",
        "DeleteObjects", "GetObject", "PutObject", "CopyObject", "HeadObject", "DeleteObject",
        "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload", "AbortMultipartUpload",
        "GetBucketOther", "PutBucketOther",
    }
)  # fmt: skip
HTTP_REASONS = {400: "Bad Request", 403: "Forbidden", 429: "Too Many Requests", 500: "Internal Server Error"}
HTTP_REASONS |= {503: "Service Unavailable", 200: "OK"}


@dataclass
class Call:
    """One AWS API request as the injector sees it."""

    service: str
    operation: str
    protocol: str
    resources: tuple[str, ...] = ()
    key: str | None = None  # S3 object key
    body: bytes | None = None  # read for the JSON and query protocols
    document: Any = field(default=None, repr=False)  # the parsed JSON body

    @property
    def resource(self) -> str:
        return self.resources[0] if self.resources else ""


def service_of(environ: dict[str, Any]) -> str | None:
    """The AWS service a request is for, from its target or its credential scope (cheap)."""
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return JSON_TARGETS.get(target.partition(".")[0])
    scope = CREDENTIAL_SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
    if scope is None and "X-Amz-Credential" in environ.get("QUERY_STRING", ""):
        scope = _SCOPE_QUERY.search(environ["QUERY_STRING"])
    return scope["service"] if scope else None


def read_body(environ: dict[str, Any]) -> bytes:
    """The request body, read once; ``wsgi.input`` is replaced so moto reads the same bytes."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    stream = environ["wsgi.input"]
    body = stream.read(length) if length else (stream.read() if environ.get("wsgi.input_terminated") else b"")
    replace_body(environ, body)
    return bytes(body)


def replace_body(environ: dict[str, Any], body: bytes) -> None:
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    environ["wsgi.input_terminated"] = False


def identify(environ: dict[str, Any], service: str) -> Call:
    """Service, operation and resources of a request for ``service`` (see the module docstring)."""
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        body = read_body(environ)
        try:
            document = json.loads(body or b"{}")
        except ValueError:
            document = {}
        document = document if isinstance(document, dict) else {}
        return Call(
            service,
            target.partition(".")[2],
            "json",
            _json_resources(service, document),
            None,
            body,
            document,
        )
    if service == "s3":
        return _s3_call(environ)
    body = read_body(environ)
    form = parse_qs(body.decode("utf-8", "replace")) if body else parse_qs(environ.get("QUERY_STRING", ""))
    action = (form.get("Action") or [""])[0]
    names = [_last(v) for k in ("TopicArn", "TargetArn", "QueueUrl", "QueueName") for v in form.get(k, [])]
    return Call(service, action, "query", tuple(names), None, body)


def _last(name_or_arn: str) -> str:
    """``arn:...:stream/name`` → name, ``arn:...:topic`` → topic, ``http://.../queue`` → queue."""
    return re.split(r"[/:]", name_or_arn.rstrip("/"))[-1]


def _json_resources(service: str, doc: dict[str, Any]) -> tuple[str, ...]:
    if service == "kinesis":
        name = doc.get("StreamName") or doc.get("StreamARN")
        return (_last(name),) if isinstance(name, str) else ()
    if service == "dynamodb":
        if isinstance(doc.get("TableName"), str):
            return (doc["TableName"],)
        items = doc.get("RequestItems")
        if isinstance(items, dict):
            return tuple(_last(name) for name in items)
        transact = doc.get("TransactItems")
        if isinstance(transact, list):
            found = [
                op.get("TableName") for item in transact if isinstance(item, dict) for op in item.values()
            ]
            return tuple(dict.fromkeys(str(n) for n in found if isinstance(n, str)))
        return ()
    names = [doc.get("QueueUrl"), doc.get("QueueName")]
    return tuple(_last(n) for n in names if isinstance(n, str))[:1]


def s3_location(environ: dict[str, Any]) -> tuple[str, str | None]:
    """The bucket and key of an S3 request, virtual-hosted (``bucket.host``) or path-style."""
    path = unquote(environ.get("PATH_INFO", "/"))
    host = environ.get("HTTP_HOST", "").rsplit(":", 1)[0]
    label = host.split(".")[0]
    virtual = host.count(".") >= 1 and not re.fullmatch(r"[\d.]+", host) and label not in ("s3", "localhost")
    if virtual:
        return label, path.lstrip("/") or None
    bucket, _, rest = path.lstrip("/").partition("/")
    return bucket, rest or None


def _s3_call(environ: dict[str, Any]) -> Call:
    method = environ.get("REQUEST_METHOD", "GET")
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
    bucket, key = s3_location(environ)
    if not bucket:
        return Call("s3", "ListBuckets", "rest-xml")
    return Call("s3", _s3_operation(method, key is not None, query, environ), "rest-xml", (bucket,), key)


def _s3_operation(method: str, has_key: bool, query: dict[str, list[str]], environ: dict[str, Any]) -> str:
    if has_key:
        if method == "PUT":
            if "partNumber" in query:
                return "UploadPart"
            return "CopyObject" if "HTTP_X_AMZ_COPY_SOURCE" in environ else "PutObject"
        if method == "POST":
            return "CreateMultipartUpload" if "uploads" in query else "CompleteMultipartUpload"
        if method == "DELETE":
            return "AbortMultipartUpload" if "uploadId" in query else "DeleteObject"
        return {"HEAD": "HeadObject"}.get(method, "GetObject")
    sub = set(query) - {"list-type", "prefix", "delimiter", "max-keys", "marker", "continuation-token"}
    sub -= {"start-after", "encoding-type", "fetch-owner", "x-id"}
    if method == "POST" and "delete" in query:
        return "DeleteObjects"
    if sub:
        return "PutBucketOther" if method in ("PUT", "DELETE") else "GetBucketOther"
    if method == "GET":
        return "ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects"
    return {"PUT": "CreateBucket", "DELETE": "DeleteBucket", "HEAD": "HeadBucket"}.get(
        method, "GetBucketOther"
    )


# --- answers ---------------------------------------------------------------------------------


def status_line(status: int) -> str:
    return f"{status} {HTTP_REASONS.get(status, 'Error')}"


def json_headers(service: str, body: bytes, request_id: str) -> list[tuple[str, str]]:
    headers = [
        ("Content-Type", f"application/x-amz-json-{JSON_VERSION.get(service, '1.1')}"),
        ("Content-Length", str(len(body))),
        ("x-amzn-RequestId", request_id),
    ]
    if service == "dynamodb":  # botocore checks DynamoDB bodies against this CRC
        headers.append(("x-amz-crc32", str(zlib.crc32(body) & 0xFFFFFFFF)))
    return headers


def error_response(
    call: Call, code: str, status: int, message: str
) -> tuple[str, list[tuple[str, str]], bytes]:
    """AWS's error answer to ``call``: (status line, headers, body) in the call's protocol."""
    request_id = str(uuid.uuid4())
    message = message.replace("{resource}", call.resource)
    fault = "Sender" if status < 500 else "Receiver"
    if call.protocol == "json":
        prefix = {"dynamodb": DYNAMODB_TYPE_PREFIX, "sqs": SQS_TYPE_PREFIX}.get(call.service, "")
        body = json.dumps({"__type": prefix + code, "message": message}).encode()
        headers = json_headers(call.service, body, request_id)
        if call.service == "sqs":
            headers.append(("x-amzn-query-error", f"{code};{fault}"))
        return status_line(status), headers, body
    if call.protocol == "rest-xml":
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{_xml(message)}</Message>"
            f"<RequestId>{request_id[:16].upper()}</RequestId><HostId>{request_id}</HostId></Error>"
        )
        content = xml.encode()
        body = b"" if call.operation in ("HeadObject", "HeadBucket") else content
        headers = [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))]
        return status_line(status), [*headers, ("x-amz-request-id", request_id[:16].upper())], body
    namespace = {"sns": "http://sns.amazonaws.com/doc/2010-03-31/"}.get(call.service, "")
    xml = (
        f'<ErrorResponse xmlns="{namespace}"><Error><Type>{fault}</Type><Code>{code}</Code>'
        f"<Message>{_xml(message)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
    )
    body = xml.encode()
    return status_line(status), [("Content-Type", "text/xml"), ("Content-Length", str(len(body)))], body


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
