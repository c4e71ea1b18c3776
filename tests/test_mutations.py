"""The mutation suite: deliberate porting bugs, injected into one backend through monkeypatching (a test-only
hook, not a user option), must each be caught by the exact tier with the tensor (or quantity) that parts named,
and the numpy referee must name the mutated side; the same settings unmutated must pass (no false alarm).

Each runs the exact tier over a short float64 window (``STEPS``) of a small lab, from the float32 run's shared
weights, as ``compare`` does. ``docs/parity.md`` tabulates what each is caught by, where and how far apart.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from harness import backend as registry
from harness.labs import get_lab
from harness.parity.configs import default_configs, run_keys
from harness.parity.exact import exact_tier
from harness.runner import RunOptions, prepare

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")

import jax.numpy as jnp  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from jax_impl import manual as jax_manual  # noqa: E402
from jax_impl import models as jax_models  # noqa: E402
from torch_impl import models as torch_models  # noqa: E402

STEPS = 6
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


def _exact(lab: str, overrides: dict) -> dict:
    options = RunOptions(data="mnist-5k", dtype="float32", weights="shared", mask_mode="shared", steps=STEPS,
                         overrides=overrides)
    prepared = prepare(get_lab(lab), options)
    a, b = default_configs(options)
    return exact_tier(prepared, a, b, run_keys(a, b))


@functools.cache
def _control(lab: str, overrides: tuple) -> dict:
    return _exact(lab, dict(overrides))


def _where(tier: dict) -> str:
    """What the tier named: its localisation, else the first quantity over tolerance."""
    if tier["localised"] is not None:
        return tier["localised"]["what"]
    failed = [(f["first_step_over"], name) for name, f in tier["quantities"].items() if not f["ok"]]
    return min(failed)[1] if failed else ""


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.name)
def test_mutation_is_caught_and_localised(monkeypatch, mutation):
    if not {"torch", "jax"} <= set(registry.names()):
        pytest.skip("needs the torch and jax backends")
    control = _control(mutation.lab, tuple(sorted(mutation.overrides.items())))
    assert control["ok"], (mutation.name, "false alarm on correct code", control["text"])
    mutation.patch(monkeypatch)
    tier = _exact(mutation.lab, mutation.overrides)
    assert not tier["ok"] and tier["text"].startswith("differs: "), (mutation.name, tier["text"])
    assert re.search(mutation.expect, _where(tier)), (mutation.name, tier["text"])
    if tier["referee"] is not None:  # two against one: the referee names the mutated side
        assert tier["referee"]["off"] == mutation.backend, (mutation.name, tier["referee"])
