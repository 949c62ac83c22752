"""Preflight doctor: each failure names the problem and the fix."""

from __future__ import annotations

import pytest

from helpers.notebook import doctor
from helpers.pipeline.config import load_settings


def test_bad_setting_is_a_failed_check_with_the_field_name() -> None:
    settings, check = doctor.check_settings(environ={"STP_STREAM_NAME": "quotes\u200b"})
    assert settings is None
    assert not check.ok
    assert "stream_name" in check.detail and "U+200B" in check.detail
    assert check.fix


def test_region_variable_mismatch_is_flagged() -> None:
    s = load_settings(environ={})
    check = doctor._region_variables(s, {"AWS_DEFAULT_REGION": "eu-west-1"})
    assert not check.ok
    assert "eu-west-1" in check.detail and "STP_REGION" in check.fix


def test_unreachable_local_endpoint_says_how_to_start_it() -> None:
    s = load_settings(environ={}, local_port=1)  # nothing listens on port 1
    checks = doctor.run_checks(s)
    endpoint = next(c for c in checks if c.name == "endpoint")
    assert not endpoint.ok
    assert "python -m deploy.local up" in endpoint.fix
    assert all(c.name != f"kinesis stream {s.stream_name}" for c in checks)


def test_resource_checks_are_the_registry_entries(monkeypatch) -> None:
    from helpers.pipeline import aws, resources

    s = load_settings(environ={})
    present = {"stream_name", "raw_bucket"}
    monkeypatch.setattr(aws, "account_id", lambda settings=None: "123456789012")
    monkeypatch.setattr(
        resources,
        "find",
        lambda res, settings, account, client=None: {"ok": True} if res.field in present else None,
    )
    checks = doctor._resources(s)
    assert [c.name for c in checks] == [f"{r.kind} {r.name(s)}" for r in resources.RESOURCES]
    assert {c.name for c in checks if c.ok} == {
        f"kinesis stream {s.stream_name}",
        f"s3 bucket {s.raw_bucket}",
    }
    assert all("01_provision" in c.fix for c in checks if not c.ok)


def test_a_resource_in_another_region_is_flagged() -> None:
    from helpers.pipeline import resources

    s = load_settings(environ={})
    stream, bucket = resources.by_field("stream_name"), resources.by_field("raw_bucket")
    arn = "arn:aws:kinesis:eu-west-1:123456789012:stream/x"
    assert resources.region_of(stream, {"StreamDescriptionSummary": {"StreamARN": arn}}) == "eu-west-1"
    assert resources.region_of(bucket, {"LocationConstraint": None}) == "us-east-1"
    assert resources.region_of(bucket, {"LocationConstraint": "eu-central-1"}) == "eu-central-1"
    assert s.region == "us-east-1"


def test_missing_aws_credentials_are_reported(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s = load_settings(environ={}, target="aws", account_id="123456789012")
    checks = doctor.run_checks(s)
    creds = next(c for c in checks if c.name == "credentials")
    assert not creds.ok
    assert "aws configure" in creds.fix


def test_preflight_on_aws_without_credentials_names_the_next_step() -> None:
    s = load_settings(environ={}, target="aws", account_id="123456789012")
    with pytest.raises(doctor.PreflightError, match=r"no AWS credentials found.*aws configure"):
        doctor.preflight(s)


def test_preflight_without_a_local_stack_names_the_next_step(free_port) -> None:
    s = load_settings(environ={}, local_port=free_port())
    with pytest.raises(doctor.PreflightError) as info:
        doctor.preflight(s)
    assert "is not answering" in str(info.value) and "00_setup" in str(info.value)
