"""Every tensor of the first training steps, for localising a disagreement (mirrors ``torch_impl/probe.py``).

:func:`trace` trains through the same learner as ``train.train`` (one jitted step at a time: the algorithm, not
the execution mode, is what it looks at) and records, per step, the loss before the update, the
gradients, the update (new - old parameters), the parameters and the batch-norm running statistics after the
step: a ``harness.backend.TraceStep`` per step, in the shared layout (``dense{i}/kernel`` [in, out],
``bn{i}/scale``; state as ``models.get_params`` names it), as the numpy referee's ``trace`` records them.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from harness.backend import RunSpec, TraceStep, trace_step
from jax_impl import learners, manual, models, rbm, runtime
from jax_impl.learners import ManualLearner, ModuleLearner


def _probe_step(learner: ModuleLearner | ManualLearner) -> Callable:
    """``(carry, x, y, masks) -> (carry, loss, grads)``: the learner's own step, and the gradients it takes
    (recomputed as ``ModuleLearner.step`` takes them; for the hand-written labs ``manual.backward``'s update
    directions), jitted as one program."""
    if isinstance(learner, ManualLearner):
        def manual_step(carry: dict, x: jax.Array, y: jax.Array, masks: list | None) -> tuple:
            target = manual.targets(learner.loss, y, learner.width, learner.dtype)
            grads = manual.backward(carry, x, target, learner.loss, learner.eps)[0]
            return (*learner.step(carry, x, y, masks), grads)

        return jax.jit(manual_step)

    def module_step(carry: tuple, x: jax.Array, y: jax.Array, masks: list | None) -> tuple:
        params, _, stats = carry

        def loss_of(p: nnx.State) -> jax.Array:
            module = nnx.merge(learner.graphdef, p, stats, copy=True)
            return models.loss_fn(learner.loss, module(x, masks, train=True), y)

        return (*learner.step(carry, x, y, masks), jax.grad(loss_of)(params))

    return jax.jit(module_step)


def _layout(learner: ModuleLearner | ManualLearner, grads: object, carry: object) -> dict[str, np.ndarray]:
    """Gradients in the shared layout (a module's: merged into its graph as parameters and read back by name)."""
    if isinstance(learner, ManualLearner):
        return runtime.to_numpy(grads, np.float64)
    return runtime.to_numpy(models.get_params(nnx.merge(learner.graphdef, grads, carry[2], copy=True))[0], np.float64)


def _masks(spec: RunSpec, s: int, batch: int, np_dtype: np.dtype, dtype: jnp.dtype) -> list[jax.Array] | None:
    """Step ``s``'s keep-masks: the shared ones, or the framework's own draw as ``train.train`` makes it."""
    if spec.masks is not None:
        return [jnp.asarray(m[s].astype(np_dtype)) for m in spec.masks]
    if spec.model.dropout == 0:
        return None
    key = jax.random.split(jax.random.key(spec.seed), spec.steps)[s]
    return models.dropout_masks(key, spec.model.dropout, batch, spec.model.sizes[1:-1], dtype)


def trace(spec: RunSpec, steps: int) -> list[TraceStep]:
    """Per step of the first ``steps`` (at most ``spec.steps``): ``loss`` (before the update), ``grads`` (for
    the hand-written labs, the lectures' update directions), ``updates`` (new - old parameters), ``params`` and
    ``state`` after the step."""
    dtype, np_dtype = runtime.dtype(spec.dtype), np.dtype(spec.dtype)
    runtime.set_precision()
    with runtime.x64(spec.dtype == "float64"), jax.default_device(runtime.device(spec.device)):
        spec = rbm.pretrained(spec, dtype)[0]  # the network's initial weights, where pre-training makes them
        learner = learners.make_learner(spec, dtype)
        step = _probe_step(learner)
        records = []
        for s in range(min(steps, spec.steps)):
            idx = slice(None) if spec.batches is None else spec.batches[s]
            xb = jnp.asarray(spec.train_x[idx].astype(np_dtype))
            y = spec.train_y[idx]
            yb = jnp.asarray(y.astype(np_dtype) if np.issubdtype(y.dtype, np.floating) else y.astype(np.int32))
            before = learner.export(learner.carry)[0]
            carry, loss, grads = step(learner.carry, xb, yb, _masks(spec, s, xb.shape[0], np_dtype, dtype))
            grads = _layout(learner, grads, learner.carry)
            learner.carry = carry
            records.append(trace_step(loss, grads, before, *learner.export(carry)))
    return records
