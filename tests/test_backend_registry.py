"""The backend registry: harness/ imports no framework; execution defaults and aliases; thread policy; a third
registered backend is offered by the command line and runs."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import pytest

import harness
from harness import backend as backends
from harness.commands.cli import main
from harness.run import machine


def _harness_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(harness.__path__, "harness.")
                  if m.name != "harness.__main__")


def test_no_harness_module_imports_a_framework():
    modules = _harness_modules()
    assert "harness.commands.cli" in modules and "harness.run.runner" in modules and len(modules) > 10
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "    bad = [f for f in ('torch', 'jax', 'flax', 'optax') if f in sys.modules]\n"
            "    assert not bad, (name, bad)\n"
            "from harness.commands.cli import build_parser\n"
            "build_parser().format_help()\n"
            "assert 'torch' not in sys.modules and 'jax' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_execution_defaults_and_old_spellings():
    for name in backends.names():
        assert backends.resolve_execution(name, None) == backends.info(name).executions[0]
    assert backends.resolve_execution("torch", "fused") == "eager"  # the old spelling, kept for a release
    assert backends.resolve_execution("torch", "per_step") == "eager"
    assert backends.resolve_execution("jax", "per_step") == "per_step"
    with pytest.raises(backends.BackendError, match="jax has no execution 'compiled'"):
        backends.resolve_execution("jax", "compiled")


def test_thread_policy_and_restore():
    assert machine.threads_for("jax", "mnist", busy=False) is None  # fixed at start-up: recorded only
    assert machine.threads_for("torch", "xor", busy=False) == 1
    assert machine.threads_for("torch", "mnist", busy=True) == 1
    assert machine.threads_for("torch", "mnist", busy=False, setting="3") == 3
    assert machine.threads_for("torch", "mnist", busy=False, device="gpu") is None
    torch_backend = backends.load("torch")
    before = torch_backend.thread_count()
    with machine.threads_set("torch", 1):
        assert torch_backend.thread_count() == 1
        assert machine.machine_record("torch")["threads"]["torch"] == 1
    assert torch_backend.thread_count() == before


@pytest.fixture
def third_backend():
    """jax's module registered under a third name, as another backend would be."""
    backends.register(backends.BackendInfo("jax_again", "JAX again", "#000000", "jax_impl.backend",
                                           ("per_step", "fused")))
    yield "jax_again"
    backends.unregister("jax_again")


def test_a_third_backend_is_offered_and_runs(third_backend, tmp_path, capsys):
    out = tmp_path / "run.json"
    assert main(["run", "xor_mlp", "--framework", third_backend, "--steps", "20", "--quiet", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["framework"] == third_backend and record["execution"] == "per_step"
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main(["run", "--help"])
    assert done.value.code == 0
    assert "{" + ",".join(backends.names()) + "}" in capsys.readouterr().out  # every registered one, jax_again too


@pytest.fixture
def toy_backend():
    """A backend the harness has never heard of: the float64 numpy referee's module under a test-only name."""
    info = backends.register(backends.BackendInfo("toy", "Toy (numpy)", "#8c564b", "harness.referee.backend",
                                                  ("loop",), cost=(0.1, 1e-4)))
    yield info.name
    backends.unregister(info.name)


def test_a_third_backend_runs_compare_on_every_pair_and_a_report(toy_backend, tmp_path):
    """Issue 9: registered from the test alone, the new backend runs, compares with every other (both tiers'
    verdicts name no difference) and appears in a one-lab report beside torch and JAX."""
    sides = ("torch", "jax", toy_backend)
    for i, a in enumerate(sides):
        for b in sides[i + 1:]:
            out = tmp_path / f"{a}-{b}.json"
            args = ["compare", "xor_mlp", "--a", a, "--b", b, "--steps", "40", "--dtype", "float64", "--quiet",
                    "--out", str(out)]
            assert main(args) == 0, (a, b)
            result = json.loads(out.read_text())
            assert set(result["runs"]) == {a, b}
            assert result["tiers"]["exact"]["ok"] and result["max_rel_diff"] < 1e-12, (a, b, result["verdict"])
    folder = tmp_path / "report"
    assert main(["report", "--labs", "xor_mlp", "--frameworks", ",".join(sides), "--steps", "40",
                 "--no-init-study", "--quiet", "--out", str(folder)]) == 0
    results = json.loads((folder / "results.json").read_text())
    lab = results["labs"]["xor_mlp"]
    assert set(lab["runs"]) == set(sides) and lab["status"] == "ok"
    assert "Toy (numpy)" in (folder / "report.md").read_text()
