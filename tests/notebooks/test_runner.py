"""The workbook runner on tiny fixture notebooks: parameters, summary, failure handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.workbook import discover, run_workbook
from helpers.pipeline.config import load_settings

FIXTURES = Path(__file__).parent / "fixtures"
pytestmark = pytest.mark.notebooks


def test_failed_notebook_skips_the_rest_but_still_tears_down(tmp_path) -> None:
    settings = load_settings(environ={}, target="aws", account_id="123456789012")  # no local stack involved
    runs = run_workbook(settings, parameters={"VALUE": 42}, output_dir=tmp_path, notebooks_dir=FIXTURES)
    assert [(r.name, r.status) for r in runs] == [
        ("00_record_value", "ok"),
        ("01_fail", "failed"),
        ("02_after_failure", "skipped"),
        ("07_teardown", "ok"),
    ]
    assert "deliberate failure" in (runs[1].error or "")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["value"] == 42 and summary["target_seen"] == "aws"
    assert summary["teardown_ran"] is True and "ran_after_failure" not in summary
    assert [n["status"] for n in summary["notebooks"]] == ["ok", "failed", "skipped", "ok"]
    assert all(isinstance(n["seconds"], float) for n in summary["notebooks"])
    executed = json.loads((tmp_path / "00_record_value.ipynb").read_text())
    assert any("injected-parameters" in c["metadata"].get("tags", []) for c in executed["cells"])


def test_discover_filters_by_number() -> None:
    assert [p.name[:2] for p in discover(["1", "07"], FIXTURES)] == ["01", "07"]


def test_workbook_notebooks_follow_the_house_rules(project_root) -> None:
    import ast

    for path in discover():
        nb = json.loads(path.read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert sum("parameters" in c["metadata"].get("tags", []) for c in code) == 1, path.name
        for cell in code:
            assert not cell["outputs"] and cell["execution_count"] is None, f"{path.name} has outputs"
            source = "".join(cell["source"])
            tree = ast.parse(source)
            assert not any(isinstance(n, ast.FunctionDef | ast.ClassDef) for n in ast.walk(tree)), path.name
            assert "input(" not in source and "getpass" not in source, path.name
        assert nb["cells"][0]["cell_type"] == "markdown", f"{path.name} opens without a title"


def test_relative_output_folder_is_resolved_before_notebooks_change_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={}, target="aws", account_id="123456789012")
    run_workbook(settings, only=["00"], output_dir="rel-reports", notebooks_dir=FIXTURES)
    summary = json.loads((tmp_path / "rel-reports" / "summary.json").read_text())
    assert summary["value"] == 1
    assert not (FIXTURES / "rel-reports").exists()
