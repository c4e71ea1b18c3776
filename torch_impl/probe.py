"""Every tensor of the first training steps, for localising a disagreement (mirrors ``jax_impl/probe.py``).

:func:`trace` trains through the same learner as ``train.train`` (eager: the algorithm, not the execution
mode, is what it looks at) and records, per step, the loss before the update, the gradients, the update
(new - old parameters), the parameters and the batch-norm running statistics after the step: a
``harness.backend.TraceStep`` per step, in the shared layout (``dense{i}/kernel`` [in, out], ``bn{i}/scale``; state
as ``models.get_params`` names it), as the numpy referee's ``trace`` records them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from harness.backend import RunSpec, TraceStep, trace_step
from torch_impl import learners, manual, models, rbm, runtime
from torch_impl.learners import ManualLearner, ModuleLearner


def _module_grads(module: models.MLP) -> dict[str, np.ndarray]:
    """The gradients left on ``module``'s parameters, in the shared layout (kernels [in, out])."""
    out = {}
    for i, layer in enumerate(module.dense):
        out[f"dense{i}/kernel"] = layer.weight.grad.T
        out[f"dense{i}/bias"] = layer.bias.grad
    for i, bn in enumerate(module.bn):
        out[f"bn{i}/scale"] = bn.weight.grad
        out[f"bn{i}/bias"] = bn.bias.grad
    return runtime.to_numpy(out, np.float64)


def trace(spec: RunSpec, steps: int) -> list[TraceStep]:
    """Per step of the first ``steps`` (at most ``spec.steps``): ``loss`` (before the update), ``grads`` (for
    the hand-written labs, the lectures' update directions), ``updates`` (new - old parameters), ``params`` and
    ``state`` after the step."""
    spec = dataclasses.replace(spec, execution="eager")
    dtype, device = runtime.dtype(spec.dtype), runtime.device(spec.device)
    runtime.set_precision()
    spec = rbm.pretrained(spec, dtype, device)[0]  # the network's initial weights, where pre-training makes them
    learner = learners.make_learner(spec, dtype, device)
    to = runtime.to_tensor
    x, y = to(spec.train_x, device, dtype), to(spec.train_y, device, dtype)
    batches = to(spec.batches, device)
    masks = [to(m, device, dtype) for m in spec.masks] if spec.masks is not None else None
    records = []
    for s in range(min(steps, spec.steps)):
        xb, yb = (x, y) if batches is None else (x[batches[s]], y[batches[s]])
        step_masks = [m[s] for m in masks] if masks is not None else None
        before = learner.export()[0]
        if isinstance(learner, ManualLearner):
            target = manual.targets(learner.loss, yb, learner.width, learner.dtype)
            grads = runtime.to_numpy(manual.backward(learner.params, xb, target, learner.loss, learner.eps)[0],
                                     np.float64)
        loss = learner.step(xb, yb, step_masks)
        if isinstance(learner, ModuleLearner):
            grads = _module_grads(learner.module)  # step() zeroes gradients before, not after
        records.append(trace_step(loss, grads, before, *learner.export()))
    return records
