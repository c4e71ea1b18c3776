"""Every tensor of the first training steps, for localising a disagreement (mirrors ``jax_impl/probe.py``).

:func:`trace` trains through the same learner as ``train.train`` (eager: the algorithm, not the execution
mode, is what it looks at) and records, per step, the loss before the update, the gradients, the update
(new - old parameters), the parameters and the batch-norm running statistics after the step: flat mappings of
float64 numpy arrays in the shared layout (``dense{i}/kernel`` [in, out], ``bn{i}/scale``; state as
``models.get_params`` names it), as the numpy referee's ``trace`` records them.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from harness.backend import RunSpec
from torch_impl import manual, models, rbm
from torch_impl.train import DTYPES, _ManualLearner, _ModuleLearner, _to, set_precision


def _numpy(tensors: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().astype(np.float64) for k, v in tensors.items()}


def _module_grads(module: models.MLP) -> dict[str, np.ndarray]:
    """The gradients left on ``module``'s parameters, in the shared layout (kernels [in, out])."""
    out = {}
    for i, layer in enumerate(module.dense):
        out[f"dense{i}/kernel"] = layer.weight.grad.T
        out[f"dense{i}/bias"] = layer.bias.grad
    for i, bn in enumerate(module.bn):
        out[f"bn{i}/scale"] = bn.weight.grad
        out[f"bn{i}/bias"] = bn.bias.grad
    return _numpy(out)


def _state(learner: _ModuleLearner | _ManualLearner) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    params, state = learner.export()
    return ({k: np.asarray(v, np.float64) for k, v in params.items()},
            {k: np.asarray(v, np.float64) for k, v in state.items()})


def trace(spec: RunSpec, steps: int) -> list[dict]:
    """Per step of the first ``steps`` (at most ``spec.steps``): ``loss`` (before the update), ``grads`` (for
    the hand-written labs, the lectures' update directions), ``updates`` (new - old parameters), ``params`` and
    ``state`` after the step."""
    spec = dataclasses.replace(spec, execution="eager")
    dtype = DTYPES[spec.dtype]
    device = torch.device("cuda" if spec.device == "gpu" else "cpu")
    set_precision()
    spec = rbm.pretrained(spec, dtype, device)[0]  # the network's initial weights, where pre-training makes them
    learner = (_ManualLearner if spec.lab.manual else _ModuleLearner)(spec, dtype, device)
    x, y = _to(spec.train_x, device, dtype), _to(spec.train_y, device, dtype)
    batches = _to(spec.batches, device)
    masks = [_to(m, device, dtype) for m in spec.masks] if spec.masks is not None else None
    records = []
    for s in range(min(steps, spec.steps)):
        xb, yb = (x, y) if batches is None else (x[batches[s]], y[batches[s]])
        step_masks = [m[s] for m in masks] if masks is not None else None
        before, _ = _state(learner)
        if isinstance(learner, _ManualLearner):
            target = manual.targets(learner.loss, yb, learner.width, learner.dtype)
            grads = _numpy(manual.backward(learner.params, xb, target, learner.loss, learner.eps)[0])
        loss = learner.step(xb, yb, step_masks)
        if isinstance(learner, _ModuleLearner):
            grads = _module_grads(learner.module)  # step() zeroes gradients before, not after
        params, state = _state(learner)
        records.append({"loss": float(loss), "grads": grads,
                        "updates": {k: params[k] - before[k] for k in params}, "params": params, "state": state})
    return records
