"""The resource registry: every entry is complete, and everything derived from it agrees."""

from __future__ import annotations

import dataclasses

import pytest
from botocore.exceptions import ClientError

from deploy import functions
from deploy.provision import CREATORS, DELETERS
from helpers.pipeline import resources
from helpers.pipeline.config import Settings, load_settings

ACCOUNT = "123456789012"


def test_every_kind_has_a_create_and_a_delete_function() -> None:
    kinds = {r.kind for r in resources.RESOURCES}
    assert kinds == set(CREATORS) == set(DELETERS)


def test_each_entry_names_its_own_settings_field() -> None:
    fields = [r.field for r in resources.RESOURCES]
    assert len(fields) == len(set(fields))
    assert set(fields) <= {f.name for f in dataclasses.fields(Settings)}
    assert [r.field for r in resources.teardown_order()] == fields[::-1]


@pytest.mark.parametrize("res", resources.RESOURCES, ids=lambda r: r.field)
def test_arn_and_probe_arguments_name_the_resource(res: resources.Resource) -> None:
    s = load_settings(environ={}, region="eu-west-1")
    arn = resources.arn(res, s, ACCOUNT)
    assert arn.startswith(f"arn:aws:{res.service}:") and arn.endswith(res.name(s))
    args = resources.probe_args(res, s, ACCOUNT)
    assert res.name(s) in args.values() or arn in args.values()


def test_a_later_entry_may_only_use_earlier_ones() -> None:
    order = [r.field for r in resources.RESOURCES]
    for res in resources.RESOURCES:
        used = res.options.get("subscribe_to")
        if used:
            assert order.index(used) < order.index(res.field)


def _role_error() -> ClientError:
    message = "The role defined for the function cannot be assumed by Lambda."
    return ClientError(
        {"Error": {"Code": "InvalidParameterValueException", "Message": message}}, "CreateFunction"
    )


def test_role_propagation_is_retried_with_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(functions.time, "sleep", sleeps.append)
    attempts = iter([_role_error(), _role_error(), None])

    def call() -> str:
        err = next(attempts)
        if err:
            raise err
        return "created"

    assert (
        functions._retry_while_role_propagates(
            call, load_settings(environ={}, target="aws", account_id="123456789012")
        )
        == "created"
    )
    assert len(sleeps) == 2 and all(0 <= d <= functions.ROLE_RETRY_CAP_SECONDS for d in sleeps)


def test_other_errors_and_the_local_stack_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(functions.time, "sleep", lambda _: pytest.fail("slept"))

    def role_error() -> None:
        raise _role_error()

    with pytest.raises(ClientError):
        functions._retry_while_role_propagates(role_error, load_settings(environ={}))  # local: no wait
    other = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "role"}}, "CreateFunction")

    def denied() -> None:
        raise other

    with pytest.raises(ClientError):
        functions._retry_while_role_propagates(
            denied, load_settings(environ={}, target="aws", account_id="123456789012")
        )


def test_the_alert_topic_and_its_queue_are_fifo_exactly_when_alerts_fifo_is_on() -> None:
    fifo, standard = load_settings(environ={}, alerts_fifo=True), load_settings(environ={})
    flagged = {r.field for r in resources.RESOURCES if resources.is_fifo(r, fifo)}
    assert flagged == {"topic_name", "alert_queue_name"}
    assert not any(resources.is_fifo(r, standard) for r in resources.RESOURCES)
    assert resources.arn(resources.by_field("topic_name"), fifo, "1").endswith(":stock-trend-alerts.fifo")
