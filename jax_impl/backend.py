"""The jax backend: this package seen through ``harness.backend.Backend`` (mirrors ``torch_impl/backend.py``)."""

from __future__ import annotations

from jax_impl.bench import configure as configure_threads
from jax_impl.bench import device_info, make_stepper, matmul_timer, modes
from jax_impl.train import available_devices, train, versions

__all__ = ["available_devices", "configure_threads", "device_info", "make_stepper", "matmul_timer", "modes",
           "thread_count", "train", "versions"]


def thread_count() -> int | None:
    """XLA sizes its CPU pool at start-up: not settable here (None)."""
    return None
