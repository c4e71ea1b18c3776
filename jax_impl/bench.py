"""The JAX side of ``harness.bench`` (mirrors ``torch_impl/bench.py``): settings, the matmul peak, and steppers
that run the trainer's own step (``learners.py``) on batches gathered onto the device before timing.

Modes (the registry's executions): ``per_step`` (one jitted step per dispatch, its carry flattened and donated,
as ``train`` runs it) and ``fused`` (``fuse_steps`` consecutive steps as one ``lax.scan`` program).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable
from typing import Any

# torch and JAX may share one accelerator in a process (bench, report): JAX must not take 75% of its memory
# when its backend starts (it reads this then, not at import).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from harness.backend import BackendError, RunSpec, Stepper, executions_on, resolve_execution
from jax_impl import learners, runtime


def modes(device: str) -> tuple[str, ...]:
    """The modes this framework offers on ``device`` (its registry entry's)."""
    return executions_on("jax", device)


# XLA's CPU intra-op pool: its size, when this module started the backend with it pinned (None: not pinned here)
_POOL: dict[str, Any] = {"threads": None, "cores": None}


def _backend_started() -> bool:
    from jax._src import xla_bridge  # no public way to ask; only whether, nothing is changed

    return xla_bridge.backends_are_initialized()


def pin_threads(threads: int) -> bool:
    """Start XLA's backends with its CPU intra-op pool sized to ``threads``, if they have not started: XLA sizes
    the pool from the process's CPU affinity at start-up (``XLA_FLAGS``' ``--xla_cpu_multi_thread_eigen=false``
    does not in this jaxlib), so the affinity is narrowed to ``threads`` cores while they start and restored
    after (the pool's own threads keep the narrowed set). Whether the pool is now ``threads`` wide."""
    if _POOL["threads"] is not None or _backend_started() or not hasattr(os, "sched_setaffinity"):
        return _POOL["threads"] == threads
    cores = sorted(os.sched_getaffinity(0))
    if threads >= len(cores):
        jax.devices()
        _POOL.update(threads=len(cores), cores=cores)
        return _POOL["threads"] == threads
    os.sched_setaffinity(0, cores[:threads])
    try:
        jax.devices()
    finally:
        os.sched_setaffinity(0, cores)
    _POOL.update(threads=threads, cores=cores[:threads])
    return True


def pool_threads() -> int | None:
    """XLA's CPU intra-op pool: as pinned by :func:`pin_threads`, else the cores the process may use (what XLA
    sizes it from when it starts)."""
    if _POOL["threads"] is not None:
        return _POOL["threads"]
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def configure(threads: int | None) -> dict:
    """Full float32 matmuls and, before XLA's backends start, its CPU pool pinned to ``threads``
    (:func:`pin_threads`; afterwards the pool is fixed and ``threads`` is only recorded); every setting in
    effect."""
    if threads:
        pin_threads(threads)
    return {"threads": pool_threads(), "threads_requested": threads, "pinned_cores": _POOL["cores"],
            "XLA_FLAGS": os.environ.get("XLA_FLAGS"), **runtime.set_precision()}


def device_info(device: str) -> dict:
    """What the results should say about the device beyond the CPU model."""
    dev = jax.devices(device)[0]
    return {"jax_device": str(dev), "device_kind": dev.device_kind}


def matmul_timer(device: str, n: int, dtype: str = "float32") -> Callable[[], float]:
    """A function timing one ``n`` x ``n`` matmul of ``dtype`` operands (float32 at full precision; bfloat16 and
    float16 operands accumulated in float32), ended by ``block_until_ready``, in seconds, on operands made once."""
    dev = jax.devices(device)[0]
    rng = np.random.default_rng(0)
    a, b = (jax.device_put(jnp.asarray(rng.random((n, n), np.float32), runtime.storage_dtype(dtype)), dev)
            for _ in range(2))
    # bfloat16/float16: products accumulated and returned in float32, as a precision policy's layers compute them
    # (jax_impl/precision.py); XLA's CPU dot with a low-precision result runs several times slower
    wide = None if dtype in ("float32", "float64") else jnp.float32
    matmul = jax.jit(lambda a, b: jnp.matmul(a, b, precision=runtime.PRECISION, preferred_element_type=wide))
    for _ in range(2):
        matmul(a, b).block_until_ready()

    def timed() -> float:
        start = time.perf_counter()
        matmul(a, b).block_until_ready()
        return time.perf_counter() - start

    return timed


def _pool(spec: RunSpec, dtype: jnp.dtype) -> tuple:
    """Every step's batch, shared masks and dropout key gathered once onto the device: a leading axis of ``P``
    steps. The full-batch labs keep the whole training set as ``data`` and pool only masks and keys."""
    y_dtype = runtime.label_dtype(spec.train_y, dtype)
    steps = len(spec.batches) if spec.batches is not None else 1
    if spec.batches is None:
        data, xb, yb = (jnp.asarray(spec.train_x, dtype), jnp.asarray(spec.train_y, y_dtype)), None, None
    else:
        data = None
        xb = jnp.asarray(spec.train_x[spec.batches], dtype)
        yb = jnp.asarray(spec.train_y[spec.batches], y_dtype)
    masks = None if spec.masks is None else [jnp.asarray(m[:steps], dtype) for m in spec.masks]
    keys = (jax.random.split(jax.random.key(spec.seed), steps)
            if spec.masks is None and spec.model.dropout > 0 else None)
    return data, (xb, yb, masks, keys), steps


def _step_args(data: tuple | None, t: tuple) -> tuple:
    """``learners.step_fn``'s ``(data, xs)`` for one pooled step ``t = (x, y, masks, key)``."""
    x, y, masks, key = t
    return (data if x is None else (x, y)), (None, masks, key)


def _cycling_stepper(mode: str, fn: Callable, leaves: Any, args: list[tuple], unit_steps: int,
                     info: dict) -> Stepper:
    """Dispatches of ``leaves, loss = fn(leaves, *args[i])``, cycling through ``args``, the flat carry donated from
    one to the next."""
    state: dict[str, Any] = {"leaves": leaves, "loss": None}
    cycle = itertools.cycle(args)

    def unit() -> None:
        state["leaves"], state["loss"] = fn(state["leaves"], *next(cycle))

    def bare(units: int) -> None:
        leaves = state["leaves"]
        for i in range(units):
            leaves, out = fn(leaves, *args[i % len(args)])
        state["leaves"], state["loss"] = leaves, out

    def sync() -> None:
        jax.block_until_ready(state["leaves"])

    def loss() -> float:
        return float(np.asarray(state["loss"]).reshape(-1)[-1])

    return Stepper(mode, unit, unit_steps, sync, loss, bare, info)


def _chunks(pool: tuple, steps: int, k: int) -> list:
    """The pooled steps in chunks of ``k`` (the full-batch labs: masks and keys, if any, repeated ``k`` times)."""
    if steps > 1 and steps % k:
        raise BackendError(f"fuse steps {k} must divide the {steps} pooled batches")
    if steps == 1:  # full batch: every step sees the same data; masks and keys (if any) repeat
        return [jax.tree.map(lambda a: jnp.repeat(a, k, axis=0), pool)]
    return [jax.tree.map(lambda a, i=i: a[i:i + k], pool) for i in range(0, steps, k)]


def _fused_stepper(body: Callable, carry: Any, data: tuple | None, pool: tuple, steps: int, k: int) -> Stepper:
    """``k`` steps per dispatch as one ``lax.scan`` program over a chunk of pooled steps."""
    chunks = _chunks(pool, steps, k)

    def block(c: Any, data: tuple | None, chunk: tuple) -> tuple:
        return jax.lax.scan(lambda c, t: body(c, *_step_args(data, t)), c, chunk, length=k)

    scan, leaves, _ = learners.flat_step(block, carry)
    return _cycling_stepper("fused", scan, leaves, [(data, c) for c in chunks], k,
                            {"pool_steps": steps, "fuse_steps": k})


def make_stepper(spec: RunSpec, mode: str, fuse_steps: int = 10) -> Stepper:
    """A :class:`Stepper` running ``spec``'s lab in ``mode``; each step takes the next pre-gathered batch,
    cycling through ``spec.batches``. ``fuse_steps`` (fused: the scan length) must divide their number."""
    mode = resolve_execution("jax", mode, spec.device)
    if spec.dtype != "float32":
        raise BackendError("bench runs float32 only")
    dtype = runtime.dtype(spec.dtype)
    with jax.default_device(runtime.device(spec.device)):
        learner = learners.make_learner(spec, dtype)
        body = learners.step_fn(spec, learner, dtype)
        data, pool, steps = _pool(spec, dtype)
        if mode == "fused":
            return _fused_stepper(body, learner.carry, data, pool, steps, fuse_steps)
        step, leaves, _ = learners.flat_step(body, learner.carry)
        args = [_step_args(data, jax.tree.map(lambda a, j=j: a[j], pool)) for j in range(steps)]
        return _cycling_stepper(mode, step, leaves, args, 1, {"pool_steps": steps})
