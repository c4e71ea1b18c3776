"""Shared fixtures: cached runs so that several tests can look at one training run; and the summary line says when
the report's browser check did not run (no Chromium here)."""

from __future__ import annotations

import functools
from types import SimpleNamespace

import pytest

from harness.labs import get_lab
from harness.parity.api import compare
from harness.run.runner import RunOptions, run


@functools.cache
def cached_run(lab: str, framework: str, init: str = "native", dtype: str = "float32",
               steps: int | None = None) -> dict:
    """One run, computed once per test session."""
    return run(get_lab(lab), framework, RunOptions(weights=init, dtype=dtype, log_every=1, steps=steps))


@functools.cache
def cached_compare(lab: str, dtype: str = "float64", noise: bool = False) -> dict:
    """One torch-vs-JAX comparison from shared weights, computed once per test session."""
    return compare(get_lab(lab), RunOptions(dtype=dtype, log_every=1), noise=noise)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``): float64
    results do not depend on it, and a thread pool sharing two busy cores waits at every parallel region, up to
    ten times slower. Restored afterwards."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def run_lab():
    return cached_run


@pytest.fixture
def compare_lab():
    return cached_compare


@pytest.fixture
def interrupt_lab(monkeypatch):
    """``interrupt_lab(n)``: the report job's n-th lab computation raises KeyboardInterrupt (a Ctrl-C there);
    returns the list of lab names computed so far."""
    from harness.report import compute as report_compute

    def arm(n: int) -> list[str]:
        real, calls = report_compute.compute_lab, []

        def compute_lab(lab, opts):
            calls.append(lab.name)
            if len(calls) == n:
                raise KeyboardInterrupt
            return real(lab, opts)

        monkeypatch.setattr(report_compute, "compute_lab", compute_lab)
        return calls

    return arm


BROWSER_NOT_RUN = "browser check not run (no Chromium: make browser)"
_browser_skips: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and report.nodeid.startswith("tests/test_report_html.py") and "Chromium" in str(report.longrepr):
        _browser_skips.append(report.nodeid)


def pytest_terminal_summary(terminalreporter):
    """A skipped browser check counts in the closing line (``N passed, 1 browser check not run ...``), not only
    among the skips, so that a suite run without Chromium cannot pass for the full check."""
    if _browser_skips:
        terminalreporter.stats.setdefault(BROWSER_NOT_RUN, []).append(SimpleNamespace(nodeid=_browser_skips[0]))
