"""SGD, Adadelta, RMSprop and Adam as ``torch.optim`` defines them (no weight decay, no momentum, torch's
defaults otherwise; settings from the lab's ``Optimizer``). Each ``step(params, grads)`` returns new arrays and
keeps its own state."""

from __future__ import annotations

import numpy as np

from harness.labs import Optimizer

Arrays = dict[str, np.ndarray]


class Rule:
    """An update rule: per-tensor running averages (zero at the start) and the step count t."""

    def __init__(self, opt: Optimizer, *slots: str) -> None:
        self.opt, self.t = opt, 0
        self.slots: dict[str, Arrays] = {s: {} for s in slots}

    def slot(self, name: str, key: str, like: np.ndarray) -> np.ndarray:
        """The running average ``name`` of tensor ``key`` (zeros shaped like ``like`` at first)."""
        store = self.slots[name]
        if key not in store:
            store[key] = np.zeros_like(like)
        return store[key]

    def step(self, params: Arrays, grads: Arrays) -> Arrays:
        """New parameters after one update with ``grads``."""
        self.t += 1
        return {k: p - self.delta(k, grads[k]) for k, p in params.items()}

    def delta(self, key: str, g: np.ndarray) -> np.ndarray:  # the amount subtracted from the parameter
        raise NotImplementedError


class SGD(Rule):
    """p <- p - lr g."""

    def delta(self, key: str, g: np.ndarray) -> np.ndarray:
        return self.opt.lr * g


class Adam(Rule):
    """m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) g^2;
    p <- p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)."""

    def __init__(self, opt: Optimizer) -> None:
        super().__init__(opt, "m", "v")

    def delta(self, key: str, g: np.ndarray) -> np.ndarray:
        (b1, b2), eps, t = self.opt.betas, self.opt.epsilon, self.t
        m, v = self.slot("m", key, g), self.slot("v", key, g)
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        return self.opt.lr / (1 - b1**t) * m / (np.sqrt(v) / np.sqrt(1 - b2**t) + eps)


class RMSprop(Rule):
    """v <- alpha v + (1-alpha) g^2; p <- p - lr g / (sqrt(v) + eps)  (eps outside the root)."""

    def __init__(self, opt: Optimizer) -> None:
        super().__init__(opt, "v")

    def delta(self, key: str, g: np.ndarray) -> np.ndarray:
        alpha = self.opt.alpha
        v = self.slot("v", key, g)
        v *= alpha
        v += (1 - alpha) * g * g
        return self.opt.lr * g / (np.sqrt(v) + self.opt.epsilon)


class Adadelta(Rule):
    """s <- rho s + (1-rho) g^2; u = sqrt(a + eps) / sqrt(s + eps) g; a <- rho a + (1-rho) u^2; p <- p - lr u."""

    def __init__(self, opt: Optimizer) -> None:
        super().__init__(opt, "square_avg", "acc_delta")

    def delta(self, key: str, g: np.ndarray) -> np.ndarray:
        rho, eps = self.opt.rho, self.opt.epsilon
        s, a = self.slot("square_avg", key, g), self.slot("acc_delta", key, g)
        s *= rho
        s += (1 - rho) * g * g
        u = np.sqrt(a + eps) / np.sqrt(s + eps) * g
        a *= rho
        a += (1 - rho) * u * u
        return self.opt.lr * u


OPTIMIZER_CLASSES: dict[str, type[Rule]] = {"sgd": SGD, "adadelta": Adadelta, "rmsprop": RMSprop, "adam": Adam}


def make(opt: Optimizer) -> Rule:
    """The declared optimizer; ValueError on a name ``harness.labs.OPTIMIZERS`` does not know."""
    if opt.name not in OPTIMIZER_CLASSES:
        raise ValueError(f"unknown optimizer {opt.name!r}; choose from {', '.join(OPTIMIZER_CLASSES)}")
    return OPTIMIZER_CLASSES[opt.name](opt)
