"""Hand-written backprop against jax.grad and torch.autograd, in float64, at several parameter points."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import torch

from harness.data.datasets import xor_data
from harness.labs import Model
from harness.weights import init_params
from jax_impl import manual as jmanual
from torch_impl import manual as tmanual


@pytest.fixture(autouse=True)
def _x64():
    with jax.enable_x64(True):
        yield

CASES = [  # (loss, sizes, targets): the XOR lecture's BCE net and lab-08_4's squared-error MNIST-shaped net
    ("manual_bce", (2, 2, 1), "xor"),
    ("manual_squared", (784, 30, 10), "labels"),
    ("manual_squared", (6, 5, 4, 3), "labels"),
]


def _point(sizes: tuple[int, ...], seed: int) -> tuple[dict, np.ndarray, np.ndarray, str]:
    params = {k: v.astype(np.float64) * 2.0 for k, v in init_params(Model(sizes), seed, "float64").items()}
    rng = np.random.default_rng(seed)
    if sizes[0] == 2:
        x, y = xor_data(np.float64)
    else:
        x = rng.random((12, sizes[0]))
        y = rng.integers(0, sizes[-1], 12).astype(np.int32)
    return params, x, y, "float64"


def _scale(grads: dict, n: int) -> dict:
    """The lectures' update directions: weights batch-summed (n x mean gradient), biases batch-mean."""
    return {k: v / n if k.endswith("kernel") else v for k, v in grads.items()}


@pytest.mark.parametrize("loss,sizes,kind", CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_torch_manual_gradients_match_autograd(loss, sizes, kind, seed):
    params, x, y, _ = _point(sizes, seed)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    tx = torch.tensor(x)
    ty = tmanual.targets(loss, torch.tensor(y), sizes[-1], torch.float64)
    grads, _ = tmanual.backward(tp, tx, ty, loss, eps=0.0)
    auto = torch.autograd.grad(tmanual.loss_value(loss, tmanual.forward(tp, tx)[1][-1], ty), list(tp.values()))
    for key, a in zip(tp, auto):
        np.testing.assert_allclose(_scale(grads, len(x))[key].detach().numpy(), a.numpy(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("loss,sizes,kind", CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_jax_manual_gradients_match_jax_grad(loss, sizes, kind, seed):
    params, x, y, _ = _point(sizes, seed)
    jp = {k: jax.numpy.asarray(v) for k, v in params.items()}
    jy = jmanual.targets(loss, jax.numpy.asarray(y), sizes[-1], jax.numpy.float64)
    grads, _ = jax.jit(jmanual.backward, static_argnums=3)(jp, jax.numpy.asarray(x), jy, loss, 0.0)
    auto = jax.jit(jax.grad(lambda p: jmanual.loss_value(loss, jmanual.forward(p, x)[1][-1], jy)))(jp)
    for key in jp:
        np.testing.assert_allclose(np.asarray(_scale(grads, len(x))[key]), np.asarray(auto[key]), rtol=1e-10,
                                   atol=1e-14)


def test_lecture_epsilon_is_the_only_departure_from_the_gradient():
    params, x, y, _ = _point((2, 2, 1), 0)
    tp = {k: torch.tensor(v) for k, v in params.items()}
    exact, _ = tmanual.backward(tp, torch.tensor(x), torch.tensor(y), "manual_bce", eps=0.0)
    lecture, _ = tmanual.backward(tp, torch.tensor(x), torch.tensor(y), "manual_bce", eps=1e-7)
    for key in exact:
        diff = (exact[key] - lecture[key]).abs().max().item()
        assert 0 < diff < 1e-5
