"""The jax backend: this package seen through ``harness.backend.Backend`` (mirrors ``torch_impl/backend.py``); its
optional capabilities are declared by its registry entry (``harness.backend``)."""

from __future__ import annotations

import numpy as np

from harness.labs import Model
from jax_impl.bench import configure as configure_threads
from jax_impl.bench import device_info, make_stepper, matmul_timer, modes, pool_threads
from jax_impl.runtime import available_devices, versions
from jax_impl.train import train

__all__ = ["available_devices", "configure_threads", "device_info", "make_stepper", "matmul_timer", "modes",
           "native_params", "thread_count", "train", "versions"]


def thread_count() -> int | None:
    """XLA's CPU intra-op pool, sized when its backends start (:func:`jax_impl.bench.pool_threads`)."""
    return pool_threads()


def native_params(model: Model, seed: int, dtype: str = "float32") -> dict[str, np.ndarray]:
    """The initial weights ``run --weights native`` trains from (``models.build`` from ``seed``, untrained), in
    the shared layout: what ``harness.parity.initcheck`` tests."""
    from jax_impl import models, runtime

    with runtime.x64(dtype == "float64"):
        return models.get_params(models.build(model, runtime.dtype(dtype), seed))[0]
