"""The torch backend: this package seen through ``harness.backend.Backend`` (mirrors ``jax_impl/backend.py``)."""

from __future__ import annotations

from torch_impl.bench import configure as configure_threads
from torch_impl.bench import device_info, make_stepper, matmul_timer, modes
from torch_impl.probe import trace
from torch_impl.rbm import trace as pretrain_trace
from torch_impl.train import available_devices, train, versions

__all__ = ["available_devices", "configure_threads", "device_info", "make_stepper", "matmul_timer", "modes",
           "pretrain_trace", "thread_count", "trace", "train", "versions"]


def thread_count() -> int | None:
    """torch's intra-op threads now."""
    import torch

    return torch.get_num_threads()
