"""What the pipeline would cost a month on AWS, from what a run measured (notebook 07).

:func:`measure` reads what a run left behind, on either target: invocations, billed duration
and log bytes per function (the ``REPORT`` lines of ``/aws/lambda/*``), bytes per raw record
(the S3 archive), bytes per item (a sample of the table), Athena bytes scanned per query (the
workgroup's history), alerts per record, and, on the local stack, every API call the functions
made (``/_stp/usage``: S3 PUTs, BatchWriteItem, Query, Publish per invocation).

:func:`monthly` turns those into a month at a :class:`Cadence` (the seed's: one symbol every
30 s through the exchange's hours) for two designs, priced from the dated us-east-1 table shipped
beside this module (``prices_us_east_1.json``):

* ``this design``: batches as the mappings deliver them (the processor polls each shard about
  once a second: a batch holds what arrived in that second, at least 1 and at most its batch
  size), the calls per invocation the run measured, the trend function invoked only for the
  processor's marks;
* ``per record``: one invocation, one PutItem and one PutObject per record, the trend function
  invoked for every item, as a first version of such a pipeline typically does.

Free tiers are left out; storage is the archive and table size at the end of the month.
"""

from __future__ import annotations

import json
import logging
import math
import re
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from helpers.pipeline import aws
from helpers.pipeline.config import Settings

__all__ = ["Cadence", "Measured", "PriceTable", "measure", "monthly", "price_list", "prices", "prices_for"]

log = logging.getLogger(__name__)

PRICES_FILE = Path(__file__).with_name("prices_us_east_1.json")
KB, GB, TB = 1024, 1024**3, 1024**4
ATHENA_MINIMUM_BYTES = 10 * 1024**2
HOURS_PER_MONTH = 730
POLLS_PER_SECOND = 1.0  # a Lambda event source mapping reads each shard about once a second
_REPORT = re.compile(r"Billed Duration: (\d+) ms\s+Memory Size: (\d+) MB")


@dataclass(frozen=True)
class PriceTable:
    """USD per unit by name (see ``prices_us_east_1.json``), with the table's date and note;
    ``live`` names the prices the AWS Price List API gave (target aws)."""

    usd: dict[str, float]
    as_of: str
    note: str
    live: frozenset[str] = frozenset()

    def __getitem__(self, name: str) -> float:
        return self.usd[name]


def prices(path: Path = PRICES_FILE) -> PriceTable:
    """The dated table shipped beside this module."""
    doc = json.loads(path.read_text(encoding="utf-8"))
    return PriceTable({k: float(v["usd"]) for k, v in doc["prices"].items()}, doc["as_of"], doc["note"])


# Where the AWS Price List API has each price of the table: (service code, usage type, factor from
# the API's unit to the table's). us-east-1 usage types carry no region prefix.
PRICE_LIST: dict[str, tuple[str, str, float]] = {
    "lambda_requests_million": ("AWSLambda", "Request", 1e6),
    "lambda_gb_second": ("AWSLambda", "Lambda-GB-Second", 1.0),
    "dynamodb_write_request_units_million": ("AmazonDynamoDB", "WriteRequestUnits", 1e6),
    "dynamodb_read_request_units_million": ("AmazonDynamoDB", "ReadRequestUnits", 1e6),
    "dynamodb_storage_gb_month": ("AmazonDynamoDB", "TimedStorage-ByteHrs", 1.0),
    "s3_put_thousand": ("AmazonS3", "Requests-Tier1", 1e3),
    "s3_get_thousand": ("AmazonS3", "Requests-Tier2", 1e3),
    "s3_storage_gb_month": ("AmazonS3", "TimedStorage-ByteHrs", 1.0),
    "sns_publish_million": ("AmazonSNS", "Requests-Tier1", 1e6),
    "athena_tb_scanned": ("AmazonAthena", "DataScannedInTB", 1.0),
}
PLAUSIBLE = (0.2, 5.0)  # an API price this far from the table's is taken for a wrong match: not used


def first_tier_usd(price_list: list[str]) -> float | None:
    """The on-demand USD price of the first tier (beginRange 0) in a GetProducts ``PriceList``."""
    for text in price_list:
        product = json.loads(text)
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dimension in term.get("priceDimensions", {}).values():
                usd = dimension.get("pricePerUnit", {}).get("USD")
                if usd is not None and str(dimension.get("beginRange", "0")) == "0" and float(usd) > 0:
                    return float(usd)
    return None


def price_list(pricing: Any, table: PriceTable | None = None, region: str = "us-east-1") -> PriceTable:
    """``table`` with the prices the AWS Price List API gives for ``region`` (``pricing``: a boto3
    ``pricing`` client); a price it lacks, or gives implausibly far from the table's, stays."""
    from botocore.exceptions import BotoCoreError, ClientError

    base = table or prices()
    usd, live = dict(base.usd), set()
    for name, (service, usage_type, factor) in PRICE_LIST.items():
        filters = [
            {"Type": "TERM_MATCH", "Field": "regionCode", "Value": region},
            {"Type": "TERM_MATCH", "Field": "usagetype", "Value": usage_type},
        ]
        try:
            found = first_tier_usd(
                pricing.get_products(ServiceCode=service, Filters=filters, MaxResults=10)["PriceList"]
            )
        except (BotoCoreError, ClientError, KeyError, ValueError) as err:  # the table's price stays
            log.info("Price List API: %s %s: %s (the table's price stays)", service, usage_type, err)
            continue
        if found is not None and PLAUSIBLE[0] <= found * factor / base[name] <= PLAUSIBLE[1]:
            usd[name] = found * factor
            live.add(name)
    when = f"{base.as_of}; {len(live)} of {len(PRICE_LIST)} from the Price List API" if live else base.as_of
    return PriceTable(usd, when, base.note, frozenset(live))


def prices_for(settings: Settings) -> PriceTable:
    """The table; on target aws, updated from the AWS Price List API (us-east-1 prices)."""
    if settings.is_local:
        return prices()
    return price_list(aws.session(settings).client("pricing", region_name="us-east-1"))


@dataclass(frozen=True)
class Cadence:
    """How quotes arrive: ``symbols`` each every ``interval_seconds``, ``hours_per_day`` a day
    (6.5: the NYSE session) on ``days_per_month`` days (21 trading days)."""

    symbols: int = 1
    interval_seconds: float = 30.0
    hours_per_day: float = 6.5
    days_per_month: float = 21.0

    def __post_init__(self) -> None:
        for name in ("symbols", "interval_seconds", "hours_per_day", "days_per_month"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Cadence.{name} must be more than 0, not {getattr(self, name)!r}")

    @property
    def records_per_month(self) -> float:
        return self.symbols * self.hours_per_day * 3600 / self.interval_seconds * self.days_per_month

    def records_per_batch(self, batch_size: int) -> float:
        """Records a mapping's batch holds: what one shard (one symbol) receives between polls."""
        return min(float(batch_size), max(1.0, 1.0 / (self.interval_seconds * POLLS_PER_SECOND)))


@dataclass
class FunctionRun:
    """One function's invocations in the run: billed milliseconds of each, memory, log bytes."""

    billed_ms: list[int] = field(default_factory=list)
    memory_mb: int = 0
    log_bytes: int = 0

    @property
    def invocations(self) -> int:
        return len(self.billed_ms)

    def gb_seconds(self, batch: float, run_batch: float) -> float:
        """GB-seconds of an invocation of ``batch`` records, on the line through the run's two
        measured points: its short invocations (the median of the shortest tenth, about one
        record) and its mean (``run_batch`` records)."""
        if not self.billed_ms:
            return 0.0
        ordered = sorted(self.billed_ms)
        shortest = ordered[: max(1, len(ordered) // 10)]
        small = shortest[len(shortest) // 2]
        mean = sum(ordered) / len(ordered)
        slope = (mean - small) / (run_batch - 1) if run_batch > 1 else 0.0
        return (small + slope * (batch - 1)) / 1000 * self.memory_mb / 1024

    @property
    def log_bytes_per_invocation(self) -> float:
        return self.log_bytes / self.invocations if self.invocations else 0.0


@dataclass
class Measured:
    """What :func:`measure` found (every field a measurement of the run, none assumed)."""

    records: int
    alerts: int
    raw_bytes_per_record: float
    item_bytes: float
    processor: FunctionRun
    trend: FunctionRun
    athena_queries: int = 0
    athena_bytes_scanned: int = 0
    processor_batch_size: int = 500  # the deployed mapping's BatchSize
    calls: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (caller, service, operation)

    def per_invocation(self, function: str, service: str, operation: str, run: FunctionRun) -> float:
        return (
            self.calls[(f"function:{function}", service, operation)] / run.invocations
            if run.invocations
            else 0.0
        )


def _function_run(settings: Settings, function: str, logs: Any) -> FunctionRun:
    run = FunctionRun()
    pages = logs.get_paginator("filter_log_events").paginate(logGroupName=f"/aws/lambda/{function}")
    try:
        for page in pages:
            for event in page.get("events", []):
                message = event["message"]
                run.log_bytes += len(message.encode())
                found = _REPORT.search(message)
                if found:
                    run.billed_ms.append(int(found.group(1)))
                    run.memory_mb = int(found.group(2))
    except logs.exceptions.ResourceNotFoundException:
        pass
    return run


def _raw_bytes_per_record(settings: Settings, s3: Any, records: int) -> float:
    size = 0
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=settings.raw_bucket, Prefix=settings.raw_prefix
    ):
        size += sum(o["Size"] for o in page.get("Contents", []))
    return size / records if records else 0.0


def item_size(item: dict[str, Any]) -> int:
    """DynamoDB's size of an item: attribute names plus values (numbers about 1 byte per 2 digits)."""
    total = 0
    for name, value in item.items():
        ((kind, v),) = value.items()
        total += len(name.encode())
        if kind == "N":
            total += len(v.lstrip("-").replace(".", "")) // 2 + 1
        elif kind in ("S", "B"):
            total += len(v.encode()) if isinstance(v, str) else len(v)
        else:
            total += len(json.dumps(v))
    return total


def _item_bytes(settings: Settings, dynamodb: Any, sample: int = 200) -> float:
    items = dynamodb.scan(TableName=settings.table_name, Limit=sample).get("Items", [])
    return sum(item_size(i) for i in items) / len(items) if items else 0.0


def _athena(settings: Settings, athena: Any) -> tuple[int, int]:
    ids: list[str] = []
    for page in athena.get_paginator("list_query_executions").paginate(WorkGroup=settings.athena_workgroup):
        ids.extend(page.get("QueryExecutionIds", []))
    scanned, queries = 0, 0
    for start in range(0, len(ids), 50):
        for execution in athena.batch_get_query_execution(QueryExecutionIds=ids[start : start + 50])[
            "QueryExecutions"
        ]:
            if execution["Status"]["State"] == "SUCCEEDED":
                queries += 1
                scanned += int(execution.get("Statistics", {}).get("DataScannedInBytes", 0))
    return queries, scanned


def _batch_size(settings: Settings, lam: Any) -> int:
    mappings = lam.list_event_source_mappings(FunctionName=settings.processor_function)["EventSourceMappings"]
    return max((int(m["BatchSize"]) for m in mappings), default=Measured.processor_batch_size)


def local_calls(settings: Settings) -> Counter[tuple[str, str, str]]:
    """The local stack's request counts (``GET /_stp/usage``); empty on AWS."""
    if not settings.is_local:
        return Counter()
    with urllib.request.urlopen(f"{settings.resolved_endpoint}/_stp/usage", timeout=5) as answer:
        rows = json.loads(answer.read())["calls"]
    return Counter({(r["caller"], r["service"], r["operation"]): int(r["calls"]) for r in rows})


def measure(settings: Settings, summary: dict[str, Any]) -> Measured | None:
    """Measure the run ``summary`` (``reports/summary.json``) describes, before the teardown;
    ``None`` when there is nothing to measure (no records, or the resources are gone)."""
    from botocore.exceptions import ClientError

    records = int(summary.get("records_accepted") or 0)
    if not records:
        return None
    try:
        return _measure(settings, summary, records)
    except ClientError as err:
        if aws.is_missing(err, "NoSuchBucket", "ResourceNotFoundException", "InvalidRequestException"):
            return None  # 07 run again after its teardown
        raise


def _measure(settings: Settings, summary: dict[str, Any], records: int) -> Measured:
    logs = aws.client("logs", settings)
    return Measured(
        records=records,
        alerts=int(summary.get("alerts_published") or 0),
        raw_bytes_per_record=_raw_bytes_per_record(settings, aws.client("s3", settings), records),
        item_bytes=_item_bytes(settings, aws.client("dynamodb", settings)),
        processor=_function_run(settings, settings.processor_function, logs),
        trend=_function_run(settings, settings.trend_function, logs),
        athena_queries=(athena := _athena(settings, aws.client("athena", settings)))[0],
        athena_bytes_scanned=athena[1],
        calls=local_calls(settings),
        processor_batch_size=_batch_size(settings, aws.client("lambda", settings)),
    )


def _design(
    m: Measured, cadence: Cadence, p: PriceTable, settings: Settings, *, per_record: bool, athena_runs: float
) -> list[dict[str, Any]]:
    records = cadence.records_per_month
    run_batch = m.records / m.processor.invocations if m.processor.invocations else 1.0
    calls = {"s3 PutObject": 1.0, "s3 GetObject": 0.0, "dynamodb Query": 1.0}  # per invocation, per record
    batch = 1.0
    if not per_record:  # the calls per invocation the run measured
        batch = cadence.records_per_batch(m.processor_batch_size)
        measured = {
            "s3 PutObject": (settings.processor_function, m.processor),
            "s3 GetObject": (settings.processor_function, m.processor),
            "dynamodb Query": (settings.trend_function, m.trend),
        }
        for call, (function, run) in measured.items():
            service, operation = call.split()
            calls[call] = m.per_invocation(function, service, operation, run) or calls[call]
    processor_calls = records / batch
    # the trend function: per record, or per mark (one per symbol and processor batch; a symbol is
    # one shard, so at most one mark per processor invocation)
    trend_calls = records if per_record else processor_calls
    gb_s = processor_calls * m.processor.gb_seconds(batch, run_batch) + trend_calls * m.trend.gb_seconds(1, 1)
    alerts = records * (m.alerts / m.records if m.records else 0.0)
    log_bytes = (
        processor_calls * m.processor.log_bytes_per_invocation
        + trend_calls * m.trend.log_bytes_per_invocation
    )
    kinesis_kb = math.ceil(max(m.raw_bytes_per_record, 1) / KB)
    wru = math.ceil(max(m.item_bytes, 1) / KB)
    raw_gb, invocations = records * m.raw_bytes_per_record / GB, processor_calls + trend_calls
    lines: list[tuple[str, str, str, float, str]] = [
        ("Kinesis", "on-demand stream", "stream-hours", HOURS_PER_MONTH, "kinesis_on_demand_stream_hour"),
        ("Kinesis", "data in", "GB", records * kinesis_kb * KB / GB, "kinesis_on_demand_gb_in"),
        ("Kinesis", "data out (processor)", "GB", raw_gb, "kinesis_on_demand_gb_out"),
        ("Lambda", "invocations", "million", invocations / 1e6, "lambda_requests_million"),
        ("Lambda", "duration", "GB-seconds", gb_s, "lambda_gb_second"),
        ("DynamoDB", "writes (items + alerts sent)", "million WRU", (records * wru + alerts) / 1e6,
         "dynamodb_write_request_units_million"),
        ("DynamoDB", "reads (price history)", "million RRU", trend_calls * calls["dynamodb Query"] / 1e6,
         "dynamodb_read_request_units_million"),
        ("DynamoDB", "storage at month end", "GB", records * m.item_bytes / GB, "dynamodb_storage_gb_month"),
        ("S3", "PUT requests", "thousand", processor_calls * calls["s3 PutObject"] / 1e3, "s3_put_thousand"),
        ("S3", "GET requests (checkpoints)", "thousand", processor_calls * calls["s3 GetObject"] / 1e3,
         "s3_get_thousand"),
        ("S3", "storage at month end", "GB", raw_gb, "s3_storage_gb_month"),
        ("SNS", "alerts published", "million", alerts / 1e6, "sns_publish_million"),
        ("CloudWatch Logs", "function logs", "GB", log_bytes / GB, "logs_gb_ingested"),
    ]  # fmt: skip
    if m.athena_queries:
        per_query = m.athena_bytes_scanned / m.athena_queries * (records / m.records if m.records else 1.0)
        scanned = athena_runs * m.athena_queries * max(per_query, ATHENA_MINIMUM_BYTES)
        item = f"05's {m.athena_queries} queries x {athena_runs:g} runs"
        lines.append(("Athena", item, "TB scanned", scanned / TB, "athena_tb_scanned"))
    return [
        {"service": service, "item": item, "unit": unit, "quantity": quantity, "usd": quantity * p[price]}
        for service, item, unit, quantity, price in lines
    ]


def monthly(
    m: Measured,
    cadence: Cadence = Cadence(),
    settings: Settings | None = None,
    *,
    table: PriceTable | None = None,
    athena_runs: float = 21.0,
) -> pd.DataFrame:
    """One row per billed item: quantity and USD a month for this design and per record."""
    from helpers.pipeline.config import load_settings

    s = settings or load_settings()
    p = table or prices()
    ours = _design(m, cadence, p, s, per_record=False, athena_runs=athena_runs)
    naive = _design(m, cadence, p, s, per_record=True, athena_runs=athena_runs)
    frame = pd.DataFrame(ours)[["service", "item", "unit", "quantity", "usd"]]
    frame = frame.rename(columns={"quantity": "this design", "usd": "this design USD"})
    frame["per record"] = [r["quantity"] for r in naive]
    frame["per record USD"] = [r["usd"] for r in naive]
    total = {"service": "total", "item": "", "unit": "USD/month"}
    total |= {c: frame[c].sum() for c in ("this design USD", "per record USD")}
    return pd.concat([frame, pd.DataFrame([total])], ignore_index=True)
