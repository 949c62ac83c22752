"""helpers.notebook.cost: a month on AWS from a run's measurements, for this design and per record."""

from __future__ import annotations

import io
import json
from collections import Counter

import pytest

from deploy.local.usage import Usage, caller_of
from helpers.notebook import cost
from helpers.pipeline.config import load_settings

SETTINGS = load_settings(environ={})
P, T = SETTINGS.processor_function, SETTINGS.trend_function


def measured(**overrides: object) -> cost.Measured:
    values: dict[str, object] = {
        "records": 1000,
        "alerts": 50,
        "raw_bytes_per_record": 200.0,
        "item_bytes": 180.0,
        # nine short invocations of about one record (10 ms) and one long one: mean 19 ms, 100 records each
        "processor": cost.FunctionRun(billed_ms=[10] * 9 + [100], memory_mb=256, log_bytes=10_000),
        "trend": cost.FunctionRun(billed_ms=[20] * 4, memory_mb=256, log_bytes=4_000),
        "athena_queries": 6,
        "athena_bytes_scanned": 6 * 1024**2,
        "calls": Counter(
            {
                (f"function:{P}", "s3", "PutObject"): 40,  # 4 per processor invocation
                (f"function:{P}", "s3", "GetObject"): 10,
                (f"function:{T}", "dynamodb", "Query"): 8,  # 2 per trend invocation
            }
        ),
    }
    values.update(overrides)
    return cost.Measured(**values)  # type: ignore[arg-type]


def row(frame, item: str):
    return frame[frame["item"] == item].iloc[0]


def test_the_seed_cadence_is_16380_quotes_a_month_one_per_batch() -> None:
    seed = cost.Cadence()
    assert seed.records_per_month == pytest.approx(16_380)  # 6.5 h x 120 quotes an hour x 21 days
    assert seed.records_per_batch(500) == 1
    assert cost.Cadence(interval_seconds=0.01).records_per_batch(500) == 100  # 100 a second per shard
    assert cost.Cadence(interval_seconds=0.0001).records_per_batch(500) == 500  # the batch size caps it
    with pytest.raises(ValueError, match="interval_seconds must be more than 0"):
        cost.Cadence(interval_seconds=0)


def test_duration_follows_the_line_through_the_runs_short_and_mean_invocations() -> None:
    run = cost.FunctionRun(billed_ms=[10] * 9 + [100], memory_mb=1024)
    assert run.gb_seconds(1, run_batch=10) == pytest.approx(0.010)  # the short ones: 10 ms at 1 GB
    assert run.gb_seconds(10, run_batch=10) == pytest.approx(0.019)  # the mean: 19 ms
    assert run.gb_seconds(5, run_batch=10) == pytest.approx(0.014)  # 10 ms + 1 ms per record
    assert cost.FunctionRun().gb_seconds(5, 10) == 0


def test_a_month_at_the_seed_cadence_priced_line_by_line() -> None:
    table = cost.monthly(measured(), cost.Cadence(), SETTINGS)
    p = cost.prices()
    records = 16_380
    stream = row(table, "on-demand stream")
    assert stream["this design USD"] == pytest.approx(730 * p["kinesis_on_demand_stream_hour"]) == 29.2
    puts = row(table, "PUT requests")  # this design: the 4 PUTs per invocation measured, 1 record each
    assert puts["this design"] == pytest.approx(records * 4 / 1000)
    assert puts["per record"] == pytest.approx(records / 1000)
    assert puts["per record USD"] == pytest.approx(records / 1000 * 0.005)
    invocations = row(table, "invocations")  # a batch holds one record: the same count either way
    assert invocations["this design"] == invocations["per record"] == pytest.approx(2 * records / 1e6)
    reads = row(table, "reads (price history)")
    assert reads["this design"] == pytest.approx(2 * records / 1e6)  # 2 Queries per trend invocation
    writes = row(table, "writes (items + alerts sent)")  # 180-byte items: 1 WRU each, plus 5 % alerts
    assert writes["this design"] == pytest.approx((records + records * 0.05) / 1e6)
    athena = row(table, "05's 6 queries x 21 runs")  # 1 MB a query scaled to 16,380 records: 16 MB
    assert athena["this design"] == pytest.approx(21 * 6 * 1024**2 * 16.38 / 1024**4)
    total = table.iloc[-1]
    assert total["service"] == "total"
    assert total["this design USD"] == pytest.approx(table["this design USD"][:-1].sum())
    assert total["per record USD"] == pytest.approx(29.2 + table["per record USD"][1:-1].sum())


def test_batching_pays_when_quotes_come_faster_than_the_mappings_poll() -> None:
    busy = cost.Cadence(symbols=10, interval_seconds=0.01)  # 1,000 quotes a second, 100 per batch
    table = cost.monthly(measured(), busy, SETTINGS)
    invocations = row(table, "invocations")
    assert invocations["per record"] / invocations["this design"] == pytest.approx(100)
    puts = row(table, "PUT requests")
    assert puts["per record"] / puts["this design"] == pytest.approx(25)  # 100 records, 4 PUTs
    assert table.iloc[-1]["this design USD"] < table.iloc[-1]["per record USD"] / 4


def test_dynamodb_item_size_counts_names_and_values() -> None:
    item = {"symbol": {"S": "AAPL"}, "price": {"N": "123.45"}, "raw": {"B": b"\x00\x01"}}
    assert cost.item_size(item) == (6 + 4) + (5 + 3) + (3 + 2)


def test_the_price_table_is_dated_and_complete() -> None:
    doc = json.loads(cost.PRICES_FILE.read_text())
    assert doc["region"] == "us-east-1" and doc["as_of"] and doc["currency"] == "USD"
    assert all(
        v["usd"] > 0 and v["source"].startswith("https://aws.amazon.com/") for v in doc["prices"].values()
    )
    table = cost.monthly(measured(), cost.Cadence(), SETTINGS)  # every line priced from the table
    assert (table["this design USD"][:-1] >= 0).all() and not table["per record USD"].isna().any()


def environ(agent: str, **extra: str) -> dict[str, object]:
    return {"HTTP_USER_AGENT": agent, "wsgi.input": io.BytesIO(b""), **extra}


def test_the_stack_counts_calls_by_function_from_the_user_agent() -> None:
    sigv4 = "AWS4-HMAC-SHA256 Credential=testing/20261204/us-east-1/{}/aws4_request, SignedHeaders=host"
    lambda_agent = "Boto3/1.40 md/Botocore#1.40 exec-env/AWS_Lambda_python3.13 app/stock-trend-processor"
    usage = Usage()
    put = environ(lambda_agent, REQUEST_METHOD="PUT", PATH_INFO="/stock-trend-raw-local/raw/a.ndjson")
    put["HTTP_AUTHORIZATION"] = sigv4.format("s3")
    put["CONTENT_LENGTH"] = "120"
    usage.count(put)
    usage.count(put)
    usage.count(environ("Boto3/1.40 app/x", HTTP_X_AMZ_TARGET="Kinesis_20131202.PutRecords"))
    usage.count(environ("Boto3/1.40 stp-local-stack", HTTP_X_AMZ_TARGET="DynamoDB_20120810.Query"))
    rows = {
        (r["caller"], r["service"], r["operation"]): (r["calls"], r["bytes"])
        for r in usage.describe()["calls"]
    }
    assert rows == {
        ("function:stock-trend-processor", "s3", "PutObject"): (2, 240),
        ("client", "kinesis", "PutRecords"): (1, 0),  # app/ without Lambda's exec-env: not a function
        ("stack", "dynamodb", "Query"): (1, 0),
    }
    assert caller_of({"HTTP_USER_AGENT": ""}) == "client"


def product(usage_type: str, *dimensions: tuple[str, str]) -> str:
    """One GetProducts ``PriceList`` entry in the API's documented shape (a JSON string)."""
    return json.dumps(
        {
            "product": {"attributes": {"usagetype": usage_type, "regionCode": "us-east-1"}, "sku": "SKU1"},
            "terms": {
                "OnDemand": {
                    "SKU1.TERM": {
                        "priceDimensions": {
                            f"SKU1.TERM.{i}": {"beginRange": begin, "pricePerUnit": {"USD": usd}, "unit": "x"}
                            for i, (begin, usd) in enumerate(dimensions)
                        }
                    }
                }
            },
        }
    )


class FakePricing:
    """Answers GetProducts from ``answers`` by (service code, usage type), as the API would."""

    def __init__(self, answers: dict[tuple[str, str], list[str]]) -> None:
        self.answers, self.asked = answers, []

    def get_products(self, ServiceCode: str, Filters: list[dict[str, str]], MaxResults: int) -> dict:
        fields = {f["Field"]: f["Value"] for f in Filters}
        self.asked.append((ServiceCode, fields["usagetype"], fields["regionCode"]))
        return {"PriceList": self.answers.get((ServiceCode, fields["usagetype"]), [])}


def test_the_price_list_api_updates_the_table_where_it_answers_plausibly() -> None:
    pricing = FakePricing(
        {
            ("AWSLambda", "Request"): [product("Request", ("0", "0.0000002000"))],
            ("AWSLambda", "Lambda-GB-Second"): [product("Lambda-GB-Second", ("0", "0.0000150000"))],
            # S3 storage is tiered: the first tier (beginRange 0) is the one that applies here
            ("AmazonS3", "TimedStorage-ByteHrs"): [
                product("TimedStorage-ByteHrs", ("51200", "0.0220000000"), ("0", "0.0230000000"))
            ],
            ("AmazonSNS", "Requests-Tier1"): [
                product("Requests-Tier1", ("0", "0.0050000000"))
            ],  # 10 000x: a wrong match
        }
    )
    table = cost.price_list(pricing)
    base = cost.prices()
    assert table["lambda_requests_million"] == pytest.approx(0.20)
    assert table["lambda_gb_second"] == pytest.approx(
        0.000015
    )  # the API's price, not the table's 0.0000166667
    assert table["s3_storage_gb_month"] == pytest.approx(0.023)
    assert table["sns_publish_million"] == base["sns_publish_million"]  # implausible: the table's stays
    assert table["athena_tb_scanned"] == base["athena_tb_scanned"]  # no answer: the table's stays
    assert table.live == {"lambda_requests_million", "lambda_gb_second", "s3_storage_gb_month"}
    assert table.as_of == f"{base.as_of}; 3 of {len(cost.PRICE_LIST)} from the Price List API"
    assert len(pricing.asked) == len(cost.PRICE_LIST) and {r for _, _, r in pricing.asked} == {"us-east-1"}


def test_a_price_list_api_that_fails_leaves_the_table() -> None:
    from botocore.exceptions import ClientError

    class Denied:
        def get_products(self, **kwargs: object) -> dict:
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "GetProducts")

    table = cost.price_list(Denied())
    assert table.usd == cost.prices().usd and not table.live and table.as_of == cost.prices().as_of
    assert cost.prices_for(SETTINGS).usd == cost.prices().usd  # target local: the shipped table
