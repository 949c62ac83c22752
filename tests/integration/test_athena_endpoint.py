"""The local Athena endpoint against the running stack, driven by boto3 and by pyathena unchanged.

GIVEN a Glue table made by ``helpers.pipeline.catalog`` over NDJSON objects in the raw layout (three
symbols, three days, two batches a day in each symbol's year partition, one redelivered record),
WHEN the analysis queries run through pyathena (default cursor and PandasCursor), THEN every result
equals a pandas computation made independently from the same objects, and the crossovers equal
``helpers.core.indicators``. Also: paging, failures, cancellation, the bytes-scanned cutoff and the
workgroup API, with Athena's error codes.
"""

from __future__ import annotations

import json
import time
from typing import Any

import boto3
import pandas as pd
import pytest
from athena_endpoint_support import (
    BARS_PER_DAY,
    DAYS,
    SYMBOLS,
    archive_records,
    expected_frames,
    start_query,
    wait_query,
)
from botocore.config import Config
from botocore.exceptions import ClientError

from helpers.core import indicators, layout
from helpers.core.errors import QueryError
from helpers.notebook import athena
from helpers.pipeline import aws, catalog
from helpers.pipeline.config import Settings, load_settings

pytestmark = pytest.mark.integration

YEARS = sorted({day[:4] for day in DAYS})  # the archive's time partitions (helpers.core.layout)


@pytest.fixture(scope="module")
def settings(local_stack: Settings) -> Settings:
    """Resources of this module only, on the session's stack."""
    return load_settings(
        local_port=local_stack.local_port,
        state_dir=local_stack.state_dir,
        raw_bucket="athena-it-raw",
        results_bucket="athena-it-results",
        glue_database="athena_it",
        athena_workgroup="athena-it",
    )


@pytest.fixture(scope="module")
def archive(settings: Settings) -> dict[str, Any]:
    """Buckets, table, workgroup and the raw objects; returns what was written."""
    s3 = aws.client("s3", settings)
    for bucket in (settings.raw_bucket, settings.results_bucket):
        s3.create_bucket(Bucket=bucket)
    assert catalog.ensure_table(settings) == "created"
    assert catalog.ensure_table(settings) == "unchanged"
    aws.client("athena", settings).create_work_group(
        Name=settings.athena_workgroup,
        Configuration={
            "ResultConfiguration": {"OutputLocation": settings.results_location},
            "EnforceWorkGroupConfiguration": True,
            "BytesScannedCutoffPerQuery": settings.athena_bytes_scanned_cutoff,
        },
    )
    records = archive_records()
    redelivered = {**records[5], "price": records[5]["price"] + 1, "produced_at": "2026-07-29T23:59:59Z"}
    batches: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        half = "b1" if int(r["timestamp"][11:13]) == 13 else "b2"
        folder = layout.partition_dir(*layout.raw_partition(r["symbol"], r["timestamp"]))
        batches.setdefault(f"raw/{folder}{r['timestamp'][:10]}-{half}.ndjson", []).append(r)
    folder = layout.partition_dir(*layout.raw_partition(redelivered["symbol"], redelivered["timestamp"]))
    batches[f"raw/{folder}b9.ndjson"] = [redelivered]
    sizes = {}
    for key, rows in batches.items():
        body = "".join(json.dumps(r) + "\n" for r in rows).encode()
        s3.put_object(Bucket=settings.raw_bucket, Key=key, Body=body)
        sizes[key] = len(body)
    hidden = f"raw/{layout.partition_dir('AAPL', YEARS[0])}_SUCCESS"
    s3.put_object(Bucket=settings.raw_bucket, Key=hidden, Body=b"not data")
    assert catalog.sync_partitions(settings) == len(SYMBOLS) * len(YEARS)
    assert catalog.sync_partitions(settings) == 0
    return {"sizes": sizes, "lines": len(records) + 1}


@pytest.fixture(scope="module")
def raw(settings: Settings, archive: dict[str, Any]) -> pd.DataFrame:
    """The archive read back with boto3 + pandas, one row per (symbol, timestamp), latest produced."""
    s3 = aws.client("s3", settings)
    frames = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=settings.raw_bucket, Prefix="raw/"):
        for obj in page["Contents"]:
            if obj["Key"].endswith(".ndjson"):
                body = s3.get_object(Bucket=settings.raw_bucket, Key=obj["Key"])["Body"].read().decode()
                frames.append(pd.DataFrame([json.loads(line) for line in body.splitlines()]))
    df = pd.concat(frames).sort_values("produced_at", kind="stable")
    df = df.drop_duplicates(["symbol", "timestamp"], keep="last")
    return df.sort_values(["symbol", "timestamp"]).reset_index(drop=True)


@pytest.mark.parametrize("cursor", ["default", "pandas"])
def test_every_query_equals_pandas_over_the_raw_objects(
    settings: Settings, raw: pd.DataFrame, cursor: str
) -> None:
    expected = expected_frames(raw)
    assert len(expected["anomalies"]) > 0 and len(expected["crossovers"]) > 0  # the data exercises them
    frames = athena.run_all(settings, cursor=cursor)
    assert list(frames) == list(athena.QUERIES)
    for name, frame in frames.items():
        pd.testing.assert_frame_equal(
            frame.reset_index(drop=True), expected[name].reset_index(drop=True), check_dtype=False, rtol=1e-9,
            obj=f"{name} ({cursor} cursor)",
        )  # fmt: skip
    checks = athena.cross_check(frames, raw)  # the archive stands in for the processed table here
    assert checks["ok"].all(), checks.to_string()


def test_crossover_sql_equals_helpers_indicators_exactly(settings: Settings, raw: pd.DataFrame) -> None:
    frame = athena.run_query("crossovers", settings, cursor="default")
    ours = [tuple(row) for row in frame.itertuples(index=False, name=None)]
    theirs = []
    for symbol, group in raw.groupby("symbol"):
        bars = list(zip(group["timestamp"], group["price"], strict=True))
        theirs += [
            (s.symbol, s.timestamp, s.signal, s.price, s.sma_short, s.sma_long)
            for s in indicators.crossovers(bars, symbol)
        ]
    assert ours == theirs  # floats included: the SMAs are exact-integer sums divided once


def test_symbol_filter_prunes_partitions(settings: Settings, archive: dict[str, Any]) -> None:
    frame = athena.run_query("avg_volume_by_symbol", settings, symbols=["BRK.B"])
    assert frame["symbol"].tolist() == ["BRK.B"]
    scanned = sum(size for key, size in archive["sizes"].items() if "symbol=BRK.B/" in key)
    assert frame.attrs["athena"]["data_scanned_bytes"] == scanned


def test_a_time_range_keeps_those_days_of_the_whole_result(settings: Settings, raw: pd.DataFrame) -> None:
    frame = athena.run_query("daily_ohlc", settings, start=DAYS[1], end=DAYS[2])
    daily = expected_frames(raw)["daily_ohlc"]
    expected = daily[daily["trading_day"] == DAYS[1]].reset_index(drop=True)
    assert len(expected) == len(SYMBOLS)
    pd.testing.assert_frame_equal(frame.reset_index(drop=True), expected, check_dtype=False, rtol=1e-9)


def test_results_page_by_1000_with_the_header_row_first(
    settings: Settings, raw: pd.DataFrame, archive: Any
) -> None:
    client = aws.client("athena", settings)
    table = settings.glue_table
    sql = f'SELECT symbol, "timestamp", price, NULL AS nothing FROM {table} ORDER BY symbol, "timestamp"'
    query_id = start_query(client, settings, sql)
    execution = wait_query(client, query_id)
    assert execution["Status"]["State"] == "SUCCEEDED"
    assert execution["Statistics"]["DataScannedInBytes"] == sum(
        archive["sizes"].values()
    )  # _SUCCESS is hidden
    assert execution["ResultConfiguration"]["OutputLocation"] == f"{settings.results_location}{query_id}.csv"
    pages = list(client.get_paginator("get_query_results").paginate(QueryExecutionId=query_id))
    rows = [
        [d.get("VarCharValue") for d in row["Data"]] for page in pages for row in page["ResultSet"]["Rows"]
    ]
    assert [len(p["ResultSet"]["Rows"]) for p in pages] == [1000, archive["lines"] + 1 - 1000]
    assert rows[0] == ["symbol", "timestamp", "price", "nothing"]
    assert rows[1] == [
        "AAPL",
        raw["timestamp"][0],
        repr(float(raw["price"][0])),
        None,
    ]  # NULL: no VarCharValue
    columns = pages[0]["ResultSet"]["ResultSetMetadata"]["ColumnInfo"]
    assert [(c["Name"], c["Type"]) for c in columns] == [
        ("symbol", "varchar"), ("timestamp", "varchar"), ("price", "double"), ("nothing", "varchar"),
    ]  # fmt: skip
    csv = aws.client("s3", settings).get_object(Bucket=settings.results_bucket, Key=f"athena/{query_id}.csv")
    lines = csv["Body"].read().decode().splitlines()
    assert (
        lines[0] == '"symbol","timestamp","price","nothing"'
        and lines[1].endswith('",')
        and len(lines) == archive["lines"] + 1
    )
    unchecked = boto3.client(
        "athena", endpoint_url=settings.resolved_endpoint, region_name=settings.region,
        config=Config(parameter_validation=False), **aws.LOCAL_CREDENTIALS,
    )  # fmt: skip
    with pytest.raises(ClientError) as err:
        unchecked.get_query_results(QueryExecutionId=query_id, MaxResults=1001)
    assert err.value.response["Error"]["Code"] == "InvalidRequestException"


def test_pyathena_default_cursor_pages_through_all_rows(
    settings: Settings, raw: pd.DataFrame, archive: dict[str, Any]
) -> None:
    with athena.connect(settings, cursor="default") as conn:
        cur = conn.cursor()
        cur.execute(f'SELECT symbol, "timestamp", price, volume FROM {settings.glue_table} ORDER BY 1, 2')
        rows = cur.fetchall()
    assert len(rows) == archive["lines"]  # the table itself keeps the redelivered copy
    assert rows[0] == tuple(raw.loc[0, ["symbol", "timestamp", "price", "volume"]])


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        ("SELEC price FROM raw_quotes", "SYNTAX_ERROR: line 1:"),
        ("SELECT nope FROM raw_quotes", 'COLUMN_NOT_FOUND: Referenced column "nope"'),
        (
            "SELECT * FROM athena_it.no_such_table",
            "TABLE_NOT_FOUND: line 1:15: Table 'awsdatacatalog.athena_it.no_such_table'",
        ),
    ],
)
def test_bad_sql_fails_with_the_engine_message(
    settings: Settings, archive: Any, sql: str, reason: str
) -> None:
    from pyathena.error import OperationalError

    with athena.connect(settings, cursor="default") as conn:
        cur = conn.cursor()
        with pytest.raises(OperationalError, match=reason.split(":")[0]):
            cur.execute(sql)
        query_id = cur.query_id
    client = aws.client("athena", settings)
    execution = client.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]
    assert execution["Status"]["State"] == "FAILED"
    assert execution["Status"]["StateChangeReason"].startswith(reason)
    assert execution["Status"]["AthenaError"]["ErrorCategory"] == 2
    with pytest.raises(ClientError) as err:
        client.get_query_results(QueryExecutionId=query_id)
    assert err.value.response["Error"]["Code"] == "InvalidRequestException"
    with pytest.raises(QueryError, match=reason.split(":")[0]):
        athena.run_query(sql, settings)


def test_stop_query_execution_cancels_a_running_query(settings: Settings, archive: Any) -> None:
    client = aws.client("athena", settings)
    t = settings.glue_table
    slow = f"SELECT count(*) FROM {t} a CROSS JOIN {t} b CROSS JOIN {t} c WHERE a.price + b.price > c.price"
    query_id = start_query(client, settings, slow)
    deadline = time.monotonic() + 10
    while (
        client.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]["Status"]["State"] == "QUEUED"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.5)  # well inside DuckDB by now
    stopped_at = time.monotonic()
    client.stop_query_execution(QueryExecutionId=query_id)
    execution = wait_query(client, query_id, timeout=10)
    assert execution["Status"]["State"] == "CANCELLED"
    assert time.monotonic() - stopped_at < 5
    client.stop_query_execution(QueryExecutionId=query_id)  # stopping a finished query is a no-op
    fast = wait_query(client, start_query(client, settings, "SELECT 1"))
    assert fast["Status"]["State"] == "SUCCEEDED"


def test_bytes_scanned_cutoff_cancels_like_athena(settings: Settings, archive: Any) -> None:
    client, glue, s3 = (aws.client(n, settings) for n in ("athena", "glue", "s3"))
    big = catalog.table_input(settings)
    big.update(Name="big_quotes", PartitionKeys=[])
    big["StorageDescriptor"]["Location"] = f"s3://{settings.raw_bucket}/big/"
    glue.create_table(DatabaseName=settings.glue_database, TableInput=big)
    line = json.dumps(archive_records()[0]) + "\n"
    s3.put_object(
        Bucket=settings.raw_bucket,
        Key="big/part-0.ndjson",
        Body=(line * (10_500_000 // len(line) + 1)).encode(),
    )
    client.create_work_group(
        Name="athena-it-small",
        Configuration={
            "ResultConfiguration": {"OutputLocation": settings.results_location},
            "BytesScannedCutoffPerQuery": 10_000_000,
        },
    )
    limited = wait_query(
        client, start_query(client, settings, "SELECT count(*) FROM big_quotes", "athena-it-small")
    )
    assert limited["Status"]["State"] == "CANCELLED"
    assert limited["Status"]["StateChangeReason"] == "Bytes scanned limit was exceeded"
    assert limited["Statistics"]["DataScannedInBytes"] == 10_000_000
    allowed = wait_query(client, start_query(client, settings, "SELECT count(*) FROM big_quotes"))
    assert (
        allowed["Status"]["State"] == "SUCCEEDED" and allowed["Statistics"]["DataScannedInBytes"] > 10_000_000
    )


def test_workgroup_api_and_error_codes(settings: Settings, archive: Any) -> None:
    client = aws.client("athena", settings)

    def code_of(call: Any, **kwargs: Any) -> tuple[str, str]:
        with pytest.raises(ClientError) as err:
            call(**kwargs)
        return err.value.response["Error"]["Code"], err.value.response["Error"]["Message"]

    client.create_work_group(Name="athena-it-wg", Description="scratch")
    assert code_of(client.create_work_group, Name="athena-it-wg") == (
        "InvalidRequestException",
        "WorkGroup is already created",
    )
    names = [w["Name"] for w in client.list_work_groups()["WorkGroups"]]
    assert {"primary", "athena-it-wg", settings.athena_workgroup} <= set(names)
    no_output = code_of(start_query, client=client, s=settings, sql="SELECT 1", workgroup="athena-it-wg")
    assert no_output[1].startswith("No output location provided")
    client.update_work_group(
        WorkGroup="athena-it-wg",
        ConfigurationUpdates={
            "ResultConfigurationUpdates": {"OutputLocation": settings.results_location},
            "BytesScannedCutoffPerQuery": 20_000_000,
        },
    )
    group = client.get_work_group(WorkGroup="athena-it-wg")["WorkGroup"]
    assert group["Configuration"]["ResultConfiguration"]["OutputLocation"] == settings.results_location
    assert group["Configuration"]["BytesScannedCutoffPerQuery"] == 20_000_000
    query_id = start_query(client, settings, "SELECT 1", "athena-it-wg")
    assert wait_query(client, query_id)["Status"]["State"] == "SUCCEEDED"
    assert query_id in client.list_query_executions(WorkGroup="athena-it-wg")["QueryExecutionIds"]
    batch = client.batch_get_query_execution(QueryExecutionIds=[query_id, "no-such-id"])
    assert [q["QueryExecutionId"] for q in batch["QueryExecutions"]] == [query_id]
    assert batch["UnprocessedQueryExecutionIds"][0]["QueryExecutionId"] == "no-such-id"
    client.delete_work_group(WorkGroup="athena-it-wg", RecursiveDeleteOption=True)
    assert code_of(client.get_work_group, WorkGroup="athena-it-wg") == (
        "InvalidRequestException",
        "WorkGroup athena-it-wg is not found.",
    )
    assert code_of(client.get_query_execution, QueryExecutionId="no-such-id")[0] == "InvalidRequestException"
    assert code_of(client.delete_work_group, WorkGroup="primary")[0] == "InvalidRequestException"


def test_show_statements_answer_from_glue(settings: Settings, archive: Any) -> None:
    with athena.connect(settings, cursor="default") as conn:
        cur = conn.cursor()
        cur.execute(f"SHOW PARTITIONS {settings.glue_table}")
        partitions = [r[0] for r in cur.fetchall()]
        cur.execute("SHOW TABLES")
        tables = [r[0] for r in cur.fetchall()]
    assert f"symbol=EURUSD=X/year={YEARS[-1]}" in partitions and len(partitions) == len(SYMBOLS) * len(YEARS)
    assert settings.glue_table in tables


def test_pyathena_metadata_and_result_reuse(settings: Settings, archive: Any) -> None:
    with athena.connect(settings, cursor="default") as conn:
        cur = conn.cursor()
        table = cur.get_table_metadata(settings.glue_table)
        assert [c.name for c in table.partition_keys] == ["symbol", "year"]
        assert settings.glue_database in [d.name for d in cur.list_databases("awsdatacatalog")]
        sql = f"SELECT count(*) AS n FROM {settings.glue_table} WHERE symbol = 'AAPL'"
        cur.execute(sql)
        first = cur.query_id
        cur.execute(sql, cache_size=10)  # pyathena's client-side reuse: ListQueryExecutions + BatchGet
        assert cur.query_id == first and cur.fetchall() == [(len(DAYS) * BARS_PER_DAY + 1,)]
