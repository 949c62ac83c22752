"""One endpoint, honoured everywhere: the settings' endpoint, the stack's port and boto3's variables agree.

botocore lets a client's explicit ``endpoint_url`` win over ``AWS_ENDPOINT_URL`` and
``AWS_ENDPOINT_URL_<SERVICE>``; every helper client passes one, so a variable that disagrees would
only move the calls of *other* clients: it is refused on load, naming the variable.
"""

from __future__ import annotations

import boto3
import pytest

from helpers.core.errors import ConfigError, LocalStackError
from helpers.notebook import doctor
from helpers.pipeline import aws
from helpers.pipeline.config import load_settings


def test_an_explicit_local_endpoint_names_the_stack_port() -> None:
    s = load_settings(environ={"STP_ENDPOINT_URL": "http://127.0.0.1:4599"})
    assert (s.local_port, s.resolved_endpoint) == (4599, "http://127.0.0.1:4599")
    from_aws_variable = load_settings(environ={"AWS_ENDPOINT_URL": "http://localhost:4601"})
    assert from_aws_variable.local_port == 4601


def test_an_explicit_port_is_kept_beside_the_endpoint() -> None:
    """A Lambda function's environment has both: the deployer's port and the runtime's endpoint."""
    s = load_settings(environ={"STP_LOCAL_PORT": "4600", "AWS_ENDPOINT_URL": "http://127.0.0.1:4700"})
    assert (s.local_port, s.resolved_endpoint) == (4600, "http://127.0.0.1:4700")


def test_a_per_service_endpoint_that_disagrees_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000"})
    assert info.value.field == "AWS_ENDPOINT_URL_S3"
    assert "AWS_ENDPOINT_URL_S3" in str(info.value) and "http://127.0.0.1:4566" in str(info.value)
    assert "unset AWS_ENDPOINT_URL_S3" in info.value.fix


@pytest.mark.parametrize(
    "environ",
    [
        {"AWS_ENDPOINT_URL_DYNAMODB": "http://127.0.0.1:4566/"},  # the same endpoint, written differently
        {"AWS_ENDPOINT_URL_S3": "http://localhost:4566"},
        {"STP_ENDPOINT_URL": "http://127.0.0.1:4599", "AWS_ENDPOINT_URL_KINESIS": "http://127.0.0.1:4599"},
        {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"},
        {"AWS_ENDPOINT_URL_S3": ""},
    ],
)
def test_agreeing_or_switched_off_endpoint_variables_stand(environ: dict[str, str]) -> None:
    load_settings(environ=environ)


def test_a_global_endpoint_variable_that_disagrees_with_stp_endpoint_url_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            environ={"STP_ENDPOINT_URL": "http://127.0.0.1:4599", "AWS_ENDPOINT_URL": "http://127.0.0.1:4566"}
        )
    assert info.value.field == "AWS_ENDPOINT_URL"


def test_target_aws_without_an_endpoint_leaves_per_service_variables_to_boto3() -> None:
    s = load_settings(
        environ={"AWS_ENDPOINT_URL_S3": "https://s3.example.com"}, target="aws", account_id="123456789012"
    )
    assert s.resolved_endpoint is None


def test_the_doctor_reports_the_refusal_as_a_failed_settings_check() -> None:
    settings, check = doctor.check_settings(environ={"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9000"})
    assert settings is None and not check.ok
    assert "AWS_ENDPOINT_URL_S3" in check.detail and "unset AWS_ENDPOINT_URL_S3" in check.fix


def test_botocore_lets_the_explicit_endpoint_win_over_the_service_variable(monkeypatch) -> None:
    """The reason for the refusal: our clients would ignore the variable, other clients would not."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:9000")
    s = load_settings(environ={"STP_LOCAL_PORT": "4566", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"})
    ours = aws.client("s3", s)
    theirs = boto3.session.Session(region_name="us-east-1").client("s3")
    assert ours.meta.endpoint_url == "http://127.0.0.1:4566"
    assert theirs.meta.endpoint_url == "http://127.0.0.1:9000"


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"STP_ENDPOINT_URL": "http://127.0.0.1:4599", "STP_LOCAL_PORT": "4600"}, "STP_LOCAL_PORT=4599"),
        ({"STP_ENDPOINT_URL": "https://127.0.0.1:4599"}, "plain http"),
        ({"STP_ENDPOINT_URL": "http://127.0.0.2:4599"}, "127.0.0.1 only"),
        ({"STP_ENDPOINT_URL": "http://127.0.0.1"}, "no port"),
    ],
)
def test_up_refuses_an_endpoint_it_cannot_serve_before_anything_starts(
    environ: dict[str, str], named: str, monkeypatch, tmp_path
) -> None:
    from deploy.local import up

    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    s = load_settings(environ=environ, state_dir=str(tmp_path))
    with pytest.raises(LocalStackError, match="STP_ENDPOINT_URL") as info:
        up(s)
    assert named in str(info.value)
    assert not (tmp_path / "stack.pid").exists()
