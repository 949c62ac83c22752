"""The workbook runner on tiny fixture notebooks: parameters, summary, failure handling."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from deploy.workbook import discover, run_workbook
from helpers.pipeline.config import load_settings

FIXTURES = Path(__file__).parent / "fixtures"
pytestmark = pytest.mark.notebooks


def aws_settings():
    """Target aws without credentials: the fixtures touch no AWS (the account id names default buckets)."""
    return load_settings(environ={"STP_ACCOUNT_ID": "123456789012"}, target="aws")


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


# ---------------------------------------------------------------- names refused before anything runs


def test_unknown_parameter_is_refused_with_the_valid_names(capsys, tmp_path) -> None:
    from deploy.workbook import main

    with pytest.raises(SystemExit) as exit_info:
        main(["-p", "SOURSE=synthetic", "--output", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown notebook parameter(s) SOURSE" in err
    valid = err.split("valid names: ")[1].strip().split(", ")
    assert {"SOURCE", "COUNT", "SHORT_WINDOW", "CHART_START", "STOP_LOCAL_STACK"} <= set(valid)
    assert "TARGET" not in valid and "REPORTS_DIR" not in valid  # the runner sets those itself
    assert list(tmp_path.iterdir()) == []  # refused before a run folder was made


def test_valid_parameter_names_are_the_union_of_the_parameters_cells() -> None:
    from deploy.workbook import check_parameters, notebook_parameters

    declared = notebook_parameters(discover(None, FIXTURES))
    assert declared["00_record_value"] == {"TARGET", "VALUE", "REPORTS_DIR"}
    assert declared["01_fail"] == {"SHOULD_FAIL"}
    check_parameters({"VALUE": 1, "SHOULD_FAIL": False}, declared)  # each belongs to some notebook
    with pytest.raises(ValueError, match=r"VALU, VALUES: .*valid names: SHOULD_FAIL, VALUE$"):
        check_parameters({"VALU": 1, "VALUES": 2}, declared)
    with pytest.raises(ValueError, match="export STP_TARGET=aws"):
        check_parameters({"TARGET": "aws"}, declared)
    with pytest.raises(ValueError, match="--output FOLDER"):
        check_parameters({"REPORTS_DIR": "/tmp"}, declared)


def test_unknown_only_is_refused_with_the_notebooks(capsys, tmp_path) -> None:
    from deploy.workbook import main, select

    with pytest.raises(SystemExit) as exit_info:
        main(["--only", "99", "--output", str(tmp_path)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no notebook '99'" in err
    assert "valid: 00 (00_setup), 01 (01_provision)" in err and "07 (07_teardown)" in err
    # numbers with or without the zero, and names, select the same notebooks
    assert [p.stem for p in select(["1", "07_teardown"], FIXTURES)] == ["01_fail", "07_teardown"]
    with pytest.raises(ValueError, match=r"no notebook '03' .* valid: 00 \(00_record_value\)"):
        run_workbook(aws_settings(), only=["3"], notebooks_dir=FIXTURES)


# ---------------------------------------------------------------- progress, JUnit, interrupts


def test_progress_lines_and_junit_with_the_failing_cell(tmp_path) -> None:
    import xml.etree.ElementTree as ET

    from deploy.workbook import write_junit

    settings = aws_settings()
    lines: list[str] = []
    runs = run_workbook(settings, output_dir=tmp_path / "run", notebooks_dir=FIXTURES, progress=lines.append)
    assert lines[0] == "[1/4] 00_record_value: running"
    assert re.fullmatch(r"\[1/4\] 00_record_value: ok in \d+\.\d s", lines[1])
    assert re.fullmatch(
        r"\[2/4\] 01_fail: failed in \d+\.\d s — AssertionError: deliberate failure", lines[3]
    )
    assert lines[4] == "[3/4] 02_after_failure: skipped (an earlier notebook failed)"
    assert lines[-1].startswith("[4/4] 07_teardown: ok in ")

    suite = ET.parse(write_junit(runs, tmp_path / "junit.xml")).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "1", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert list(cases) == ["00_record_value", "01_fail", "02_after_failure", "07_teardown"]
    failure = cases["01_fail"].find("failure")
    assert failure is not None and failure.get("message") == "AssertionError: deliberate failure"
    assert 'assert not SHOULD_FAIL, "deliberate failure"' in (failure.text or "")  # the cell's source
    assert "Traceback" in (failure.text or "") and "\x1b[" not in (failure.text or "")  # no colour codes
    assert cases["02_after_failure"].find("skipped") is not None
    assert len(cases["00_record_value"]) == 0 and float(cases["00_record_value"].get("time") or 0) > 0


def test_interrupted_run_is_recorded_as_interrupted(tmp_path, monkeypatch) -> None:
    import papermill

    from deploy.workbook import WorkbookInterrupted

    real = papermill.execute_notebook

    def interrupt_the_second(source: str, *args, **kwargs):
        if Path(source).name.startswith("01"):
            raise KeyboardInterrupt
        return real(source, *args, **kwargs)

    monkeypatch.setattr(papermill, "execute_notebook", interrupt_the_second)
    with pytest.raises(WorkbookInterrupted) as info:
        run_workbook(aws_settings(), output_dir=tmp_path, notebooks_dir=FIXTURES)
    assert [(r.name, r.status) for r in info.value.runs] == [
        ("00_record_value", "ok"),
        ("01_fail", "interrupted"),
    ]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["run"]["status"] == "interrupted" and summary["run"]["finished_at"]
    assert [n["status"] for n in summary["notebooks"]] == ["ok", "interrupted"]
    assert "interrupted" in (tmp_path / "report.html").read_text()  # the report says so too


def test_a_finished_run_records_its_status_and_writes_the_report(tmp_path) -> None:
    settings = aws_settings()
    run_workbook(settings, only=["00", "07"], output_dir=tmp_path, notebooks_dir=FIXTURES)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["run"]["status"] == "ok" and summary["run"]["id"] == tmp_path.name
    page = (tmp_path / "report.html").read_text()
    assert "00_record_value" in page and "07_teardown" in page and "<script" not in page


def test_a_run_leaves_the_runner_environment_as_it_was(tmp_path, monkeypatch) -> None:
    """Kernels get the run's settings through the environment; the runner's process gets its own
    back afterwards (an aws run left ``STP_TARGET=aws`` behind for whatever ran next)."""
    monkeypatch.delenv("STP_TARGET", raising=False)
    monkeypatch.setenv("STP_REGION", "us-east-1")
    before = dict(os.environ)
    run_workbook(aws_settings(), only=["00", "07"], output_dir=tmp_path, notebooks_dir=FIXTURES)
    assert dict(os.environ) == before
    assert json.loads((tmp_path / "summary.json").read_text())["target_seen"] == "aws"


# ---------------------------------------------------------------- the CLI: run folder, latest, JUnit


def test_cli_writes_a_run_folder_latest_and_junit(tmp_path, monkeypatch, capfd) -> None:
    import deploy.workbook as workbook

    monkeypatch.setattr(workbook, "load_settings", aws_settings)
    (tmp_path / "20000101T000000Z").mkdir()  # an earlier run: nothing of it may mix in
    (tmp_path / "20000101T000000Z" / "old_chart.png").write_bytes(b"old")
    code = workbook.main(
        [
            "--notebooks",
            str(FIXTURES),
            "--only",
            "00",
            "07",
            "--output",
            str(tmp_path),
            "--junit",
            str(tmp_path / "j.xml"),
        ]
    )
    out, err = capfd.readouterr()
    assert code == 0
    assert "without encryption" not in err  # kernels on IPC sockets, not loopback TCP
    latest = tmp_path / "latest"
    assert latest.is_symlink() and latest.resolve().parent == tmp_path.resolve()
    run = latest.resolve()
    assert re.fullmatch(r"\d{8}T\d{6}Z", run.name) and run.name != "20000101T000000Z"
    assert sorted(p.name for p in run.iterdir()) == [
        "00_record_value.ipynb", "07_teardown.ipynb", "report.html", "summary.json",
    ]  # fmt: skip
    assert f"Report: {run / 'report.html'}" in out and "[2/2] 07_teardown: ok in" in out
    assert (tmp_path / "j.xml").read_text().count("<testcase ") == 2


# ---------------------------------------------------------------- pytest collects the notebooks (opt-in)


def test_pytest_plugin_collects_each_numbered_notebook_as_an_item(tmp_path, project_root) -> None:
    import shutil
    import subprocess
    import sys
    import xml.etree.ElementTree as ET

    notebooks = tmp_path / "nbs"
    shutil.copytree(FIXTURES, notebooks)
    (notebooks / "README.ipynb").write_text("{}")  # not numbered: not collected
    env = {**os.environ, "STP_TARGET": "aws", "STP_ACCOUNT_ID": "123456789012", "MPLBACKEND": "Agg"}
    command = [sys.executable, "-m", "pytest", "-p", "tests.notebooks.workbook_items", str(notebooks)]
    command += ["-c", os.devnull, "--rootdir", str(tmp_path), "-p", "no:cacheprovider", "-q"]
    command += ["--workbook-output", str(tmp_path / "reports"), "--junitxml", str(tmp_path / "junit.xml")]
    result = subprocess.run(
        [*command, "--workbook-param", "VALUE=42"], env=env, cwd=project_root, capture_output=True, text=True
    )
    assert result.returncode == 1, result.stdout + result.stderr  # 01_fail fails
    assert "1 failed, 2 passed, 1 skipped" in result.stdout
    # the failure shows the failing cell and its error
    assert 'cell source ---\nassert not SHOULD_FAIL, "deliberate failure"' in result.stdout
    cases = ET.parse(tmp_path / "junit.xml").getroot().iter("testcase")
    assert [c.get("name") for c in cases] == ["00_record_value", "01_fail", "02_after_failure", "07_teardown"]
    run = (tmp_path / "reports" / "latest").resolve()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["value"] == 42 and summary["run"]["status"] == "failed"
    assert [n["status"] for n in summary["notebooks"]] == ["ok", "failed", "skipped", "ok"]
    assert (run / "report.html").is_file()

    typo = subprocess.run(
        [*command, "--workbook-param", "VALEU=1"], env=env, cwd=project_root, capture_output=True, text=True
    )
    assert typo.returncode == 4  # pytest's usage error: nothing ran
    assert (
        "unknown notebook parameter(s) VALEU" in typo.stderr
        and "valid names: SHOULD_FAIL, VALUE" in typo.stderr
    )


def test_sigterm_records_the_run_as_interrupted(tmp_path, project_root) -> None:
    """CI cancels a job with SIGTERM: the run folder, summary, report and JUnit say 'interrupted'."""
    import signal
    import subprocess
    import sys
    import time
    import xml.etree.ElementTree as ET

    notebooks = tmp_path / "nbs"
    notebooks.mkdir()
    for name in ("00_record_value.ipynb", "07_teardown.ipynb"):
        (notebooks / name).write_bytes((FIXTURES / name).read_bytes())
    slow = json.loads((FIXTURES / "01_fail.ipynb").read_text())
    slow["cells"][-1]["source"] = ["import time\n", "time.sleep(120)"]
    (notebooks / "01_slow.ipynb").write_text(json.dumps(slow))
    env = {**os.environ, "STP_TARGET": "aws", "STP_ACCOUNT_ID": "123456789012", "MPLBACKEND": "Agg"}
    command = [
        sys.executable,
        "-m",
        "deploy.workbook",
        "--notebooks",
        str(notebooks),
        "--output",
        str(tmp_path),
    ]
    runner = subprocess.Popen(
        [*command, "--junit", str(tmp_path / "junit.xml")],
        env=env, cwd=project_root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert runner.stdout is not None
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        lines.append(runner.stdout.readline())
        if lines[-1].startswith("[2/3] 01_slow: running"):
            break
    time.sleep(3)  # the kernel is in time.sleep
    started = time.monotonic()
    runner.send_signal(signal.SIGTERM)
    output = runner.communicate(timeout=60)[0]
    assert runner.returncode == 130, "".join(lines) + output
    assert time.monotonic() - started < 30
    assert "01_slow: interrupted after" in output and "Interrupted: resources may remain" in output
    run = (tmp_path / "latest").resolve()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["run"]["status"] == "interrupted"
    assert [(n["name"], n["status"]) for n in summary["notebooks"]] == [
        ("00_record_value", "ok"),
        ("01_slow", "interrupted"),
    ]
    assert "interrupted" in (run / "report.html").read_text()
    cases = {c.get("name"): c for c in ET.parse(tmp_path / "junit.xml").getroot().iter("testcase")}
    assert list(cases) == ["00_record_value", "01_slow"] and cases["01_slow"].find("error") is not None


def test_account_id_is_masked_in_what_an_aws_run_writes(tmp_path) -> None:
    import xml.etree.ElementTree as ET

    from deploy.workbook import write_junit

    account = "123456789012"  # aws_settings()' account
    arn = f"arn:aws:sqs:us-east-1:{account}:stock-trend-alerts"
    notebooks = tmp_path / "nbs"
    notebooks.mkdir()
    nb = json.loads((FIXTURES / "01_fail.ipynb").read_text())
    nb["cells"][-1]["source"] = [
        f"print({arn!r})\n",
        f"raise LookupError('no queue {arn}: run 01_provision')",
    ]
    (notebooks / "01_leaky.ipynb").write_text(json.dumps(nb))
    runs = run_workbook(aws_settings(), output_dir=tmp_path / "run", notebooks_dir=notebooks)
    assert runs[0].status == "failed" and "<account-id>" in (runs[0].error or "")
    written = [tmp_path / "run" / n for n in ("01_leaky.ipynb", "summary.json", "report.html")]
    written.append(write_junit(runs, tmp_path / "junit.xml"))
    for path in written:
        text = path.read_text(encoding="utf-8")
        assert account not in text, path.name
        assert (
            "arn:aws:sqs:us-east-1:<account-id>:stock-trend-alerts" in text or "&lt;account-id&gt;" in text
        ), path.name
    ET.parse(written[-1])  # still well-formed
