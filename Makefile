# Two commands for a fresh machine with only Python and make: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: install test test-fast lint typecheck pytest demo dev bench lock docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install whenever the lock file or the project metadata changes.
$(STAMP): requirements.lock pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python deploy/prod_lock.py --check
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

pytest: install
	$(BIN)/pytest

## make test: install everything from the lock file, then ruff, mypy and pytest.
test: lint typecheck pytest

## make test-fast: the pure core only (`unit` tests: no Dagster, server or subprocess), for the edit loop.
test-fast: install
	$(BIN)/pytest -q -m unit

## make demo: materialise the last 3 complete days plus today from the sandbox into ./data.
demo: install
	@mkdir -p $(DAGSTER_HOME)
	$(BIN)/python -m devtools.demo

## make dev: the Dagster UI (webserver + daemon) on the embedded defaults; DEV_ARGS="--port 3001" to move it.
dev: install
	$(BIN)/python -m devtools.dev $(DEV_ARGS)

## make bench: speed and memory figures (benchmarks/results.json, docs/performance.md).
bench: install
	$(BIN)/python -m benchmarks.run

## make lock: re-resolve requirements.lock from pyproject.toml (needs network to PyPI).
lock:
	$(PYTHON) -m pip install --quiet uv
	$(PYTHON) -m uv pip compile pyproject.toml --extra dev --python-version 3.11 --generate-hashes -o requirements.lock
	$(PYTHON) deploy/prod_lock.py

## make docs: regenerate the generated reference pages.
docs: install
	$(BIN)/python -m devtools.docgen

clean:
	rm -rf $(VENV) .dagster_home data .pytest_cache .mypy_cache .ruff_cache
