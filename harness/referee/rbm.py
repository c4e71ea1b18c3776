"""RBM pre-training in plain numpy, float64 (mirrors ``torch_impl/rbm.py`` and ``jax_impl/rbm.py``): the CD-k
step written out from the formulas of ``harness.labs.Pretrain``, stacked greedily, for the referee's ``train``
and ``trace`` and its :func:`trace` of the pre-training steps."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from harness.backend import BackendError, RunSpec
from harness.labs import Pretrain
from harness.referee.model import sigmoid
from harness.run import pretrain as neutral

Arrays = dict[str, np.ndarray]


def sample(p: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Bernoulli samples of probabilities ``p`` from the harness's uniforms ``u``: 1 where u < p."""
    return (u < p).astype(p.dtype)


def cd_step(params: Arrays, v0: np.ndarray, u: np.ndarray, k: int) -> tuple[Arrays, float]:
    """The CD-``k`` statistics of one batch (positive minus negative phase, per example) and the
    reconstruction error mean((v0 - v1)^2); ``u``: ``[k, batch, hidden]`` uniforms."""
    w, b, c = params["kernel"], params["visible_bias"], params["hidden_bias"]
    p0 = sigmoid(v0 @ w + c)
    h, p, v, recon = sample(p0, u[0]), p0, v0, 0.0
    for j in range(k):
        v = sigmoid(h @ w.T + b)
        p = sigmoid(v @ w + c)
        if j == 0:
            recon = float(np.mean((v0 - v) ** 2))
        if j + 1 < k:
            h = sample(p, u[j + 1])
    n = len(v0)
    return {"kernel": (v0.T @ p0 - v.T @ p) / n, "visible_bias": (v0 - v).mean(0),
            "hidden_bias": (p0 - p).mean(0)}, recon


def update(params: Arrays, stats: Arrays, lr: float) -> Arrays:
    """One SGD step up the CD statistics."""
    return {key: params[key] + lr * stats[key] for key in params}


def _rbm(params: Arrays, i: int) -> Arrays:
    return {name: np.array(params[f"rbm{i}/{name}"], np.float64) for name in neutral.NAMES}


def _layer(data: np.ndarray, params: Arrays) -> np.ndarray:
    """The hidden probabilities of ``data``: the next RBM's data."""
    return sigmoid(data @ params["kernel"] + params["hidden_bias"])


def run_rbms(spec: RunSpec, record: tuple[int, int] | None = None) -> tuple[Arrays, list[np.ndarray], list[dict]]:
    """Every RBM trained in turn: their final weights (``rbm{l}/...``), the reconstruction errors per step, and
    (``record`` = (rbm, steps)) the per-step records of that RBM's first steps; the RBMs after it do not run."""
    pre: Pretrain = spec.lab.pretrain
    if spec.params is None or "rbm0/kernel" not in spec.params:
        raise BackendError("the referee needs shared weights (--weights shared); it has no native init")
    data = np.asarray(spec.train_x, np.float64)
    out: Arrays = {}
    recon: list[np.ndarray] = []
    records: list[dict] = []
    for i in range(len(neutral.rbm_sizes(spec.model))):
        params = _rbm(spec.params, i)
        steps = len(spec.pretrain_batches) if record is None or record[0] != i else record[1]
        errors = np.empty(min(steps, len(spec.pretrain_batches)))
        for s, idx in enumerate(spec.pretrain_batches[:steps]):
            stats, errors[s] = cd_step(params, data[idx], np.asarray(spec.pretrain_uniforms[i][s], np.float64), pre.k)
            new = update(params, stats, pre.lr)
            if record is not None and record[0] == i:
                key = {n: f"rbm{i}/{n}" for n in params}
                records.append({"loss": errors[s], "grads": {key[n]: v for n, v in stats.items()},
                                "updates": {key[n]: new[n] - params[n] for n in params},
                                "params": {key[n]: v for n, v in new.items()}, "state": {}})
            params = new
        if record is not None and record[0] == i:
            return out, recon, records
        out.update({f"rbm{i}/{n}": v for n, v in params.items()})
        recon.append(errors)
        data = _layer(data, params)
    return out, recon, records


def pretrained(spec: RunSpec) -> tuple[RunSpec, Arrays, list[np.ndarray], float]:
    """``spec`` with its network's hidden layers initialised by the trained RBMs (and no RBM weights left in its
    params), the RBMs' final weights, their reconstruction errors per step and the seconds it took (a repeat of
    one of the last few: those of the first, ``harness.run.pretrain.memo``); ``spec`` itself where the lab has none."""
    if spec.lab.pretrain is None:
        return spec, {}, [], 0.0
    def compute() -> tuple:
        start = time.perf_counter()
        rbms, recon, _ = run_rbms(spec)
        net = neutral.network_params(neutral.split(spec.params)[0], rbms, len(recon))
        return net, rbms, recon, time.perf_counter() - start

    net, rbms, recon, seconds = neutral.memo(spec, ("numpy", cd_step, update, sample), compute)
    return dataclasses.replace(spec, params=net), rbms, recon, seconds


def trace(spec: RunSpec, rbm: int, steps: int) -> list[dict]:
    """The first ``steps`` CD steps of RBM ``rbm`` (the ones before it trained in full): per step ``loss`` (the
    reconstruction error), ``grads`` (the CD statistics), ``updates``, ``params`` after the step, ``state``
    (none), as ``harness.parity.localise`` reads them."""
    return run_rbms(spec, (rbm, steps))[2]
