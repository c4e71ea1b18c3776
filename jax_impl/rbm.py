"""RBM pre-training in JAX (mirrors ``torch_impl/rbm.py``; the formulas: ``harness.labs.Pretrain``): binary RBMs
trained by CD-k on plain arrays, the CD update written by hand (it is not the gradient of a loss), each RBM's
steps one jitted ``lax.scan``, stacked greedily; their kernels and hidden biases initialise the network's hidden
layers. Call inside ``train.x64`` for float64 runs."""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from harness.backend import RunSpec
from harness.run import pretrain as neutral
from jax_impl import models

Arrays = dict[str, jax.Array]
PRECISION = models.PRECISION


def sample(p: jax.Array, u: jax.Array) -> jax.Array:
    """Bernoulli samples of probabilities ``p`` from the harness's uniforms ``u``: 1 where u < p."""
    return (u < p).astype(p.dtype)


def _mm(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.matmul(a, b, precision=PRECISION)


def cd_step(params: Arrays, v0: jax.Array, u: jax.Array, k: int) -> tuple[Arrays, jax.Array]:
    """The CD-``k`` statistics of one batch (positive minus negative phase, per example) and the
    reconstruction error mean((v0 - v1)^2); ``u``: ``[k, batch, hidden]`` uniforms."""
    w, b, c = params["kernel"], params["visible_bias"], params["hidden_bias"]
    p0 = jax.nn.sigmoid(_mm(v0, w) + c)
    h, p, v, recon = sample(p0, u[0]), p0, v0, jnp.zeros((), v0.dtype)
    for j in range(k):
        v = jax.nn.sigmoid(_mm(h, w.T) + b)
        p = jax.nn.sigmoid(_mm(v, w) + c)
        if j == 0:
            recon = jnp.mean((v0 - v) ** 2)
        if j + 1 < k:
            h = sample(p, u[j + 1])
    n = v0.shape[0]
    return {"kernel": (_mm(v0.T, p0) - _mm(v.T, p)) / n, "visible_bias": (v0 - v).mean(0),
            "hidden_bias": (p0 - p).mean(0)}, recon


def update(params: Arrays, stats: Arrays, lr: float) -> Arrays:
    """One SGD step up the CD statistics."""
    return {key: params[key] + lr * stats[key] for key in params}


def initial(spec: RunSpec, dtype: jnp.dtype) -> dict[str, np.ndarray]:
    """The network's and RBMs' initial weights: the shared ones, or drawn natively (the network as
    ``models.build`` draws it; the RBM kernels N(0, init_std) from ``fold_in(key(seed), l)``)."""
    if spec.params is not None:
        return spec.params
    out = models.get_params(models.build(spec.model, dtype, spec.seed))[0]
    for i, (v, h) in enumerate(neutral.rbm_sizes(spec.model)):
        key = jax.random.fold_in(jax.random.key(spec.seed), i)
        out[f"rbm{i}/kernel"] = np.asarray(spec.lab.pretrain.init_std * jax.random.normal(key, (v, h), dtype))
        out[f"rbm{i}/visible_bias"] = np.zeros(v, out[f"rbm{i}/kernel"].dtype)
        out[f"rbm{i}/hidden_bias"] = np.zeros(h, out[f"rbm{i}/kernel"].dtype)
    return out


@functools.cache
def _scan(k: int, lr: float, trace: bool, *functions: Callable) -> Callable:
    """One RBM's CD steps as one jitted ``lax.scan``: ``(params, data, batches, uniforms) -> (params, per-step
    outputs)`` (the reconstruction error; with ``trace`` also the statistics and the parameters after each step).
    Kept, so later runs reuse its compilations; ``functions``, this module's step functions as they are at the
    call, are in the key, so a patched one (the mutation suite) gets a program of its own."""
    def run(params: Arrays, data: jax.Array, batches: jax.Array, uniforms: jax.Array) -> tuple:
        def body(p: Arrays, xs: tuple) -> tuple:
            idx, u = xs
            stats, recon = cd_step(p, data[idx], u, k)
            new = update(p, stats, lr)
            return new, ((recon, stats, new) if trace else recon)

        return jax.lax.scan(body, params, (batches, uniforms))

    return jax.jit(run)


def _step_functions() -> tuple[Callable, ...]:
    return cd_step, update, sample


def run_rbms(spec: RunSpec, params: dict[str, np.ndarray], dtype: jnp.dtype,
             record: tuple[int, int] | None = None) -> tuple[dict[str, np.ndarray], list[np.ndarray], list[dict]]:
    """Every RBM trained in turn from ``params``: their final weights (``rbm{l}/...``), the reconstruction errors
    per step, and (``record`` = (rbm, steps)) the per-step records of that RBM's first steps; the RBMs after it
    do not run."""
    pre = spec.lab.pretrain
    data = jnp.asarray(spec.train_x, dtype)
    batches = jnp.asarray(spec.pretrain_batches, jnp.int32)
    out: dict[str, np.ndarray] = {}
    recon: list[np.ndarray] = []
    for i in range(len(neutral.rbm_sizes(spec.model))):
        rbm = {n: jnp.asarray(params[f"rbm{i}/{n}"], dtype) for n in neutral.NAMES}
        uniforms = jnp.asarray(spec.pretrain_uniforms[i], dtype)
        if record is not None and record[0] == i:
            n = min(record[1], len(batches))
            scan = _scan(pre.k, pre.lr, True, *_step_functions())
            _, (errors, stats, after) = scan(rbm, data, batches[:n], uniforms[:n])
            return out, recon, _records(i, rbm, errors, stats, after)
        rbm, errors = _scan(pre.k, pre.lr, False, *_step_functions())(rbm, data, batches, uniforms)
        out.update({f"rbm{i}/{n}": np.asarray(v) for n, v in rbm.items()})
        recon.append(np.asarray(errors, np.float64))
        data = jax.nn.sigmoid(_mm(data, rbm["kernel"]) + rbm["hidden_bias"])  # the next RBM's data
    return out, recon, []


def _records(i: int, first: Arrays, errors: jax.Array, stats: Arrays, after: Arrays) -> list[dict]:
    """Per-step records (float64 numpy, shared names) from a traced scan."""
    f64 = {n: np.asarray(v, np.float64) for n, v in after.items()}
    grads = {n: np.asarray(v, np.float64) for n, v in stats.items()}
    out = []
    for s in range(len(errors)):
        before = {n: np.asarray(first[n], np.float64) if s == 0 else f64[n][s - 1] for n in f64}
        out.append({"loss": float(errors[s]), "grads": {f"rbm{i}/{n}": v[s] for n, v in grads.items()},
                    "updates": {f"rbm{i}/{n}": f64[n][s] - before[n] for n in f64},
                    "params": {f"rbm{i}/{n}": f64[n][s] for n in f64}, "state": {}})
    return out


def pretrained(spec: RunSpec, dtype: jnp.dtype) -> tuple[RunSpec, dict[str, np.ndarray], list[np.ndarray], float]:
    """``spec`` with its network's hidden layers initialised by the trained RBMs (shared params, no RBM weights
    left in them), the RBMs' final weights, their reconstruction errors per step and the seconds it took (compile
    included; a repeat of one of the last few: those of the first, ``harness.run.pretrain.memo``); ``spec`` itself
    where the lab has no pre-training."""
    if spec.lab.pretrain is None:
        return spec, {}, [], 0.0
    def compute() -> tuple:
        start = time.perf_counter()
        params = initial(spec, dtype)
        rbms, recon, _ = run_rbms(spec, params, dtype)
        net = neutral.network_params(neutral.split(params)[0], rbms, len(recon))
        return net, rbms, recon, time.perf_counter() - start

    extra = ("jax", str(jnp.dtype(dtype)), spec.device, *_step_functions())
    net, rbms, recon, seconds = neutral.memo(spec, extra, compute)
    return dataclasses.replace(spec, params=net), rbms, recon, seconds


def trace(spec: RunSpec, rbm: int, steps: int) -> list[dict]:
    """The first ``steps`` CD steps of RBM ``rbm`` (the ones before it trained in full): per step ``loss`` (the
    reconstruction error), ``grads`` (the CD statistics), ``updates``, ``params`` after the step, ``state``
    (none), float64 numpy in the shared names, as ``harness.parity.localise`` reads them."""
    from jax_impl.train import DTYPES, set_precision, x64

    set_precision()
    with x64(spec.dtype == "float64"), jax.default_device(jax.devices(spec.device)[0]):
        dtype = DTYPES[spec.dtype]
        return run_rbms(spec, initial(spec, dtype), dtype, (rbm, steps))[2]
