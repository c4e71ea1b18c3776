"""The PyTorch side of ``harness.bench`` (mirrors ``jax_impl/bench.py``): settings, the matmul peak, and steppers
that run the trainer's own step (``learners.py``) on batches gathered onto the device before timing.

Modes (the registry's executions): ``eager`` (one eager step per dispatch, what ``train`` runs by default),
``compiled`` (``fuse_steps`` consecutive steps as one ``torch.compile`` graph) and ``cuda_graph`` (``fuse_steps``
steps captured once as a CUDA graph and replayed; GPU only).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from collections.abc import Callable

import numpy as np
import torch

from harness.backend import BackendError, RunSpec, Stepper, executions_on, resolve_execution
from torch_impl import learners, runtime


def modes(device: str) -> tuple[str, ...]:
    """The modes this framework offers on ``device`` (its registry entry's)."""
    return executions_on("torch", device)


def configure(threads: int | None) -> dict:
    """Set the intra-op thread count (None: leave it) and full float32 matmuls; return every setting in effect."""
    if threads:
        torch.set_num_threads(threads)
    return {"threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), **runtime.set_precision()}


def device_info(device: str) -> dict:
    """What the results should say about the device beyond the CPU model."""
    if device != "gpu":
        return {"cpu_capability": torch.backends.cpu.get_cpu_capability()}
    props = torch.cuda.get_device_properties(0)
    return {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "compute_capability": f"{props.major}.{props.minor}", "multiprocessors": props.multi_processor_count,
            "cuda": torch.version.cuda}


def matmul_timer(device: str, n: int, dtype: str = "float32") -> Callable[[], float]:
    """A function timing one ``n`` x ``n`` matmul of ``dtype`` operands (float32: full precision; bfloat16 and
    float16: that dtype's own kernels), ended by a device sync, in seconds, on operands made once."""
    dev = runtime.device(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    dt = runtime.storage_dtype(dtype)
    a, b = (torch.rand(n, n, generator=gen).to(dev, dt) for _ in range(2))
    out = torch.empty(n, n, device=dev, dtype=dt)
    for _ in range(2):
        torch.matmul(a, b, out=out)
    runtime.sync(dev)

    def timed() -> float:
        start = time.perf_counter()
        torch.matmul(a, b, out=out)
        runtime.sync(dev)
        return time.perf_counter() - start

    return timed


def _pool(spec: RunSpec, device: torch.device, dtype: torch.dtype) -> tuple:
    """Every step's batch (and shared masks) gathered once onto the device: a leading axis of ``P`` steps; the
    full-batch labs have one entry, the whole training set."""
    if spec.batches is None:
        x, y = spec.train_x[None], spec.train_y[None]
    else:
        x, y = spec.train_x[spec.batches], spec.train_y[spec.batches]
    to = runtime.to_tensor
    masks = None if spec.masks is None else [to(m, device, dtype) for m in spec.masks]
    return to(np.ascontiguousarray(x), device, dtype), to(np.ascontiguousarray(y), device, dtype), masks


def _eager_stepper(learner: object, pooled: tuple, sync: Callable[[], None]) -> Stepper:
    """One eager step per dispatch, on the next pooled batch."""
    xs, ys, masks = pooled
    pool = len(xs)
    views = [(xs[j], ys[j], None if masks is None else [m[j] for m in masks]) for j in range(pool)]
    cycle = itertools.cycle(views)
    last: list[torch.Tensor] = []

    def eager_unit() -> None:
        last[:] = [learner.step(*next(cycle))]

    def eager_bare(units: int) -> None:
        step = learner.step
        for i in range(units):
            loss = step(*views[i % pool])
        last[:] = [loss]

    return Stepper("eager", eager_unit, 1, sync, lambda: float(last[0]), eager_bare, {"pool_steps": pool})


def _chunks(pooled: tuple, k: int) -> list[tuple]:
    """The pooled batches in chunks of ``k`` steps (the full-batch labs: the one batch repeated ``k`` times)."""
    xs, ys, masks = pooled
    pool = len(xs)
    if pool > 1 and pool % k:
        raise BackendError(f"fuse steps {k} must divide the {pool} pooled batches")
    if pool == 1:  # full batch: every step sees the same data
        return [(xs.expand(k, *xs.shape[1:]), ys.expand(k, *ys.shape[1:]),
                 None if masks is None else [m[:1].expand(k, *m.shape[1:]) for m in masks])]
    return [(xs[i:i + k], ys[i:i + k], None if masks is None else [m[i:i + k] for m in masks])
            for i in range(0, pool, k)]


def _fused_stepper(learner: object, pooled: tuple, mode: str, k: int, device: torch.device,
                   sync: Callable[[], None]) -> Stepper:
    """``k`` steps per dispatch as one torch.compile graph (``compiled``) or one replayed CUDA graph."""
    chunks = _chunks(pooled, k)
    step, state = learners.functional_step(learner)
    if mode == "compiled":
        block = learners.compiled_or_error(learners.compile_step(step, k, device))
    else:
        block = learners.graph_step(step, state, k)
    cycle = itertools.cycle(chunks)
    last: list[torch.Tensor] = []

    def fused_unit() -> None:
        last[:] = [block(*next(cycle))]

    def fused_bare(units: int) -> None:
        for i in range(units):
            losses = block(*chunks[i % len(chunks)])
        last[:] = [losses]

    return Stepper(mode, fused_unit, k, sync, lambda: float(last[0][-1]), fused_bare,
                   {"pool_steps": len(pooled[0]), "fuse_steps": k})


def make_stepper(spec: RunSpec, mode: str, fuse_steps: int = 10) -> Stepper:
    """A :class:`Stepper` running ``spec``'s lab in ``mode``; each step takes the next pre-gathered batch,
    cycling through ``spec.batches``. ``fuse_steps`` (compiled, cuda_graph) must divide their number."""
    mode = resolve_execution("torch", mode, spec.device)
    dtype, device = runtime.dtype(spec.dtype), runtime.device(spec.device)
    spec = dataclasses.replace(spec, execution=mode)  # the learner's optimizer kernel follows the mode
    learner = learners.make_learner(spec, dtype, device)
    pooled = _pool(spec, device, dtype)

    def sync() -> None:
        runtime.sync(device)

    if mode == "eager":
        return _eager_stepper(learner, pooled, sync)
    return _fused_stepper(learner, pooled, mode, fuse_steps, device, sync)
