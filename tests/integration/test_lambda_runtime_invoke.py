"""The local Lambda runtime's Invoke API, CloudWatch Logs and worker processes.

Invocation logs read back with FilterLogEvents, the deployed zip run with its environment, function
and init errors, workers that see only boto3 besides the code, and no worker left after ``down``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import socket
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError
from lambda_runtime_support import calls, deploy, unique, wait_until

from helpers.pipeline import aws
from helpers.pipeline.config import Settings, load_settings

pytestmark = pytest.mark.integration

# --- logs, Invoke API, environment ----------------------------------------------------------------


def test_invocation_logs_are_readable_with_filter_log_events(
    c: SimpleNamespace, role_arn: str, fixture_zip: bytes, tmp_path: Path
) -> None:
    function = deploy(c, role_arn, fixture_zip, "record", {"OUT_DIR": str(tmp_path)})
    response = c.lam.invoke(FunctionName=function, Payload=json.dumps({"Records": []}).encode())
    request_id = response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]
    group = f"/aws/lambda/{function}"

    def reported() -> list[dict[str, Any]] | None:
        events = c.logs.filter_log_events(logGroupName=group)["events"]
        return events if any(e["message"].startswith("REPORT") for e in events) else None

    events = wait_until(reported, "the REPORT line")

    messages = [e["message"] for e in events]
    start = messages.index(f"START RequestId: {request_id} Version: $LATEST")
    end = messages.index(f"END RequestId: {request_id}")
    own = messages[start + 1 : end]
    assert own[0] == "fixture saw 0 records"
    assert re.fullmatch(
        rf"\[WARNING\]\t[\d:.T-]{{23}}Z\t{request_id}\tfixture warning for {request_id}",
        own[1],
    )
    assert not any("below the default level" in m for m in messages)  # root logger at WARNING, as on AWS
    report = messages[end + 1]
    assert re.match(
        rf"REPORT RequestId: {request_id}\tDuration: [\d.]+ ms\tBilled Duration: \d+ ms\tMemory Size: 128 MB",
        report,
    )
    assert "Init Duration" in report and messages[0].startswith("INIT_START")
    [stream_name] = {e["logStreamName"] for e in events}
    assert re.fullmatch(r"\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}", stream_name)


def test_invoke_api_runs_the_deployed_zip_with_its_environment(
    c: SimpleNamespace, local_stack: Settings, role_arn: str, fixture_zip: bytes, tmp_path: Path
) -> None:
    bucket = unique("fx-bucket")
    c.s3.create_bucket(Bucket=bucket)
    c.undo.append(lambda: [c.s3.delete_object(Bucket=bucket, Key=k) for k in ("first", "second", "async")])
    c.undo.append(lambda: c.s3.delete_bucket(Bucket=bucket))
    function = deploy(
        c, role_arn, fixture_zip, "s3_put", {"OUT_DIR": str(tmp_path), "MARKER": "one", "BUCKET": bucket}
    )

    first = c.lam.invoke(FunctionName=function, Payload=b'{"key": "first"}', LogType="Tail")
    c.lam.update_function_configuration(
        FunctionName=function, Environment={"Variables": {"MARKER": "two", "BUCKET": bucket}}
    )
    second = c.lam.invoke(FunctionName=function, Payload=b'{"key": "second"}')
    queued = c.lam.invoke(FunctionName=function, InvocationType="Event", Payload=b'{"key": "async"}')
    dry = c.lam.invoke(FunctionName=function, InvocationType="DryRun")

    one, two = json.loads(first["Payload"].read()), json.loads(second["Payload"].read())
    assert (first["StatusCode"], first["ExecutedVersion"], "FunctionError" in first) == (
        200,
        "$LATEST",
        False,
    )
    assert one["marker"] == "one" and two["marker"] == "two"
    assert one["pid"] != two["pid"]  # a configuration change starts a fresh worker
    tail = base64.b64decode(first["LogResult"]).decode()
    assert "START RequestId:" in tail and "REPORT RequestId:" in tail
    assert c.s3.get_object(Bucket=bucket, Key="first")["Body"].read() == b"written by the function"
    assert (queued["StatusCode"], dry["StatusCode"]) == (202, 204)
    wait_until(
        lambda: c.s3.list_objects_v2(Bucket=bucket, Prefix="async").get("KeyCount"), "the async invocation"
    )


def test_invoke_api_reports_function_and_init_errors(
    c: SimpleNamespace, role_arn: str, fixture_zip: bytes, tmp_path: Path
) -> None:
    failing = deploy(c, role_arn, fixture_zip, "poison", {"OUT_DIR": str(tmp_path)})
    missing = deploy(c, role_arn, fixture_zip, "no_such_handler", {"OUT_DIR": str(tmp_path)})
    event = {"Records": [{"kinesis": {"data": base64.b64encode(b"poison").decode()}}]}

    raised = c.lam.invoke(FunctionName=failing, Payload=json.dumps(event).encode())
    not_found = c.lam.invoke(FunctionName=missing, Payload=b"{}")

    error = json.loads(raised["Payload"].read())
    assert raised["FunctionError"] == "Unhandled"
    assert (error["errorType"], error["errorMessage"]) == ("ValueError", "poison record")
    assert any("raise ValueError" in line for line in error["stackTrace"])
    init_error = json.loads(not_found["Payload"].read())
    assert not_found["FunctionError"] == "Unhandled"
    assert init_error["errorType"] == "Runtime.HandlerNotFound"
    with pytest.raises(ClientError) as err:
        c.lam.invoke(FunctionName=unique("absent"), Payload=b"{}")
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"


AWS_RUNTIME_ONLY = """
import importlib.metadata, importlib.util, sys
import boto3

s3 = boto3.client("s3")


def handler(event, context):
    return {
        "buckets": isinstance(s3.list_buckets()["Buckets"], list),
        "boto3": importlib.metadata.version("boto3"),
        "path": sys.path,
        "found": {n: importlib.util.find_spec(n) is not None for n in ("pandas", "matplotlib", "helpers")},
    }
"""


def _zip_of(source: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("fixture.py", source)
    return buffer.getvalue()


def test_workers_see_only_boto3_and_its_dependencies_besides_the_code(
    c: SimpleNamespace, local_stack: Settings, role_arn: str
) -> None:
    """As on AWS: a handler importing pandas fails to init; boto3 (with its metadata) works."""
    import boto3

    with_pandas = deploy(c, role_arn, _zip_of("import pandas\n\nhandler = print\n"), "handler", {})
    aws_only = deploy(c, role_arn, _zip_of(AWS_RUNTIME_ONLY), "handler", {})

    failed = c.lam.invoke(FunctionName=with_pandas, Payload=b"{}")
    worked = c.lam.invoke(FunctionName=aws_only, Payload=b"{}")

    init_error = json.loads(failed["Payload"].read())
    assert failed["FunctionError"] == "Unhandled"
    assert (init_error["errorType"], init_error["errorMessage"]) == (
        "Runtime.ImportModuleError",
        "Unable to import module 'fixture': No module named 'pandas'",
    )
    assert "FunctionError" not in worked
    got = json.loads(worked["Payload"].read())
    assert got["buckets"] is True and got["boto3"] == boto3.__version__
    assert got["found"] == {"pandas": False, "matplotlib": False, "helpers": False}
    code_dir, runtime_dir, *stdlib = got["path"]
    assert Path(code_dir).is_relative_to(Path(local_stack.state_dir) / "lambda" / aws_only)
    assert Path(runtime_dir) == Path(local_stack.state_dir) / "lambda" / ".runtime-packages"
    assert not [p for p in stdlib if "site-packages" in p]


def test_down_leaves_no_worker_processes(role_arn: str, fixture_zip: bytes, tmp_path: Path) -> None:
    from deploy.local import down, up

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    settings = load_settings(local_port=port, state_dir=str(tmp_path / "state"))
    up(settings)
    try:
        c = SimpleNamespace(lam=aws.client("lambda", settings), iam=aws.client("iam", settings), undo=[])
        role = c.iam.create_role(RoleName="down-test", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        function = deploy(c, role, fixture_zip, "record", {"OUT_DIR": str(tmp_path)})
        c.lam.invoke(FunctionName=function, Payload=b"{}")
        pid = calls(tmp_path)[0]["pid"]
        os.kill(pid, 0)  # alive and warm
    finally:
        down(settings)

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(gone, f"worker {pid} to exit with the stack", timeout=10)
