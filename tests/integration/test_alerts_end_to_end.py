"""Quotes in, alerts out: the whole pipeline on the local stack, with the deployed trend Lambda.

Provision resources of the test's own, deploy both functions (the real zips, run by the stack's
Lambda runtime from their event source mappings), produce real recorded AAPL 1-minute bars, and
compare the alerts received from the SQS inbox with the crossovers of the processed series.
Then replay the whole table stream through a new mapping: nothing new may be published.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from isolated_pipeline import renamed

from helpers.core.indicators import Signal, crossovers
from helpers.core.trend_plan import publish_request
from helpers.notebook import alerts, history
from helpers.notebook.sources import replay
from helpers.pipeline import aws, trend
from helpers.pipeline.config import FIFO_SUFFIX, Settings, load_settings
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

BARS = 800  # 2026-07-29 13:30 .. 07-31 13:49 UTC: 58 crossovers
WAIT_SECONDS = 180.0


def _wait(check: Callable[[], Any], what: str, timeout: float = WAIT_SECONDS) -> Any:
    return wait_until(check, what, timeout)


@pytest.fixture(scope="module")
def deployed(local_stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    from deploy.functions import deploy_functions
    from deploy.provision import provision, teardown

    settings = renamed(local_stack, "e2e")
    provision(settings)
    deploy_functions(settings, build_dir=tmp_path_factory.mktemp("build"))
    try:
        yield settings
    finally:
        teardown(settings)


def _trend_mapping(settings: Settings) -> dict[str, Any]:
    lam = aws.client("lambda", settings)
    (mapping,) = lam.list_event_source_mappings(FunctionName=settings.trend_function)["EventSourceMappings"]
    return dict(mapping)


def _mapping_health(settings: Settings, uuid_: str) -> dict[str, Any]:
    from deploy.local import status

    health = status(settings).health or {}
    return dict(health.get("components", {}).get("lambda", {}).get("mappings", {}).get(uuid_, {}))


_BATCH_LINE = re.compile(
    r"trend batch: (\d+) records \((\d+) malformed\) over (\d+) symbols, (\d+) Query calls, (\d+) signals .*"
    r", (\d+) records failed"
)


def _batch_lines(settings: Settings) -> list[tuple[int, ...]]:
    """(records, malformed, symbols, queries, signals, failed) per trend invocation, from its logs."""
    logs = aws.client("logs", settings)
    pages = logs.get_paginator("filter_log_events").paginate(
        logGroupName=f"/aws/lambda/{settings.trend_function}"
    )
    messages = [e["message"] for page in pages for e in page.get("events", [])]
    return [tuple(int(g) for g in m.groups()) for line in messages if (m := _BATCH_LINE.search(line))]


def test_alerts_received_equal_crossovers_and_a_replay_sends_nothing(
    deployed: Settings, tmp_path: Path
) -> None:
    from deploy.functions import deploy_functions
    from helpers.notebook.producer import produce

    s = deployed
    summary = produce(replay("aapl-1m", limit=BARS), s)
    assert summary.records == BARS and summary.failed == 0
    bars = _wait(lambda: (b := history.processed_bars(s, "AAPL")) and len(b) == BARS and b, "the processor")
    expected = crossovers(bars, "AAPL")
    assert len(expected) == 58

    received = alerts.wait_for_alerts(s, len(expected), timeout=WAIT_SECONDS)
    check = alerts.compare(received, expected)
    assert check["ok"], check
    published = alerts.published_alerts(s, include_unpublished=True)
    assert sorted(a["alert_id"] for a in published) == sorted(x.alert_id for x in expected)
    assert all(a["published"] for a in published)

    # Replay: a new mapping reads the table's stream from TRIM_HORIZON again.
    lam = aws.client("lambda", s)
    old = _trend_mapping(s)
    lam.delete_event_source_mapping(UUID=old["UUID"])
    _wait(lambda: not lam.list_event_source_mappings(FunctionName=s.trend_function)["EventSourceMappings"],
          "the old mapping to go")  # fmt: skip
    deploy_functions(s, functions=["trend"], build_dir=tmp_path)
    new = _trend_mapping(s)
    assert new["UUID"] != old["UUID"]

    def replayed() -> int:  # the marks delivered + the item writes the mapping's filter dropped
        health = _mapping_health(s, new["UUID"])
        return int(health.get("records_ok", 0)) + int(health.get("records_filtered", 0))

    _wait(lambda: replayed() >= BARS, "the replay")
    assert alerts.receive_alerts(s, wait_seconds=2) == []
    assert len(alerts.published_alerts(s, include_unpublished=True)) == len(expected)
    assert _mapping_health(s, new["UUID"])["function_errors"] == 0

    # The deployed function's own account of each batch: at most two Query calls for its one symbol
    # and no failed record. Its records are the processor's marks of each run only: the mapping's
    # filter drops the item writes before batching.
    lines = _batch_lines(s)
    marks = sum(line[0] for line in lines)
    health = _mapping_health(s, new["UUID"])
    assert 0 < marks < BARS // 10 and health["records_filtered"] >= BARS  # the replay alone filtered them all
    assert all(
        symbols <= 1 and queries <= 2 * symbols and failed == 0 for _, _, symbols, queries, _, failed in lines
    ), lines
    assert sum(line[4] for line in lines) == 2 * len(expected)  # the replay found them all again


# --------------------------------------------------------------------------- duplicates and FIFO

SIGNAL = Signal("AAPL", "2026-07-29T15:04:00Z", "BUY", 191.25, 191.3, 191.1)


def _alert_resources(local_stack: Settings, prefix: str, fifo: bool) -> Settings:
    base = local_stack
    if fifo:
        base = dataclasses.replace(
            base, alerts_fifo=True, topic_name=base.topic_name + FIFO_SUFFIX,
            alert_queue_name=base.alert_queue_name + FIFO_SUFFIX,
        )  # fmt: skip
    return load_settings(environ=renamed(base, prefix).to_environment())  # validated, as a function sees it


@pytest.fixture(scope="module")
def fifo(local_stack: Settings) -> Iterator[Settings]:
    from deploy.provision import provision, teardown

    settings = _alert_resources(local_stack, "fifo", fifo=True)
    provision(settings)
    try:
        yield settings
    finally:
        teardown(settings)


def _publish_twice(settings: Settings, *, deliver_first: bool = True) -> str:
    """The crash window: the alert delivered (recorded, published, marked), then published again."""
    topic = trend.topic_arn(settings)
    dynamodb, sns = aws.client("dynamodb", settings), aws.client("sns", settings)
    assert trend.deliver(SIGNAL, dynamodb=dynamodb, sns=sns, alerts_table=settings.alerts_table_name,
                         topic=topic) == trend.PUBLISHED  # fmt: skip
    sns.publish(**publish_request(SIGNAL, topic))  # what the retry after a crash sends
    return topic


def test_a_standard_topic_delivers_the_repeat_and_readers_drop_and_count_it(deployed: Settings) -> None:
    alerts.receive_alerts(deployed, wait_seconds=0)  # empty inbox
    dynamodb = aws.client("dynamodb", deployed)
    dynamodb.delete_item(TableName=deployed.alerts_table_name, Key={"alert_id": {"S": SIGNAL.alert_id}})
    _publish_twice(deployed)
    received = alerts.wait_for_alerts(deployed, 1, timeout=30, symbols=["AAPL"])
    assert [a["alert_id"] for a in received] == [SIGNAL.alert_id]
    assert (received.duplicates, received.duplicate_ids) == (1, {SIGNAL.alert_id: 1})
    dynamodb.delete_item(TableName=deployed.alerts_table_name, Key={"alert_id": {"S": SIGNAL.alert_id}})


def test_fifo_option_provisions_a_fifo_topic_and_queue_and_publishes_with_the_alert_id(
    fifo: Settings,
) -> None:
    sns, sqs = aws.client("sns", fifo), aws.client("sqs", fifo)
    topic = trend.topic_arn(fifo)
    attributes = sns.get_topic_attributes(TopicArn=topic)["Attributes"]
    assert attributes["FifoTopic"] == "true"
    assert sqs.get_queue_attributes(QueueUrl=alerts.queue_url(fifo), AttributeNames=["FifoQueue"])[
        "Attributes"
    ] == {"FifoQueue": "true"}
    (subscription,) = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert subscription["Endpoint"].endswith(FIFO_SUFFIX)
    # moto enforces AWS's rule the other way round too: a FIFO queue cannot follow a standard topic
    standard = sns.create_topic(Name=f"{fifo.topic_name.removesuffix(FIFO_SUFFIX)}-std")["TopicArn"]
    try:
        with pytest.raises(ClientError, match="FIFO SQS Queues can not be subscribed to standard SNS topics"):
            sns.subscribe(TopicArn=standard, Protocol="sqs", Endpoint=subscription["Endpoint"])
    finally:
        sns.delete_topic(TopicArn=standard)


def test_fifo_repeat_within_the_window_is_dropped_while_the_first_copy_is_unread(fifo: Settings) -> None:
    # GIVEN the crash window hit on the FIFO topic: the same alert published twice in a row
    _publish_twice(fifo)
    # THEN the queue holds one message (moto's SQS FIFO de-duplicates on the id SNS passes on)
    sqs = aws.client("sqs", fifo)
    depth = sqs.get_queue_attributes(
        QueueUrl=alerts.queue_url(fifo), AttributeNames=["ApproximateNumberOfMessages"]
    )
    assert depth["Attributes"]["ApproximateNumberOfMessages"] == "1"
    received = alerts.receive_alerts(fifo, wait_seconds=1)
    assert ([a["alert_id"] for a in received], received.duplicates) == ([SIGNAL.alert_id], 0)


def test_fifo_repeat_after_the_first_copy_was_deleted_is_delivered_by_moto(fifo: Settings) -> None:
    """Measured, not faked: moto compares ids with the messages still queued only, so once the first
    copy is deleted a repeat inside AWS's 5-minute window is delivered (AWS would drop it). Readers
    still drop it, by alert_id, within one read."""
    sns = aws.client("sns", fifo)
    topic = trend.topic_arn(fifo)
    sns.publish(**publish_request(SIGNAL, topic))
    first = alerts.receive_alerts(fifo, wait_seconds=1)  # reads and deletes it
    sns.publish(**publish_request(SIGNAL, topic))
    again = alerts.receive_alerts(fifo, wait_seconds=1)
    assert [a["alert_id"] for a in first + again] == [SIGNAL.alert_id, SIGNAL.alert_id]
