"""environment.yml names the workbook's packages at exactly the locked versions."""

from __future__ import annotations

import yaml

DESIGN_PACKAGES = {"jupyterlab", "boto3", "yfinance", "pandas", "matplotlib", "pyathena", "papermill"}


def test_environment_names_the_design_packages_at_the_locked_versions(project_root) -> None:
    lock = {}
    for line in (project_root / "requirements.lock").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            lock[name.lower()] = version
    env = yaml.safe_load((project_root / "environment.yml").read_text())
    [pip] = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    named = dict(entry.lower().split("==") for entry in pip if "==" in entry)
    assert set(named) == DESIGN_PACKAGES
    assert {name: lock[name] for name in named} == named
    assert "-r requirements.lock" in pip
