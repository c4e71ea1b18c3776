# One command each: `make run` (set up + the main job), `make test` (set up + the test suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup run test lint bench bench-full bench-ci bench-baseline clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned to the CPU build on this machine's disk; the project's range admits it.
	$(PY) -m pip install -q "torch==2.13.0" || $(PY) -m pip install -q "torch>=2.4,<3"
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

run: $(STAMP)
	$(PY) -m harness report --out report

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) -m harness bench --suite ci --out bench-results.json --github-action bench-results

bench-full: $(STAMP)
	$(PY) -m harness bench --suite full --out bench-results.json --github-action bench-results

# The CI gate: the short suite against the committed baseline; exit 1 on a regression.
bench-ci: $(STAMP)
	$(PY) -m harness bench --suite ci --compare benchmarks/baseline-ci.json --out bench-ci.json

# A new baseline for the gate (commit it when a change makes steps faster or slower on purpose).
bench-baseline: $(STAMP)
	$(PY) -m harness bench --suite ci --out benchmarks/baseline-ci.json

clean:
	rm -rf $(VENV) report bench-results*.json bench-ci.json
