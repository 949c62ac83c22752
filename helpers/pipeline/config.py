"""Settings: the one source of truth for target, region, endpoint and resource names.

Settings are built from, in increasing precedence:

1. defaults in this module (a complete, working local configuration);
2. the ``[tool.stock-trend]`` table of ``pyproject.toml`` in the project root, or the
   TOML file named by ``STP_CONFIG`` (keys are the field names below);
3. environment variables ``STP_<FIELD>`` (e.g. ``STP_TARGET=aws``, ``STP_REGION=eu-west-1``);
4. keyword arguments to :func:`load_settings` (notebook parameters); ``None`` means not given,
   so a notebook's ``TARGET = None`` follows ``STP_TARGET`` and the config file.

Every value is validated on load, before any AWS call: stray whitespace, invisible
characters (zero-width spaces, BOMs, non-breaking spaces...), AWS naming rules and a known
region. ``python -m helpers.config`` prints the resolved settings as JSON.

One endpoint: ``STP_ENDPOINT_URL`` (else ``AWS_ENDPOINT_URL``) is the endpoint of every client; on
target local it also names the stack's port when ``local_port`` is not set. ``AWS_ENDPOINT_URL`` and
``AWS_ENDPOINT_URL_<SERVICE>`` (boto3's per-service variables) that disagree with it are refused.

Lambda functions receive their settings through ``STP_*`` environment variables set at
deploy time, so the same module works inside Lambda (stdlib only). One serialiser,
:meth:`Settings.to_environment`, writes them, for functions (:data:`LAMBDA_FIELDS`: every
field but :data:`DEPLOYER_ONLY_FIELDS`) and for notebook kernels (every field).

``alerts_fifo`` switches the alert topic and its inbox to SNS FIFO / SQS FIFO (de-duplicated by
``alert_id``, see :mod:`helpers.pipeline.trend`): their names must then end in ``.fifo`` (AWS's
rule), and while they are not set explicitly the defaults get the suffix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import ipaddress
import json
import os
import re
import sys
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from helpers.core import layout
from helpers.core.errors import ConfigError, ParameterError

__all__ = [
    "DEPLOYER_ONLY_FIELDS",
    "ENV_PREFIX",
    "FIFO_NAME_FIELDS",
    "FIFO_SUFFIX",
    "LAMBDA_FIELDS",
    "PROJECT_ROOT",
    "TARGETS",
    "Settings",
    "env_key",
    "known_regions",
    "load_settings",
]

ENV_PREFIX = "STP_"
TARGETS = ("local", "aws")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_LOCAL_PORT = 4566
FIFO_SUFFIX = ".fifo"  # an SNS FIFO topic's and an SQS FIFO queue's name end with it
FIFO_NAME_FIELDS = ("topic_name", "alert_queue_name")  # FIFO exactly when alerts_fifo is on

# Regions where every service of the pipeline (incl. Athena and Glue) is offered.
# botocore's bundled endpoint data is the authority when available (offline, no call).
_FALLBACK_REGIONS = frozenset((
    "us-east-1", "us-east-2", "us-west-1", "us-west-2", "ca-central-1", "eu-west-1", "eu-west-2",
    "eu-west-3", "eu-central-1", "eu-central-2", "eu-north-1", "eu-south-1", "eu-south-2", "ap-south-1",
    "ap-south-2", "ap-northeast-1", "ap-northeast-2", "ap-northeast-3", "ap-southeast-1", "ap-southeast-2",
    "ap-southeast-3", "ap-southeast-4", "ap-east-1", "sa-east-1", "me-south-1", "me-central-1",
    "af-south-1", "il-central-1",
))  # fmt: skip

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_STREAM = re.compile(r"^[a-zA-Z0-9_.-]{1,128}$")
_TABLE = re.compile(r"^[a-zA-Z0-9_.-]{3,255}$")
_FUNCTION = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_ROLE = re.compile(r"^[\w+=,.@-]{1,64}$")
_TOPIC = re.compile(r"^[a-zA-Z0-9_-]{1,256}$")
_QUEUE = re.compile(r"^[a-zA-Z0-9_-]{1,80}$")
_GLUE = re.compile(r"^[a-z0-9_]{1,255}$")
_WORKGROUP = re.compile(r"^[a-zA-Z0-9._-]{1,128}$")
_PROFILE = re.compile(r"^[\w+=,.@-]{1,64}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Resolved, validated settings. Build it with :func:`load_settings`."""

    target: str = "local"
    region: str = "us-east-1"
    endpoint_url: str | None = None
    profile: str | None = None
    local_port: int = DEFAULT_LOCAL_PORT
    state_dir: str = str(PROJECT_ROOT / ".local")
    stream_name: str = "stock-trend-quotes"
    stream_retention_hours: int = 24
    table_name: str = "stock-trend-processed"
    alerts_table_name: str = "stock-trend-alerts-sent"
    raw_bucket: str = "stock-trend-raw-local"  # target aws: see AWS_BUCKET_TEMPLATES
    results_bucket: str = "stock-trend-athena-results-local"
    topic_name: str = "stock-trend-alerts"
    alert_queue_name: str = "stock-trend-alerts-inbox"
    alerts_fifo: bool = False
    failure_queue_name: str = "stock-trend-failures"
    alert_email: str | None = None
    glue_database: str = "stock_trend"
    glue_table: str = "raw_quotes"
    athena_workgroup: str = "stock-trend"
    athena_bytes_scanned_cutoff: int = 1_000_000_000
    processor_function: str = "stock-trend-processor"
    trend_function: str = "stock-trend-trend"
    processor_role: str = "stock-trend-processor-role"
    trend_role: str = "stock-trend-trend-role"
    account_id: str | None = None  # target aws: names the default buckets; looked up when not set

    # --- derived values -------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return self.target == "local"

    @property
    def resolved_endpoint(self) -> str | None:
        """Endpoint every client uses: the local stack's, an explicit one, or AWS's own."""
        if self.endpoint_url:
            return self.endpoint_url
        if self.is_local:
            return f"http://127.0.0.1:{self.local_port}"
        return None

    @property
    def raw_prefix(self) -> str:
        return layout.RAW_PREFIX

    @property
    def quarantine_prefix(self) -> str:
        return layout.QUARANTINE_PREFIX

    @property
    def raw_location(self) -> str:
        return f"s3://{self.raw_bucket}/{self.raw_prefix}"

    @property
    def results_location(self) -> str:
        return f"s3://{self.results_bucket}/athena/"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["endpoint_url"] = self.resolved_endpoint
        return data

    def to_environment(self, fields: Iterable[str] | None = None) -> dict[str, str]:
        """``STP_*`` variables from which :func:`load_settings` rebuilds ``fields`` (default: all).

        Every named field is written, default or not, and ``None`` as ``""`` (read back as
        ``None``): the variables outrank the config file and the defaults, so the receiving
        side resolves exactly these values whatever its own ``pyproject.toml`` says.
        ``endpoint_url`` is the explicit one (``None`` when derived from ``local_port``).
        """
        names = tuple(_FIELDS) if fields is None else tuple(fields)
        unknown = sorted(set(names) - set(_FIELDS))
        if unknown:
            raise ParameterError(f"not settings fields: {unknown}")
        values = {name: getattr(self, name) for name in names}
        return {env_key(name): "" if value is None else str(value) for name, value in values.items()}

    def lambda_environment(self) -> dict[str, str]:
        """A deployed function's ``STP_*`` variables: :data:`LAMBDA_FIELDS`, by construction.

        ``load_settings(environ=<these>)`` equals :meth:`for_lambda` (tested on the whole object).
        """
        return self.to_environment(LAMBDA_FIELDS)

    def for_lambda(self) -> Settings:
        """These settings as a deployed function resolves them (deployer-only fields reset)."""
        defaults: dict[str, Any] = {name: _FIELDS[name].default for name in DEPLOYER_ONLY_FIELDS}
        return dataclasses.replace(self, **defaults)


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
_INT_FIELDS = {"local_port", "stream_retention_hours", "athena_bytes_scanned_cutoff"}
_OPTIONAL = {"endpoint_url", "profile", "alert_email", "account_id"}

# S3 bucket names are global: on AWS the default names carry the account and region, so two
# accounts (or one account in two regions) never ask for the same name. An explicit name wins.
AWS_BUCKET_TEMPLATES = {
    "raw_bucket": "stock-trend-raw-{account}-{region}",
    "results_bucket": "stock-trend-athena-results-{account}-{region}",
}
_ACCOUNT = re.compile(r"^\d{12}$")
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False, "": False}

# Settings that describe the machine deploying the pipeline, not the pipeline: a deployed
# function must not inherit them. Every other field reaches the Lambda environment.
DEPLOYER_ONLY_FIELDS: dict[str, str] = {
    "profile": "a function's credentials are its execution role's, never a named profile",
    "endpoint_url": (
        "a function uses its runtime's endpoint: AWS's own, or the local stack's, which the local "
        "Lambda runtime passes as AWS_ENDPOINT_URL (read by load_settings)"
    ),
    "state_dir": "a folder of the deploying machine (local stack state, build folder)",
    "account_id": "only names the default buckets, which a function receives by name",
}
LAMBDA_FIELDS: tuple[str, ...] = tuple(name for name in _FIELDS if name not in DEPLOYER_ONLY_FIELDS)


def env_key(name: str) -> str:
    """The environment variable of the settings field ``name`` (``STP_<NAME>``)."""
    return ENV_PREFIX + name.upper()


def load_settings(
    overrides: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config_file: str | Path | None = None,
    **kwargs: Any,
) -> Settings:
    """Resolve and validate settings; raises :class:`ConfigError` naming the bad field."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = _read_config_file(config_file, env)
    values.update({name: env[env_key(name)] for name in _FIELDS if env_key(name) in env})
    if "endpoint_url" not in values and env.get("AWS_ENDPOINT_URL"):
        values["endpoint_url"] = env["AWS_ENDPOINT_URL"]  # set by Lambda runtimes pointing elsewhere
    # On target local an endpoint given without local_port (STP_ENDPOINT_URL=http://127.0.0.1:4599)
    # names the stack's port too; given both, `python -m deploy.local up` refuses a disagreement.
    # A keyword given as None is not given (a notebook's ``TARGET = None``): the environment decides.
    values.update({k: v for k, v in {**(overrides or {}), **kwargs}.items() if v is not None})
    for name in values:
        if name not in _FIELDS:
            raise ConfigError(name, values[name], "unknown setting", f"use one of {sorted(_FIELDS)}")
    clean = {name: _coerce(name, value) for name, value in values.items()}
    if clean.get("alerts_fifo"):  # FIFO topic and queue: default names get the suffix
        clean.update({n: f"{_FIELDS[n].default}{FIFO_SUFFIX}" for n in FIFO_NAME_FIELDS if n not in clean})
    settings = Settings(**clean)
    _validate(settings)
    if settings.is_local and settings.endpoint_url and "local_port" not in clean:
        port = _loopback_port(settings.endpoint_url)  # the stack starts where the clients will call
        if port is not None:
            settings = dataclasses.replace(settings, local_port=port)
    _check_configured_endpoints(settings, env)
    missing = [name for name in AWS_BUCKET_TEMPLATES if clean.get(name) is None]
    if settings.target == "aws" and missing:
        settings = _aws_bucket_names(settings, missing)
    return settings


def _aws_bucket_names(s: Settings, fields: list[str]) -> Settings:
    """``s`` with the default bucket ``fields`` named after the account and region (target aws).

    The account is ``account_id`` when set, else the credentials' own (one STS call, after every
    other field has been validated). Without credentials the error says how to go on.
    """
    account = s.account_id or _caller_account(s.profile, s.region, s.endpoint_url)
    values = {"account": account, "region": s.region}
    names: dict[str, Any] = {f: AWS_BUCKET_TEMPLATES[f].format(**values) for f in fields}
    named = dataclasses.replace(s, account_id=account, **names)
    for name in fields:
        _bucket(name, getattr(named, name))
    return named


NO_CREDENTIALS_FIX = (
    "configure AWS credentials (STP_PROFILE=<profile> after `aws configure` or `aws sso login`), "
    "or set STP_ACCOUNT_ID, or name both buckets with STP_RAW_BUCKET and STP_RESULTS_BUCKET"
)


@functools.cache
def _caller_account(profile: str | None, region: str, endpoint_url: str | None) -> str:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        session = boto3.session.Session(profile_name=profile, region_name=region)
        config = Config(connect_timeout=5, read_timeout=10, retries={"mode": "standard", "max_attempts": 2})
        sts = session.client("sts", endpoint_url=endpoint_url, config=config)
        return str(sts.get_caller_identity()["Account"])
    except (BotoCoreError, ClientError) as err:
        from botocore.exceptions import NoCredentialsError

        why = "no AWS credentials found (environment, profile or instance role)"
        raise ConfigError(
            "raw_bucket", None,
            f"{why if isinstance(err, NoCredentialsError) else err}: the default bucket names on target "
            "'aws' carry the account id",
            NO_CREDENTIALS_FIX,
        ) from err  # fmt: skip


def _read_config_file(config_file: str | Path | None, env: Mapping[str, str]) -> dict[str, Any]:
    import tomllib

    path = Path(config_file) if config_file else None
    if path is None and env.get(ENV_PREFIX + "CONFIG"):
        path = Path(env[ENV_PREFIX + "CONFIG"])
    if path is not None:
        if not path.is_file():
            raise ConfigError(
                "config_file", str(path), "file not found", "point STP_CONFIG at an existing TOML file"
            )
        with path.open("rb") as fh:
            data = tomllib.load(fh)
        return dict(data.get("tool", {}).get("stock-trend", data))
    pyproject = PROJECT_ROOT / "pyproject.toml"
    if pyproject.is_file():
        with pyproject.open("rb") as fh:
            return dict(tomllib.load(fh).get("tool", {}).get("stock-trend", {}))
    return {}


def _coerce(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in _OPTIONAL and isinstance(value, str) and value == "":
        return None
    if name == "alerts_fifo":
        flag = _BOOLEANS.get(value.lower()) if isinstance(value, str) else value
        if not isinstance(flag, bool):
            raise ConfigError(name, value, "must be true or false", "give true/false (or 1/0)")
        return flag
    if name in _INT_FIELDS:
        if isinstance(value, str):
            _check_text(name, value)
            value = int(value) if re.fullmatch(r"\d+", value) else value
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(name, value, "must be an integer", "give a whole number")
    if not isinstance(value, str):
        raise ConfigError(name, value, "must be a string", "quote the value")
    _check_text(name, value)
    return value


_INVISIBLE_CATEGORIES = {"Cf", "Cc", "Zl", "Zp", "Co", "Cn"}


def _check_text(name: str, value: str) -> None:
    if value != value.strip() or any(ch.isspace() for ch in (value[:1] + value[-1:])):
        raise ConfigError(
            name, value, "has leading or trailing whitespace",
            f"remove the spaces, e.g. {value.strip()!r}",
        )  # fmt: skip
    for index, ch in enumerate(value):
        category = unicodedata.category(ch)
        if category in _INVISIBLE_CATEGORIES or (ch.isspace() and ch != " ") or ch == "\u00a0":
            code = f"U+{ord(ch):04X}"
            label = unicodedata.name(ch, "control character")
            cleaned = "".join(
                c for c in value if unicodedata.category(c) not in _INVISIBLE_CATEGORIES and c != "\u00a0"
            )
            raise ConfigError(
                name, value,
                f"contains an invisible character {code} ({label}) at position {index}",
                f"retype the value without it, e.g. {cleaned!r}",
            )  # fmt: skip
    if not value.isascii():
        raise ConfigError(name, value, "contains non-ASCII characters", "use plain ASCII names")


@functools.cache
def known_regions() -> frozenset[str]:
    """Regions offering Athena, from botocore's bundled data when importable (no network).

    Read once per process: building a boto3 session costs about 0.16 s, paid by every
    ``load_settings`` call (and every Lambda cold start) before this cache.
    """
    try:
        import boto3

        regions = frozenset(boto3.session.Session().get_available_regions("athena"))
        return regions or _FALLBACK_REGIONS
    except Exception:  # pragma: no cover - boto3 is always present in practice
        return _FALLBACK_REGIONS


def _validate(s: Settings) -> None:
    if s.target not in TARGETS:
        raise ConfigError("target", s.target, "unknown target", "use 'local' or 'aws'")
    regions = known_regions()
    if s.region not in regions:
        close = difflib.get_close_matches(s.region.lower(), sorted(regions), n=3, cutoff=0.6)
        hint = f"did you mean one of {close}?" if close else "e.g. 'us-east-1'"
        raise ConfigError("region", s.region, "is not a known AWS region offering Athena", hint)
    for names, pattern, rule in _NAME_RULES:
        for name in names:
            _pattern(name, getattr(s, name), pattern, rule)
    for name in ("raw_bucket", "results_bucket"):
        _bucket(name, getattr(s, name))
    if s.raw_bucket == s.results_bucket:
        raise ConfigError(
            "results_bucket", s.results_bucket, "equals raw_bucket", "use another bucket for Athena results",
        )  # fmt: skip
    for name, pattern, most in (("topic_name", _TOPIC, 256), ("alert_queue_name", _QUEUE, 80)):
        _fifo_name(name, getattr(s, name), s.alerts_fifo, pattern, most)
    if s.profile is not None:
        _pattern("profile", s.profile, _PROFILE, "a profile name from ~/.aws/config")
    if s.alert_email is not None and not _EMAIL.match(s.alert_email):
        raise ConfigError(
            "alert_email", s.alert_email, "is not an email address", "give name@example.com or leave empty"
        )
    if not 1 <= s.local_port <= 65535:
        raise ConfigError("local_port", s.local_port, "out of range", "use a port between 1024 and 65535")
    if not 24 <= s.stream_retention_hours <= 8760:
        raise ConfigError(
            "stream_retention_hours", s.stream_retention_hours, "out of range", "use 24..8760 hours"
        )
    if s.account_id is not None and not _ACCOUNT.fullmatch(s.account_id):
        raise ConfigError("account_id", s.account_id, "is not an AWS account id", "give its 12 digits")
    if s.athena_bytes_scanned_cutoff < 10_000_000:
        raise ConfigError(
            "athena_bytes_scanned_cutoff", s.athena_bytes_scanned_cutoff,
            "below Athena's minimum of 10 MB", "use at least 10000000",
        )  # fmt: skip
    if s.endpoint_url is not None:
        _endpoint(s)


_NAME_RULES = (  # (fields, pattern, rule)
    (("stream_name",), _STREAM, "1-128 of letters, digits, '_', '-', '.'"),
    (("table_name", "alerts_table_name"), _TABLE, "3-255 of letters, digits, '_', '-', '.'"),
    (("failure_queue_name",), _QUEUE, "1-80 of letters, digits, '_', '-'"),
    (("glue_database", "glue_table"), _GLUE, "lower-case letters, digits and '_' (Athena-safe)"),
    (("athena_workgroup",), _WORKGROUP, "1-128 of letters, digits, '.', '_', '-'"),
    (("processor_function", "trend_function"), _FUNCTION, "1-64 of letters, digits, '_', '-'"),
    (("processor_role", "trend_role"), _ROLE, "1-64 of letters, digits and +=,.@_-"),
)


def _pattern(name: str, value: str, pattern: re.Pattern[str], rule: str) -> None:
    if not pattern.fullmatch(value):
        raise ConfigError(name, value, "breaks the AWS naming rule", f"use {rule}")


def _fifo_name(name: str, value: str, fifo: bool, pattern: re.Pattern[str], most: int) -> None:
    base = value.removesuffix(FIFO_SUFFIX)
    if fifo != (base != value):
        problem = f"{'lacks' if fifo else 'has'} the {FIFO_SUFFIX} suffix while alerts_fifo is {fifo}"
        raise ConfigError(
            name, value, problem, f"name it {base + FIFO_SUFFIX * fifo!r} or switch alerts_fifo"
        )
    _pattern(name, base, pattern, f"up to {most} of letters, digits, '_', '-'" + " and '.fifo'" * fifo)
    if len(value) > most:
        raise ConfigError(name, value, "is too long", f"use at most {most} characters")


def _bucket(name: str, value: str) -> None:
    rule = "3-63 lower-case letters, digits, '-' and '.', starting and ending with a letter or digit"
    if not _BUCKET.fullmatch(value):
        raise ConfigError(name, value, "is not a valid S3 bucket name", f"use {rule}")
    if ".." in value or value.startswith("xn--") or value.endswith("-s3alias"):
        raise ConfigError(name, value, "is not a valid S3 bucket name", f"use {rule}")
    if re.fullmatch(r"\d+\.\d+\.\d+\.\d+", value):
        raise ConfigError(name, value, "looks like an IP address", "use a name, not an address")


def _endpoint(s: Settings) -> None:
    url = s.endpoint_url or ""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError("endpoint_url", url, "is not an http(s) URL", "use e.g. 'http://127.0.0.1:4566'")
    if s.is_local:
        host = parsed.hostname
        loopback = host == "localhost"
        with contextlib.suppress(ValueError):
            loopback = loopback or ipaddress.ip_address(host).is_loopback
        if not loopback:
            raise ConfigError(
                "endpoint_url", url, "is not a loopback address but target is 'local'",
                "use http://127.0.0.1:<port>, or set target='aws'",
            )  # fmt: skip


SERVICE_ENDPOINT_PREFIX = "AWS_ENDPOINT_URL_"  # boto3: AWS_ENDPOINT_URL_<SERVICE ID>, e.g. _S3, _DYNAMODB
_IGNORE_CONFIGURED_ENDPOINTS = "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"


def _loopback_port(url: str) -> int | None:
    """The port of ``http://127.0.0.1:<port>`` or ``http://localhost:<port>``, else None."""
    parsed = urlparse(url)
    try:
        port = parsed.port
    except ValueError:
        return None
    return port if parsed.scheme == "http" and parsed.hostname in ("127.0.0.1", "localhost") else None


def _endpoint_key(url: str) -> tuple[str, str, int | None, str]:
    parsed = urlparse(url.strip())
    host = (parsed.hostname or "").lower()
    try:
        port = parsed.port or {"http": 80, "https": 443}.get(parsed.scheme.lower())
    except ValueError:
        port = None
    host = "127.0.0.1" if host == "localhost" else host
    return (parsed.scheme.lower(), host, port, parsed.path.rstrip("/"))


def _check_configured_endpoints(s: Settings, env: Mapping[str, str]) -> None:
    """Refuse an ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_<SERVICE>`` that disagrees with the settings.

    Every helper client passes ``resolved_endpoint`` explicitly, and botocore lets an explicit
    ``endpoint_url`` win over the configured ones (``ClientArgsCreator._compute_configured_endpoint_url``
    reads the environment only when ``endpoint_url`` is None). So, whenever the settings name an
    endpoint (always on target local), a differing variable would send only *other* boto3 clients
    (a notebook's own, pyathena's...) elsewhere: the pipeline would talk to two endpoints. With
    target aws and no endpoint, boto3 applies the variables to every client alike, so they stand.
    ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`` switches them off in boto3, and here.
    """
    expected = s.resolved_endpoint
    if expected is None or env.get(_IGNORE_CONFIGURED_ENDPOINTS, "").strip().lower() == "true":
        return
    for key in sorted(env):
        if key != "AWS_ENDPOINT_URL" and not key.startswith(SERVICE_ENDPOINT_PREFIX):
            continue
        value = env[key]
        if not value or _endpoint_key(value) == _endpoint_key(expected):
            continue
        where = "the local stack" if s.is_local else "the endpoint the settings name"
        also = (
            f", or {env_key('endpoint_url')}={value} if that is where the local stack should listen"
            if s.is_local and key == "AWS_ENDPOINT_URL"
            else ""
        )
        raise ConfigError(
            key, value,
            f"differs from {where} at {expected}, which every pipeline client calls; boto3 would send "
            "the calls of any other client there",
            f"unset {key} or set it to {expected}{also}",
        )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Print the resolved settings as JSON (``python -m helpers.config``)."""
    try:
        settings = load_settings()
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    json.dump(settings.to_dict(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
