"""Each declared loss and its gradient w.r.t. the model's outputs, written as torch computes them."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

BCE_LOG_FLOOR = -100.0  # torch clamps each log term of binary_cross_entropy here
BCE_GRAD_EPS = float(np.float32(1e-12))  # and divides its gradient by max(p (1 - p), this): a C float


def one_hot(labels: np.ndarray, width: int) -> np.ndarray:
    """Rows with a 1 at each label."""
    out = np.zeros((len(labels), width))
    out[np.arange(len(labels)), labels.astype(np.int64)] = 1.0
    return out


def bce(p: np.ndarray, y: np.ndarray, grad_eps: float) -> tuple[float, np.ndarray]:
    """Binary cross-entropy, mean over examples and summed over independent outputs (torch's
    ``binary_cross_entropy(p, y, reduction="none").mean(0).sum()``), with torch's log clamp and gradient."""
    with np.errstate(divide="ignore"):
        log_p = np.maximum(np.log(p), BCE_LOG_FLOOR)
        log_q = np.maximum(np.log1p(-p), BCE_LOG_FLOOR)
    loss = -(y * log_p + (1 - y) * log_q).mean(0).sum()
    return float(loss), (p - y) / np.maximum((1 - p) * p, BCE_GRAD_EPS) / len(p)


def cross_entropy(logits: np.ndarray, labels: np.ndarray, grad_eps: float) -> tuple[float, np.ndarray]:
    """Softmax cross-entropy from logits against class labels, mean over examples."""
    z = logits - logits.max(1, keepdims=True)
    log_softmax = z - np.log(np.exp(z).sum(1, keepdims=True))
    target = one_hot(labels, logits.shape[1])
    loss = -(log_softmax * target).sum(1).mean()
    return float(loss), (np.exp(log_softmax) - target) / len(logits)


def manual_bce(p: np.ndarray, y: np.ndarray, grad_eps: float) -> tuple[float, np.ndarray]:
    """Lecture Lab-08-2: loss -mean(Y log P + (1-Y) log(1-P)) over every element; the direction it backpropagates
    is d_P = (P - Y) / (P (1 - P) + eps), divided by the number of outputs and *not* by the batch size."""
    loss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    return float(loss), (p - y) / (p * (1.0 - p) + grad_eps) / y.shape[1]


def manual_squared(p: np.ndarray, labels: np.ndarray, grad_eps: float) -> tuple[float, np.ndarray]:
    """lab-08_4: loss mean over examples of 0.5 sum (P - Y)^2 against one-hot Y; its direction is P - Y."""
    y = one_hot(labels, p.shape[1]) if labels.ndim == 1 else labels
    diff = p - y
    return float(0.5 * np.mean(np.sum(diff * diff, axis=1))), diff


LOSS_FNS: dict[str, Callable[[np.ndarray, np.ndarray, float], tuple[float, np.ndarray]]] = {
    "bce": bce, "cross_entropy": cross_entropy, "manual_bce": manual_bce, "manual_squared": manual_squared,
}


def loss_and_direction(name: str, out: np.ndarray, y: np.ndarray, grad_eps: float = 0.0) -> tuple[float, np.ndarray]:
    """The loss of outputs ``out`` against ``y`` and dL/d(out) (for the manual losses, the lectures' direction);
    ValueError on a name ``harness.labs.LOSSES`` does not know."""
    if name not in LOSS_FNS:
        raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSS_FNS)}")
    return LOSS_FNS[name](out, y, grad_eps)
