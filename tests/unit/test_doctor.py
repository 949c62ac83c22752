"""Preflight doctor: each failure names the problem and the fix."""

from __future__ import annotations

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
    assert all(c.name != f"stream {s.stream_name}" for c in checks)


def test_missing_aws_credentials_are_reported(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    s = load_settings(environ={}, target="aws")
    checks = doctor.run_checks(s)
    creds = next(c for c in checks if c.name == "credentials")
    assert not creds.ok
    assert "aws configure" in creds.fix
