"""The lab networks by hand: Linear layers (kernels [in, out]), each hidden one followed by [batch norm],
activation, [dropout]; the output passed through a sigmoid or left as logits. Weights are the harness's flat
mapping (``dense{i}/kernel``, ``dense{i}/bias``, ``bn{i}/scale``, ``bn{i}/bias``), state the batch-norm running
statistics (``bn{i}/mean``, ``bn{i}/var``). Conventions are torch's (batch norm's momentum, unbiased running
variance; leaky ReLU's slope 0.01; inverted dropout)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from harness.labs import Model

Arrays = dict[str, np.ndarray]
Reduce = Callable[[np.ndarray], np.ndarray] | None  # a batch sum (over axis 0), or None: :func:`batch_sum`
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
LEAKY_SLOPE = 0.01  # torch's default negative slope


def sigmoid(z: np.ndarray) -> np.ndarray:
    """1 / (1 + e^-z)."""
    return 1.0 / (1.0 + np.exp(-z))


def _selu(z: np.ndarray) -> np.ndarray:
    return SELU_SCALE * np.where(z > 0, z, SELU_ALPHA * np.expm1(np.minimum(z, 0.0)))


# name -> (f(z), f'(z) given z and a = f(z))
ACTIVATION_FNS: dict[str, tuple[Callable, Callable]] = {
    "sigmoid": (sigmoid, lambda z, a: a * (1.0 - a)),
    "tanh": (np.tanh, lambda z, a: 1.0 - a * a),
    "relu": (lambda z: np.maximum(z, 0.0), lambda z, a: (z > 0).astype(z.dtype)),
    "leaky_relu": (lambda z: np.where(z > 0, z, LEAKY_SLOPE * z), lambda z, a: np.where(z > 0, 1.0, LEAKY_SLOPE)),
    "selu": (_selu, lambda z, a: np.where(z > 0, SELU_SCALE, SELU_SCALE * SELU_ALPHA * np.exp(np.minimum(z, 0.0)))),
}


def activation(name: str) -> tuple[Callable, Callable]:
    """``(f, f')`` of a declared activation; ValueError on a name ``harness.labs.ACTIVATIONS`` does not know."""
    if name not in ACTIVATION_FNS:
        raise ValueError(f"unknown activation {name!r}; choose from {', '.join(ACTIVATION_FNS)}")
    return ACTIVATION_FNS[name]


def layout(model: Model) -> tuple[list[str], list[str]]:
    """The names of ``model``'s parameters and of its state, in the shared layout."""
    params = [f"dense{i}/{k}" for i in range(model.depth) for k in ("kernel", "bias")]
    hidden = range(model.depth - 1) if model.batchnorm else ()
    return params + [f"bn{i}/{k}" for i in hidden for k in ("scale", "bias")], \
        [f"bn{i}/{k}" for i in hidden for k in ("mean", "var")]


def batch_sum(x: np.ndarray) -> np.ndarray:
    """``x`` summed over the batch (axis 0)."""
    return x.sum(0)


def batchnorm(z: np.ndarray, i: int, model: Model, params: Arrays, state: Arrays, training: bool,
              new_state: Arrays, total: Reduce = None) -> tuple[np.ndarray, tuple | None]:
    """Batch norm of hidden layer ``i``. Training: normalise by the batch mean and biased variance, and move the
    running statistics towards the batch's (running = (1 - m) running + m batch, the variance unbiased) into
    ``new_state``; returns the output and what backward needs. Evaluation: normalise by the running statistics.
    ``total``: how the batch's sums are taken (the precision emulation's jittered accumulation), :func:`batch_sum`
    where None."""
    scale, bias = params[f"bn{i}/scale"], params[f"bn{i}/bias"]
    if not training:
        return (z - state[f"bn{i}/mean"]) / np.sqrt(state[f"bn{i}/var"] + model.bn_eps) * scale + bias, None
    n, m = len(z), model.bn_momentum
    total = total or batch_sum
    mean = total(z) / n  # bit for bit z.mean(0) where the sum is plain
    centred = z - mean
    var = total(centred * centred) / n
    inv_std = 1.0 / np.sqrt(var + model.bn_eps)
    x_hat = centred * inv_std
    new_state[f"bn{i}/mean"] = (1 - m) * state[f"bn{i}/mean"] + m * mean
    new_state[f"bn{i}/var"] = (1 - m) * state[f"bn{i}/var"] + m * var * n / (n - 1)
    return x_hat * scale + bias, (x_hat, inv_std)


def batchnorm_backward(d: np.ndarray, saved: tuple, scale: np.ndarray,
                       total: Reduce = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of batch norm (batch statistics) w.r.t. its input, scale and bias, from ``d`` = dL/d(output)
    (``total``: as in :func:`batchnorm`)."""
    x_hat, inv_std = saved
    n = len(d)
    total = total or batch_sum
    d_bias = total(d)
    d_scale = total(d * x_hat)
    d_in = scale * inv_std / n * (n * d - d_bias - x_hat * d_scale)
    return d_in, d_scale, d_bias


def forward(model: Model, params: Arrays, x: np.ndarray, state: Arrays | None = None,
            masks: list[np.ndarray] | None = None, training: bool = False) -> tuple[np.ndarray, list[dict], Arrays]:
    """Outputs of ``model`` for ``x``, the tape backward needs (one record per layer) and the state after this
    pass (the running statistics moved in training). ``masks``: 0/1 keep-masks per hidden layer, used in
    training when the model has dropout: ``a * mask / (1 - p)``."""
    f, _ = activation(model.activation)
    state = state or {}
    new_state = dict(state)
    tape: list[dict] = []
    h = x
    for i in range(model.depth):
        record: dict = {"input": h}
        z = h @ params[f"dense{i}/kernel"] + params[f"dense{i}/bias"]
        if i == model.depth - 1:
            h = sigmoid(z) if model.output == "sigmoid" else z
        else:
            if model.batchnorm:
                z, record["bn"] = batchnorm(z, i, model, params, state, training, new_state)
            h = f(z)
            record["z"], record["a"] = z, h
            if model.dropout > 0 and training:
                record["keep"] = masks[i] / (1 - model.dropout)
                h = h * record["keep"]
        tape.append(record)
    return h, tape, new_state


def backward(model: Model, params: Arrays, tape: list[dict], out: np.ndarray, d_out: np.ndarray) -> Arrays:
    """Gradients of every parameter from ``d_out`` = dL/d(outputs), by the chain rule through ``tape``."""
    _, df = activation(model.activation)
    grads: Arrays = {}
    d = d_out * out * (1.0 - out) if model.output == "sigmoid" else d_out
    for i in reversed(range(model.depth)):
        record = tape[i]
        if i < model.depth - 1:
            if "keep" in record:
                d = d * record["keep"]
            d = d * df(record["z"], record["a"])
            if "bn" in record:
                d, grads[f"bn{i}/scale"], grads[f"bn{i}/bias"] = batchnorm_backward(
                    d, record["bn"], params[f"bn{i}/scale"])
        grads[f"dense{i}/kernel"] = record["input"].T @ d
        grads[f"dense{i}/bias"] = d.sum(0)
        if i > 0:
            d = d @ params[f"dense{i}/kernel"].T
    return grads
