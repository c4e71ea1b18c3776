"""The JAX learners and training loops (mirrors ``torch_impl/learners.py``): what ``train``, the probe, the bench,
the ensemble, the data-parallel mesh and the mutation suite all train through.

:class:`ModuleLearner` (``jax.value_and_grad`` of a ``models.MLP`` with an Optax optimizer) and
:class:`ManualLearner` (hand-written backprop), each a pure ``step(carry, x, y, masks) -> (carry, loss)``;
:func:`make_learner` picks one as ``harness.backend.choose_learner`` says, :func:`step_fn` wraps its step with the
batch gather and dropout draw. Executions (canonical names from ``harness.backend.resolve_execution``): ``fused``
(:func:`run_fused`: each segment of training up to the next evaluation one ``lax.scan`` program, compiled ahead and
timed apart) and ``per_step`` (:func:`run_per_step`: one jitted step per Python iteration, its carry flattened and
donated, :func:`flat_step`). Both time themselves as ``harness.backend.Timing``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from harness.backend import RunSpec, Timing, choose_learner
from harness.precision import reduced_policy
from jax_impl import manual, models, precision, runtime


class ModuleLearner:
    """Autograd (``jax.value_and_grad``) training of a ``models.MLP`` with an Optax optimizer."""

    def __init__(self, spec: RunSpec, dtype: jnp.dtype) -> None:
        module = models.build(spec.model, dtype, spec.seed, spec.params, spec.state)
        self.graphdef, params, stats = nnx.split(module, nnx.Param, nnx.BatchStat)
        self.opt = models.make_optimizer(spec.lab.optimizer)
        self.carry = (params, self.opt.init(params), stats)
        self.loss = spec.lab.loss

    def step(self, carry: tuple, x: jax.Array, y: jax.Array, masks: list[jax.Array] | None) -> tuple:
        params, opt_state, stats = carry

        def loss_of(p: nnx.State, s: nnx.State) -> tuple[jax.Array, nnx.State]:
            module = nnx.merge(self.graphdef, p, s, copy=True)  # batch norm updates its statistics here
            loss = models.loss_fn(self.loss, module(x, masks, train=True), y)
            return loss, nnx.state(module, nnx.BatchStat)

        (loss, stats), grads = jax.value_and_grad(loss_of, has_aux=True)(params, stats)
        updates, opt_state = self.opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state, stats), loss

    def outputs(self, carry: tuple, x: jax.Array) -> jax.Array:
        return nnx.merge(self.graphdef, carry[0], carry[2])(x, train=False)

    def export(self, carry: tuple) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        return models.get_params(nnx.merge(self.graphdef, carry[0], carry[2]))


class ManualLearner:
    """Hand-written backprop (``manual.py``) on plain arrays."""

    def __init__(self, spec: RunSpec, dtype: jnp.dtype) -> None:
        self.loss, self.lr, self.eps = spec.lab.loss, spec.lab.optimizer.lr, spec.lab.grad_eps
        self.dtype, self.width = dtype, spec.model.sizes[-1]
        params = spec.params if spec.params is not None else models.get_params(
            models.build(spec.model, dtype, spec.seed))[0]
        self.carry = {k: jnp.asarray(v, dtype) for k, v in params.items()}

    def step(self, carry: dict, x: jax.Array, y: jax.Array, masks: list[jax.Array] | None) -> tuple:
        grads, loss = manual.backward(carry, x, manual.targets(self.loss, y, self.width, self.dtype),
                                      self.loss, self.eps)
        return manual.sgd_update(carry, grads, self.lr), loss

    def outputs(self, carry: dict, x: jax.Array) -> jax.Array:
        return manual.forward(carry, x)[1][-1]

    def export(self, carry: dict) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        return {k: np.asarray(v) for k, v in carry.items()}, {}


def make_learner(spec: RunSpec, dtype: Any) -> ModuleLearner | ManualLearner:
    """The learner ``spec``'s lab trains with (``harness.backend.choose_learner``), built from ``spec``; under a
    reduced ``spec.precision``, ``precision.PrecisionLearner`` (Flax NNX dtypes, DynamicScale)."""
    if policy := reduced_policy(spec, "jax"):
        return precision.PrecisionLearner(spec, policy)
    return choose_learner(spec, ModuleLearner, ManualLearner)(spec, dtype)


def step_fn(spec: RunSpec, learner: Any, dtype: jnp.dtype) -> Callable:
    """``(carry, data, xs) -> (carry, loss)`` for one step; ``xs`` holds the step's batch indices, shared masks
    and dropout key (each may be None)."""
    p = spec.model.dropout
    widths = spec.model.sizes[1:-1]

    def body(carry: Any, data: tuple, xs: tuple) -> tuple:
        x, y = data
        idx, masks, key = xs
        if idx is not None:
            x, y = x[idx], y[idx]
        if masks is None and key is not None:  # the framework's own dropout draw
            masks = models.dropout_masks(key, p, x.shape[0], widths, dtype)
        return learner.step(carry, x, y, masks)

    return body


def _slice(xs: Any, start: int, stop: int) -> Any:
    return jax.tree.map(lambda a: a[start:stop], xs)


def _segments(spec: RunSpec) -> list[tuple[int, int]]:
    bounds = sorted({0, spec.steps, *[s for s in spec.eval_steps if 0 < s < spec.steps]})
    return list(zip(bounds[:-1], bounds[1:]))


def _evaluate(spec: RunSpec, done: int, carry: Any, eval_sets: dict, outputs_fn: Callable, outputs: dict) -> None:
    if done in spec.eval_steps:
        outputs[done] = {k: np.asarray(outputs_fn(carry, a)) for k, a in eval_sets.items()}


def run_fused(spec: RunSpec, body: Callable, carry: Any, data: tuple, xs: tuple, eval_sets: dict,
               outputs_fn: Callable) -> tuple:
    """Each segment between evaluations is one compiled ``lax.scan``; compilation is timed apart."""

    def segment(carry: Any, data: tuple, seg_xs: tuple, length: int) -> tuple:
        return jax.lax.scan(lambda c, x: body(c, data, x), carry, seg_xs, length=length)

    jitted = jax.jit(segment, static_argnames="length")
    segments = _segments(spec)
    start = time.perf_counter()
    compiled = {}
    for a, b in segments:
        if b - a not in compiled:
            compiled[b - a] = jitted.lower(carry, data, _slice(xs, a, b), length=b - a).compile()
    compile_s = time.perf_counter() - start
    outputs: dict = {}
    _evaluate(spec, 0, carry, eval_sets, outputs_fn, outputs)
    losses = []
    start = time.perf_counter()
    for a, b in segments:
        carry, seg_losses = compiled[b - a](carry, data, _slice(xs, a, b))
        losses.append(seg_losses)
        _evaluate(spec, b, carry, eval_sets, outputs_fn, outputs)
        if spec.progress is not None:
            spec.progress(b, spec.steps)
    carry = runtime.sync(carry)
    run_s = time.perf_counter() - start
    return carry, jnp.concatenate(losses), outputs, Timing.measured(compile_s, run_s, spec.steps)


def flat_step(body: Callable, carry: Any) -> tuple[Callable, list[jax.Array], Any]:
    """``body`` jitted over the carry's leaves, which it donates: ``(leaves, *args) -> (leaves, loss)``. Flattening
    an NNX state at every dispatch costs more than a small step itself. Returns the step, the carry's leaves and
    its treedef."""
    leaves, treedef = jax.tree.flatten(carry)

    def flat(leaves: list[jax.Array], *args: Any) -> tuple[list[jax.Array], jax.Array]:
        carry, loss = body(jax.tree.unflatten(treedef, leaves), *args)
        return jax.tree.leaves(carry), loss

    return jax.jit(flat, donate_argnums=0), leaves, treedef


def run_per_step(spec: RunSpec, body: Callable, carry: Any, data: tuple, xs: tuple, eval_sets: dict,
                  outputs_fn: Callable) -> tuple:
    """One jitted step per Python iteration (the step's slice of ``xs`` taken inside it); step 0 (which
    compiles) is timed apart as warm-up."""
    step, leaves, treedef = flat_step(lambda c, d, x, s: body(c, d, jax.tree.map(lambda a: a[s], x)), carry)
    outputs: dict = {}
    _evaluate(spec, 0, carry, eval_sets, outputs_fn, outputs)
    losses = []
    start = time.perf_counter()
    warm = 0.0
    for s in range(spec.steps):
        leaves, loss = step(leaves, data, xs, s)
        losses.append(loss)
        if s + 1 in spec.eval_steps:
            _evaluate(spec, s + 1, jax.tree.unflatten(treedef, leaves), eval_sets, outputs_fn, outputs)
        if s == 0:
            runtime.sync(leaves)
            warm = time.perf_counter() - start
        if spec.progress is not None and (s + 1) % 1000 == 0:
            spec.progress(s + 1, spec.steps)
    carry = runtime.sync(jax.tree.unflatten(treedef, leaves))
    run_s = time.perf_counter() - start - warm
    return carry, jnp.stack(losses), outputs, Timing.measured(warm, run_s, spec.steps - 1)
