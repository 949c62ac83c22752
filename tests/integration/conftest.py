"""Fixtures of the Lambda runtime tests: clients with an undo list, a role and the fixture zip."""

from __future__ import annotations

import contextlib
import io
import json
import zipfile
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from botocore.exceptions import ClientError
from lambda_runtime_support import FIXTURE_HANDLERS, unique

from helpers.pipeline import aws
from helpers.pipeline.config import Settings


@pytest.fixture(scope="module")
def c(local_stack: Settings) -> SimpleNamespace:
    """Clients for the session's stack, and ``undo``: what each test created, to delete after it."""
    services = ("lambda", "kinesis", "dynamodb", "sqs", "s3", "logs", "iam")
    clients = {name.replace("lambda", "lam"): aws.client(name, local_stack) for name in services}
    return SimpleNamespace(undo=[], **clients)


@pytest.fixture(autouse=True)
def _tidy(request: pytest.FixtureRequest) -> Iterator[None]:
    """Leave the shared session stack as we found it (other tests list its resources)."""
    yield
    if "c" in request.fixturenames:
        c = request.getfixturevalue("c")
        for undo in reversed(c.undo):
            with contextlib.suppress(ClientError):
                undo()
        c.undo.clear()


@pytest.fixture(scope="module")
def role_arn(c: SimpleNamespace) -> Iterator[str]:
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}
        ],
    }
    role = c.iam.create_role(RoleName=unique("runtime-test"), AssumeRolePolicyDocument=json.dumps(trust))
    yield str(role["Role"]["Arn"])
    c.iam.delete_role(RoleName=role["Role"]["RoleName"])


@pytest.fixture(scope="module")
def fixture_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("fixture.py", FIXTURE_HANDLERS)
    return buffer.getvalue()
