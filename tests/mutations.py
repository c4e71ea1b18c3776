"""Deliberate porting bugs for the mutation suite (``tests/test_mutations.py``) and its measured table
(``benchmarks/parity_mutations.py``, ``docs/parity.md``): each a monkeypatch of one backend's functions, a
test-only hook, never a user option.

Each :class:`Mutation` names the backend it breaks, the lab (and lab overrides) it shows on, the patch, and what
the exact tier must name (a regex on its localisation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import optax
import pytest
import torch
import torch.nn.functional as F

from jax_impl import manual as jax_manual
from jax_impl import models as jax_models
from torch_impl import models as torch_models

SELU_ALPHA = 1.6732632423543772848170429916717


def _wrap_optimizer(module: object, change: Callable) -> Callable[[pytest.MonkeyPatch], None]:
    """A patch of ``module.make_optimizer`` that builds the optimizer from ``change(opt)`` instead."""
    def patch(mp: pytest.MonkeyPatch) -> None:
        original = module.make_optimizer
        mp.setattr(module, "make_optimizer", lambda opt, *a, **k: change(original, opt, *a, **k))
    return patch


def _lr(factor: float) -> Callable:
    return lambda original, opt, *a, **k: original(dataclasses.replace(opt, lr=opt.lr * factor), *a, **k)


def _jax_optimizer(build: Callable) -> Callable:
    return lambda original, opt: build(opt)


def _bn_call(biased_running_var: bool = False, eval_batch_stats: bool = False) -> Callable:
    """``jax_impl.models.BatchNorm.__call__`` with one of two bugs."""
    def call(self: jax_models.BatchNorm, x: jax.Array, train: bool) -> jax.Array:
        if train or eval_batch_stats:
            mean, var = x.mean(0), x.var(0)
            if train:
                n, m = x.shape[0], self.momentum
                unbiased = var if biased_running_var else var * n / (n - 1)
                self.mean.set_value((1 - m) * self.mean.get_value() + m * mean)
                self.var.set_value((1 - m) * self.var.get_value() + m * unbiased)
        else:
            mean, var = self.mean.get_value(), self.var.get_value()
        return (x - mean) / jnp.sqrt(var + self.eps) * self.scale.get_value() + self.bias.get_value()
    return lambda mp: mp.setattr(jax_models.BatchNorm, "__call__", call)


def _after_init(cls: type, change: Callable) -> Callable[[pytest.MonkeyPatch], None]:
    """A patch of ``cls.__init__`` that calls ``change(self)`` after the original."""
    def patch(mp: pytest.MonkeyPatch) -> None:
        original = cls.__init__

        def init(self: object, *a: object, **k: object) -> None:
            original(self, *a, **k)
            change(self)
        mp.setattr(cls, "__init__", init)
    return patch


def _torch_bn_momentum(module: torch_models.MLP) -> None:
    for bn in module.bn:
        bn.momentum = 0.11


def _torch_dropout(module: torch_models.MLP) -> None:
    module.spec = dataclasses.replace(module.spec, dropout=0.31)


def _activation(module: object, name: str, fn: Callable) -> Callable[[pytest.MonkeyPatch], None]:
    return lambda mp: mp.setitem(module.ACTIVATIONS, name, fn)


def _manual_bias_sum(mp: pytest.MonkeyPatch) -> None:
    original = jax_manual.backward

    def backward(params: dict, x: jax.Array, *a: object) -> tuple:
        grads, loss = original(params, x, *a)
        return {k: g * x.shape[0] if k.endswith("/bias") else g for k, g in grads.items()}, loss
    mp.setattr(jax_manual, "backward", backward)


def _bce_unclamped(mp: pytest.MonkeyPatch) -> None:
    @jax.custom_vjp
    def bce(p: jax.Array, y: jax.Array) -> jax.Array:
        return -(y * jnp.log(p) + (1 - y) * jnp.log(1 - p))

    bce.defvjp(lambda p, y: (bce(p, y), (p, y)), jax_models._bce_bwd)
    mp.setattr(jax_models, "binary_cross_entropy", bce)


def _torch_kernel_untransposed(mp: pytest.MonkeyPatch) -> None:
    original = torch_models.set_params

    def set_params(module: torch_models.MLP, params: dict, state: dict) -> None:
        original(module, params, state)
        with torch.no_grad():  # the square 256x256 layer loaded as [in, out], not transposed to torch's [out, in]
            module.dense[1].weight.copy_(torch.as_tensor(params["dense1/kernel"]))
    mp.setattr(torch_models, "set_params", set_params)


@dataclass(frozen=True)
class Mutation:
    """A porting bug: ``patch`` injects it into ``backend``; the exact tier must name something matching
    ``expect`` (a regex on its localisation, e.g. "dense\\d/kernel update at step 0")."""

    name: str
    backend: str
    lab: str
    patch: Callable[[pytest.MonkeyPatch], None]
    expect: str
    overrides: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return self.name


RELU = "mnist_relu_xavier"
BN = "mnist_batchnorm"
MUTATIONS = (
    Mutation("adam eps inside the square root", "jax", RELU, _wrap_optimizer(jax_models, _jax_optimizer(
        lambda o: optax.adam(o.lr, b1=o.betas[0], b2=o.betas[1], eps=0.0, eps_root=o.epsilon))),
        r"kernel update at step 0"),
    Mutation("lr x 0.99", "torch", "xor_mlp", _wrap_optimizer(torch_models, _lr(0.99)), r"update at step 0"),
    Mutation("lr x (1 - 1e-6)", "jax", RELU, _wrap_optimizer(jax_models, _lr(1 - 1e-6)), r"update at step 0"),
    Mutation("batch-norm running variance biased", "jax", BN, _bn_call(biased_running_var=True),
             r"bn\d/var running statistic, after step 0"),
    Mutation("batch-norm momentum 0.11", "torch", BN, _after_init(torch_models.MLP, _torch_bn_momentum),
             r"bn\d/(mean|var) running statistic, after step 0"),
    Mutation("dropout rate 0.31", "torch", RELU, _after_init(torch_models.MLP, _torch_dropout),
             r"training loss at step 0", {"dropout": 0.3}),
    Mutation("RMSprop eps inside the square root", "jax", RELU, _wrap_optimizer(jax_models, _jax_optimizer(
        lambda o: optax.rmsprop(o.lr, decay=o.alpha, eps=o.epsilon, eps_in_sqrt=True))),
        r"update at step 0", {"optimizer_name": "rmsprop", "lr": 0.001}),
    Mutation("Adadelta rho 0.95", "jax", RELU, _wrap_optimizer(jax_models, _jax_optimizer(
        lambda o: optax.adadelta(o.lr, rho=0.95, eps=o.epsilon))),
        r"update at step 0", {"optimizer_name": "adadelta", "lr": 1.0}),
    Mutation("decoupled weight decay 1e-5", "jax", BN, _wrap_optimizer(jax_models, _jax_optimizer(
        lambda o: optax.adamw(o.lr, b1=o.betas[0], b2=o.betas[1], eps=o.epsilon, weight_decay=1e-5))),
        r"update at step 0"),
    Mutation("SELU scale 1.0507 (five digits)", "torch", RELU, _activation(
        torch_models, "selu", lambda x: 1.0507 * F.elu(x, SELU_ALPHA)), r"training loss at step 0",
        {"activation": "selu"}),
    Mutation("leaky ReLU slope 0.02", "jax", RELU, _activation(
        jax_models, "leaky_relu", lambda x: jax.nn.leaky_relu(x, 0.02)), r"training loss at step 0",
        {"activation": "leaky_relu"}),
    Mutation("batch-norm eps 1e-3 (Flax's default)", "jax", BN,
             _after_init(jax_models.BatchNorm, lambda bn: setattr(bn, "eps", 1e-3)), r"training loss at step 0"),
    Mutation("batch statistics in eval mode", "jax", BN, _bn_call(eval_batch_stats=True), r"^eval/"),
    Mutation("hand-written bias gradient summed, not averaged", "jax", "xor_backprop_manual", _manual_bias_sum,
             r"dense\d/bias gradient at step 0"),
    Mutation("BCE without the -100 clamp", "jax", "xor_perceptron", _bce_unclamped, r"training loss at step 1",
             {"lr": 300.0}),
    Mutation("kernel not transposed on import", "torch", RELU, _torch_kernel_untransposed,
             r"training loss at step 0"),
)
