"""Every tensor of the first training steps, for localising a disagreement (mirrors ``torch_impl/probe.py``).

:func:`trace` trains through the same learner as ``train.train`` (step by step, not jitted: the algorithm,
not the execution mode, is what it looks at) and records, per step, the loss before the update, the
gradients, the update (new - old parameters), the parameters and the batch-norm running statistics after the
step: flat mappings of float64 numpy arrays in the shared layout (``dense{i}/kernel`` [in, out],
``bn{i}/scale``; state as ``models.get_params`` names it), as the numpy referee's ``trace`` records them.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from harness.backend import RunSpec
from jax_impl import manual, models
from jax_impl.train import DTYPES, _ManualLearner, _ModuleLearner, set_precision, x64


def _numpy(arrays: dict[str, jax.Array]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, np.float64) for k, v in arrays.items()}


def _module_grads(learner: _ModuleLearner, carry: tuple, x: jax.Array, y: jax.Array,
                  masks: list[jax.Array] | None) -> dict[str, np.ndarray]:
    """The gradients of the training loss at ``carry``'s parameters (as ``_ModuleLearner.step`` takes them),
    in the shared layout: the gradient state merged into the module's graph and read back by name."""
    params, _, stats = carry

    def loss_of(p: nnx.State) -> jax.Array:
        module = nnx.merge(learner.graphdef, p, stats, copy=True)
        return models.loss_fn(learner.loss, module(x, masks, train=True), y)

    grads = jax.grad(loss_of)(params)
    return _numpy(models.get_params(nnx.merge(learner.graphdef, grads, stats, copy=True))[0])


def _state(learner: _ModuleLearner | _ManualLearner) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    params, state = learner.export(learner.carry)
    return _numpy(params), _numpy(state)


def trace(spec: RunSpec, steps: int) -> list[dict]:
    """Per step of the first ``steps`` (at most ``spec.steps``): ``loss`` (before the update), ``grads`` (for
    the hand-written labs, the lectures' update directions), ``updates`` (new - old parameters), ``params`` and
    ``state`` after the step."""
    dtype = DTYPES[spec.dtype]
    set_precision()
    with x64(spec.dtype == "float64"), jax.default_device(jax.devices(spec.device)[0]):
        learner = (_ManualLearner if spec.lab.manual else _ModuleLearner)(spec, dtype)
        x = jnp.asarray(spec.train_x, dtype)
        y = jnp.asarray(spec.train_y, dtype if np.issubdtype(spec.train_y.dtype, np.floating) else jnp.int32)
        keys = (jax.random.split(jax.random.key(spec.seed), spec.steps)
                if spec.masks is None and spec.model.dropout > 0 else None)
        records = []
        for s in range(min(steps, spec.steps)):
            xb, yb = (x, y) if spec.batches is None else (x[spec.batches[s]], y[spec.batches[s]])
            if spec.masks is not None:
                masks = [jnp.asarray(m[s], dtype) for m in spec.masks]
            else:  # the framework's own draw, as train.train makes it
                masks = None if keys is None else models.dropout_masks(
                    keys[s], spec.model.dropout, xb.shape[0], spec.model.sizes[1:-1], dtype)
            before, _ = _state(learner)
            if isinstance(learner, _ManualLearner):
                target = manual.targets(learner.loss, yb, learner.width, learner.dtype)
                grads = _numpy(manual.backward(learner.carry, xb, target, learner.loss, learner.eps)[0])
            else:
                grads = _module_grads(learner, learner.carry, xb, yb, masks)
            learner.carry, loss = learner.step(learner.carry, xb, yb, masks)
            params, state = _state(learner)
            records.append({"loss": float(loss), "grads": grads,
                            "updates": {k: params[k] - before[k] for k in params}, "params": params,
                            "state": state})
    return records
