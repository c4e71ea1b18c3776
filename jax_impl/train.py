"""The JAX training loop: implements ``harness.backend`` (mirrors ``torch_impl/train.py``).

``fused`` execution compiles a whole segment of training (up to the next evaluation, or the whole run) into
one program with ``lax.scan``: the loss trajectory is recorded on device with no per-step host round-trip.
``per_step`` execution dispatches one jitted step per Python iteration, its carry flattened to a list of arrays
and donated (:func:`flat_step`), so dispatch costs no pytree work. Compile time is reported apart.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from harness.backend import BackendError, RunSpec, TrainResult
from jax_impl import manual, models, rbm

DTYPES = {"float32": jnp.float32, "float64": jnp.float64}
EXECUTIONS = ("per_step", "fused")


def compilation_cache() -> str | None:
    """Turn on JAX's persistent compilation cache (every program, however quick to compile), in
    ``$DLZTA_JAX_CACHE`` or ``$XDG_CACHE_HOME/dlzta/jax`` (default ``~/.cache/dlzta/jax``); the folder, or None when
    it is off (``DLZTA_JAX_CACHE=off``) or JAX's own ``JAX_COMPILATION_CACHE_DIR`` chooses. A program compiled
    once is loaded, not compiled again: the exact tier's one-ulp twin is the float64 run's very program (only the
    weights differ), and a second job or test session reuses the first's. The executable is the same, so
    results are too; compile time is reported apart from the steady state either way."""
    setting = os.environ.get("DLZTA_JAX_CACHE", "")
    if setting.lower() in ("0", "off", "no", "false") or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = setting or os.path.join(base, "dlzta", "jax")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


CACHE_DIR = compilation_cache()


def available_devices() -> list[str]:
    """Devices JAX can use here, in the harness's names."""
    found = []
    for platform in ("cpu", "gpu", "tpu"):
        try:
            if jax.devices(platform):
                found.append(platform)
        except RuntimeError:
            pass
    return found


def versions() -> dict[str, str]:
    """Framework versions, for the results."""
    import flax

    return {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__}


@contextlib.contextmanager
def x64(enabled: bool) -> Iterator[None]:
    """64-bit mode for the duration of a run (float64 runs), restored afterwards."""
    if hasattr(jax, "enable_x64"):
        with jax.enable_x64(enabled):
            yield
        return
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", enabled)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


def sync(tree: Any) -> Any:
    """Wait for every array of ``tree`` (JAX dispatches asynchronously)."""
    return jax.block_until_ready(tree)


def set_precision() -> dict[str, object]:
    """Full float32 matmuls (no silent TF32/bf16 passes on accelerators), set explicitly; returns the settings in
    effect. The models also ask for ``Precision.HIGHEST`` in every layer."""
    jax.config.update("jax_default_matmul_precision", "highest")
    return {"jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
            "layer_precision": str(models.PRECISION)}


class _ModuleLearner:
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


class _ManualLearner:
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


def _step_fn(spec: RunSpec, learner: Any, dtype: jnp.dtype) -> Callable:
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


def train(spec: RunSpec) -> TrainResult:
    """Train as ``spec`` says; see ``harness.backend.RunSpec``."""
    device = jax.devices(spec.device)[0]
    dtype = DTYPES[spec.dtype]
    with x64(spec.dtype == "float64"), jax.default_device(device):
        spec, rbms, recon, pre_s = rbm.pretrained(spec, dtype)  # RBM pre-training, where the lab declares it
        learner = (_ManualLearner if spec.lab.manual else _ModuleLearner)(spec, dtype)
        data = (jnp.asarray(spec.train_x, dtype),
                jnp.asarray(spec.train_y, dtype if np.issubdtype(spec.train_y.dtype, np.floating) else jnp.int32))
        xs = (
            None if spec.batches is None else jnp.asarray(spec.batches, jnp.int32),
            None if spec.masks is None else [jnp.asarray(m, dtype) for m in spec.masks],
            jax.random.split(jax.random.key(spec.seed), spec.steps)
            if spec.masks is None and spec.model.dropout > 0 else None,
        )
        eval_sets = {k: jnp.asarray(a, dtype) for k, (a, _) in spec.eval_sets.items()}
        body = _step_fn(spec, learner, dtype)
        outputs_fn = jax.jit(lambda carry, x: learner.outputs(carry, x))
        execution = spec.execution or "fused"  # the default (registry: jax's first execution)
        if execution not in EXECUTIONS:
            raise BackendError(f"jax has no execution {execution!r}; choose from {', '.join(EXECUTIONS)}")
        set_precision()
        run = _run_fused if execution == "fused" else _run_per_step
        carry, losses, outputs, timing = run(spec, body, learner.carry, data, xs, eval_sets, outputs_fn)
        params, state = learner.export(carry)
    if spec.lab.pretrain is not None:
        timing["pretrain_s"] = pre_s
    return TrainResult(np.asarray(losses, np.float64), outputs, params, state, timing, str(device), recon, rbms)


def _slice(xs: Any, start: int, stop: int) -> Any:
    return jax.tree.map(lambda a: a[start:stop], xs)


def _segments(spec: RunSpec) -> list[tuple[int, int]]:
    bounds = sorted({0, spec.steps, *[s for s in spec.eval_steps if 0 < s < spec.steps]})
    return list(zip(bounds[:-1], bounds[1:]))


def _evaluate(spec: RunSpec, done: int, carry: Any, eval_sets: dict, outputs_fn: Callable, outputs: dict) -> None:
    if done in spec.eval_steps:
        outputs[done] = {k: np.asarray(outputs_fn(carry, a)) for k, a in eval_sets.items()}


def _run_fused(spec: RunSpec, body: Callable, carry: Any, data: tuple, xs: tuple, eval_sets: dict,
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
    carry = sync(carry)
    run_s = time.perf_counter() - start
    timing = {"compile_s": compile_s, "warmup_s": compile_s, "run_s": run_s, "total_s": compile_s + run_s,
              "steps_per_s": spec.steps / run_s if run_s > 0 else float("nan")}
    return carry, jnp.concatenate(losses), outputs, timing


def flat_step(body: Callable, carry: Any) -> tuple[Callable, list[jax.Array], Any]:
    """``body`` jitted over the carry's leaves, which it donates: ``(leaves, *args) -> (leaves, loss)``. Flattening
    an NNX state at every dispatch costs more than a small step itself. Returns the step, the carry's leaves and
    its treedef."""
    leaves, treedef = jax.tree.flatten(carry)

    def flat(leaves: list[jax.Array], *args: Any) -> tuple[list[jax.Array], jax.Array]:
        carry, loss = body(jax.tree.unflatten(treedef, leaves), *args)
        return jax.tree.leaves(carry), loss

    return jax.jit(flat, donate_argnums=0), leaves, treedef


def _run_per_step(spec: RunSpec, body: Callable, carry: Any, data: tuple, xs: tuple, eval_sets: dict,
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
            sync(leaves)
            warm = time.perf_counter() - start
        if spec.progress is not None and (s + 1) % 1000 == 0:
            spec.progress(s + 1, spec.steps)
    carry = sync(jax.tree.unflatten(treedef, leaves))
    run_s = time.perf_counter() - start - warm
    timing = {"compile_s": warm, "warmup_s": warm, "run_s": run_s, "total_s": warm + run_s,
              "steps_per_s": (spec.steps - 1) / run_s if spec.steps > 1 and run_s > 0 else float("nan")}
    return carry, jnp.stack(losses), outputs, timing
