"""Settings validation: every bad value is refused on load, naming the field and the fix."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from helpers.core.errors import ConfigError
from helpers.pipeline.config import (
    DEFAULT_LOCAL_PORT,
    DEPLOYER_ONLY_FIELDS,
    LAMBDA_FIELDS,
    Settings,
    env_key,
    known_regions,
    load_settings,
)

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
    s = load(target="aws", region="eu-west-1", account_id="123456789012")
    assert s.resolved_endpoint is None
    assert s.lambda_environment()["STP_TARGET"] == "aws"


def test_aws_bucket_names_carry_the_account_and_region() -> None:
    s = load(target="aws", region="eu-west-1", account_id="123456789012")
    assert s.raw_bucket == "stock-trend-raw-123456789012-eu-west-1"
    assert s.results_bucket == "stock-trend-athena-results-123456789012-eu-west-1"
    named = load(target="aws", account_id="123456789012", raw_bucket="my-raw", results_bucket="my-results")
    assert (named.raw_bucket, named.results_bucket) == ("my-raw", "my-results")
    one = load(target="aws", account_id="123456789012", raw_bucket="my-raw")
    assert one.results_bucket == "stock-trend-athena-results-123456789012-us-east-1"


def test_aws_bucket_names_without_credentials_say_how_to_go_on() -> None:
    with pytest.raises(ConfigError) as info:
        load(target="aws")
    assert info.value.field == "raw_bucket"
    assert "STP_ACCOUNT_ID" in info.value.fix and "STP_RAW_BUCKET" in info.value.fix
    assert "STP_PROFILE" in info.value.fix


def test_a_malformed_account_id_is_refused() -> None:
    with pytest.raises(ConfigError, match="account_id"):
        load(target="aws", account_id="12345")


def test_cli_on_aws_never_resolves_the_local_bucket_names(project_root) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(project_root), "HOME": "/nonexistent"}
    env.update(STP_TARGET="aws", STP_ACCOUNT_ID="210987654321")
    run = subprocess.run(
        [sys.executable, "-m", "helpers.config"], env=env, capture_output=True, text=True, check=True
    )
    data = json.loads(run.stdout)
    assert data["target"] == "aws"
    assert data["raw_bucket"] == "stock-trend-raw-210987654321-us-east-1"
    assert "-local" not in data["raw_bucket"] + data["results_bucket"]
    no_account = subprocess.run(
        [sys.executable, "-m", "helpers.config"],
        env={**env, "STP_ACCOUNT_ID": "", "AWS_CONFIG_FILE": "/dev/null",
             "AWS_SHARED_CREDENTIALS_FILE": "/dev/null", "AWS_EC2_METADATA_DISABLED": "true"},
        capture_output=True, text=True,
    )  # fmt: skip
    assert no_account.returncode == 2
    assert "STP_RAW_BUCKET" in no_account.stderr and no_account.stdout == ""


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


# Non-default values for every field, so a field the serialiser dropped would come back as its default.
EVERY_FIELD_CHANGED = {
    "target": "aws",
    "region": "eu-west-1",
    "endpoint_url": "https://example.com",
    "profile": "deployer",
    "local_port": 4600,
    "state_dir": "/tmp/stp-state",
    "stream_name": "rt-quotes",
    "stream_retention_hours": 48,
    "table_name": "rt-processed",
    "alerts_table_name": "rt-alerts-sent",
    "raw_bucket": "rt-raw-bucket",
    "results_bucket": "rt-results-bucket",
    "topic_name": "rt-alerts.fifo",
    "alert_queue_name": "rt-inbox.fifo",
    "alerts_fifo": True,
    "failure_queue_name": "rt-failures",
    "alert_email": "ops@example.com",
    "glue_database": "rt_db",
    "glue_table": "rt_quotes",
    "athena_workgroup": "rt-workgroup",
    "athena_bytes_scanned_cutoff": 20_000_000,
    "processor_function": "rt-processor",
    "trend_function": "rt-trend",
    "processor_role": "rt-processor-role",
    "trend_role": "rt-trend-role",
    "account_id": "210987654321",
}


def test_the_round_trip_sample_changes_every_field() -> None:
    assert set(EVERY_FIELD_CHANGED) == {f.name for f in dataclasses.fields(Settings)}
    defaults = Settings()
    assert all(getattr(defaults, k) != v for k, v in EVERY_FIELD_CHANGED.items())


def test_lambda_environment_round_trips_the_whole_settings_object() -> None:
    # GIVEN settings where every field differs from its default
    s = load(**EVERY_FIELD_CHANGED)
    # WHEN a function rebuilds them from its environment alone
    rebuilt = load_settings(environ=s.lambda_environment())
    # THEN it has every pipeline field, deployer-only ones at their defaults
    assert rebuilt == s.for_lambda()
    assert dataclasses.replace(rebuilt, **{k: getattr(s, k) for k in DEPLOYER_ONLY_FIELDS}) == s
    assert (rebuilt.glue_database, rebuilt.glue_table) == ("rt_db", "rt_quotes")


def test_lambda_fields_are_every_field_but_the_deployer_only_ones() -> None:
    names = {f.name for f in dataclasses.fields(Settings)}
    assert set(LAMBDA_FIELDS) == names - set(DEPLOYER_ONLY_FIELDS)
    assert set(DEPLOYER_ONLY_FIELDS) <= names
    env = load(profile="deployer").lambda_environment()
    assert set(env) == {env_key(n) for n in LAMBDA_FIELDS}
    assert "STP_PROFILE" not in env and "STP_ENDPOINT_URL" not in env


def test_local_function_finds_the_stack_through_aws_endpoint_url() -> None:
    s = load(local_port=4600)
    inside = load_settings(environ={**s.lambda_environment(), "AWS_ENDPOINT_URL": "http://127.0.0.1:4700"})
    assert inside.resolved_endpoint == "http://127.0.0.1:4700"
    assert dataclasses.replace(inside, endpoint_url=None) == s.for_lambda()


def test_kernel_environment_round_trips_every_field() -> None:
    s = load(**{**EVERY_FIELD_CHANGED, "target": "local", "endpoint_url": "http://localhost:4600"})
    assert load_settings(environ=s.to_environment()) == s
    cleared = load(profile=None)
    assert load_settings(environ=cleared.to_environment()) == cleared


def test_settings_from_the_environment_outrank_the_config_file(tmp_path) -> None:
    config = tmp_path / "stock-trend.toml"
    config.write_text('[tool.stock-trend]\nglue_table = "from_file"\nalert_email = "file@example.com"\n')
    s = load()
    rebuilt = load_settings(environ={**s.lambda_environment(), "STP_CONFIG": str(config)})
    assert rebuilt == s.for_lambda()


def test_to_environment_refuses_unknown_fields() -> None:
    with pytest.raises(ValueError, match="colour"):
        load().to_environment(["colour"])


def test_region_list_is_read_once(monkeypatch) -> None:
    import boto3

    known_regions()

    def no_session(*args: object, **kwargs: object) -> None:
        raise AssertionError("load_settings built a boto3 session")

    monkeypatch.setattr(boto3.session, "Session", no_session)
    assert load(region="eu-west-1").region == "eu-west-1"
    with pytest.raises(ConfigError, match="not a known AWS region"):
        load(region="eu-west-9")


def test_alerts_fifo_gives_the_default_topic_and_queue_the_fifo_suffix() -> None:
    s = load(alerts_fifo="true")
    assert (s.alerts_fifo, s.topic_name, s.alert_queue_name) == (
        True, "stock-trend-alerts.fifo", "stock-trend-alerts-inbox.fifo",
    )  # fmt: skip
    assert load_settings(environ=s.lambda_environment()) == s.for_lambda()  # "True" reads back
    assert load(alerts_fifo="0").topic_name == "stock-trend-alerts"
    assert load(alerts_fifo=True, topic_name="mine.fifo").topic_name == "mine.fifo"


@pytest.mark.parametrize(
    ("overrides", "field", "fragment"),
    [
        ({"alerts_fifo": True, "topic_name": "mine"}, "topic_name", "lacks the .fifo suffix"),
        ({"alerts_fifo": True, "alert_queue_name": "inbox"}, "alert_queue_name", "'inbox.fifo'"),
        ({"topic_name": "mine.fifo"}, "topic_name", "has the .fifo suffix while alerts_fifo is False"),
        ({"alerts_fifo": True, "alert_queue_name": "q" * 80 + ".fifo"}, "alert_queue_name", "at most 80"),
        ({"alerts_fifo": "maybe"}, "alerts_fifo", "must be true or false"),
    ],
)
def test_fifo_names_follow_the_setting(overrides: dict[str, object], field: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(**overrides)
    assert info.value.field == field and fragment in str(info.value)
