"""``deploy.functions.deploy_functions`` against the local Lambda runtime: idempotent, both streams wired."""

from __future__ import annotations

import uuid
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from lambda_runtime_support import FIXTURE_HANDLERS

from helpers.core.errors import ResourceMissingError
from helpers.pipeline.config import Settings, load_settings

pytestmark = pytest.mark.integration

# --- deploy_functions ------------------------------------------------------------------------------


@pytest.fixture
def pipeline(local_stack: Settings, c: SimpleNamespace, tmp_path: Path) -> Settings:
    """Settings naming a fresh stream, table, queue and roles on the session's stack (not created yet)."""
    tag = uuid.uuid4().hex[:6]
    return load_settings(
        local_port=local_stack.local_port,
        state_dir=str(tmp_path / "state"),
        stream_name=f"dq-{tag}",
        table_name=f"dp-{tag}",
        failure_queue_name=f"df-{tag}",
        processor_function=f"dproc-{tag}",
        trend_function=f"dtrend-{tag}",
        processor_role=f"dproc-role-{tag}",
        trend_role=f"dtrend-role-{tag}",
    )


def _fake_handlers(version: str) -> Callable[[str, Any], Path]:
    """A stand-in for build_zip: recording handlers under the real handler names."""

    def build(function: str, out_dir: Any) -> Path:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / f"{function}.zip"
        with zipfile.ZipFile(path, "w") as archive:
            for name in ("lambda_src/__init__.py", f"lambda_src/{function}.py"):
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                body = (
                    ""
                    if name.endswith("__init__.py")
                    else FIXTURE_HANDLERS + f"\nhandler = record  # {version}\n"
                )
                archive.writestr(info, body)
        return path

    return build


def test_deploy_functions_is_idempotent_and_wires_both_streams(
    pipeline: Settings, c: SimpleNamespace, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from deploy import functions

    monkeypatch.setattr(functions, "build_zip", _fake_handlers("v1"))
    with pytest.raises(ResourceMissingError, match="run 01_provision first"):
        functions.deploy_functions(pipeline)
    for role in (pipeline.processor_role, pipeline.trend_role):
        c.iam.create_role(RoleName=role, AssumeRolePolicyDocument="{}")
        c.undo.append(lambda role=role: c.iam.delete_role(RoleName=role))
    c.kinesis.create_stream(StreamName=pipeline.stream_name, ShardCount=2)
    c.undo.append(lambda: c.kinesis.delete_stream(StreamName=pipeline.stream_name))
    c.dynamodb.create_table(
        TableName=pipeline.table_name,
        BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "symbol", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "symbol", "KeyType": "HASH"}],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"},
    )
    c.undo.append(lambda: c.dynamodb.delete_table(TableName=pipeline.table_name))
    queue_url = c.sqs.create_queue(QueueName=pipeline.failure_queue_name)["QueueUrl"]
    c.undo.append(lambda: c.sqs.delete_queue(QueueUrl=queue_url))

    first = functions.deploy_functions(pipeline)
    again = functions.deploy_functions(pipeline)
    monkeypatch.setattr(functions, "build_zip", _fake_handlers("v2"))
    changed = functions.deploy_functions(pipeline, functions=["processor"])

    assert {k: v["action"] for k, v in first["functions"].items()} == {
        "processor": "created",
        "trend": "created",
    }
    assert {k: v["action"] for k, v in again["functions"].items()} == {
        "processor": "unchanged",
        "trend": "unchanged",
    }
    assert {k: v["action"] for k, v in again["mappings"].items()} == {
        "processor": "unchanged",
        "trend": "unchanged",
    }
    assert changed["functions"]["processor"]["action"] == "code"
    assert changed["functions"]["processor"]["code_sha256"] != first["functions"]["processor"]["code_sha256"]
    for kind, name in (("processor", pipeline.processor_function), ("trend", pipeline.trend_function)):
        [mapping] = c.lam.list_event_source_mappings(FunctionName=name)["EventSourceMappings"]
        assert mapping["UUID"] == first["mappings"][kind]["uuid"]
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert (mapping["BisectBatchOnFunctionError"], mapping["MaximumRetryAttempts"]) == (True, 3)
        assert mapping["DestinationConfig"]["OnFailure"]["Destination"] == first["failure_queue_arn"]
        config = c.lam.get_function_configuration(FunctionName=name)
        assert config["Handler"] == f"lambda_src.{kind}.handler"
        assert config["Environment"]["Variables"] == pipeline.lambda_environment()
    assert first["mappings"]["processor"]["source_arn"].endswith(f":stream/{pipeline.stream_name}")
    assert c.lam.get_event_source_mapping(UUID=first["mappings"]["processor"]["uuid"])["BatchSize"] == 500

    removed = functions.remove_functions(pipeline)
    assert {k: v["function"] for k, v in removed.items()} == {"processor": "deleted", "trend": "deleted"}
    assert functions.remove_functions(pipeline)["processor"]["function"] == "absent"
