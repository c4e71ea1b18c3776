"""The command line: outputs, JSON records, one-line errors with exit status 2, determinism."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from harness.commands.cli import main
from harness.labs import get_lab
from harness.run.runner import RunOptions, run


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    return err[0]


def test_list_names_every_lab(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("gates", "xor_perceptron", "xor_mlp", "xor_wide_deep", "xor_backprop_manual", "mnist_dropout"):
        assert name in out


@pytest.mark.parametrize("argv,fragment", [
    (["run", "xor_mlq", "--framework", "jax"], "unknown lab 'xor_mlq' (did you mean xor_mlp?)"),
    (["run", "xor_mlp", "--framework", "mxnet"], "unknown framework 'mxnet'"),
    (["run", "xor_mlp", "--framework", "jax", "--dtype", "float16"], "unknown dtype 'float16'"),
    (["run", "xor_mlp", "--framework", "jax", "--weights", "random"], "unknown weight source 'random'"),
    (["run", "xor_mlp", "--framework", "jax", "--device", "gpu"], "device 'gpu' is not present for jax"),
    (["run", "xor_mlp", "--framework", "torch", "--device", "tpu"], "device 'tpu' is not present for torch"),
    (["run", "xor_mlp", "--framework", "jax", "--steps", "0"], "--steps: must be at least 1"),
    (["run", "xor_mlp", "--framework", "jax", "--lr", "-1"], "learning rate must be positive"),
    (["run", "xor_mlp", "--framework", "jax", "--activation", "swish"], "unknown activation 'swish'"),
    (["compare", "nope"], "unknown lab 'nope'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_input_gives_one_line_and_exit_2(capsys, argv, fragment):
    assert main(argv) == 2
    assert fragment in _error_line(capsys)


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_divergence_names_the_step_and_keeps_the_log(tmp_path, capsys, framework):
    out = tmp_path / "diverged.json"
    argv = ["run", "mnist_relu_normal", "--framework", framework, "--data", "mnist-5k", "--steps", "60",
            "--lr", "1e12", "--optimizer", "sgd", "--log-every", "1", "--out", str(out)]
    assert main(argv) == 2
    line = _error_line(capsys)
    assert "loss became" in line and " at step " in line
    step = int(line.split(" at step ")[1].split(";")[0])
    record = json.loads(out.read_text())
    assert record["status"] == "diverged"
    assert record["steps"] == list(range(step))
    assert all(np.isfinite(record["loss"]))


def test_run_writes_the_documented_json(tmp_path, capsys):
    out = tmp_path / "run.json"
    assert main(["run", "xor_mlp", "--framework", "jax", "--log-every", "1000", "--out", str(out), "--quiet"]) == 0
    record = json.loads(out.read_text())
    for key in ("lab", "framework", "device", "dtype", "weights", "seed", "steps", "loss", "final", "timing"):
        assert key in record
    assert record["steps"] == list(range(0, 10001, 1000))
    assert len(record["loss"]) == 11
    assert record["final"]["train_accuracy"] == 1.0
    assert record["timing"]["steps_per_s"] > 0
    assert "steps/s" in capsys.readouterr().out


def test_compare_writes_both_runs_and_parity(tmp_path):
    out = tmp_path / "cmp.json"
    assert main(["compare", "xor_mlp", "--steps", "500", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert set(record["runs"]) == {"torch", "jax"}
    for key in ("max_abs_diff", "max_rel_diff", "first_divergence_step", "quantities", "tiers", "verdict"):
        assert key in record
    assert record["max_rel_diff"] < 1e-4
    assert len(record["per_step"]["rel_diff"]) == 500


def test_existing_output_survives_a_failed_run(tmp_path, capsys):
    out = tmp_path / "keep.json"
    out.write_text('{"kept": true}')
    assert main(["run", "xor_mlp", "--framework", "jax", "--dtype", "bad", "--out", str(out)]) == 2
    assert json.loads(out.read_text()) == {"kept": True}


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_same_seed_gives_bit_identical_trajectories(framework):
    opts = RunOptions(log_every=1, steps=3000)
    a = run(get_lab("xor_wide_deep"), framework, opts)
    b = run(get_lab("xor_wide_deep"), framework, opts)
    assert a["loss"] == b["loss"]
    c = run(get_lab("xor_wide_deep"), framework, RunOptions(log_every=1, steps=3000, seed=1))
    assert a["loss"] != c["loss"]


def test_module_entry_point_reports_errors_without_traceback():
    proc = subprocess.run([sys.executable, "-m", "harness", "run", "nope", "--framework", "jax"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr
