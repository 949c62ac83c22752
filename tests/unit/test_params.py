"""helpers.notebook.params: notebook parameters refused with the parameter, the value and the fix."""

from __future__ import annotations

import pytest

from helpers.core.errors import ParameterError, PipelineError
from helpers.notebook import params, sources

RULES = {
    "SOURCE": params.choice(sources.SOURCES),
    "DATASET": params.choice(sources.DATASETS, optional=True),
    "COUNT": params.number(integer=True, minimum=1),
    "SPEED": params.number(optional=False),
    "DURATION_SECONDS": params.number(),
    "INCLUDE_MALFORMED": params.flag(),
}
GOOD = {
    "SOURCE": "replay",
    "DATASET": "aapl-1m",
    "COUNT": None,
    "SPEED": 0,
    "DURATION_SECONDS": 2.5,
    "INCLUDE_MALFORMED": True,
}


def test_good_values_pass_and_are_returned() -> None:
    assert params.check(GOOD, RULES) == GOOD
    assert params.check({**GOOD, "COUNT": 10, "SPEED": 60.0}, RULES)["COUNT"] == 10


def test_unknown_source_lists_the_allowed_ones() -> None:
    with pytest.raises(ParameterError) as err:
        params.check({**GOOD, "SOURCE": "synth"}, RULES)
    assert str(err.value) == (
        "parameter SOURCE='synth': is not known. Fix: use one of ['replay', 'synthetic', 'yfinance']"
    )
    assert isinstance(err.value, PipelineError)


def test_unknown_dataset_lists_the_allowed_ones() -> None:
    with pytest.raises(ParameterError, match=r"DATASET='minute'.*use one of \['aapl-1m', 'daily'"):
        params.check({**GOOD, "DATASET": "minute"}, RULES)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("COUNT", -1, "parameter COUNT=-1: must be at least 1. Fix: set COUNT to 1 or more"),
        ("COUNT", 0, "parameter COUNT=0: must be at least 1. Fix: set COUNT to 1 or more"),
        ("SPEED", -60, "parameter SPEED=-60: must be at least 0. Fix: set SPEED to 0 or more"),
        ("DURATION_SECONDS", -0.5, "parameter DURATION_SECONDS=-0.5: must be at least 0"),
        ("COUNT", 2.5, "parameter COUNT=2.5: must be an integer, not float"),
        ("COUNT", "10", "parameter COUNT='10': must be an integer, not str"),
        ("COUNT", True, "parameter COUNT=True: must be an integer, not bool"),
        ("SPEED", None, "parameter SPEED=None: must be set"),
        ("SPEED", float("nan"), "parameter SPEED=nan: is not a number"),
        ("INCLUDE_MALFORMED", "yes", "parameter INCLUDE_MALFORMED='yes': must be True or False, not str"),
    ],
)
def test_bad_values_are_refused_naming_parameter_value_and_fix(
    name: str, value: object, message: str
) -> None:
    with pytest.raises(ParameterError) as err:
        params.check({**GOOD, name: value}, RULES)
    assert str(err.value).startswith(message)
    assert "Fix:" in str(err.value)


def test_a_missing_parameter_is_refused() -> None:
    values = dict(GOOD)
    del values["SPEED"]
    with pytest.raises(ParameterError, match="parameter SPEED=None: is not defined"):
        params.check(values, RULES)


def test_a_choice_that_lists_none_takes_none() -> None:
    """``TARGET = None`` (the notebooks' default: STP_TARGET, the config file, else local) passes."""
    rules = {"TARGET": params.choice([None, "local", "aws"])}
    assert params.check({"TARGET": None}, rules) == {"TARGET": None}
    with pytest.raises(ParameterError, match=r"TARGET='AWS': is not known.*\[None, 'local', 'aws'\]"):
        params.check({"TARGET": "AWS"}, rules)
    with pytest.raises(ParameterError, match="SOURCE=None: must be set"):
        params.check({**GOOD, "SOURCE": None}, RULES)
