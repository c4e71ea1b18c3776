"""The PyTorch training run: implements ``harness.backend.Backend.train`` (mirrors ``jax_impl/train.py``).

One step per Python iteration (``learners.run_loop``); the loss of every step is kept as a device tensor, so there
is no per-step ``.item()`` host sync. Evaluation runs in ``eval()`` mode under ``no_grad``. The learners and the
execution modes: ``learners.py``; dtypes, precision and placement: ``runtime.py``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from harness.backend import RunSpec, TrainResult, resolve_execution
from torch_impl import learners, rbm, runtime


def train(spec: RunSpec) -> TrainResult:
    """Train as ``spec`` says; see ``harness.backend.RunSpec``."""
    spec = dataclasses.replace(spec, execution=resolve_execution("torch", spec.execution, spec.device))
    dtype, device = runtime.dtype(spec.dtype), runtime.device(spec.device)
    spec, rbms, recon, pre_s = rbm.pretrained(spec, dtype, device)  # RBM pre-training, where the lab declares it
    learner = learners.make_learner(spec, dtype, device)
    to = runtime.to_tensor
    x, y = to(spec.train_x, device, dtype), to(spec.train_y, device, dtype)
    batches = to(spec.batches, device)
    masks = [to(m, device, dtype) for m in spec.masks] if spec.masks is not None else None
    eval_sets = {k: (to(a, device, dtype), b) for k, (a, b) in spec.eval_sets.items()}
    outputs: dict[int, dict[str, np.ndarray]] = {}

    def batch(s: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor] | None]:
        step_masks = [m[s] for m in masks] if masks is not None else None
        if batches is None:
            return x, y, step_masks
        idx = batches[s]
        return x[idx], y[idx], step_masks

    def evaluate(done: int) -> None:
        if done in spec.eval_steps:
            outputs[done] = {k: learner.outputs(a).cpu().numpy() for k, (a, _) in eval_sets.items()}

    runtime.set_precision()
    step = learners.diverging(learners.step_for(spec.execution, learner, device), learner, dtype)
    losses, timing = learners.run_loop(spec, step, batch, evaluate, lambda: runtime.sync(device),
                                       constant=batches is None and masks is None)
    params, state = learner.export()
    timing.pretrain_s = pre_s if spec.lab.pretrain is not None else None
    return TrainResult(losses.cpu().numpy().astype(np.float64), outputs, params, state, timing, str(device),
                       recon, rbms)
