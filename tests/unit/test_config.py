"""Settings validation: every bad value is refused on load, naming the field and the fix."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers.core.errors import ConfigError
from helpers.pipeline.config import DEFAULT_LOCAL_PORT, Settings, load_settings

EMPTY_ENV: dict[str, str] = {}


def load(**overrides: object) -> Settings:
    return load_settings(overrides, environ=EMPTY_ENV)


def test_defaults_are_a_complete_local_configuration() -> None:
    s = load()
    assert s.target == "local"
    assert s.region == "us-east-1"
    assert s.resolved_endpoint == f"http://127.0.0.1:{DEFAULT_LOCAL_PORT}"
    assert s.raw_location == "s3://stock-trend-raw-local/raw/"
    assert s.results_location == "s3://stock-trend-athena-results-local/athena/"


def test_aws_target_uses_aws_endpoints() -> None:
    s = load(target="aws", region="eu-west-1")
    assert s.resolved_endpoint is None
    assert s.lambda_environment()["STP_TARGET"] == "aws"


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("stream_name", "stock-trend-quotes ", "leading or trailing whitespace"),
        ("table_name", " stock-trend-processed", "leading or trailing whitespace"),
        ("raw_bucket", "stock-trend-raw\u200b", "U+200B (ZERO WIDTH SPACE)"),
        ("topic_name", "stock\u200btrend", "U+200B"),
        ("glue_database", "stock_trend\ufeff", "U+FEFF"),
        ("processor_function", "stock-trend\u00a0processor", "U+00A0"),
        ("region", "us-east-1\t", "whitespace"),
        ("region", "us-east-1\u200d", "U+200D"),
        ("alert_queue_name", "alerts\u2060inbox", "U+2060"),
    ],
)
def test_invisible_characters_and_stray_whitespace_are_refused(field: str, value: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(**{field: value})
    err = info.value
    assert err.field == field
    assert fragment in str(err)
    assert repr(value) in str(err)  # the bad value is shown visibly
    assert "Fix:" in str(err)


@pytest.mark.parametrize(
    ("field", "value", "fragment"),
    [
        ("raw_bucket", "Stock-Trend-Raw", "not a valid S3 bucket name"),
        ("raw_bucket", "ab", "not a valid S3 bucket name"),
        ("raw_bucket", "my..bucket", "not a valid S3 bucket name"),
        ("raw_bucket", "192.168.1.10", "IP address"),
        ("raw_bucket", "bucket_with_underscore", "not a valid S3 bucket name"),
        ("results_bucket", "stock-trend-raw-local", "equals raw_bucket"),
        ("stream_name", "quotes/stream", "naming rule"),
        ("table_name", "ab", "naming rule"),
        ("processor_function", "x" * 65, "naming rule"),
        ("glue_database", "Stock-Trend", "naming rule"),
        ("athena_workgroup", "bad workgroup", "naming rule"),
        ("target", "cloud", "unknown target"),
        ("region", "us-east-7", "not a known AWS region"),
        ("region", "US-EAST-1", "not a known AWS region"),
        ("endpoint_url", "127.0.0.1:4566", "not an http(s) URL"),
        ("endpoint_url", "http://10.0.0.5:4566", "not a loopback address"),
        ("local_port", "45x6", "must be an integer"),
        ("local_port", 70000, "out of range"),
        ("alert_email", "not-an-address", "not an email address"),
        ("athena_bytes_scanned_cutoff", 1000, "minimum of 10 MB"),
        ("colour", "blue", "unknown setting"),
    ],
)
def test_naming_rules(field: str, value: object, fragment: str) -> None:
    with pytest.raises(ConfigError, match="setting " + field) as info:
        load(**{field: value})
    assert fragment in str(info.value)


def test_region_typo_suggests_neighbours() -> None:
    with pytest.raises(ConfigError) as info:
        load(region="eu-west-9")
    assert "eu-west-1" in str(info.value)


def test_environment_overrides_the_config_file(tmp_path) -> None:
    config = tmp_path / "stock-trend.toml"
    config.write_text('[tool.stock-trend]\nregion = "eu-west-1"\nstream_name = "from-file"\n')
    s = load_settings(environ={"STP_CONFIG": str(config), "STP_STREAM_NAME": "from-env"})
    assert (s.region, s.stream_name) == ("eu-west-1", "from-env")


def test_environment_value_with_trailing_space_is_refused_before_any_call() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"STP_TABLE_NAME": "stock-trend-processed "})
    assert info.value.field == "table_name"


def test_integer_settings_from_environment() -> None:
    s = load_settings(environ={"STP_LOCAL_PORT": "4600", "STP_STREAM_RETENTION_HOURS": "48"})
    assert (s.local_port, s.stream_retention_hours) == (4600, 48)
    assert s.resolved_endpoint == "http://127.0.0.1:4600"


def test_aws_endpoint_url_variable_is_honoured() -> None:
    s = load_settings(environ={"AWS_ENDPOINT_URL": "http://localhost:5000"})
    assert s.resolved_endpoint == "http://localhost:5000"


def test_missing_config_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(environ={"STP_CONFIG": str(tmp_path / "nope.toml")})


def test_cli_prints_resolved_settings_as_json(project_root) -> None:
    env = {"PATH": "/usr/bin:/bin", "STP_REGION": "eu-central-1", "PYTHONPATH": str(project_root)}
    out = subprocess.run(
        [sys.executable, "-m", "helpers.pipeline.config"], capture_output=True, text=True, env=env, check=True
    )
    data = json.loads(out.stdout)
    assert data["region"] == "eu-central-1"
    assert data["endpoint_url"].startswith("http://127.0.0.1:")
    assert data["table_name"] == "stock-trend-processed"


def test_cli_refuses_bad_settings_with_exit_code_2(project_root) -> None:
    env = {"PATH": "/usr/bin:/bin", "STP_RAW_BUCKET": "raw\u200bbucket", "PYTHONPATH": str(project_root)}
    out = subprocess.run(
        [sys.executable, "-m", "helpers.pipeline.config"], capture_output=True, text=True, env=env
    )
    assert out.returncode == 2
    assert "raw_bucket" in out.stderr and "U+200B" in out.stderr


def test_lambda_environment_round_trips() -> None:
    s = load(table_name="my-table", raw_bucket="my-raw-bucket")
    rebuilt = load_settings(environ=s.lambda_environment())
    assert (rebuilt.table_name, rebuilt.raw_bucket, rebuilt.target) == ("my-table", "my-raw-bucket", "local")
