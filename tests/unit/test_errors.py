"""What a notebook can see fail is a PipelineError subclass whose message says what to do."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest

from helpers.core import indicators
from helpers.core.errors import ParameterError, PipelineError, SourceError
from helpers.notebook import analysis, athena_sql
from helpers.notebook.sources import open_source
from helpers.pipeline import resources

CASES: dict[str, tuple[Callable[[], object], type[PipelineError], str]] = {
    "windows out of order": (lambda: indicators.check_windows(20, 5), ParameterError, "short < long"),
    "unknown query": (lambda: athena_sql.render("nope"), ParameterError, "known:"),
    "frame without prices": (lambda: analysis.sma_frame(pd.DataFrame({"x": [1]})), ParameterError, "lacks"),
    "unknown source": (lambda: open_source("synth"), SourceError, "'replay', 'synthetic', 'yfinance'"),
    "unknown resource field": (lambda: resources.by_field("nope"), ParameterError, "settings field"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_notebook_facing_errors_are_pipeline_errors(case: str) -> None:
    call, kind, hint = CASES[case]

    with pytest.raises(kind, match=hint) as err:
        call()

    assert isinstance(err.value, PipelineError)
