"""The fault plan without a stack: strict validation, request identification, seeded decisions,
and error bodies that botocore's own parsers read back with the right code."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from botocore.model import ServiceModel
from botocore.parsers import create_parser

from deploy.local.faults import FaultSpecError, load_spec, parse_plan
from deploy.local.faults.wire import Call, error_response, identify, service_of

SCOPE = "AWS4-HMAC-SHA256 Credential=testing/20240101/us-east-1/{}/aws4_request, SignedHeaders=host"


def environ(
    method: str = "POST", path: str = "/", body: bytes = b"", query: str = "", **headers: str
) -> dict[str, Any]:
    env = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
        "HTTP_HOST": "127.0.0.1:4566",
    }
    env.update({f"HTTP_{k.upper()}": v for k, v in headers.items()})
    return env


def json_call(service: str, target: str, document: dict[str, Any]) -> dict[str, Any]:
    return environ(
        body=json.dumps(document).encode(), x_amz_target=target, authorization=SCOPE.format(service)
    )


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"rules": [], "sede": 1}, "sede"),
        ({"seed": "7", "rules": []}, "seed"),
        ({"seed": 1}, "rules"),
        ({"rules": [{"service": "kinesiss", "error": {"code": "ThrottlingException"}}]}, "rules[0].service"),
        ({"rules": [{"service": "kinesis"}]}, "rules[0]"),
        ({"rules": [{"service": "kinesis", "operation": "PutRecordz", "latency": 5}]}, "rules[0].operation"),
        ({"rules": [{"service": "s3", "error": {"code": "SlowDown", "rate": 1.5}}]}, "rules[0].error.rate"),
        ({"rules": [{"service": "s3", "error": {"code": "NoSuchThing"}}]}, "rules[0].error.code"),
        ({"rules": [{"service": "s3", "error": {"code": "SlowDown", "rat": 1}}]}, "rules[0].error.rat"),
        ({"rules": [{"service": "kinesis", "entry_error": {"rate": 0.2}}]}, "rules[0].entry_error"),
        (
            {"rules": [{"service": "dynamodb", "operation": "PutItem", "unprocessed": {}}]},
            "rules[0].unprocessed",
        ),
        ({"rules": [{"service": "kinesis", "key_prefix": "a/", "latency": 1}]}, "rules[0].key_prefix"),
        ({"rules": [{"service": "s3", "latency": {"ms": [50, 10]}}]}, "rules[0].latency.ms"),
        ({"rules": [{"service": "lambda", "kill": {"max": -1}}]}, "rules[0].kill.max"),
        ({"rules": [{"service": "lambda", "operation": "Invoke", "kill": {}}]}, "rules[0].operation"),
        ({"rules": [{"service": "s3", "kill": {}}]}, "rules[0].kill"),
        ({"rules": [{"service": "sns", "resource": [], "latency": 1}]}, "rules[0].resource"),
    ],
)
def test_a_bad_spec_is_refused_naming_the_field(spec: dict[str, Any], field: str) -> None:
    with pytest.raises(FaultSpecError) as caught:
        parse_plan(spec)
    assert caught.value.field == field
    assert f"fault spec {field}=" in str(caught.value) and "Fix:" in str(caught.value)


def test_load_spec_reads_json_text_and_files(tmp_path: Any) -> None:
    spec = {"seed": 3, "rules": [{"service": "s3", "error": {"code": "SlowDown", "rate": 0.5}}]}
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(spec))
    assert load_spec(json.dumps(spec)) == load_spec(str(path)) == load_spec(path) == spec
    with pytest.raises(FaultSpecError, match="not valid JSON"):
        load_spec("{nope")
    with pytest.raises(FaultSpecError, match="not JSON and not a readable file"):
        load_spec(tmp_path / "missing.json")


def test_an_unknown_code_is_accepted_with_its_status() -> None:
    plan = parse_plan({"rules": [{"service": "s3", "error": {"code": "NoSuchBucket", "status": 404}}]})
    assert plan.rules[0].actions["error"].status == 404


# --- identification ----------------------------------------------------------------------------


def test_json_calls_are_named_by_target_and_body() -> None:
    env = json_call("kinesis", "Kinesis_20131202.PutRecords", {"StreamARN": "arn:aws:kinesis:r:1:stream/s1"})
    assert service_of(env) == "kinesis"
    call = identify(env, "kinesis")
    assert (call.operation, call.resources, call.protocol) == ("PutRecords", ("s1",), "json")
    assert env["wsgi.input"].read() == call.body  # moto still reads the whole body
    batch = json_call("dynamodb", "DynamoDB_20120810.BatchWriteItem", {"RequestItems": {"t1": [], "t2": []}})
    assert identify(batch, "dynamodb").resources == ("t1", "t2")
    url = {"QueueUrl": "http://127.0.0.1:4566/123456789012/q1"}
    assert identify(json_call("sqs", "AmazonSQS.SendMessage", url), "sqs").resources == ("q1",)


def test_s3_calls_are_named_by_method_path_and_query() -> None:
    auth = {"authorization": SCOPE.format("s3")}
    cases = {
        ("PUT", "/b/raw/symbol=BAD/x.json", ""): ("PutObject", "raw/symbol=BAD/x.json"),
        ("GET", "/b/k", ""): ("GetObject", "k"),
        ("HEAD", "/b/k", ""): ("HeadObject", "k"),
        ("GET", "/b", "list-type=2&prefix=raw/"): ("ListObjectsV2", None),
        ("POST", "/b", "delete="): ("DeleteObjects", None),
        ("PUT", "/b/k", "partNumber=1&uploadId=u"): ("UploadPart", "k"),
    }
    for (method, path, query), (operation, key) in cases.items():
        env = environ(method, path, query=query, **auth)
        assert service_of(env) == "s3"
        call = identify(env, "s3")
        assert (call.operation, call.resources, call.key) == (operation, ("b",), key)


def test_query_calls_are_named_by_action() -> None:
    body = b"Action=Publish&TopicArn=arn%3Aaws%3Asns%3Aus-east-1%3A123456789012%3Aalerts&Message=m"
    call = identify(environ(body=body, authorization=SCOPE.format("sns")), "sns")
    assert (call.operation, call.resources, call.protocol) == ("Publish", ("alerts",), "query")


def test_rules_match_by_operation_resource_and_key() -> None:
    plan = parse_plan(
        {
            "rules": [
                {
                    "service": "s3",
                    "operation": "PutObject",
                    "resource": "raw-*",
                    "key_contains": "symbol=BAD/",
                    "error": {"code": "AccessDenied"},
                },
            ]
        }
    )
    rule = plan.rules[0]
    assert rule.matches(Call("s3", "PutObject", "rest-xml", ("raw-1",), "x/symbol=BAD/1.json"))
    assert not rule.matches(Call("s3", "PutObject", "rest-xml", ("raw-1",), "x/symbol=OK/1.json"))
    assert not rule.matches(Call("s3", "PutObject", "rest-xml", ("other",), "x/symbol=BAD/1.json"))
    assert not rule.matches(Call("s3", "GetObject", "rest-xml", ("raw-1",), "x/symbol=BAD/1.json"))


# --- decisions --------------------------------------------------------------------------------


def draws(spec: dict[str, Any], n: int = 200) -> list[bool]:
    rule = parse_plan(spec).rules[0]
    return [rule.draw("error", "errors") for _ in range(n)]


def test_draws_are_seeded_per_rule_and_respect_rate_and_max() -> None:
    spec = {"seed": 11, "rules": [{"service": "sqs", "error": {"code": "RequestThrottled", "rate": 0.3}}]}
    first = draws(spec)
    assert first == draws(spec)  # same seed, same sequence
    assert first != draws({**spec, "seed": 12})
    assert 30 < sum(first) < 90
    capped = {"rules": [{"service": "sqs", "error": {"code": "RequestThrottled", "max": 4}}]}
    assert sum(draws(capped)) == 4
    # rule 0's draws never shift rule 1's: each rule has its own generator
    extra = {"service": "s3", "latency": 1}
    busy = parse_plan({**spec, "rules": [extra, spec["rules"][0]]})
    quiet = parse_plan({**spec, "rules": [extra, spec["rules"][0]]})
    for _ in range(37):
        busy.rules[0].draw("latency", "delayed")
    assert [busy.rules[1].draw("error", "errors") for _ in range(50)] == [
        quiet.rules[1].draw("error", "errors") for _ in range(50)
    ]


def test_ranges_are_drawn_within_bounds_and_counted() -> None:
    rule = parse_plan({"rules": [{"service": "lambda", "kill": {"delay_ms": [10, 20], "max": 2}}]}).rules[0]
    assert all(10 <= rule.span_ms("kill") <= 20 for _ in range(100))
    assert [rule.draw("kill", "kills") for _ in range(3)] == [True, True, False]
    assert rule.describe()["counters"]["kills"] == 2


# --- wire format ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "operation", "protocol", "code", "status"),
    [
        ("kinesis", "PutRecords", "json", "ProvisionedThroughputExceededException", 400),
        ("dynamodb", "PutItem", "json", "ThrottlingException", 400),
        ("dynamodb", "BatchWriteItem", "json", "InternalServerError", 500),
        ("s3", "PutObject", "rest-xml", "SlowDown", 503),
        ("s3", "GetObject", "rest-xml", "AccessDenied", 403),
        ("sqs", "SendMessage", "json", "RequestThrottled", 400),
        ("sns", "Publish", "query", "Throttled", 429),
    ],
)
def test_error_bodies_parse_with_botocore(
    service: str, operation: str, protocol: str, code: str, status: int
) -> None:
    from botocore.loaders import Loader

    plan = parse_plan({"rules": [{"service": service, "error": {"code": code}}]})
    action = plan.rules[0].actions["error"]
    line, headers, body = error_response(
        Call(service, operation, protocol, ("r1",)), code, action.status, action.message
    )
    model = ServiceModel(Loader().load_service_model(service, "service-2"), service)
    response = {"status_code": int(line.split()[0]), "headers": dict(headers), "body": body}
    parsed = create_parser(model.metadata["protocol"]).parse(
        response, model.operation_model(operation).output_shape
    )
    assert (parsed["Error"]["Code"], response["status_code"]) == (code, status)
    assert parsed["Error"]["Message"] == action.message.replace("{resource}", "r1")
