"""FilterCriteria of stream mappings in the local runtime: Lambda's filter rule syntax."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from deploy.function_specs import MAPPING_SPECS, TREND_MARKS
from deploy.local._lambda.filters import FilterError, compile_filters


def _criteria(*patterns: dict[str, Any]) -> dict[str, Any]:
    return {"Filters": [{"Pattern": json.dumps(p)} for p in patterns]}


def _ddb(event: str, image: dict[str, Any]) -> dict[str, Any]:
    return {"eventName": event, "dynamodb": {"Keys": {"symbol": image["symbol"]}, "NewImage": image}}


ITEM = {"symbol": {"S": "AAPL"}, "timestamp": {"S": "2026-07-29T13:30:00Z"}, "price": {"N": "190.5"}}
MARK = {**ITEM, "trend_from": {"S": "2026-07-29T13:00:00Z"}, "trend_bars": {"N": "31"}}


def test_the_trend_mapping_delivers_the_processors_marks_only() -> None:
    (pattern,) = MAPPING_SPECS["trend"].filters
    match = compile_filters(_criteria(pattern), "dynamodb")
    assert pattern is TREND_MARKS and match is not None
    assert match(_ddb("MODIFY", MARK)) and not match(_ddb("INSERT", ITEM)) and not match(_ddb("MODIFY", ITEM))
    assert not match({"eventName": "REMOVE", "dynamodb": {"Keys": {"symbol": {"S": "AAPL"}}}})
    assert (
        compile_filters(
            json.loads(json.dumps(MAPPING_SPECS["processor"].desired("arn")["FilterCriteria"])), "kinesis"
        )
        is None
    )


@pytest.mark.parametrize(
    ("rule", "yes", "no"),
    [
        (["AAPL", "MSFT"], "AAPL", "GOOG"),
        ([{"prefix": "AA"}], "AAPL", "MSFT"),
        ([{"suffix": "PL"}], "AAPL", "MSFT"),
        ([{"equals-ignore-case": "aapl"}], "AAPL", "AAP"),
        ([{"anything-but": ["MSFT", "GOOG"]}], "AAPL", "MSFT"),
        ([{"anything-but": {"prefix": "MS"}}], "AAPL", "MSFT"),
    ],
)
def test_string_rules_at_a_leaf(rule: list[Any], yes: str, no: str) -> None:
    match = compile_filters(_criteria({"dynamodb": {"NewImage": {"symbol": {"S": rule}}}}), "dynamodb")
    assert match is not None
    assert match(_ddb("INSERT", {**ITEM, "symbol": {"S": yes}}))
    assert not match(_ddb("INSERT", {**ITEM, "symbol": {"S": no}}))


def test_numeric_ranges_read_dynamodb_numbers_and_filters_are_ored() -> None:
    cheap = {"dynamodb": {"NewImage": {"price": {"N": [{"numeric": [">=", 100, "<", 200]}]}}}}
    inserts = {"eventName": ["INSERT"]}
    match = compile_filters(_criteria(cheap, inserts), "dynamodb")
    assert match is not None
    assert match(_ddb("MODIFY", ITEM))  # 190.5 in [100, 200)
    assert match(_ddb("INSERT", {**ITEM, "price": {"N": "250"}}))  # the second filter
    assert not match(_ddb("MODIFY", {**ITEM, "price": {"N": "250"}}))
    assert not match(_ddb("MODIFY", {**ITEM, "price": {"S": "cheap"}}))


def test_kinesis_patterns_match_metadata_and_json_data() -> None:
    def record(data: bytes, key: str = "AAPL") -> dict[str, Any]:
        return {"kinesis": {"partitionKey": key, "data": base64.b64encode(data).decode()}}

    on_data = compile_filters(
        _criteria({"data": {"symbol": ["AAPL"], "price": [{"numeric": [">", 0]}]}}), "kinesis"
    )
    on_key = compile_filters(_criteria({"partitionKey": [{"prefix": "AA"}]}), "kinesis")
    assert on_data is not None and on_key is not None
    assert on_data(record(b'{"symbol": "AAPL", "price": 1.5}'))
    assert not on_data(record(b'{"symbol": "AAPL", "price": -1}'))
    assert not on_data(record(b'{"symbol": "AAPL", "price": 1}\n{"symbol": "AAPL", "price": 2}'))  # not JSON
    assert on_key(record(b"not json")) and not on_key(record(b"{}", key="MSFT"))


@pytest.mark.parametrize(
    ("criteria", "message"),
    [
        ({"Filters": [{"Pattern": "{not json"}]}, "not JSON"),
        (_criteria({"eventName": "INSERT"}), "must be an object or a list"),
        (_criteria({"eventName": [{"wildcard": "IN*"}]}), "unsupported filter rule"),
        (_criteria({"n": [{"numeric": [">"]}]}), "numeric rule"),
        (_criteria(*[{"eventName": ["INSERT"]}] * 6), "at most 5"),
    ],
)
def test_criteria_the_runtime_cannot_apply_are_refused_with_the_reason(criteria: Any, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        compile_filters(criteria, "dynamodb")


def test_no_filters_deliver_everything() -> None:
    assert compile_filters(None, "kinesis") is None and compile_filters({}, "dynamodb") is None
    assert compile_filters({"Filters": []}, "dynamodb") is None
