"""Every chaos case at the small size against the session's local stack (see :mod:`tests.chaos`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.pipeline.config import Settings
from tests.chaos.cases import CASES
from tests.chaos.harness import run_case

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


@pytest.mark.parametrize("name", list(CASES))
def test_guarantees_hold_under_faults(local_stack: Settings, tmp_path_factory: pytest.TempPathFactory,
                                      name: str) -> None:  # fmt: skip
    """GIVEN a pipeline of its own WHEN the case's faults hit it THEN every guarantee's check holds."""
    case = CASES[name]
    build = Path(tmp_path_factory.getbasetemp()) / "chaos-build"
    result = run_case(local_stack, name, case.drive, "small", build_dir=build, prepare=case.prepare,
                      crashes_allowed=case.crashes_allowed)  # fmt: skip
    assert result.report["violations"] == [], result.report
