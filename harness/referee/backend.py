"""The numpy referee seen through ``harness.backend.Backend`` (the counterpart of ``torch_impl/backend.py``):
float64, CPU, one execution (``loop``); numpy's BLAS threads set through threadpoolctl where installed."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable

import numpy as np

from harness.backend import BackendError, RunSpec, Stepper, executions_on, resolve_execution
from harness.referee.train import Learner, available_devices, batch, train, versions

__all__ = ["available_devices", "configure_threads", "device_info", "make_stepper", "matmul_timer", "modes",
           "thread_count", "train", "versions"]


def _numpy_blas() -> list:
    """numpy's BLAS thread pools, through threadpoolctl (none where that is not installed)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return []
    libs = ThreadpoolController().select(user_api="blas").lib_controllers
    return [lib for lib in libs if "numpy" in lib.filepath] or libs


def configure_threads(threads: int | None) -> dict:
    """Set numpy's BLAS threads (None: leave them; settable only where threadpoolctl is installed); every setting
    in effect. A BLAS pool sharing its cores with other work slows matmuls many times over."""
    for lib in _numpy_blas() if threads else ():
        lib.set_num_threads(threads)
    return {"threads": thread_count(), "dtype": "float64",
            **{k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}}


def thread_count() -> int | None:
    """numpy's BLAS threads now (None: not known without threadpoolctl)."""
    libs = _numpy_blas()
    return max(lib.num_threads for lib in libs) if libs else None


def device_info(device: str) -> dict:
    """The BLAS numpy calls, and that every run computes in float64."""
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        name = f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # the layout of numpy's build record varies between releases
        name = "unknown"
    return {"blas": name, "dtype": "float64"}


def modes(device: str) -> tuple[str, ...]:
    """One Python step per iteration (its registry entry's ``loop``)."""
    return executions_on("numpy", device)


def matmul_timer(device: str, n: int, dtype: str = "float32") -> Callable[[], float]:
    """A function timing one ``n`` x ``n`` numpy matmul of ``dtype`` (float32 or float64: numpy's BLAS has no
    bfloat16 or float16 kernel; BackendError for those), in seconds, on operands made once."""
    if dtype not in ("float32", "float64"):
        raise BackendError(f"the referee has no {dtype} matmul")
    rng = np.random.default_rng(0)
    a, b = (rng.random((n, n)).astype(dtype) for _ in range(2))
    out = np.empty((n, n), dtype)
    np.matmul(a, b, out=out)

    def timed() -> float:
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        return time.perf_counter() - start

    return timed


def make_stepper(spec: RunSpec, mode: str, fuse_steps: int = 10) -> Stepper:
    """Steady-state training of ``spec`` for the timing protocol, cycling through its steps' batches (each gathered
    when its step runs: numpy has no device to stage them on)."""
    mode = resolve_execution("numpy", mode, spec.device)
    learner = Learner(spec)
    pool = max(spec.steps, 1)
    cycle = itertools.cycle(range(pool))
    last = [float("nan")]

    def unit() -> None:
        last[0] = learner.step(*batch(spec, next(cycle)))[0]

    def bare(units: int) -> None:
        step = learner.step
        for i in range(units):
            step(*batch(spec, i % pool))

    return Stepper(mode, unit, 1, lambda: None, lambda: last[0], bare, {"pool_steps": pool})
