"""The torch eager loop calls each optimizer's own algorithm directly (no ``zero_grad``/``step`` wrappers): it must
train bit for bit as ``optimizer.zero_grad(); loss.backward(); optimizer.step()`` does, for every optimizer and
both dtypes; and the loop's bookkeeping (losses kept per step, evaluations between segments) loses nothing."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from harness.labs import OPTIMIZERS, get_lab
from harness.run.runner import RunOptions, prepare

torch = pytest.importorskip("torch")

from torch_impl import models  # noqa: E402
from torch_impl import train as torch_train  # noqa: E402

LR = {"sgd": 0.1, "adadelta": 1.0, "rmsprop": 1e-3, "adam": 1e-3}


def _trained(spec, dtype: torch.dtype, through_optimizer: bool, steps: int) -> tuple[np.ndarray, dict]:
    learner = torch_train._ModuleLearner(spec, dtype, torch.device("cpu"))
    x = torch.tensor(spec.train_x, dtype=dtype)
    y = torch_train._to(spec.train_y, torch.device("cpu"), dtype)
    losses = []
    for s in range(steps):
        xb, yb = (x, y) if spec.batches is None else (x[spec.batches[s]], y[spec.batches[s]])
        if through_optimizer:
            learner.opt.zero_grad()
            loss = learner.loss_fn(learner.module(xb, None), yb)
            loss.backward()
            learner.opt.step()
            losses.append(loss.item())
        else:
            losses.append(learner.step(xb, yb, None).item())
    return np.array(losses), models.get_params(learner.module)[0]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("lab,optimizer", [("xor_mlp", None), ("gates", None)]
                         + [("mnist_batchnorm", o) for o in OPTIMIZERS])
def test_direct_optimizer_call_is_bit_identical_to_optimizer_step(lab, optimizer, dtype):
    overrides = {} if optimizer is None else {"optimizer_name": optimizer, "lr": LR[optimizer]}
    spec = prepare(get_lab(lab), RunOptions(weights="shared", dtype=dtype, steps=12, overrides=overrides)).spec
    a, pa = _trained(spec, torch_train.DTYPES[dtype], True, 12)
    b, pb = _trained(spec, torch_train.DTYPES[dtype], False, 12)
    assert np.array_equal(a, b)
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)


def test_segmented_loop_keeps_every_loss_and_evaluation():
    prepared = prepare(get_lab("mnist_batchnorm"), RunOptions(weights="shared", dtype="float64", steps=300))
    spec = prepared.spec
    result = torch_train.train(spec)
    assert result.losses.shape == (300,) and np.isfinite(result.losses).all()
    assert sorted(result.outputs) == sorted(spec.eval_steps) == [125, 250, 300]
    # the same steps one by one, evaluated at the same points
    learner = torch_train._ModuleLearner(spec, torch.float64, torch.device("cpu"))
    x, y = (torch_train._to(a, torch.device("cpu"), torch.float64) for a in (spec.train_x, spec.train_y))
    by_hand = [learner.step(x[spec.batches[s]], y[spec.batches[s]], None).item() for s in range(300)]
    assert np.array_equal(result.losses, np.array(by_hand))


def test_full_batch_loop_reports_progress_and_every_step():
    seen: list[int] = []
    spec = dataclasses.replace(prepare(get_lab("xor_mlp"), RunOptions(weights="shared", steps=2500)).spec,
                               progress=lambda done, total: seen.append(done))
    result = torch_train.train(spec)
    assert seen == [1000, 2000] and result.losses.shape == (2500,)
    learner = torch_train._ModuleLearner(spec, torch.float32, torch.device("cpu"))
    x, y = torch.tensor(spec.train_x), torch.tensor(spec.train_y)
    assert np.array_equal(result.losses, np.array([learner.step(x, y, None).item() for _ in range(2500)]))
