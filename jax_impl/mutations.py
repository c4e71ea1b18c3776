"""Planted porting bugs in the JAX backend, for the mutation suite (mirrors ``torch_impl/mutations.py``; see
``harness.selfcheck``): each a patch of one of this package's functions, a test-only hook, never a user option."""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from harness.selfcheck import Mutation, Patch, activation, after_init, scaled_lr, wrap_optimizer
from jax_impl import manual, models, rbm

RELU = "mnist_relu_xavier"
BN = "mnist_batchnorm"
RBM = "mnist_rbm_pretrain"


def _optimizer(build: Callable) -> Callable:
    return lambda original, opt: build(opt)


def _bn_call(biased_running_var: bool = False, eval_batch_stats: bool = False) -> Callable[[Patch], None]:
    """``models.BatchNorm.__call__`` with one of two bugs."""
    def call(self: models.BatchNorm, x: jax.Array, train: bool) -> jax.Array:
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
    return lambda mp: mp.setattr(models.BatchNorm, "__call__", call)


def _manual_bias_sum(mp: Patch) -> None:
    original = manual.backward

    def backward(params: dict, x: jax.Array, *a: object) -> tuple:
        grads, loss = original(params, x, *a)
        return {k: g * x.shape[0] if k.endswith("/bias") else g for k, g in grads.items()}, loss
    mp.setattr(manual, "backward", backward)


def _bce_unclamped(mp: Patch) -> None:
    @jax.custom_vjp
    def bce(p: jax.Array, y: jax.Array) -> jax.Array:
        return -(y * jnp.log(p) + (1 - y) * jnp.log(1 - p))

    bce.defvjp(lambda p, y: (bce(p, y), (p, y)), models._bce_bwd)
    mp.setattr(models, "binary_cross_entropy", bce)


def _init_scheme(change: Callable) -> Callable[[Patch], None]:
    """A patch of the declared weight distribution as this package's native init reads it: ``change(original,
    scheme, fan_in, fan_out)`` in place of ``harness.weights.weight_distribution``."""
    def patch(mp: Patch) -> None:
        original = models.weight_distribution
        mp.setattr(models, "weight_distribution", lambda *a: change(original, *a))
    return patch


def _std_as_variance(original: Callable, scheme: str, fan_in: int, fan_out: int) -> tuple[str, float]:
    """Xavier normal's std = sqrt(2 / (n_in + n_out)) read as the variance (the course slide's Var(W) =
    sqrt(2 / (n_in + n_out))): std = (2 / (n_in + n_out)) ** 0.25."""
    kind, scale = original(scheme, fan_in, fan_out)
    return (kind, math.sqrt(scale)) if scheme == "xavier_normal" else (kind, scale)


def _truncated(original: Callable, scheme: str, fan_in: int, fan_out: int) -> tuple[str, float]:
    """He normal through Flax's own ``he_normal`` convention: truncated at two std, rescaled to the variance."""
    kind, scale = original(scheme, fan_in, fan_out)
    return ("truncated_normal", scale / 0.87962566103423978) if scheme == "he_normal" else (kind, scale)
def _visible_bias_descends(mp: Patch) -> None:
    original = rbm.update

    def update(params: dict, stats: dict, lr: float) -> dict:
        return {**original(params, stats, lr), "visible_bias": params["visible_bias"] - lr * stats["visible_bias"]}
    mp.setattr(rbm, "update", update)


def _logits_bfloat16(mp: Patch) -> None:
    """The logits rounded through bfloat16 before the loss, in float32 runs (float64 runs untouched)."""
    original = models.loss_fn

    def loss_fn(name: str, out: jax.Array, y: jax.Array) -> jax.Array:
        return original(name, out.astype(jnp.bfloat16).astype(out.dtype) if out.dtype == jnp.float32 else out, y)
    mp.setattr(models, "loss_fn", loss_fn)


def _fused_carry_half(mp: Patch) -> None:
    """``fused`` execution alone (the ``lax.scan`` path) starts from its carry rounded through float16, in float32
    runs: ``per_step`` and every float64 run are untouched."""
    from jax_impl import train

    original = train._run_fused

    def run_fused(spec: object, body: Callable, carry: object, *a: object) -> tuple:
        half = jax.tree.map(lambda v: v.astype(jnp.float16).astype(v.dtype) if v.dtype == jnp.float32 else v, carry)
        return original(spec, body, half, *a)
    mp.setattr(train, "_run_fused", run_fused)


MUTATIONS = (
    Mutation("adam eps inside the square root", "jax", RELU, wrap_optimizer(models, _optimizer(
        lambda o: optax.adam(o.lr, b1=o.betas[0], b2=o.betas[1], eps=0.0, eps_root=o.epsilon))),
        r"kernel update at step 0"),
    Mutation("lr x (1 - 1e-6)", "jax", RELU, wrap_optimizer(models, scaled_lr(1 - 1e-6)), r"update at step 0"),
    Mutation("batch-norm running variance biased", "jax", BN, _bn_call(biased_running_var=True),
             r"bn\d/var running statistic, after step 0"),
    Mutation("RMSprop eps inside the square root", "jax", RELU, wrap_optimizer(models, _optimizer(
        lambda o: optax.rmsprop(o.lr, decay=o.alpha, eps=o.epsilon, eps_in_sqrt=True))),
        r"update at step 0", {"optimizer_name": "rmsprop", "lr": 0.001}),
    Mutation("Adadelta rho 0.95", "jax", RELU, wrap_optimizer(models, _optimizer(
        lambda o: optax.adadelta(o.lr, rho=0.95, eps=o.epsilon))),
        r"update at step 0", {"optimizer_name": "adadelta", "lr": 1.0}),
    Mutation("decoupled weight decay 1e-5", "jax", BN, wrap_optimizer(models, _optimizer(
        lambda o: optax.adamw(o.lr, b1=o.betas[0], b2=o.betas[1], eps=o.epsilon, weight_decay=1e-5))),
        r"update at step 0"),
    Mutation("leaky ReLU slope 0.02", "jax", RELU, activation(
        models, "leaky_relu", lambda x: jax.nn.leaky_relu(x, 0.02)), r"training loss at step 0",
        {"activation": "leaky_relu"}),
    Mutation("batch-norm eps 1e-3 (Flax's default)", "jax", BN,
             after_init(models.BatchNorm, lambda bn: setattr(bn, "eps", 1e-3)), r"training loss at step 0"),
    Mutation("batch statistics in eval mode", "jax", BN, _bn_call(eval_batch_stats=True), r"^eval/"),
    Mutation("hand-written bias gradient summed, not averaged", "jax", "xor_backprop_manual", _manual_bias_sum,
             r"dense\d/bias gradient at step 0"),
    Mutation("BCE without the -100 clamp", "jax", "xor_perceptron", _bce_unclamped, r"training loss at step 1",
             {"lr": 300.0}),
    Mutation("Xavier normal std read as a variance (native init)", "jax", RELU, _init_scheme(_std_as_variance),
             r"dense\d/kernel", {"init": "xavier_normal"}, tier="init"),
    Mutation("He normal as Flax's he_normal, truncated (native init)", "jax", RELU, _init_scheme(_truncated),
             r"dense\d/kernel", {"init": "he_normal"}, tier="init"),
    Mutation("RBM visible-bias update with the wrong sign", "jax", RBM, _visible_bias_descends,
             r"^pretraining rbm0/visible_bias update at step 0$"),
    # float32 only, or one execution mode only: the float64 exact tier passes them; the statistical tier must catch them
    Mutation("logits rounded through bfloat16 into the loss function (float32 runs)", "jax", RELU, _logits_bfloat16,
             r"^step \d+$", tier="statistical"),
    Mutation("lax.scan (fused) path starts from a float16-rounded carry", "jax", RELU, _fused_carry_half,
             r"^step \d+$", tier="statistical", sides=("jax:per_step", "jax:fused")),
    # gradient clipping at norm 1 fires in float64 as much as in float32: the exact tier's to catch
    Mutation("gradient clipping at global norm 1", "jax", RELU, wrap_optimizer(models, lambda original, o: optax.chain(
        optax.clip_by_global_norm(1.0), original(o))), r"update at step 0"),
)
