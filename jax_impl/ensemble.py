"""An ensemble of runs that differ only in their initial weights (and dropout seeds), trained together in JAX
(mirrors ``torch_impl/ensemble.py``): the statistical parity tier's twins (``harness.parity.ensemble``).

The members' carries are stacked on a leading axis and the training step of ``jax_impl/train.py`` is mapped
over them with ``jax.vmap`` inside one ``lax.scan``: one compiled program for the whole ensemble, whatever the
execution mode asked (the scan is ``fused`` execution's loop).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from harness.backend import RunSpec
from harness.parity.ensemble import window_spec
from harness.weights import Params
from jax_impl import rbm, train


def _inputs(spec: RunSpec, dtype: jnp.dtype, seeds: Sequence[int]) -> tuple[tuple, tuple, bool]:
    """Training data, the per-step inputs (batch indices, shared masks, dropout keys ``[steps, members]``) and
    whether the keys differ per member (each member's keys as ``train.train`` draws them from its seed)."""
    data = (jnp.asarray(spec.train_x, dtype),
            jnp.asarray(spec.train_y, dtype if np.issubdtype(spec.train_y.dtype, np.floating) else jnp.int32))
    own = spec.masks is None and spec.model.dropout > 0
    keys = (jnp.stack([jax.random.split(jax.random.key(s), spec.steps) for s in seeds], axis=1)
            if own else None)
    xs = (None if spec.batches is None else jnp.asarray(spec.batches, jnp.int32),
          None if spec.masks is None else [jnp.asarray(m, dtype) for m in spec.masks], keys)
    return data, xs, own


def train_ensemble(spec: RunSpec, params_list: Sequence[Params], steps: int,
                   seeds: Sequence[int] | None = None) -> np.ndarray:
    """The training losses ``[members, steps]`` of the first ``steps`` steps of ``spec``, once from each of
    ``params_list`` (shared layout), member ``i`` drawing its own dropout masks from ``seeds[i]`` where ``spec``
    has no shared masks (default: ``spec.seed`` for all). Member ``i`` equals ``train.train`` of
    ``window_spec(spec, steps, params_list[i], seeds[i])`` up to rounding."""
    seeds = list(seeds) if seeds is not None else [spec.seed] * len(params_list)
    spec = window_spec(spec, steps)
    dtype = train.DTYPES[spec.dtype]
    with train.x64(spec.dtype == "float64"), jax.default_device(jax.devices(spec.device)[0]):
        kind = train._ManualLearner if spec.lab.manual else train._ModuleLearner
        # each member's network starts from its own RBM pre-training, where the lab declares one
        learners = [kind(rbm.pretrained(window_spec(spec, steps, params), dtype)[0], dtype) for params in params_list]
        carry = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[lr.carry for lr in learners])
        body = train._step_fn(spec, learners[0], dtype)  # the step reads only the learners' shared structure
        data, xs, own = _inputs(spec, dtype, seeds)

        def run(carry: tuple, data: tuple, xs: tuple) -> jax.Array:
            def step(carry: tuple, step_xs: tuple) -> tuple:
                idx, masks, keys = step_xs
                member = jax.vmap(lambda c, k: body(c, data, (idx, masks, k)), in_axes=(0, 0 if own else None))
                return member(carry, keys)

            return jax.lax.scan(step, carry, xs, length=steps)[1]

        train.set_precision()
        return np.asarray(jax.jit(run)(carry, data, xs), np.float64).T
