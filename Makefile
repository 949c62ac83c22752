# Stock Trend Pipeline — the two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# uv (from PyPI) installs the exact lock in seconds; pip is the fallback and INSTALLER=pip forces it
INSTALLER  ?= uv
UV_VERSION ?= 0.13.9

.DEFAULT_GOAL := help
.PHONY: help install demo test test-fast bench bench-pipeline chaos lint format typecheck stack-up stack-down stack-status lock clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required, found " + sys.version.split()[0]'
	@echo "Installing the $$(grep -c '==' requirements.lock) packages of requirements.lock into $(VENV)/ with $(INSTALLER) (INSTALLER=pip to use pip alone)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@start=$$(date +%s); used=pip; \
	if [ "$(INSTALLER)" = uv ] && $(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION) 2>/dev/null \
	   && UV_NATIVE_TLS=1 UV_LINK_MODE=copy $(VENV)/bin/uv pip install --quiet --python $(PY) -r requirements.lock; then used=uv; \
	else [ "$(INSTALLER)" = pip ] || echo "uv could not install the lock here: installing with pip (1-3 min)"; \
	   $(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock || exit 1; fi; \
	echo "Installed in $$(( $$(date +%s) - start )) s with $$used"
	$(PY) -c 'import pathlib, site; pathlib.Path(site.getsitepackages()[0], "stock_trend.pth").write_text("$(CURDIR)\n")'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv and install the locked dependencies

demo: install  ## run every notebook against the local stack; outputs in reports/latest/ (DEMO_ARGS: runner flags)
	$(PY) -m deploy.workbook --output reports $(DEMO_ARGS)

test: install  ## the whole test suite, notebooks included
	$(PY) -m pytest

test-fast: install  ## unit tests only
	$(PY) -m pytest tests/unit -m "not integration"

bench: install  ## pipeline at 10k/100k + steady 1,000 rec/s, the processor alone, stack restarts by state size
	$(PY) -m tests.bench.processor_bench
	$(PY) -m tests.bench.pipeline_bench $(BENCH_ARGS)
	$(PY) -m tests.bench.persist_bench --out reports/persist_bench.json

bench-pipeline: install  ## deployed pipeline at 10k and 100k records + steady 1,000 rec/s; reports/pipeline_bench.json
	$(PY) -m tests.bench.pipeline_bench $(BENCH_ARGS)

chaos: install  ## fault matrix on a stack of its own; writes reports/chaos.json
	$(PY) -m tests.chaos.run --out reports/chaos.json

lint: install  ## ruff lint and format check (notebooks included)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install  ## apply ruff formatting
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

typecheck: install  ## mypy on helpers/ and lambda_src/
	$(PY) -m mypy

stack-up: install  ## start the local stack in the background
	$(PY) -m deploy.local up
stack-down: install  ## stop the local stack
	$(PY) -m deploy.local down
stack-status: install  ## health of the local stack
	$(PY) -m deploy.local status

lock: install  ## re-resolve requirements.lock from pyproject.toml's direct dependencies
	rm -rf .lockvenv && $(PYTHON) -m venv .lockvenv
	.lockvenv/bin/pip install --quiet . '.[dev]'
	{ head -2 requirements.lock; .lockvenv/bin/pip freeze --exclude-editable | grep -v '^stock-trend-pipeline'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock && rm -rf .lockvenv

clean:  ## remove .venv, reports/ and local state
	-$(PY) -m deploy.local down 2>/dev/null
	rm -rf $(VENV) reports .local .pytest_cache .mypy_cache .ruff_cache
