"""Executed notebooks and reports on AWS never show the account id unless asked to."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from helpers.notebook.redact import MASK, redact_notebook, redact_text

ACCOUNT = "210987654321"


def executed(tmp_path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    arn = f"arn:aws:sqs:us-east-1:{ACCOUNT}:stock-trend-failures"
    code = nbformat.v4.new_code_cell("print(settings)")
    code.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text=f"queue {arn}\n"),
        nbformat.v4.new_output(
            "execute_result",
            data={
                "text/plain": f"https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/stock-trend-failures",
                "text/html": f"<td>{ACCOUNT}</td><td>1{ACCOUNT}</td>",
                "image/png": "iVBORw0KGgo=",
            },
            execution_count=1,
        ),
        nbformat.v4.new_output("error", ename="ClientError", evalue=f"denied for {arn}", traceback=[arn]),
    ]
    nb.cells = [nbformat.v4.new_markdown_cell(f"account {ACCOUNT}"), code]
    path = tmp_path / "01_provision.ipynb"
    nbformat.write(nb, path)
    return path


def test_every_text_output_and_source_is_masked(tmp_path: Path) -> None:
    path = executed(tmp_path)
    assert redact_notebook(path, ACCOUNT) == 6
    text = path.read_text()
    assert ACCOUNT not in text.replace(f"1{ACCOUNT}", "")  # a longer number is not the account
    nb = nbformat.read(path, as_version=4)  # still a valid notebook
    data = nb.cells[1].outputs[1]["data"]
    assert data["text/html"] == f"<td>{MASK}</td><td>1{ACCOUNT}</td>"
    assert data["image/png"] == "iVBORw0KGgo="
    assert nb.cells[1].outputs[2]["traceback"] == [f"arn:aws:sqs:us-east-1:{MASK}:stock-trend-failures"]
    assert redact_notebook(path, ACCOUNT) == 0  # nothing left


def test_reports_and_bad_ids(tmp_path: Path) -> None:
    assert redact_text(json.dumps({"arn": f"x:{ACCOUNT}:y"}), ACCOUNT) == json.dumps({"arn": f"x:{MASK}:y"})
    with pytest.raises(ValueError, match="12 digits"):
        redact_text("x", "1234")


@pytest.mark.parametrize("redact", [True, False])
def test_the_workbook_masks_on_aws_unless_told_not_to(tmp_path: Path, redact: bool) -> None:
    """``python -m deploy.workbook`` masks on target aws; ``--no-redact`` keeps the account id."""
    from deploy.workbook import NotebookRun, Workbook
    from helpers.pipeline.config import load_settings

    settings = load_settings({"target": "aws", "account_id": ACCOUNT}, environ={})
    path = executed(tmp_path)
    failed = NotebookRun("01_provision", "failed", 1.0, f"AccessDenied for {ACCOUNT}")
    result = Workbook(settings, tmp_path, redact=redact)._redact(failed, path)
    assert (ACCOUNT in (result.error or "")) is not redact
    assert (f":{ACCOUNT}:" in path.read_text()) is not redact
    local = load_settings({"account_id": ACCOUNT}, environ={})  # local ids are moto's: never masked
    assert Workbook(local, tmp_path)._account is None
