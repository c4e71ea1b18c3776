"""RBM pre-training, framework-neutral: what the harness draws for it and what a run record says of it.

A lab with ``Lab.pretrain`` (``harness.labs.Pretrain``) trains one binary RBM per hidden layer before its
network trains (each backend's ``rbm.py``: ``torch_impl``, ``jax_impl``, ``harness.referee``). The harness
draws, for both frameworks alike: the pre-training's batch order (one per-epoch permutation order, used by every
RBM in turn), the uniforms of CD sampling (``[steps, k, batch, hidden]`` per RBM, in the run's dtype, as it
draws shared dropout masks) and, with shared weights, the RBMs' initial weights, carried in the shared params as
``rbm{l}/kernel`` [visible, hidden], ``rbm{l}/visible_bias`` and ``rbm{l}/hidden_bias``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable

import numpy as np

from harness.data import datasets as data_mod
from harness.labs import Model, Pretrain

Params = dict[str, np.ndarray]
NAMES = ("kernel", "visible_bias", "hidden_bias")


def rbm_sizes(model: Model) -> list[tuple[int, int]]:
    """``(visible, hidden)`` of each RBM: one per hidden layer of ``model``."""
    return list(zip(model.sizes[:-2], model.sizes[1:-1]))


def steps(pre: Pretrain, n: int, cap: int | None = None) -> int:
    """CD steps of each RBM on ``n`` training examples (``cap``: a run cut short cuts its pre-training too)."""
    full = pre.epochs * (n // pre.batch_size)
    return full if cap is None else min(full, cap)


def batch_order(pre: Pretrain, n: int, seed: int, cap: int | None = None) -> np.ndarray:
    """Example indices of every CD step, ``[steps, batch]``: per-epoch permutations from ``[seed, 0xB12]``."""
    count = steps(pre, n, cap)
    epochs = math.ceil(count / max(n // pre.batch_size, 1))
    order_seed = int(np.random.SeedSequence([seed, 0xB12]).generate_state(1)[0])
    return data_mod.batch_order(n, pre.batch_size, epochs, order_seed)[:count]


def uniforms(pre: Pretrain, model: Model, count: int, seed: int, dtype: str) -> list[np.ndarray]:
    """The uniforms in [0, 1) of each RBM's hidden samples, ``[count, k, batch, hidden]``, in ``dtype``."""
    rng = np.random.default_rng([seed, 0x4B1])
    return [rng.random((count, pre.k, pre.batch_size, h), dtype=np.dtype(dtype)) for _, h in rbm_sizes(model)]


def initial_weights(pre: Pretrain, model: Model, seed: int, dtype: str) -> Params:
    """The RBMs' shared initial weights: kernels N(0, init_std) from ``[seed, 0x1AB]``, biases zero."""
    rng = np.random.default_rng([seed, 0x1AB])
    out: Params = {}
    for i, (v, h) in enumerate(rbm_sizes(model)):
        out[f"rbm{i}/kernel"] = (pre.init_std * rng.standard_normal((v, h))).astype(dtype)
        out[f"rbm{i}/visible_bias"] = np.zeros(v, dtype)
        out[f"rbm{i}/hidden_bias"] = np.zeros(h, dtype)
    return out


def split(params: Params) -> tuple[Params, Params]:
    """``params`` split into the network's and the RBMs' (``rbm{l}/...``)."""
    rbm = {k: v for k, v in params.items() if k.startswith("rbm")}
    return {k: v for k, v in params.items() if k not in rbm}, rbm


def network_params(params: Params, rbms: Params, layers: int) -> Params:
    """The network's weights with its first ``layers`` Linear layers taken from the trained RBMs (kernel and
    hidden bias)."""
    out = dict(params)
    for i in range(layers):
        out[f"dense{i}/kernel"] = rbms[f"rbm{i}/kernel"]
        out[f"dense{i}/bias"] = rbms[f"rbm{i}/hidden_bias"]
    return out


def record(recon: list[np.ndarray], seconds: float, pre: Pretrain, n: int) -> dict:
    """What a run record says of the pre-training: each RBM's reconstruction error per epoch (the mean over its
    steps; a cut-short run: over the steps it ran) and at its first and last step, its steps and the time."""
    per_epoch = max(n // pre.batch_size, 1)
    rows = []
    for r in recon:
        r = np.asarray(r, np.float64)
        full = len(r) // per_epoch
        epochs = [float(v) for v in r[:full * per_epoch].reshape(full, per_epoch).mean(1)] if full else \
            [float(r.mean())] if len(r) else []
        rows.append({"steps": len(r), "recon_epoch": epochs,
                     "recon_first": float(r[0]) if len(r) else None, "recon_last": float(r[-1]) if len(r) else None})
    return {"rbms": rows, "k": pre.k, "lr": pre.lr, "epochs": pre.epochs, "batch_size": pre.batch_size,
            "seconds": seconds}


def lines(rec: dict) -> list[str]:
    """The pre-training's printout: each RBM's reconstruction error per epoch."""
    out = []
    for i, row in enumerate(rec["rbms"]):
        errors = ", ".join(f"{e:.5f}" for e in row["recon_epoch"])
        out.append(f"[pre-training rbm{i}, CD-{rec['k']}, {row['steps']} steps] reconstruction error per epoch: "
                   f"{errors}")
    return out


_MEMO: dict[tuple, tuple] = {}
MEMO_SIZE = 4


def memo(spec: object, extra: tuple, compute: Callable[[], tuple]) -> tuple:
    """``compute()``, or its result from the last ``MEMO_SIZE`` calls with the same inputs: the exact tier traces
    again the runs it has just trained, each from the same pre-training. The key: the initial weights (their bytes,
    the network's too, since the result carries them; natively drawn: the seed), the lab's declaration, the
    network, the data, batches and uniforms (by identity: the entry holds them, so no other array takes their id
    while it is kept) and ``extra`` (the backend's dtype, device and step functions, so a patched step function
    never sees an unpatched result)."""
    params = spec.params
    digest = None if params is None else hashlib.sha1(b"".join(
        k.encode() + str(params[k].dtype).encode() + np.ascontiguousarray(params[k]).tobytes()
        for k in sorted(params))).hexdigest()
    held = (spec.train_x, spec.pretrain_batches, *spec.pretrain_uniforms)
    key = (digest, spec.seed if params is None else None, spec.lab.pretrain, spec.model, extra,
           *(id(a) for a in held))
    if key not in _MEMO:
        while len(_MEMO) >= MEMO_SIZE:
            _MEMO.pop(next(iter(_MEMO)))
        _MEMO[key] = (held, compute())
    return _MEMO[key][1]
