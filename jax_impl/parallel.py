"""Data-parallel training in JAX (mirrors ``torch_impl/parallel.py``; semantics in ``harness.run.parallel``).

``jax.sharding``: a ``Mesh`` over N devices (axis ``data``), every step's batch and shared masks placed with a
``NamedSharding`` that splits their rows over it, the weights and optimizer state replicated, and the trainer's
own step (``train._step_fn`` over ``train._ModuleLearner``) jitted by ``train``'s own loops. The loss is the
global-batch mean, so the gradient XLA's partitioner computes (partial sums per device, then its all-reduce) is
the average over devices. Several processes (``jax.distributed.initialize``; coordinator, process count and index
from ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``) form one mesh over all their devices.

Batch norm: ``sync`` is the unchanged model, whose batch mean and variance in a sharded program are the global
batch's; ``local`` replaces each layer with :class:`LocalBatchNorm`, statistics per shard (rows reshaped to
``[N, B/N]``, the leading axis on the mesh), running statistics updated with their mean over shards.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from harness.backend import BackendError, RunSpec, Stepper, TrainResult
from harness.run.parallel import Parallel
from jax_impl import models
from jax_impl import train as jax_train

AXIS = "data"
EXECUTIONS = jax_train.EXECUTIONS  # both of train's loops run sharded


def process_env(device: str, n: int) -> dict[str, str]:
    """Environment a fresh process needs to see ``n`` devices: on a CPU, ``n`` host devices."""
    return {"JAX_NUM_CPU_DEVICES": str(n)} if device == "cpu" else {}


def multiprocess_env(index: int, count: int, address: str) -> dict[str, str]:
    """Environment of process ``index`` of ``count`` cooperating processes (read by :func:`initialize`)."""
    return {"JAX_COORDINATOR_ADDRESS": address, "JAX_NUM_PROCESSES": str(count), "JAX_PROCESS_ID": str(index)}


def initialize() -> None:
    """``jax.distributed.initialize`` from the environment when it names several processes (once)."""
    count = int(os.environ.get("JAX_NUM_PROCESSES", "1"))
    if count > 1 and not jax.distributed.is_initialized():
        jax.distributed.initialize(os.environ["JAX_COORDINATOR_ADDRESS"], count, int(os.environ["JAX_PROCESS_ID"]),
                                   initialization_timeout=120)


def prepare_devices(device: str, n: int) -> bool:
    """Whether this process can drive ``n`` devices of kind ``device``: on a CPU whose JAX has not started yet, ask
    for ``n`` host devices; False where it started with fewer (a fresh process must run it)."""
    initialize()
    from jax._src import xla_bridge

    if device == "cpu" and not xla_bridge.backends_are_initialized() and not jax.distributed.is_initialized():
        jax.config.update("jax_num_cpu_devices", max(n, jax.config.jax_num_cpu_devices))
    found = len(jax.devices(device)) if device in jax_train.available_devices() else 0
    if found >= n:
        return True
    if device != "cpu" or jax.process_count() > 1:
        raise BackendError(f"{n} {device} devices asked, JAX sees {found}")
    return False


def process_count(devices: int) -> int:
    """Processes a run over ``devices`` devices takes: those joined by ``jax.distributed`` (one without it)."""
    return jax.process_count()


def is_primary() -> bool:
    """Process 0 (the only one, without ``jax.distributed``)."""
    return jax.process_index() == 0


class LocalBatchNorm(models.BatchNorm):
    """``models.BatchNorm`` with statistics per shard: rows as ``[shards, B/shards]``, each shard normalised by
    its own mean and biased variance; the running statistics move with the mean over shards of each shard's mean
    and unbiased variance (what averaging the devices' running statistics gives)."""

    def __init__(self, bn: models.BatchNorm, shards: int) -> None:
        self.scale, self.bias, self.mean, self.var = bn.scale, bn.bias, bn.mean, bn.var
        self.momentum, self.eps, self.shards = bn.momentum, bn.eps, shards

    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        if not train:
            return super().__call__(x, train)
        rows = x.reshape(self.shards, -1, x.shape[-1])
        mean, var = rows.mean(1, keepdims=True), rows.var(1, keepdims=True)
        n, m = rows.shape[1], self.momentum
        self.mean.set_value((1 - m) * self.mean.get_value() + m * mean.mean((0, 1)))
        self.var.set_value((1 - m) * self.var.get_value() + m * (var * n / (n - 1)).mean((0, 1)))
        out = (rows - mean) / jnp.sqrt(var + self.eps) * self.scale.get_value() + self.bias.get_value()
        return out.reshape(x.shape)


def mesh(device: str, n: int) -> Mesh:
    """A one-axis mesh over the first ``n`` devices of kind ``device`` (over every process)."""
    found = jax.devices(device)
    if len(found) < n:
        raise BackendError(f"{n} {device} devices asked, JAX sees {len(found)}")
    return Mesh(np.array(found[:n]), (AXIS,))


def _put(a: np.ndarray | None, sharding: NamedSharding, dtype: Any = None) -> jax.Array | None:
    """A global array from host data every process holds in full (each device takes its part)."""
    if a is None:
        return None
    a = np.asarray(a, dtype)
    return jax.make_array_from_callback(a.shape, sharding, lambda index: a[index])


def local(a: jax.Array) -> np.ndarray:
    """Host copy of a replicated array (its copy on this process's first device)."""
    return np.asarray(a.addressable_shards[0].data) if isinstance(a, jax.Array) else np.asarray(a)


def _learner(spec: RunSpec, par: Parallel, m: Mesh, dtype: jnp.dtype) -> jax_train._ModuleLearner:
    """The lab's learner, its batch norm per shard (``local``), its gradient summed (the planted bug), its step
    told that the batch rows lie over the mesh, and its carry replicated."""
    learner = jax_train._ModuleLearner(spec, dtype)
    params, _, stats = learner.carry
    if par.bn == "local" and spec.model.batchnorm:
        module = nnx.merge(learner.graphdef, params, stats)
        for i, bn in enumerate(module.bn):
            module.bn[i] = LocalBatchNorm(bn, par.devices)
        learner.graphdef, params, stats = nnx.split(module, nnx.Param, nnx.BatchStat)
    if par.reduce == "sum":  # the sum over devices of their mean gradients: N times the average
        learner.opt = optax.chain(optax.scale(par.devices), learner.opt)
    step, rows = learner.step, NamedSharding(m, P(AXIS))

    def sharded_step(carry: tuple, x: jax.Array, y: jax.Array, masks: list[jax.Array] | None) -> tuple:
        x, y = (jax.lax.with_sharding_constraint(a, rows) for a in (x, y))
        masks = None if masks is None else [jax.lax.with_sharding_constraint(a, rows) for a in masks]
        return step(carry, x, y, masks)

    learner.step = sharded_step
    replicated = NamedSharding(m, P())
    carry = (params, learner.opt.init(params), stats)
    learner.carry = jax.tree.map(lambda a: _put(local(a), replicated), carry)
    return learner


def train(spec: RunSpec, par: Parallel) -> TrainResult:
    """Train ``spec`` over ``par.devices`` devices; see the module docstring."""
    m, dtype = mesh(spec.device, par.devices), jax_train.DTYPES[spec.dtype]
    replicated, steps_rows = NamedSharding(m, P()), NamedSharding(m, P(None, AXIS))
    with jax_train.x64(spec.dtype == "float64"):
        learner = _learner(spec, par, m, dtype)
        y_dtype = dtype if np.issubdtype(spec.train_y.dtype, np.floating) else np.int32
        data = (_put(spec.train_x, replicated, dtype), _put(spec.train_y, replicated, y_dtype))
        xs = (_put(spec.batches, steps_rows, np.int32),
              None if spec.masks is None else [_put(a, steps_rows, dtype) for a in spec.masks], None)
        eval_sets = {k: _put(a, replicated, dtype) for k, (a, _) in spec.eval_sets.items()}
        jitted = jax.jit(lambda carry, x: learner.outputs(carry, x), out_shardings=replicated)
        body = jax_train._step_fn(spec, learner, dtype)
        jax_train.set_precision()
        run = jax_train._run_fused if spec.execution == "fused" else jax_train._run_per_step
        carry, losses, outputs, timing = run(spec, body, learner.carry, data, xs, eval_sets,
                                             lambda c, a: local(jitted(c, a)))
        params, state = learner.export(jax.tree.map(local, carry))
    return TrainResult(local(losses).astype(np.float64), outputs, params, state, timing,
                       f"{par.devices}x {m.devices.flat[0].platform}")


def make_stepper(spec: RunSpec, par: Parallel, fuse_steps: int = 1) -> Stepper:
    """A :class:`harness.backend.Stepper` of the sharded step: ``fuse_steps`` steps per dispatch (a ``lax.scan``,
    as the fused execution runs) on pooled batches gathered onto the mesh before timing, cycled."""
    m, dtype = mesh(spec.device, par.devices), jax_train.DTYPES[spec.dtype]
    pool, k = len(spec.batches), fuse_steps
    if pool % k:
        raise BackendError(f"fuse steps {k} must divide the {pool} pooled batches")
    learner = _learner(spec, par, m, dtype)
    body = jax_train._step_fn(spec, learner, dtype)
    rows = NamedSharding(m, P(None, AXIS))
    y_dtype = dtype if np.issubdtype(spec.train_y.dtype, np.floating) else np.int32
    xb, yb = _put(spec.train_x[spec.batches], rows, dtype), _put(spec.train_y[spec.batches], rows, y_dtype)
    masks = None if spec.masks is None else [_put(a, rows, dtype) for a in spec.masks]

    def block(c: Any, chunk: tuple) -> tuple:
        return jax.lax.scan(lambda c, t: body(c, (t[0], t[1]), (None, t[2], None)), c, chunk, length=k)

    step, leaves, _ = jax_train.flat_step(block, learner.carry)
    chunks = [jax.tree.map(lambda a, i=i: a[i:i + k], (xb, yb, masks)) for i in range(0, pool, k)]
    state: dict[str, Any] = {"leaves": leaves, "loss": None, "i": 0}

    def unit() -> None:
        state["leaves"], state["loss"] = step(state["leaves"], chunks[state["i"] % len(chunks)])
        state["i"] += 1

    def bare(units: int) -> None:
        for _ in range(units):
            unit()

    return Stepper("fused", unit, k, lambda: jax.block_until_ready(state["leaves"]),
                   lambda: float(local(state["loss"]).reshape(-1)[-1]), bare,
                   {"pool_steps": pool, "fuse_steps": k, "mesh": dict(m.shape), "processes": jax.process_count()})


def train_many(jobs: list[tuple[RunSpec, Parallel]]) -> list[TrainResult]:
    """Train each ``(spec, par)`` over its devices, in this process."""
    prepare_devices(jobs[0][0].device, max(p.devices for _, p in jobs))
    return [train(spec, par) for spec, par in jobs]


def bench_many(jobs: list[tuple[RunSpec, Parallel, Callable[[Stepper], dict]]]) -> list[dict]:
    """``protocol(stepper)`` of each job: a fused stepper whose scan is one timed block (``protocol.block_steps``)."""
    prepare_devices(jobs[0][0].device, max(p.devices for _, p, _ in jobs))
    # XLA's CPU thread pool is sized at start-up, shared by every host device: not settable here (None).
    return [{**protocol(make_stepper(spec, par, getattr(protocol, "block_steps", 1))), "threads": None}
            for spec, par, protocol in jobs]
