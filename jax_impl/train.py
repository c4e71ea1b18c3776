"""The JAX training run: implements ``harness.backend.Backend.train`` (mirrors ``torch_impl/train.py``).

``fused`` execution compiles a whole segment of training (up to the next evaluation, or the whole run) into
one program with ``lax.scan``: the loss trajectory is recorded on device with no per-step host round-trip.
``per_step`` execution dispatches one jitted step per Python iteration, its carry flattened to a list of arrays
and donated, so dispatch costs no pytree work. Compile time is reported apart. The learners and loops:
``learners.py``; dtypes, precision and placement: ``runtime.py``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from harness.backend import RunSpec, TrainResult, resolve_execution
from jax_impl import learners, rbm, runtime


def train(spec: RunSpec) -> TrainResult:
    """Train as ``spec`` says; see ``harness.backend.RunSpec``."""
    spec = dataclasses.replace(spec, execution=resolve_execution("jax", spec.execution, spec.device))
    device, dtype = runtime.device(spec.device), runtime.dtype(spec.dtype)
    with runtime.x64(spec.dtype == "float64"), jax.default_device(device):
        spec, rbms, recon, pre_s = rbm.pretrained(spec, dtype)  # RBM pre-training, where the lab declares it
        learner = learners.make_learner(spec, dtype)
        data = (jnp.asarray(spec.train_x, dtype), runtime.to_array(spec.train_y, dtype))
        xs = (
            runtime.to_array(spec.batches, dtype),
            None if spec.masks is None else [jnp.asarray(m, dtype) for m in spec.masks],
            jax.random.split(jax.random.key(spec.seed), spec.steps)
            if spec.masks is None and spec.model.dropout > 0 else None,
        )
        eval_sets = {k: jnp.asarray(a, dtype) for k, (a, _) in spec.eval_sets.items()}
        body = learners.step_fn(spec, learner, dtype)
        outputs_fn = jax.jit(lambda carry, x: learner.outputs(carry, x))
        runtime.set_precision()
        run = learners.run_fused if spec.execution == "fused" else learners.run_per_step
        carry, losses, outputs, timing = run(spec, body, learner.carry, data, xs, eval_sets, outputs_fn)
        params, state = learner.export(carry)
    timing.pretrain_s = pre_s if spec.lab.pretrain is not None else None
    return TrainResult(np.asarray(losses, np.float64), outputs, params, state, timing, str(device), recon, rbms)
