"""The local stack's IAM decision (deploy/local/access): policy evaluation and what a request asks."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from deploy.iam import Arns, processor_policy, runner_policy, trend_policy
from deploy.local.access.calls import identify
from deploy.local.access.policies import ALLOWED, EXPLICIT_DENY, IMPLICIT_DENY, evaluate
from helpers.pipeline.config import load_settings

ACCOUNT = "123456789012"
S = load_settings(environ={})
ARNS = Arns.for_account(S, ACCOUNT)


def _doc(*statements: dict[str, Any]) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def test_allow_needs_action_and_resource_and_explicit_deny_wins() -> None:
    allow = _doc({"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::b/raw/*"]})
    deny = _doc({"Effect": "Deny", "Action": "s3:*", "Resource": "arn:aws:s3:::b/raw/secret*"})
    assert evaluate([allow], "S3:getobject", ["arn:aws:s3:::b/raw/x"]).outcome == ALLOWED  # actions: any case
    assert evaluate([allow], "s3:GetObject", ["arn:aws:s3:::B/raw/x"]).outcome == IMPLICIT_DENY  # ARNs: exact
    assert evaluate([allow], "s3:PutObject", ["arn:aws:s3:::b/raw/x"]).outcome == IMPLICIT_DENY
    decision = evaluate([allow, deny], "s3:GetObject", ["arn:aws:s3:::b/raw/secret.txt"])
    assert (decision.outcome, decision.resource) == (EXPLICIT_DENY, "arn:aws:s3:::b/raw/secret.txt")


def test_every_resource_of_a_request_must_be_allowed() -> None:
    doc = _doc({"Effect": "Allow", "Action": "glue:GetTable", "Resource": ["arn:c", "arn:db/x"]})
    assert evaluate([doc], "glue:GetTable", ["arn:c", "arn:db/x"]).allowed
    decision = evaluate([doc], "glue:GetTable", ["arn:c", "arn:db/x", "arn:table/x/t"])
    assert (decision.outcome, decision.resource) == (IMPLICIT_DENY, "arn:table/x/t")


def test_a_scoped_statement_does_not_allow_a_call_without_a_resource() -> None:
    doc = _doc({"Effect": "Allow", "Action": "dynamodb:*", "Resource": "arn:aws:dynamodb:r:a:table/t"})
    assert not evaluate([doc], "dynamodb:ListTables", ["*"]).allowed
    assert evaluate([_doc({"Effect": "Allow", "Action": "dynamodb:ListTables", "Resource": "*"})],
                    "dynamodb:ListTables", ["*"]).allowed  # fmt: skip


@pytest.mark.parametrize(
    ("context", "allowed"),
    [({"iam:PassedToService": "lambda.amazonaws.com"}, True),
     ({"iam:PassedToService": "ec2.amazonaws.com"}, False),
     ({}, False), ({"IAM:PassedToService": "lambda.amazonaws.com"}, True)],
)  # fmt: skip
def test_conditions_need_the_request_key(context: dict[str, str], allowed: bool) -> None:
    doc = _doc(
        {"Effect": "Allow", "Action": "iam:PassRole", "Resource": "arn:aws:iam::1:role/r",
         "Condition": {"StringEquals": {"iam:PassedToService": "lambda.amazonaws.com"}}}
    )  # fmt: skip
    assert evaluate([doc], "iam:PassRole", ["arn:aws:iam::1:role/r"], context).allowed is allowed


def test_unknown_condition_operators_never_grant_and_if_exists_passes_a_missing_key() -> None:
    unknown = _doc(
        {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {"DateLessThan": {"aws:x": "1"}}}
    )
    assert not evaluate([unknown], "s3:GetObject", ["*"], {"aws:x": "0"}).allowed
    if_exists = _doc({"Effect": "Allow", "Action": "*", "Resource": "*",
                      "Condition": {"StringEqualsIfExists": {"aws:y": "v"}}})  # fmt: skip
    assert evaluate([if_exists], "s3:GetObject", ["*"], {}).allowed
    assert not evaluate([if_exists], "s3:GetObject", ["*"], {"aws:y": "w"}).allowed
    insecure = {"Bool": {"aws:SecureTransport": "false"}}
    tls = _doc({"Effect": "Deny", "Action": "s3:*", "Resource": "*", "Condition": insecure},
               {"Effect": "Allow", "Action": "s3:*", "Resource": "*"})  # fmt: skip
    assert evaluate([tls], "s3:GetObject", ["*"], {"aws:SecureTransport": "false"}).outcome == EXPLICIT_DENY


# --------------------------------------------------------------------------- what a request asks


def _environ(
    method: str, path: str, *, target: str = "", body: bytes = b"", query: str = ""
) -> dict[str, Any]:
    environ = {
        "REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query, "HTTP_HOST": "127.0.0.1:4566",
        "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
    }  # fmt: skip
    if target:
        environ["HTTP_X_AMZ_TARGET"] = target
    return environ


def _json(service: str, target: str, doc: dict[str, Any]) -> tuple[str, list[str]]:
    call = identify(
        _environ("POST", "/", target=target, body=json.dumps(doc).encode()), service, "us-east-1", ACCOUNT
    )
    return call.action, call.resources


def test_json_calls_name_their_resources() -> None:
    stream = f"arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/q"
    assert _json("kinesis", "Kinesis_20131202.PutRecords", {"StreamName": "q"}) == (
        "kinesis:PutRecords",
        [stream],
    )
    table = f"arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/"
    assert _json("dynamodb", "DynamoDB_20120810.BatchWriteItem", {"RequestItems": {"a": [], "b": []}}) == (
        "dynamodb:BatchWriteItem", [table + "a", table + "b"]
    )  # fmt: skip
    assert _json("dynamodb", "DynamoDB_20120810.ListTables", {}) == ("dynamodb:ListTables", ["*"])
    glue = f"arn:aws:glue:us-east-1:{ACCOUNT}:"
    assert _json("glue", "AWSGlue.CreateTable", {"DatabaseName": "d", "TableInput": {"Name": "t"}})[1] == [
        glue + "catalog", glue + "database/d", glue + "table/d/t"
    ]  # fmt: skip
    assert _json("logs", "Logs_20140328.FilterLogEvents", {"logGroupName": "/aws/lambda/f"})[1] == [
        f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/aws/lambda/f:*"
    ]
    assert _json("sqs", "AmazonSQS.SendMessage", {"QueueUrl": f"http://h/{ACCOUNT}/q"}) == (
        "sqs:SendMessage", [f"arn:aws:sqs:us-east-1:{ACCOUNT}:q"]
    )  # fmt: skip


def test_query_calls_name_their_resources() -> None:
    body = b"Action=PublishBatch&TopicArn=arn%3Aaws%3Asns%3Aus-east-1%3A1%3At"
    call = identify(_environ("POST", "/", body=body), "sns", "us-east-1", ACCOUNT)
    assert (call.action, call.resources) == ("sns:Publish", ["arn:aws:sns:us-east-1:1:t"])
    call = identify(
        _environ("POST", "/", body=b"Action=PutRolePolicy&RoleName=r"), "iam", "us-east-1", ACCOUNT
    )
    assert (call.action, call.resources) == ("iam:PutRolePolicy", [f"arn:aws:iam::{ACCOUNT}:role/r"])


@pytest.mark.parametrize(
    ("method", "path", "query", "action", "resource"),
    [
        ("HEAD", "/b/raw/k", "", "s3:GetObject", "arn:aws:s3:::b/raw/k"),
        ("PUT", "/b/raw/a%20b", "", "s3:PutObject", "arn:aws:s3:::b/raw/a b"),
        ("GET", "/b", "list-type=2&prefix=raw/", "s3:ListBucket", "arn:aws:s3:::b"),
        ("GET", "/b", "versions", "s3:ListBucketVersions", "arn:aws:s3:::b"),
        ("PUT", "/b", "publicAccessBlock", "s3:PutBucketPublicAccessBlock", "arn:aws:s3:::b"),
        ("PUT", "/b", "encryption", "s3:PutEncryptionConfiguration", "arn:aws:s3:::b"),
        ("PUT", "/b", "lifecycle", "s3:PutLifecycleConfiguration", "arn:aws:s3:::b"),
        ("HEAD", "/b", "", "s3:ListBucket", "arn:aws:s3:::b"),
        ("GET", "/", "", "s3:ListAllMyBuckets", "*"),
    ],
)  # fmt: skip
def test_s3_calls_are_named_as_iam_names_them(
    method: str, path: str, query: str, action: str, resource: str
) -> None:
    call = identify(_environ(method, path, query=query), "s3", "us-east-1", ACCOUNT)
    assert (call.action, call.resources) == (action, [resource])


def test_delete_objects_needs_delete_on_every_key() -> None:
    body = b"<Delete><Object><Key>raw/a</Key></Object><Object><Key>raw/b</Key></Object></Delete>"
    call = identify(_environ("POST", "/b", query="delete", body=body), "s3", "us-east-1", ACCOUNT)
    assert (call.action, call.resources) == (
        "s3:DeleteObject",
        ["arn:aws:s3:::b/raw/a", "arn:aws:s3:::b/raw/b"],
    )


def test_lambda_calls_and_the_role_they_pass() -> None:
    fn = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:f"
    body = json.dumps({"FunctionName": "f", "Role": f"arn:aws:iam::{ACCOUNT}:role/r"}).encode()
    call = identify(_environ("POST", "/2015-03-31/functions", body=body), "lambda", "us-east-1", ACCOUNT)
    assert (call.action, call.resources) == ("lambda:CreateFunction", [fn])
    assert call.extra == [
        ("iam:PassRole", [f"arn:aws:iam::{ACCOUNT}:role/r"], {"iam:PassedToService": "lambda.amazonaws.com"})
    ]
    path = f"/2015-03-31/functions/{fn.replace(':', '%3A')}/configuration"
    call = identify(_environ("GET", path), "lambda", "us-east-1", ACCOUNT)
    assert (call.action, call.resources) == ("lambda:GetFunctionConfiguration", [fn])
    call = identify(_environ("POST", "/2015-03-31/functions/f/invocations"), "lambda", "us-east-1", ACCOUNT)
    assert call.action == "lambda:InvokeFunction"
    call = identify(_environ("GET", "/2015-03-31/event-source-mappings/"), "lambda", "us-east-1", ACCOUNT)
    assert (call.action, call.resources) == ("lambda:ListEventSourceMappings", ["*"])


def test_athena_calls_by_query_id_are_on_the_query_s_workgroup() -> None:
    lookups = {"athena_workgroup_of_query": {"q1": "stock-trend"}.get}
    body = json.dumps({"QueryExecutionId": "q1"}).encode()
    environ = _environ("POST", "/", target="AmazonAthena.GetQueryResults", body=body)
    call = identify(environ, "athena", "us-east-1", ACCOUNT, lookups)
    assert call.resources == [f"arn:aws:athena:us-east-1:{ACCOUNT}:workgroup/stock-trend"]


# --------------------------------------------------------------------------- the shipped policies


def _allowed(policy: dict[str, Any], action: str, *resources: str, **context: str) -> bool:
    return evaluate([json.dumps(policy)], action, list(resources), context).allowed


def test_the_shipped_policies_allow_what_the_pipeline_does_and_no_more() -> None:
    raw = ARNS.of("raw_bucket")
    assert _allowed(
        processor_policy(ARNS), "s3:PutObject", f"{raw}/{S.raw_prefix}symbol=A/year=2026/x.ndjson"
    )
    assert not _allowed(processor_policy(ARNS), "s3:PutObject", f"{raw}/elsewhere/x")
    assert _allowed(processor_policy(ARNS), "dynamodb:BatchWriteItem", ARNS.of("table_name"))
    assert not _allowed(processor_policy(ARNS), "dynamodb:BatchWriteItem", ARNS.of("alerts_table_name"))
    assert _allowed(trend_policy(ARNS), "sns:Publish", ARNS.of("topic_name"))
    assert not _allowed(processor_policy(ARNS), "sns:Publish", ARNS.of("topic_name"))
    runner = runner_policy(ARNS)
    role = ARNS.of("processor_role")
    assert _allowed(runner, "iam:PassRole", role, **{"iam:PassedToService": "lambda.amazonaws.com"})
    assert not _allowed(runner, "iam:PassRole", role, **{"iam:PassedToService": "ec2.amazonaws.com"})
    assert not _allowed(runner, "iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/other",
                        **{"iam:PassedToService": "lambda.amazonaws.com"})  # fmt: skip
    assert not _allowed(runner, "dynamodb:BatchWriteItem", ARNS.of("table_name"))
