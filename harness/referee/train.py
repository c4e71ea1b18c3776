"""The referee's training loop: implements ``harness.backend`` in plain numpy, in float64 whatever ``spec.dtype``
says, from the shared weights, batches and (for dropout) masks. :func:`trace` records every tensor of the first
steps for localising a disagreement."""

from __future__ import annotations

import time

import numpy as np

import harness.referee.losses as losses
import harness.referee.optim as optim
import harness.referee.rbm as rbm
from harness.backend import BackendError, RunSpec, TrainResult
from harness.referee.model import Arrays, backward, forward, layout

EXECUTIONS = ("loop",)  # one Python step per iteration
ACCEPTED = (None, *EXECUTIONS, "per_step", "fused")  # None: the default; the others' names for a plain loop


def available_devices() -> list[str]:
    """The referee runs on the CPU only."""
    return ["cpu"]


def versions() -> dict[str, str]:
    """Package versions, for the results."""
    return {"numpy": np.__version__}


def check(spec: RunSpec) -> None:
    """BackendError for a run the referee cannot make exactly as the frameworks do."""
    model, lab = spec.model, spec.lab
    if spec.device != "cpu":
        raise BackendError(f"the referee runs on the cpu only, not {spec.device!r}")
    if spec.execution not in ACCEPTED:
        raise BackendError(f"the referee has no execution {spec.execution!r}; choose from {', '.join(EXECUTIONS)}")
    if spec.params is None:
        raise BackendError("the referee needs shared weights (--weights shared); it has no native init")
    missing = set(layout(model)[0]) - set(spec.params)
    if missing:
        raise BackendError(f"the shared weights lack {', '.join(sorted(missing))}")
    if model.dropout > 0 and spec.masks is None:
        raise BackendError("the referee needs shared dropout masks (--masks shared)")
    plain = (model.activation, model.output, model.batchnorm, model.dropout) == ("sigmoid", "sigmoid", False, 0.0)
    if lab.manual and not plain:
        raise BackendError("the hand-written backprop labs are all-sigmoid networks without batch norm or dropout")


class Learner:
    """The network's weights, state and optimizer, one step at a time."""

    def __init__(self, spec: RunSpec) -> None:
        check(spec)
        self.lab, self.model = spec.lab, spec.model
        self.params = {k: np.array(v, dtype=np.float64) for k, v in spec.params.items()}
        initial = {k: (np.zeros if k.endswith("/mean") else np.ones)(self.params[k.split("/")[0] + "/scale"].shape)
                   for k in layout(self.model)[1]}  # torch's, used where spec.state has none
        self.state = {k: np.array((spec.state or {}).get(k, v), dtype=np.float64) for k, v in initial.items()}
        self.optimizer = optim.make(spec.lab.optimizer)

    def gradients(self, x: np.ndarray, y: np.ndarray, masks: list[np.ndarray] | None) -> tuple[float, Arrays, Arrays]:
        """Loss, gradients and the state after the forward pass of one training step. For the hand-written labs
        the lectures' update directions: weights batch-summed (the loss's direction carries no 1/n), biases the
        batch mean."""
        out, tape, state = forward(self.model, self.params, x, self.state, masks, training=True)
        loss, d_out = losses.loss_and_direction(self.lab.loss, out, y, self.lab.grad_eps)
        grads = backward(self.model, self.params, tape, out, d_out)
        if self.lab.manual:
            grads = {k: g / len(x) if k.endswith("/bias") else g for k, g in grads.items()}
        return loss, grads, state

    def step(self, x: np.ndarray, y: np.ndarray, masks: list[np.ndarray] | None) -> tuple[float, Arrays]:
        """One update; returns the loss before it and the gradients."""
        loss, grads, self.state = self.gradients(x, y, masks)
        self.params = self.optimizer.step(self.params, grads)
        return loss, grads

    def outputs(self, x: np.ndarray) -> np.ndarray:
        """Model outputs in evaluation mode (running statistics, no dropout)."""
        return forward(self.model, self.params, x, self.state)[0]


def batch(spec: RunSpec, s: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray] | None]:
    """Inputs (float64), targets and keep-masks of step ``s``."""
    masks = None if spec.masks is None else [m[s].astype(np.float64) for m in spec.masks]
    if spec.batches is None:
        x, y = spec.train_x, spec.train_y
    else:
        idx = spec.batches[s]
        x, y = spec.train_x[idx], spec.train_y[idx]
    return np.asarray(x, dtype=np.float64), (np.asarray(y, np.float64) if np.issubdtype(y.dtype, np.floating)
                                             else y), masks


def train(spec: RunSpec) -> TrainResult:
    """Train as ``spec`` says (see ``harness.backend.RunSpec``), in float64."""
    spec, rbms, recon, pre_s = rbm.pretrained(spec)
    learner = Learner(spec)
    losses_ = np.empty(spec.steps)
    outputs: dict[int, dict[str, np.ndarray]] = {}

    def evaluate(done: int) -> None:
        if done in spec.eval_steps:
            outputs[done] = {k: learner.outputs(np.asarray(a, np.float64)) for k, (a, _) in spec.eval_sets.items()}

    evaluate(0)
    start = time.perf_counter()
    warm = 0.0
    for s in range(spec.steps):
        losses_[s] = learner.step(*batch(spec, s))[0]
        evaluate(s + 1)
        if s == 0:
            warm = time.perf_counter() - start
        if spec.progress is not None and (s + 1) % 1000 == 0:
            spec.progress(s + 1, spec.steps)
    total = time.perf_counter() - start
    run = total - warm
    timing = {"warmup_s": warm, "run_s": run, "total_s": total,
              "steps_per_s": (spec.steps - 1) / run if spec.steps > 1 and run > 0 else float("nan")}
    if spec.lab.pretrain is not None:
        timing["pretrain_s"] = pre_s
    return TrainResult(losses_, outputs, learner.params, learner.state, timing, "cpu", recon, rbms)


def trace(spec: RunSpec, steps: int) -> list[dict]:
    """Every tensor of the first ``steps`` steps, for localising a disagreement: per step a dict with ``loss``
    (before the update), ``grads`` (for the hand-written labs, the update directions), ``updates`` (new - old
    parameters), ``params`` and ``state`` (batch-norm running statistics) after the step; each a flat mapping of
    float64 arrays in the shared layout."""
    learner = Learner(rbm.pretrained(spec)[0])
    records = []
    for s in range(min(steps, spec.steps)):
        before = learner.params
        loss, grads = learner.step(*batch(spec, s))
        records.append({"loss": loss, "grads": grads,
                        "updates": {k: learner.params[k] - before[k] for k in before},
                        "params": dict(learner.params), "state": dict(learner.state)})
    return records
