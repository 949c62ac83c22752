"""Preflight checks: catch the usual setup mistakes before a notebook touches AWS.

Each check returns a :class:`Check` with a verdict and, when it fails, the fix. The checks
automate the troubleshooting notes users kept hitting: names with stray whitespace or
invisible characters, a region that differs from where the resources live, resources that
were never provisioned (one check per entry of :data:`helpers.pipeline.resources.RESOURCES`),
an endpoint that does not answer, and missing AWS credentials.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from helpers.core.errors import ConfigError
from helpers.pipeline.config import Settings, load_settings
from helpers.pipeline.resources import Resource

__all__ = [
    "ENDPOINT_TIMEOUT_SECONDS",
    "Check",
    "PreflightError",
    "check_settings",
    "failures",
    "preflight",
    "run_checks",
]

log = logging.getLogger(__name__)

ENDPOINT_TIMEOUT_SECONDS = 3.0
_REGION_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION")


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def failures(checks: list[Check]) -> list[Check]:
    return [c for c in checks if not c.ok]


def check_settings(
    overrides: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> tuple[Settings | None, Check]:
    """Load settings; a bad value (e.g. a trailing space or U+200B) becomes a failed check."""
    try:
        settings = load_settings(overrides, environ=environ)
    except ConfigError as err:
        return None, Check("settings", False, str(err), err.fix)
    return settings, Check("settings", True, f"target={settings.target} region={settings.region}")


def run_checks(settings: Settings | None = None, *, resources: bool = True) -> list[Check]:
    """Every preflight check, in order; stops early only when later checks cannot run."""
    if settings is None:
        loaded, first = check_settings()
        if loaded is None:
            return [first]
        settings = loaded
    else:
        first = Check("settings", True, f"target={settings.target} region={settings.region}")
    checks = [first, _region_variables(settings)]
    if not settings.is_local:
        checks.append(_credentials(settings))
        if not checks[-1].ok:
            return checks
    reach = _endpoint(settings)
    checks.append(reach)
    if reach.ok and resources:
        checks.extend(_resources(settings))
    return checks


class PreflightError(RuntimeError):
    """A notebook cannot start: the message says what is missing and the next step."""


PREFLIGHT_TIMEOUT_SECONDS = 1.5


def preflight(settings: Settings) -> Settings:
    """The quick checks a notebook runs first (under 2 s): its target is there to talk to.

    Local: the stack answers its health check, else "start it with 00_setup or ``python -m
    deploy.local up``". AWS: credentials are found. Raises :class:`PreflightError` naming the fix;
    returns ``settings`` so the cell reads ``settings = doctor.preflight(load_settings(...))``.
    """
    checks = (
        [_credentials(settings)]
        if not settings.is_local
        else [_endpoint(settings, PREFLIGHT_TIMEOUT_SECONDS)]
    )
    problems = failures(checks)
    if problems:
        raise PreflightError("; ".join(f"{c.detail}. Next step: {c.fix}" for c in problems))
    return settings


def _region_variables(s: Settings, environ: Mapping[str, str] | None = None) -> Check:
    env = os.environ if environ is None else environ
    others = {k: env[k] for k in _REGION_VARIABLES if env.get(k) and env[k] != s.region}
    if others:
        return Check(
            "region",
            False,
            f"settings use region {s.region!r} but the environment says {others}",
            f"set STP_REGION to the region your resources live in, or unset {', '.join(others)}",
        )
    return Check("region", True, f"{s.region}")


def _credentials(s: Settings) -> Check:
    from helpers.pipeline import aws

    try:
        creds = aws.session(s).get_credentials()
    except Exception as err:  # botocore raises several profile errors
        return Check(
            "credentials", False, f"cannot load AWS credentials: {err}", "check STP_PROFILE / ~/.aws/config"
        )
    if creds is None:
        return Check(
            "credentials",
            False,
            "no AWS credentials found (environment, profile or instance role)",
            "run `aws configure` or `aws sso login`, or set STP_PROFILE to a configured profile",
        )
    return Check("credentials", True, f"credentials from {getattr(creds, 'method', 'unknown')}")


def _endpoint(s: Settings, timeout: float = ENDPOINT_TIMEOUT_SECONDS) -> Check:
    if s.is_local:
        url = f"{s.resolved_endpoint}/_stp/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                health = json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError) as err:
            return Check(
                "endpoint",
                False,
                f"local stack at {s.resolved_endpoint} is not answering ({err})",
                "start it with notebook 00_setup or `python -m deploy.local up`",
            )
        return Check(
            "endpoint", True, f"local stack {s.resolved_endpoint} up {health.get('uptime_seconds')} s"
        )
    from helpers.pipeline import aws

    try:
        identity = aws.client("sts", s).get_caller_identity()
    except Exception as err:
        return Check(
            "endpoint",
            False,
            f"AWS did not answer: {err}",
            "check network access, credentials and the region",
        )
    return Check("endpoint", True, f"AWS account {identity['Account']} in {s.region}")


def _resources(s: Settings) -> list[Check]:
    """One check per entry of the resource registry: present, and in the settings' region."""
    from helpers.pipeline import aws, resources

    account = aws.account_id(s)
    return [_probe(s, res, account) for res in resources.RESOURCES]


def _probe(s: Settings, res: Resource, account: str) -> Check:
    from helpers.pipeline import aws, resources

    name = f"{res.kind} {res.name(s)}"
    try:
        answer = resources.find(res, s, account)
    except Exception as err:  # access denied, throttling...: the check says so instead of raising
        code = aws.error_code(err) or type(err).__name__
        return Check(name, False, f"unreadable ({code})", "check the credentials' permissions")
    if answer is None:
        return Check(name, False, "missing", "run notebook 01_provision first")
    region = resources.region_of(res, answer)
    if region and region != s.region:
        return Check(
            name, False, f"exists in region {region}, settings say {s.region}", "set STP_REGION to match"
        )
    return Check(name, True, "present")
