"""Training runs under a precision policy (``run``/``reproduce --precision``, ``RunSpec.precision``): each backend
trains with its precision learner, its record says the policy, the stored weights are in the policy's dtype, and
what the policy does not cover is a one-line error."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest

from harness.labs import get_lab
from harness.run.runner import RunOptions, execute, prepare, run
from harness.schemas import validate

torch = pytest.importorskip("torch")
pytest.importorskip("jax")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _bf16_exact(a: np.ndarray) -> bool:
    return bool(np.array_equal(a.astype(np.float32).astype(ml_dtypes.bfloat16).astype(np.float64), a))


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_a_reduced_run_says_its_policy_and_validates(framework: str) -> None:
    record = run(get_lab("mnist_batchnorm"), framework, RunOptions(precision="mixed_float16", steps=12))
    assert record["status"] == "ok"
    assert record["precision"]["name"] == "mixed_float16" and record["precision"]["compute"] == "float16"
    assert record["precision"]["loss_scale"]["initial"] == 2.0**16
    assert record["config"]["precision"] == "mixed_float16" and record["dtype"] == "float32"
    assert np.isfinite(record["loss"]).all()
    validate("run", record)


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_stored_weights_follow_the_policy(framework: str) -> None:
    """Pure bfloat16 stores bfloat16 weights; mixed_bfloat16 keeps a float32 master copy that drifts off the
    bfloat16 grid; the float32 default run is the plain learner (same losses as without --precision)."""
    lab = get_lab("mnist_softmax")
    prepared = prepare(lab, RunOptions(weights="shared", steps=5))
    kernels = {}
    for precision in ("bfloat16", "mixed_bfloat16"):
        spec = dataclasses.replace(prepared.spec, precision=precision)
        kernels[precision] = execute(prepared, framework, spec).params["dense0/kernel"]
    assert _bf16_exact(kernels["bfloat16"])
    assert not _bf16_exact(kernels["mixed_bfloat16"])
    plain = execute(prepared, framework).losses
    as_float32 = execute(prepared, framework, dataclasses.replace(prepared.spec, precision="float32")).losses
    np.testing.assert_array_equal(plain, as_float32)


def test_jax_executions_agree_under_a_policy() -> None:
    """The fused (lax.scan) and per-step executions run the same precision step: the same losses."""
    prepared = prepare(get_lab("mnist_dropout"), RunOptions(weights="shared", mask_mode="shared", steps=6,
                                                            precision="mixed_bfloat16"))
    fused = execute(prepared, "jax", dataclasses.replace(prepared.spec, execution="fused")).losses
    per_step = execute(prepared, "jax", dataclasses.replace(prepared.spec, execution="per_step")).losses
    np.testing.assert_allclose(fused, per_step, rtol=1e-6)


def test_precision_float64_is_the_float64_dtype() -> None:
    by_precision = run(get_lab("xor_mlp"), "torch", RunOptions(precision="float64", steps=50, weights="shared"))
    by_dtype = run(get_lab("xor_mlp"), "torch", RunOptions(dtype="float64", steps=50, weights="shared"))
    assert by_precision["loss"] == by_dtype["loss"] and by_precision["precision"]["name"] == "float64"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize(("args", "message"), [
    (("run", "xor_backprop_manual", "--framework", "torch", "--precision", "bfloat16"), "covers the module labs"),
    (("run", "xor_mlp", "--framework", "numpy", "--precision", "bfloat16"), "float64 only"),
    (("run", "xor_mlp", "--framework", "torch", "--precision", "bf16"), "unknown precision 'bf16'"),
    (("run", "xor_mlp", "--framework", "torch", "--precision", "mixed_bfloat16", "--execution", "compiled"),
     "in execution eager"),
    (("run", "xor_mlp", "--framework", "torch", "--precision", "bfloat16", "--dtype", "float64"), "drop dtype"),
    (("run", "mnist_dropout", "--framework", "torch", "--precision", "bfloat16", "--devices", "2"),
     "data-parallel training runs float32 or float64"),
    (("reproduce", "--labs", "mnist_backprop_manual", "--precision", "bfloat16"), "no lab left"),
])
def test_what_a_policy_does_not_cover_is_one_line(args: tuple[str, ...], message: str) -> None:
    done = _cli(*args)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert message in lines[-1] and "Traceback" not in done.stderr


def test_run_config_reruns_the_precision(tmp_path) -> None:
    out = tmp_path / "run.json"
    done = _cli("run", "xor_mlp", "--framework", "jax", "--precision", "mixed_bfloat16", "--steps", "20", "--quiet",
                "--out", str(out))
    assert done.returncode == 0, done.stderr
    again = _cli("run", "--config", str(out), "--quiet", "--out", str(tmp_path / "again.json"))
    assert again.returncode == 0, again.stderr
    first, second = (json.loads(p.read_text()) for p in (out, tmp_path / "again.json"))
    assert second["precision"] == first["precision"] and second["loss"] == first["loss"]
    validate("run", second)


def test_reproduce_leaves_out_the_hand_written_labs() -> None:
    done = _cli("reproduce", "--labs", "mnist_backprop_manual,mnist_softmax", "--precision", "bfloat16",
                "--steps", "3", "--frameworks", "torch")
    assert done.returncode == 0, done.stderr
    assert "left out: mnist_backprop_manual" in done.stderr
    assert "mnist_softmax" in done.stdout and "bfloat16 on cpu" in done.stdout
