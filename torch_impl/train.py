"""The PyTorch training loop: implements ``harness.backend`` (mirrors ``jax_impl/train.py``).

One eager step per Python iteration; the loss of every step is written into a preallocated device tensor, so
there is no per-step ``.item()`` host sync. Evaluation runs in ``eval()`` mode under ``no_grad``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from harness.backend import RunSpec, TrainResult
from torch_impl import manual, models

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def available_devices() -> list[str]:
    """Devices torch can use here, in the harness's names."""
    return ["cpu"] + (["gpu"] if torch.cuda.is_available() else [])


def versions() -> dict[str, str]:
    """Framework versions, for the results."""
    return {"torch": torch.__version__}


def sync(device: torch.device) -> None:
    """Wait for queued device work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _ModuleLearner:
    """Autograd training of a ``models.MLP``."""

    def __init__(self, spec: RunSpec, dtype: torch.dtype, device: torch.device) -> None:
        self.loss = spec.lab.loss
        self.module = models.build(spec.model, dtype, device, spec.seed, spec.params, spec.state)
        self.module.train()
        self.opt = models.make_optimizer(spec.lab.optimizer, list(self.module.parameters()))

    def step(self, x: torch.Tensor, y: torch.Tensor, masks: list[torch.Tensor] | None) -> torch.Tensor:
        self.opt.zero_grad()
        loss = models.loss_fn(self.loss, self.module(x, masks), y)
        loss.backward()
        self.opt.step()
        return loss.detach()

    @torch.no_grad()
    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        self.module.eval()
        out = self.module(x)
        self.module.train()
        return out

    def export(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        return models.get_params(self.module)


class _ManualLearner:
    """Hand-written backprop (``manual.py``) on plain tensors."""

    def __init__(self, spec: RunSpec, dtype: torch.dtype, device: torch.device) -> None:
        self.loss, self.lr, self.eps = spec.lab.loss, spec.lab.optimizer.lr, spec.lab.grad_eps
        self.dtype, self.width = dtype, spec.model.sizes[-1]
        params = spec.params if spec.params is not None else _native_manual_params(spec)
        self.params = {k: torch.as_tensor(v, dtype=dtype, device=device) for k, v in params.items()}

    def step(self, x: torch.Tensor, y: torch.Tensor, masks: list[torch.Tensor] | None) -> torch.Tensor:
        grads, loss = manual.backward(self.params, x, manual.targets(self.loss, y, self.width, self.dtype),
                                      self.loss, self.eps)
        self.params = manual.sgd_update(self.params, grads, self.lr)
        return loss

    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        return manual.forward(self.params, x)[1][-1]

    def export(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        return {k: v.cpu().numpy().copy() for k, v in self.params.items()}, {}


def _native_manual_params(spec: RunSpec) -> dict[str, np.ndarray]:
    """Native init for the manual labs: the declared scheme drawn with torch's generator."""
    module = models.build(spec.model, DTYPES[spec.dtype], torch.device("cpu"), spec.seed)
    return models.get_params(module)[0]


def _to(a: np.ndarray | None, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor | None:
    if a is None:
        return None
    if not np.issubdtype(a.dtype, np.floating):  # labels and indices: torch indexes and classifies with int64
        return torch.tensor(a, dtype=torch.int64, device=device)
    return torch.tensor(a, dtype=dtype, device=device)


def train(spec: RunSpec) -> TrainResult:
    """Train as ``spec`` says; see ``harness.backend.RunSpec``."""
    dtype = DTYPES[spec.dtype]
    device = torch.device("cuda" if spec.device == "gpu" else "cpu")
    learner = (_ManualLearner if spec.lab.manual else _ModuleLearner)(spec, dtype, device)
    x, y = _to(spec.train_x, device, dtype), _to(spec.train_y, device, dtype)
    batches = _to(spec.batches, device)
    masks = [_to(m, device, dtype) for m in spec.masks] if spec.masks is not None else None
    eval_sets = {k: (_to(a, device, dtype), b) for k, (a, b) in spec.eval_sets.items()}
    losses = torch.empty(spec.steps, dtype=dtype, device=device)
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

    timing = _run_loop(spec, learner.step, batch, losses, evaluate, lambda: sync(device))
    params, state = learner.export()
    return TrainResult(losses.cpu().numpy().astype(np.float64), outputs, params, state, timing, str(device))


def _run_loop(spec: RunSpec, step: Callable, batch: Callable, losses: torch.Tensor, evaluate: Callable,
              sync_fn: Callable[[], None]) -> dict[str, float]:
    """Step 0 is timed apart as warm-up; the rest is the steady state, with one sync at its end."""
    evaluate(0)
    start = time.perf_counter()
    warm = 0.0
    for s in range(spec.steps):
        losses[s] = step(*batch(s))
        evaluate(s + 1)
        if s == 0:
            sync_fn()
            warm = time.perf_counter() - start
        if spec.progress is not None and (s + 1) % 1000 == 0:
            spec.progress(s + 1, spec.steps)
    sync_fn()
    total = time.perf_counter() - start
    run = total - warm
    return {"warmup_s": warm, "run_s": run, "total_s": total,
            "steps_per_s": (spec.steps - 1) / run if spec.steps > 1 and run > 0 else float("nan")}

