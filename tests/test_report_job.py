"""The main job's plan and records: any number of registered backends, the registry's costs and thread policy,
the machine and thread counts in every result, no progress noise off a terminal."""

from __future__ import annotations

import io
import json
import time

import pytest

from harness import backend as backends
from harness.commands.cli import main
from harness.labs import get_lab
from harness.report.options import JobOptions
from harness.report.plan import WORK_FLOPS, estimate_seconds, flops_per_step, thread_counts

TINY = ["--labs", "xor_mlp", "--steps", "20", "--no-init-study", "--no-html"]


@pytest.fixture
def third_backend():
    """jax's module registered under a third name, as another backend would be."""
    info = backends.register(backends.BackendInfo("jax_again", "JAX again", "#000000", "jax_impl.backend",
                                                  ("per_step", "fused"), cost=(0.5, 50e-6)))
    yield info.name
    backends.unregister(info.name)


def test_a_report_through_three_backends(third_backend, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["report", "--out", str(out), "--frameworks", f"torch,jax,{third_backend}", *TINY]) == 0
    assert capsys.readouterr().err == ""  # no progress display off a terminal
    results = json.loads((out / "results.json").read_text())
    rec = results["labs"]["xor_mlp"]
    assert list(rec["runs"]) == ["torch", "jax", third_backend] and rec["status"] == "ok"
    assert rec["runs"][third_backend]["framework"] == third_backend
    assert rec["parity"]["verdict"]  # the comparison covers (at least) the first two
    assert set(results["peak"]) == {"torch", "jax", third_backend}
    assert set(rec["threads"]) == {"torch", "jax", third_backend} and rec["threads"]["torch"] == 1  # XOR: one
    machine = results["machine"]
    assert machine["cpu"] and machine["cpu_count"] >= 1 and {"torch", "jax"} <= set(machine["threads"])


def test_a_report_in_a_third_backend_alone(third_backend, tmp_path):
    out = tmp_path / "r"
    assert main(["report", "--out", str(out), "--frameworks", third_backend, *TINY, "--quiet"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["labs"]["xor_mlp"]["runs"]) == [third_backend]
    assert "parity" not in results["labs"]["xor_mlp"] and "native" not in results["labs"]["xor_mlp"]
    assert list(results["peak"]) == [third_backend] and results["job"]["status"] == "complete"


def test_a_report_compares_the_frameworks_chosen(third_backend, tmp_path):
    out = tmp_path / "r"
    assert main(["report", "--out", str(out), "--frameworks", f"jax,{third_backend}", *TINY, "--quiet"]) == 0
    parity = json.loads((out / "labs" / "xor_mlp.json").read_text())["parity"]
    assert [s["backend"] for s in parity["sides"].values()] == ["jax", third_backend]
    assert parity["verdict_kind"] == "within rounding noise" and "exact" in parity["tiers"]


def test_study_framework_from_the_registry(third_backend):
    assert JobOptions(frameworks=("torch", "jax")).study_framework() == "torch"  # starts faster than JAX
    assert JobOptions(frameworks=("jax", "torch")).study_framework() == "torch"
    assert JobOptions(frameworks=("jax", third_backend)).study_framework() == third_backend  # cost 0.5 s
    referee = [n for n in backends.names() if backends.info(n).float64_only]
    if referee:  # a float64 referee only when alone
        assert JobOptions(frameworks=("jax", referee[0])).study_framework() == "jax"
        assert JobOptions(frameworks=(referee[0],)).study_framework() == referee[0]


def test_estimate_from_registered_costs(third_backend):
    lab = get_lab("xor_mlp")
    work = flops_per_step(lab) / WORK_FLOPS
    alone = estimate_seconds(lab, JobOptions(frameworks=(third_backend,), steps=1000))
    assert alone == pytest.approx(0.5 + 1000 * (50e-6 + work))
    pair = estimate_seconds(lab, JobOptions(frameworks=("jax", third_backend), steps=1000))
    jax_cost = backends.info("jax").cost
    # both runs and the one-ulp twin in the cheaper of the two; no native run (neither is the course's)
    assert pair == pytest.approx(alone + jax_cost[0] + 1000 * (jax_cost[1] + work) + alone)


def test_thread_counts_follow_the_policy(third_backend):
    opts = JobOptions(frameworks=("torch", "jax", third_backend))
    assert thread_counts("xor", opts) == {"torch": 1}  # only per-task backends are set
    assert thread_counts("mnist", JobOptions(frameworks=("torch",), threads="3")) == {"torch": 3}
    assert thread_counts("mnist", JobOptions(frameworks=("torch",), busy=True)) == {"torch": 1}
    assert thread_counts("mnist", JobOptions(frameworks=("torch",), device="gpu")) == {}


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_live_progress_on_a_terminal(tmp_path, monkeypatch):
    from harness.report import compute, run_job

    real = compute.compute_lab

    def slow(lab, opts):  # long enough for the live line's one-second tick
        time.sleep(1.3)
        return real(lab, opts)

    monkeypatch.setattr(compute, "compute_lab", slow)
    out, err = io.StringIO(), Terminal()
    results = run_job(JobOptions(out=tmp_path / "r", labs=("xor_mlp",), steps=20, init_study=False, html=False),
                      out=out, err=err)
    assert results["job"]["status"] == "complete"
    assert "report  xor_mlp 0:01 (about 0:0" in err.getvalue() and "ETA " in err.getvalue()
    assert err.getvalue().endswith("\r\033[K")  # erased at the end
    assert "[ 1/1] xor_mlp" in out.getvalue()  # the log lines on stdout
