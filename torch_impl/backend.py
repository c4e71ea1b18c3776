"""The torch backend: this package seen through ``harness.backend.Backend`` (mirrors ``jax_impl/backend.py``); its
optional capabilities are declared by its registry entry (``harness.backend``)."""

from __future__ import annotations

import numpy as np

from harness.labs import Model
from torch_impl.bench import configure as configure_threads
from torch_impl.bench import device_info, make_stepper, matmul_timer, modes
from torch_impl.runtime import available_devices, versions
from torch_impl.train import train

__all__ = ["available_devices", "configure_threads", "device_info", "make_stepper", "matmul_timer", "modes",
           "native_params", "thread_count", "train", "versions", "warm_up"]


def warm_up() -> None:
    """Pay once, up front, what torch defers to the first training run of a process: ``torch.optim`` imports
    ``torch._dynamo`` when the first optimizer is made (1.5 s here), and autograd starts its engine."""
    import torch

    weight = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([weight], lr=0.1)
    (weight * 2).sum().backward()
    opt.step()


def thread_count() -> int | None:
    """torch's intra-op threads now."""
    import torch

    return torch.get_num_threads()


def native_params(model: Model, seed: int, dtype: str = "float32") -> dict[str, np.ndarray]:
    """The initial weights ``run --weights native`` trains from (``models.build`` from ``seed``, untrained), in
    the shared layout: what ``harness.parity.initcheck`` tests."""
    from torch_impl import models, runtime

    return models.get_params(models.build(model, runtime.dtype(dtype), runtime.device("cpu"), seed))[0]
