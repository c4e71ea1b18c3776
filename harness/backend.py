"""The backend contract, the registry of backends, and the framework-neutral run description they receive.

A backend is a module (``torch_impl.backend``, ``jax_impl.backend``, ...) that satisfies :class:`Backend`. The
harness knows backends only through :data:`REGISTRY` (name, label, colour, execution modes, thread policy) and
imports a backend's module only when a run asks for it, so one framework runs where another is absent and
``harness`` itself imports no framework. Register another with :func:`register`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from harness.errors import BackendError
from harness.labs import Lab, Model

DEVICES = ("cpu", "gpu", "tpu")
DTYPES = ("float32", "float64")
# Every execution mode some backend offers (each registry entry lists its own): JAX "fused" (lax.scan over many
# steps) and "per_step"; torch "eager", "compiled" (torch.compile) and "cuda_graph" (see torch_impl/train.py).
EXECUTIONS = ("fused", "per_step", "eager", "compiled", "cuda_graph")
Params = dict[str, np.ndarray]


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
    execution: str | None = None  # None: the backend's default (the registry entry's first execution)
    progress: Callable[[int, int], None] | None = None  # called with (steps done, total)
    # RBM pre-training (``lab.pretrain``; ``harness.run.pretrain``): the example indices of every CD step
    # [steps, batch] and, per RBM, the uniforms of its hidden samples [steps, k, batch, hidden]
    pretrain_batches: np.ndarray | None = None
    pretrain_uniforms: list[np.ndarray] | None = None


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
    pretrain_recon: list[np.ndarray] = field(default_factory=list)  # per RBM, the reconstruction error per CD step
    pretrain_params: Params = field(default_factory=dict)  # the RBMs' final weights (``rbm{l}/kernel``, ...)


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


@runtime_checkable
class Backend(Protocol):
    """What a backend module provides. Every function may import its framework; none is called at import time
    of ``harness``. Optional: ``native_params(model, seed, dtype) -> Params``, the untrained initial weights its
    native init draws (what ``run --weights native`` trains from), tested by ``harness.parity.initcheck``."""

    def train(self, spec: RunSpec) -> TrainResult:
        """Train ``spec`` and hand back the run record's raw material."""

    def available_devices(self) -> list[str]:
        """The harness device names (``DEVICES``) this backend can use here."""

    def versions(self) -> dict[str, str]:
        """Package versions, for the results."""

    def configure_threads(self, threads: int | None) -> dict:
        """Set the intra-op thread count (None: leave it) and full-precision matmuls; every setting in effect."""

    def thread_count(self) -> int | None:
        """The intra-op thread count in effect now (None: unknown)."""

    def device_info(self, device: str) -> dict:
        """What results should say about ``device`` beyond the CPU model."""

    def modes(self, device: str) -> tuple[str, ...]:
        """The execution modes offered on ``device`` (a subset of the registry entry's ``executions``)."""

    def matmul_timer(self, device: str, n: int) -> Callable[[], float]:
        """A function timing one ``n`` x ``n`` float32 matmul, ended by a device sync, in seconds."""

    def make_stepper(self, spec: RunSpec, mode: str, fuse_steps: int = 10) -> Stepper:
        """Steady-state training of ``spec`` in ``mode`` for the timing protocol."""


@dataclass(frozen=True)
class BackendInfo:
    """A registry entry. ``module`` is imported lazily and must satisfy :class:`Backend`.

    ``executions``: the ``--execution`` values it accepts (the first is its default); ``execution_aliases``
    maps other accepted spellings onto them. ``thread_policy``:
    "per_task" (one intra-op thread for the tiny XOR nets, every core otherwise; settable at run time) or "fixed"
    (sized at start-up, recorded only). ``cost``: rough seconds per run of ``(setup, per_step)`` on a CPU, for
    ETAs. ``float64_only``: the backend computes in float64 whatever dtype is asked (a referee)."""

    name: str
    label: str
    color: str
    module: str
    executions: tuple[str, ...]
    thread_policy: str = "fixed"
    cost: tuple[float, float] = (1.0, 100e-6)
    companion_color: str | None = None
    float64_only: bool = False
    extras: dict[str, Any] = field(default_factory=dict)
    execution_aliases: dict[str, str] = field(default_factory=dict)  # old spellings -> an ``executions`` entry


REGISTRY: dict[str, BackendInfo] = {}


def register(info: BackendInfo) -> BackendInfo:
    """Add (or replace) a backend; returns ``info``."""
    REGISTRY[info.name] = info
    return info


def unregister(name: str) -> None:
    """Remove a backend (tests that register their own)."""
    REGISTRY.pop(name, None)


def names(include_referees: bool = True) -> tuple[str, ...]:
    """Registered backend names, in registration order."""
    return tuple(n for n, i in REGISTRY.items() if include_referees or not i.float64_only)


def info(name: str) -> BackendInfo:
    """The registry entry of ``name``; BackendError naming the choices otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise BackendError(f"unknown framework {name!r}; choose from {', '.join(REGISTRY)}") from None


def label(name: str) -> str:
    """Display label (``PyTorch``); the name itself for an unregistered one."""
    return REGISTRY[name].label if name in REGISTRY else name


def load(name: str) -> Backend:
    """Import the backend module of ``name``; a BackendError naming the missing package otherwise."""
    entry = info(name)
    try:
        return importlib.import_module(entry.module)  # type: ignore[return-value]
    except ImportError as exc:
        raise BackendError(f"framework {name!r} is not usable here: {exc}") from None


def resolve_execution(name: str, execution: str | None) -> str:
    """The execution mode backend ``name`` runs for ``execution`` (None: its default; an alias: what it means);
    BackendError naming the choices for one it does not have."""
    entry = info(name)
    if execution is None:
        return entry.executions[0]
    if execution in entry.executions:
        return execution
    if execution in entry.execution_aliases:
        return entry.execution_aliases[execution]
    raise BackendError(f"{name} has no execution {execution!r}; choose from {', '.join(entry.executions)}")


def is_loaded(name: str) -> bool:
    """Whether backend ``name``'s module is already imported in this process."""
    return info(name).module in sys.modules


def check_device(name: str, device: str) -> None:
    """Raise BackendError unless backend ``name`` sees a ``device``."""
    if device not in DEVICES:
        raise BackendError(f"unknown device {device!r}; choose from {', '.join(DEVICES)}")
    found = load(name).available_devices()
    if device not in found:
        raise BackendError(f"device {device!r} is not present for {name} (found: {', '.join(found)})")


register(BackendInfo("torch", "PyTorch", "#ee4c2c", "torch_impl.backend", ("eager", "compiled", "cuda_graph"),
                     thread_policy="per_task", cost=(1.0, 300e-6), companion_color="#f4a582",
                     execution_aliases={"fused": "eager", "per_step": "eager"},  # old spellings, for a release
                     # bench: steps per torch.compile graph / CUDA graph, per task (harness.bench.workloads)
                     # course: the labs' own framework (its native init draws the course's weights; report)
                     extras={"bench_fuse_steps": {"xor": 10, "gates": 10, "mnist": 1}, "course": True}))
register(BackendInfo("jax", "JAX/Flax", "#3b6fb6", "jax_impl.backend", ("fused", "per_step"),
                     thread_policy="fixed", cost=(2.0, 20e-6), companion_color="#92c5de",
                     # bench: fused XOR steps take ~10 us, so their timed blocks are ten times longer
                     extras={"bench_block_factor": {"fused": {"xor": 10, "gates": 10}}}))
register(BackendInfo("numpy", "NumPy referee", "#2ca02c", "harness.referee.backend", ("loop",),
                     thread_policy="per_task", cost=(0.1, 100e-6), float64_only=True))

