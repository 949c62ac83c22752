"""The shipped GitHub Actions workflow parses, runs make targets that exist, and keeps reports/."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

WORKFLOW = Path(".github/workflows/workbook.yml")


def makefile_targets(root: Path) -> set[str]:
    return set(re.findall(r"^([A-Za-z][\w-]*):", (root / "Makefile").read_text(), flags=re.MULTILINE))


def make_goals(run: str) -> list[str]:
    """The targets of every `make ...` command in a step's script (variables like X=1 are not goals)."""
    goals = []
    for line in run.splitlines():
        if line.strip().startswith("make "):
            words = shlex.split(line, comments=True)
            goals += [w for w in words[1:] if not w.startswith("-") and "=" not in w]
    return goals


def test_workflow_parses_and_its_make_targets_exist(project_root: Path) -> None:
    workflow = yaml.safe_load((project_root / WORKFLOW).read_text())
    assert workflow["name"] == "workbook"
    assert {"push", "pull_request"} <= set(workflow[True])  # YAML 1.1 reads the key `on` as True
    (job,) = workflow["jobs"].values()
    steps = job["steps"]
    goals = [goal for step in steps if "run" in step for goal in make_goals(step["run"])]
    assert goals == ["demo"]
    assert set(goals) <= makefile_targets(project_root)
    # the demo's run folder and JUnit report end up in the artifact, even when the run fails
    (upload,) = [s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact@")]
    paths = upload["with"]["path"].split()
    assert upload["if"] == "always()" and "reports/" in paths
    assert "!reports/latest" in paths  # the run folder once, not again through the latest symlink
    demo = next(s for s in steps if "make demo" in s.get("run", ""))
    assert "--junit reports/junit.xml" in demo["run"]
    python = next(s for s in steps if str(s.get("uses", "")).startswith("actions/setup-python@"))
    assert float(python["with"]["python-version"]) >= 3.11


def test_demo_target_passes_runner_flags(project_root: Path) -> None:
    makefile = (project_root / "Makefile").read_text()
    recipe = re.search(r"^demo:.*\n\t(.+)$", makefile, flags=re.MULTILINE)
    assert recipe and recipe.group(1) == "$(PY) -m deploy.workbook --output reports $(DEMO_ARGS)"
