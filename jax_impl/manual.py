"""Hand-written backpropagation for the all-sigmoid networks of the manual labs (lecture Lab-08-2, lab-08_4)
(mirrors ``torch_impl/manual.py``).

Weights are plain arrays and ``jax.grad`` is not used. As the lectures write it, the weights get the
batch-summed gradient and the biases the batch mean; ``backward`` returns exactly those update directions.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from harness.labs import pick
from jax_impl.runtime import PRECISION

Arrays = dict[str, jax.Array]


def forward(params: Arrays, x: jax.Array) -> tuple[list[jax.Array], list[jax.Array]]:
    """Pre-activations ``l`` and activations ``a`` of every layer (``a[0]`` is the input)."""
    acts, pres = [x], []
    for i in range(len(params) // 2):
        pres.append(jnp.matmul(acts[-1], params[f"dense{i}/kernel"], precision=PRECISION) + params[f"dense{i}/bias"])
        acts.append(jax.nn.sigmoid(pres[-1]))
    return pres, acts


def targets(loss: str, y: jax.Array, width: int, dtype: jnp.dtype) -> jax.Array:
    """Targets as the loss sees them: one-hot rows for class labels, as lab-08_4 builds them."""
    if loss == "manual_squared" and y.ndim == 1:
        return jax.nn.one_hot(y, width, dtype=dtype)
    return y


def _bce(p: jax.Array, y: jax.Array) -> jax.Array:
    """-mean(Y log P + (1-Y) log(1-P))."""
    return -jnp.mean(y * jnp.log(p) + (1 - y) * jnp.log(1 - p))


def _bce_grad(p: jax.Array, y: jax.Array, eps: float) -> jax.Array:
    """The lecture's d_P = (P - Y) / (P (1 - P) + eps), per output."""
    return (p - y) / (p * (1.0 - p) + eps) / y.shape[1]


def _squared(p: jax.Array, y: jax.Array) -> jax.Array:
    """Mean over examples of 0.5 * sum over outputs (P - Y)^2."""
    return 0.5 * jnp.mean(jnp.sum((p - y) ** 2, axis=1))


def _squared_grad(p: jax.Array, y: jax.Array, eps: float) -> jax.Array:
    """lab-08_4's ``diff = P - Y``."""
    return p - y


LOSSES = {"manual_bce": (_bce, _bce_grad), "manual_squared": (_squared, _squared_grad)}  # labs.MANUAL_LOSSES


def loss_value(loss: str, p: jax.Array, y: jax.Array) -> jax.Array:
    """The value of the manual loss ``loss`` (see ``LOSSES``)."""
    return pick(LOSSES, loss, "manual loss")[0](p, y)


def backward(params: Arrays, x: jax.Array, y: jax.Array, loss: str, eps: float) -> tuple[Arrays, jax.Array]:
    """The lectures' chain rule: update directions (weights batch-summed, biases batch-mean) and the loss."""
    pres, acts = forward(params, x)
    p = acts[-1]
    value, grad = pick(LOSSES, loss, "manual loss")
    d = grad(p, y, eps)
    grads: Arrays = {}
    for i in reversed(range(len(pres))):
        d_l = d * (jax.nn.sigmoid(pres[i]) * (1 - jax.nn.sigmoid(pres[i])))  # sigmoid_prime
        grads[f"dense{i}/kernel"] = jnp.matmul(acts[i].T, d_l, precision=PRECISION)
        grads[f"dense{i}/bias"] = jnp.mean(d_l, 0)
        d = jnp.matmul(d_l, params[f"dense{i}/kernel"].T, precision=PRECISION)
    return grads, value(p, y)


def sgd_update(params: Arrays, grads: Arrays, lr: float) -> Arrays:
    """``w = w - lr * d_w`` for every array."""
    return {k: params[k] - lr * grads[k] for k in params}
