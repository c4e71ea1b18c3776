"""The course's printed XOR losses, reproduced by torch's native init and by JAX from torch's weights."""

from __future__ import annotations

import math

import pytest

from harness.labs import get_lab
from harness.references import as_dict

XOR_LABS = ("xor_perceptron", "xor_mlp", "xor_wide_deep")


def _check_reference(lab_name: str, result: dict) -> None:
    lab = get_lab(lab_name)
    losses = dict(zip(result["steps"], result["loss"]))
    ref = as_dict(lab.reference)
    for step, expected in ref["loss"].items():
        assert losses[step] == pytest.approx(expected, rel=ref["rtol"]), f"step {step}"
    assert result["final"]["train_accuracy"] == ref["accuracy"]
    if "breakout" in ref:  # the step at which the loss first falls below the threshold, within tolerance
        b = ref["breakout"]
        course_step = b["step"]
        ours = next(s for s, v in sorted(losses.items()) if v < b["below"])
        assert abs(ours - course_step) <= b["tolerance_steps"], ours


@pytest.mark.parametrize("lab", XOR_LABS)
def test_torch_native_init_reproduces_course(run_lab, lab):
    _check_reference(lab, run_lab(lab, "torch", "native"))


@pytest.mark.parametrize("lab", XOR_LABS)
def test_jax_from_torch_init_reproduces_course(run_lab, lab):
    _check_reference(lab, run_lab(lab, "jax", "shared"))


def test_perceptron_cannot_learn_xor(run_lab):
    result = run_lab("xor_perceptron", "torch", "native")
    assert result["final"]["train_loss"] == pytest.approx(math.log(2), rel=1e-6)
    assert result["final"]["train_predictions"] == [0, 0, 0, 0]


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_gates_learns_and_or_not_xor(run_lab, framework):
    acc = run_lab("gates", framework, "native")["final"]["train_accuracy"]
    assert acc["AND"] == 1.0 and acc["OR"] == 1.0
    assert acc["XOR"] < 1.0


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_manual_backprop_learns_xor(run_lab, framework):
    result = run_lab("xor_backprop_manual", framework, "native")
    assert result["final"]["train_accuracy"] == 1.0
    assert result["final"]["train_loss"] < 1e-3
