"""RBM pre-training in PyTorch (mirrors ``jax_impl/rbm.py``; the formulas: ``harness.labs.Pretrain``): binary
RBMs trained by CD-k, plain tensor ops under ``no_grad`` (the CD update is not the gradient of a loss), stacked
greedily; their kernels and hidden biases initialise the network's hidden layers."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from harness.backend import RunSpec
from harness.run import pretrain as neutral
from torch_impl import models

Tensors = dict[str, torch.Tensor]


def sample(p: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Bernoulli samples of probabilities ``p`` from the harness's uniforms ``u``: 1 where u < p."""
    return (u < p).to(p.dtype)


def cd_step(params: Tensors, v0: torch.Tensor, u: torch.Tensor, k: int) -> tuple[Tensors, torch.Tensor]:
    """The CD-``k`` statistics of one batch (positive minus negative phase, per example) and the
    reconstruction error mean((v0 - v1)^2); ``u``: ``[k, batch, hidden]`` uniforms."""
    w, b, c = params["kernel"], params["visible_bias"], params["hidden_bias"]
    p0 = torch.sigmoid(v0 @ w + c)
    h, p, v, recon = sample(p0, u[0]), p0, v0, v0.new_zeros(())
    for j in range(k):
        v = torch.sigmoid(h @ w.T + b)
        p = torch.sigmoid(v @ w + c)
        if j == 0:
            recon = torch.mean((v0 - v) ** 2)
        if j + 1 < k:
            h = sample(p, u[j + 1])
    n = v0.shape[0]
    return {"kernel": (v0.T @ p0 - v.T @ p) / n, "visible_bias": (v0 - v).mean(0),
            "hidden_bias": (p0 - p).mean(0)}, recon


def update(params: Tensors, stats: Tensors, lr: float) -> Tensors:
    """One SGD step up the CD statistics."""
    return {key: params[key] + lr * stats[key] for key in params}


def _numpy(tensors: Tensors) -> dict[str, np.ndarray]:
    return {k: v.cpu().numpy().copy() for k, v in tensors.items()}


def initial(spec: RunSpec, dtype: torch.dtype) -> dict[str, np.ndarray]:
    """The network's and RBMs' initial weights: the shared ones, or drawn natively (the network as
    ``models.build`` draws it; the RBM kernels N(0, init_std) from a generator seeded with the run's seed)."""
    if spec.params is not None:
        return spec.params
    out = models.get_params(models.build(spec.model, dtype, torch.device("cpu"), spec.seed))[0]
    gen = torch.Generator().manual_seed(spec.seed)
    for i, (v, h) in enumerate(neutral.rbm_sizes(spec.model)):
        out[f"rbm{i}/kernel"] = (spec.lab.pretrain.init_std * torch.randn(v, h, generator=gen, dtype=dtype)).numpy()
        out[f"rbm{i}/visible_bias"] = np.zeros(v, out[f"rbm{i}/kernel"].dtype)
        out[f"rbm{i}/hidden_bias"] = np.zeros(h, out[f"rbm{i}/kernel"].dtype)
    return out


@torch.no_grad()
def run_rbms(spec: RunSpec, params: dict[str, np.ndarray], dtype: torch.dtype, device: torch.device,
             record: tuple[int, int] | None = None) -> tuple[dict[str, np.ndarray], list[np.ndarray], list[dict]]:
    """Every RBM trained in turn from ``params``: their final weights (``rbm{l}/...``), the reconstruction errors
    per step, and (``record`` = (rbm, steps)) the per-step records of that RBM's first steps; the RBMs after it
    do not run."""
    pre = spec.lab.pretrain
    data = torch.tensor(spec.train_x, dtype=dtype, device=device)
    batches = torch.as_tensor(spec.pretrain_batches, dtype=torch.int64, device=device)
    out: dict[str, np.ndarray] = {}
    recon: list[np.ndarray] = []
    records: list[dict] = []
    for i in range(len(neutral.rbm_sizes(spec.model))):
        rbm = {n: torch.as_tensor(params[f"rbm{i}/{n}"], dtype=dtype, device=device) for n in neutral.NAMES}
        uniforms = torch.as_tensor(spec.pretrain_uniforms[i], dtype=dtype, device=device)
        steps = len(batches) if record is None or record[0] != i else min(record[1], len(batches))
        errors = torch.empty(steps, dtype=dtype, device=device)
        for s in range(steps):
            stats, errors[s] = cd_step(rbm, data[batches[s]], uniforms[s], pre.k)
            new = update(rbm, stats, pre.lr)
            if record is not None and record[0] == i:
                key = {n: f"rbm{i}/{n}" for n in rbm}
                records.append({"loss": float(errors[s]),
                                "grads": {key[n]: v for n, v in _f64(stats).items()},
                                "updates": {key[n]: v for n, v in _f64({n: new[n] - rbm[n] for n in rbm}).items()},
                                "params": {key[n]: v for n, v in _f64(new).items()}, "state": {}})
            rbm = new
        if record is not None and record[0] == i:
            return out, recon, records
        out.update({f"rbm{i}/{n}": v for n, v in _numpy(rbm).items()})
        recon.append(errors.cpu().numpy().astype(np.float64))
        data = torch.sigmoid(data @ rbm["kernel"] + rbm["hidden_bias"])  # the next RBM's data
    return out, recon, records


def _f64(tensors: Tensors) -> dict[str, np.ndarray]:
    return {k: v.cpu().numpy().astype(np.float64) for k, v in tensors.items()}


def pretrained(spec: RunSpec, dtype: torch.dtype, device: torch.device
               ) -> tuple[RunSpec, dict[str, np.ndarray], list[np.ndarray], float]:
    """``spec`` with its network's hidden layers initialised by the trained RBMs (shared params, no RBM weights
    left in them), the RBMs' final weights, their reconstruction errors per step and the seconds it took;
    ``spec`` itself where the lab has no pre-training."""
    if spec.lab.pretrain is None:
        return spec, {}, [], 0.0
    def compute() -> tuple:
        from torch_impl.train import set_precision

        set_precision()  # full float32 matmuls, as in training
        start = time.perf_counter()
        params = initial(spec, dtype)
        rbms, recon, _ = run_rbms(spec, params, dtype, device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        net = neutral.network_params(neutral.split(params)[0], rbms, len(recon))
        return net, rbms, recon, time.perf_counter() - start

    net, rbms, recon, seconds = neutral.memo(spec, (str(dtype), str(device), cd_step, update, sample), compute)
    return dataclasses.replace(spec, params=net), rbms, recon, seconds


def trace(spec: RunSpec, rbm: int, steps: int) -> list[dict]:
    """The first ``steps`` CD steps of RBM ``rbm`` (the ones before it trained in full): per step ``loss`` (the
    reconstruction error), ``grads`` (the CD statistics), ``updates``, ``params`` after the step, ``state``
    (none), float64 numpy in the shared names, as ``harness.parity.localise`` reads them."""
    from torch_impl.train import DTYPES, set_precision

    set_precision()
    dtype, device = DTYPES[spec.dtype], torch.device("cuda" if spec.device == "gpu" else "cpu")
    return run_rbms(spec, initial(spec, dtype), dtype, device, (rbm, steps))[2]
