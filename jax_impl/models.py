"""The lab networks in Flax NNX, built from a declaration; losses and optimizers by the declared name
(mirrors ``torch_impl/models.py``)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from harness.labs import Model, Optimizer, pick
from harness.weights import bias_distribution, weight_distribution

ACTIVATIONS = {
    "sigmoid": jax.nn.sigmoid, "tanh": jnp.tanh, "relu": jax.nn.relu, "leaky_relu": jax.nn.leaky_relu,
    "selu": jax.nn.selu,
}
PRECISION = jax.lax.Precision.HIGHEST  # no silent TF32/bf16 passes on accelerators


class BatchNorm(nnx.Module):
    """Batch norm with torch's running-statistics conventions, which Flax's ``nnx.BatchNorm`` does not offer:
    ``running = (1 - m) * running + m * batch`` and the *unbiased* batch variance in ``running_var``
    (Flax stores the biased one). Normalisation itself uses the biased batch variance, as both do."""

    def __init__(self, width: int, momentum: float, eps: float, dtype: jnp.dtype) -> None:
        self.scale = nnx.Param(jnp.ones(width, dtype))
        self.bias = nnx.Param(jnp.zeros(width, dtype))
        self.mean = nnx.BatchStat(jnp.zeros(width, dtype))
        self.var = nnx.BatchStat(jnp.ones(width, dtype))
        self.momentum, self.eps = momentum, eps

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if train:
            mean, var = x.mean(0), x.var(0)
            n = x.shape[0]
            m = self.momentum
            self.mean.set_value((1 - m) * self.mean.get_value() + m * mean)
            self.var.set_value((1 - m) * self.var.get_value() + m * var * n / (n - 1))
        else:
            mean, var = self.mean.get_value(), self.var.get_value()
        return (x - mean) / jnp.sqrt(var + self.eps) * self.scale.get_value() + self.bias.get_value()


INITIALIZERS = {  # the distributions of ``harness.weights`` (weight_distribution, bias_distribution)
    "uniform": lambda scale: lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -scale, scale),
    "normal": lambda scale: nnx.initializers.normal(scale),
    "truncated_normal": lambda scale: lambda key, shape, dtype: scale * jax.random.truncated_normal(
        key, -2.0, 2.0, shape, dtype),
    "zeros": lambda scale: nnx.initializers.zeros,
}


def _initializer(kind: str, scale: float) -> nnx.Initializer:
    return pick(INITIALIZERS, kind, "initial distribution")(scale)


class MLP(nnx.Module):
    """Dense layers; each hidden one followed by [BatchNorm], activation, [dropout by a given keep-mask]."""

    def __init__(self, model: Model, dtype: jnp.dtype, rngs: nnx.Rngs) -> None:
        self.spec = model
        layers = []
        for fan_in, fan_out in zip(model.sizes[:-1], model.sizes[1:]):
            layers.append(nnx.Linear(
                fan_in, fan_out, kernel_init=_initializer(*weight_distribution(model.init, fan_in, fan_out)),
                bias_init=_initializer(*bias_distribution(model, fan_in)), dtype=dtype, param_dtype=dtype,
                precision=PRECISION, rngs=rngs))
        self.dense = nnx.List(layers)
        widths = model.sizes[1:-1] if model.batchnorm else ()
        self.bn = nnx.List([BatchNorm(w, model.bn_momentum, model.bn_eps, dtype) for w in widths])

    def __call__(self, x: jax.Array, masks: list[jax.Array] | None = None, train: bool = False) -> jax.Array:
        """Outputs for ``x``; ``masks`` are 0/1 keep-masks per hidden layer, applied in training only."""
        act, p = pick(ACTIVATIONS, self.spec.activation, "activation"), self.spec.dropout
        for i, layer in enumerate(self.dense):
            x = layer(x)
            if i < len(self.dense) - 1:
                if len(self.bn):
                    x = self.bn[i](x, train)
                x = act(x)
                if p > 0 and train and masks is not None:
                    x = x * masks[i] / (1 - p)
        return jax.nn.sigmoid(x) if self.spec.output == "sigmoid" else x


def dropout_masks(key: jax.Array, rate: float, batch: int, widths: tuple[int, ...],
                  dtype: jnp.dtype) -> list[jax.Array]:
    """The framework's own dropout draw: a 0/1 keep-mask per hidden layer, each unit kept with probability
    ``1 - rate`` (torch draws its own inside ``F.dropout``; here the key is split once per layer)."""
    keys = jax.random.split(key, len(widths))
    return [jax.random.bernoulli(k, 1 - rate, (batch, w)).astype(dtype) for k, w in zip(keys, widths)]


def build(model: Model, dtype: jnp.dtype, seed: int, params: dict[str, np.ndarray] | None = None,
          state: dict[str, np.ndarray] | None = None) -> MLP:
    """The network with native weights drawn from ``seed``, or with the given shared ``params`` (then nothing is
    drawn: the module is built abstractly and every variable set, which saves compiling the eager random draws)."""
    if params is None:
        return MLP(model, dtype, nnx.Rngs(seed))
    module = nnx.eval_shape(lambda: MLP(model, dtype, nnx.Rngs(seed)))
    state = dict(state or {})
    for i, width in enumerate(model.sizes[1:-1] if model.batchnorm else ()):  # torch's initial statistics
        state.setdefault(f"bn{i}/mean", np.zeros(width))
        state.setdefault(f"bn{i}/var", np.ones(width))
    set_params(module, params, state, dtype)
    return module


def set_params(module: MLP, params: dict[str, np.ndarray], state: dict[str, np.ndarray], dtype: jnp.dtype) -> None:
    """Copy shared-layout weights in (Flax's kernel is [in, out], as the shared layout)."""
    for i, layer in enumerate(module.dense):
        layer.kernel.set_value(jnp.asarray(params[f"dense{i}/kernel"], dtype))
        layer.bias.set_value(jnp.asarray(params[f"dense{i}/bias"], dtype))
    for i, bn in enumerate(module.bn):
        bn.scale.set_value(jnp.asarray(params[f"bn{i}/scale"], dtype))
        bn.bias.set_value(jnp.asarray(params[f"bn{i}/bias"], dtype))
        if f"bn{i}/mean" in state:
            bn.mean.set_value(jnp.asarray(state[f"bn{i}/mean"], dtype))
            bn.var.set_value(jnp.asarray(state[f"bn{i}/var"], dtype))


def get_params(module: MLP) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Weights and batch-norm state in the shared layout."""
    out, state = {}, {}
    for i, layer in enumerate(module.dense):
        out[f"dense{i}/kernel"] = np.asarray(layer.kernel.get_value())
        out[f"dense{i}/bias"] = np.asarray(layer.bias.get_value())
    for i, bn in enumerate(module.bn):
        out[f"bn{i}/scale"] = np.asarray(bn.scale.get_value())
        out[f"bn{i}/bias"] = np.asarray(bn.bias.get_value())
        state[f"bn{i}/mean"] = np.asarray(bn.mean.get_value())
        state[f"bn{i}/var"] = np.asarray(bn.var.get_value())
    return out, state


BCE_EPS = float(np.float32(1e-12))  # torch clamps p (1 - p) at 1e-12 held as a float32 (9.99999996e-13)


@jax.custom_vjp
def binary_cross_entropy(p: jax.Array, y: jax.Array) -> jax.Array:
    """Elementwise BCE of probabilities, as torch computes it: each log term clamped at -100, and the gradient
    ``(p - y) / max(p (1 - p), 1e-12)``, finite where a saturated sigmoid gives p = 0 or 1 exactly."""
    return -(y * jnp.maximum(jnp.log(p), -100.0) + (1 - y) * jnp.maximum(jnp.log(1 - p), -100.0))


def _bce_fwd(p: jax.Array, y: jax.Array) -> tuple[jax.Array, tuple]:
    return binary_cross_entropy(p, y), (p, y)


def _bce_bwd(res: tuple, g: jax.Array) -> tuple[jax.Array, None]:
    p, y = res
    return g * (p - y) / jnp.maximum(p * (1 - p), BCE_EPS), None


binary_cross_entropy.defvjp(_bce_fwd, _bce_bwd)


LOSSES = {  # the module losses (labs.MODULE_LOSSES); the manual ones are in manual.py
    # mean over examples, summed over independent outputs
    "bce": lambda out, y: binary_cross_entropy(out, y).mean(0).sum(),
    "cross_entropy": lambda out, y: optax.softmax_cross_entropy_with_integer_labels(out, y).mean(),  # from logits
}


def loss_fn(name: str, out: jax.Array, y: jax.Array) -> jax.Array:
    """The declared loss (see ``LOSSES``)."""
    return pick(LOSSES, name, "loss")(out, y)


def adam(lr: float, b1: float, b2: float, eps: float) -> optax.GradientTransformation:
    """``optax.adam`` with its bias corrections ``1 - beta**t`` computed as ``-expm1(t log beta)`` from the exact
    betas, as torch computes them (in double). optax raises the beta rounded to float32 to the t-th power, so in
    float32 its ``1 - 0.999**t`` is 1.3e-5 low for t << 1000 while the moment's ``1 - beta2`` is exact: every
    update came out 6.4e-6 short, and float32 JAX drifted from float64 (2.6e-3 in loss by step 59 on
    mnist_relu_xavier; torch: 2e-7). The moments and the update are optax's own formulas."""
    log_b1, log_b2 = math.log(b1), math.log(b2)

    def init(params: nnx.State) -> optax.ScaleByAdamState:
        return optax.ScaleByAdamState(jnp.zeros([], jnp.int32), jax.tree.map(jnp.zeros_like, params),
                                      jax.tree.map(jnp.zeros_like, params))

    def update(grads: nnx.State, state: optax.ScaleByAdamState, params: nnx.State | None = None) -> tuple:
        mu = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, grads, state.mu)
        nu = jax.tree.map(lambda g, v: (1 - b2) * (g**2) + b2 * v, grads, state.nu)
        count = optax.safe_int32_increment(state.count)

        def step(m: jax.Array, v: jax.Array) -> jax.Array:
            t = count.astype(m.dtype)
            m_hat, v_hat = m / -jnp.expm1(t * log_b1), v / -jnp.expm1(t * log_b2)
            return -lr * (m_hat / (jnp.sqrt(v_hat) + eps))

        return jax.tree.map(step, mu, nu), optax.ScaleByAdamState(count, mu, nu)

    return optax.GradientTransformation(init, update)


OPTIMIZERS = {  # labs.OPTIMIZERS -> optax, with torch's algorithm and defaults: rmsprop's eps outside the square
    # root and its smoothing ``alpha`` as optax's ``decay``; adam and adadelta already match torch's formulas
    "sgd": lambda opt: optax.sgd(opt.lr),
    "adadelta": lambda opt: optax.adadelta(opt.lr, rho=opt.rho, eps=opt.epsilon),
    "rmsprop": lambda opt: optax.rmsprop(opt.lr, decay=opt.alpha, eps=opt.epsilon, eps_in_sqrt=False),
    "adam": lambda opt: adam(opt.lr, *opt.betas, opt.epsilon),
}


def make_optimizer(opt: Optimizer) -> optax.GradientTransformation:
    """The declared optimizer (see ``OPTIMIZERS``)."""
    return pick(OPTIMIZERS, opt.name, "optimizer")(opt)
