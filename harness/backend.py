"""The small interface both frameworks implement, and the framework-neutral run description they receive.

Each framework package has a ``train`` module exposing ``train(spec: RunSpec) -> TrainResult``,
``available_devices() -> list[str]`` and ``versions() -> dict``, and a ``bench`` module building a
:class:`Stepper` for ``harness.bench``. The harness imports it only when asked to run
that framework, so the other framework need not be installed.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from harness.labs import Lab, Model

FRAMEWORKS = ("torch", "jax")
DEVICES = ("cpu", "gpu", "tpu")
DTYPES = ("float32", "float64")
# "fused" (JAX: lax.scan over many steps; torch: eager, its default) and "per_step" run everywhere; "eager",
# "compiled" (torch.compile) and "cuda_graph" are torch's own modes (see torch_impl/train.py).
EXECUTIONS = ("fused", "per_step", "eager", "compiled", "cuda_graph")
Params = dict[str, np.ndarray]


class BackendError(RuntimeError):
    """A framework that is not installed, or a device it does not have."""


@dataclass
class RunSpec:
    """Everything a framework needs for one training run; arrays are numpy, weights in the shared layout.

    ``batches[s]`` holds the example indices of step ``s`` (``None``: every step sees the whole training set).
    ``masks[l][s]`` is the 0/1 keep-mask of hidden layer ``l`` at step ``s`` (``None``: the framework draws its
    own). ``eval_steps`` lists update counts after which the model is evaluated (in eval mode) on every
    ``eval_sets`` entry; the last entry is the full run.
    """

    lab: Lab
    model: Model
    dtype: str = "float32"
    device: str = "cpu"
    seed: int = 0
    params: Params | None = None  # None: native init from ``seed``
    state: Params | None = None
    train_x: np.ndarray | None = None
    train_y: np.ndarray | None = None
    batches: np.ndarray | None = None
    masks: list[np.ndarray] | None = None
    steps: int = 0
    eval_steps: tuple[int, ...] = ()
    eval_sets: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    execution: str = "fused"
    progress: Callable[[int, int], None] | None = None  # called with (steps done, total)


@dataclass
class TrainResult:
    """What a framework hands back: the loss at every step (before that step's update), model outputs on the
    eval sets after each of ``spec.eval_steps`` updates, final weights and state, and timing."""

    losses: np.ndarray
    outputs: dict[int, dict[str, np.ndarray]]
    params: Params
    state: Params
    timing: dict[str, float]
    device: str


@dataclass
class Stepper:
    """Steady-state training for the timing protocol (``harness.bench``), built by ``<framework>_impl.bench``:
    ``unit()`` dispatches ``unit_steps`` steps of the trainer's own step on device-resident batches and returns
    without waiting; ``sync()`` waits for the device; ``loss()`` reads the last loss back (a sync);
    ``bare(units)`` is the plainest loop over the same step function (no per-call bookkeeping), the reference
    the harness's overhead is measured against."""

    mode: str
    unit: Callable[[], None]
    unit_steps: int
    sync: Callable[[], None]
    loss: Callable[[], float]
    bare: Callable[[int], None]
    info: dict[str, Any] = field(default_factory=dict)

    def run(self, steps: int) -> None:
        """Dispatch ``steps`` steps (a multiple of ``unit_steps``)."""
        unit = self.unit
        for _ in range(steps // self.unit_steps):
            unit()


def load_backend(framework: str) -> ModuleType:
    """Import ``<framework>_impl.train``; a BackendError naming the missing package otherwise."""
    if framework not in FRAMEWORKS:
        raise BackendError(f"unknown framework {framework!r}; choose from {', '.join(FRAMEWORKS)}")
    try:
        return importlib.import_module(f"{framework}_impl.train")
    except ImportError as exc:
        raise BackendError(f"framework {framework!r} is not usable here: {exc}") from None


def check_device(framework: str, device: str) -> Any:
    """Raise BackendError unless ``framework`` sees a ``device``."""
    if device not in DEVICES:
        raise BackendError(f"unknown device {device!r}; choose from {', '.join(DEVICES)}")
    found = load_backend(framework).available_devices()
    if device not in found:
        raise BackendError(f"device {device!r} is not present for {framework} (found: {', '.join(found)})")
