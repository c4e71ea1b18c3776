"""The backend contract (:class:`Backend`, the records a run exchanges) and the registry: each entry
(:class:`BackendInfo`) declares execution modes, thread policy and optional :class:`Capabilities`, asked for by name
(:func:`offers`, :func:`capability`). Modules are imported only when a run asks: ``harness`` imports no framework."""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from harness.errors import BackendError
from harness.labs import Lab, Model

DEVICES = ("cpu", "gpu", "tpu")
DTYPES = ("float32", "float64")
Params = dict[str, np.ndarray]
L = TypeVar("L")


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
    precision: str | None = None  # a ``harness.precision`` policy (None or float32/float64: ``dtype``'s own)
    progress: Callable[[int, int], None] | None = None  # called with (steps done, total)
    # RBM pre-training (``lab.pretrain``; ``harness.run.pretrain``): the example indices of every CD step
    # [steps, batch] and, per RBM, the uniforms of its hidden samples [steps, k, batch, hidden]
    pretrain_batches: np.ndarray | None = None
    pretrain_uniforms: list[np.ndarray] | None = None


@dataclass
class Timing:
    """How long a run took, measured the same way by every backend: ``warmup_s`` the first step or the compilation
    ahead of the steps (compile time is in it either way), ``run_s`` the steady state after it (ended by a device
    sync), ``total_s`` both, ``steps_per_s`` the steady state's rate, ``pretrain_s`` the RBM pre-training before
    them (None: the lab has none). :meth:`as_dict` is what run records hold."""

    warmup_s: float
    run_s: float
    total_s: float
    steps_per_s: float
    pretrain_s: float | None = None

    @classmethod
    def measured(cls, warmup_s: float, run_s: float, steady_steps: int, pretrain_s: float | None = None) -> Timing:
        """The timing of ``steady_steps`` steps in ``run_s`` seconds after a warm-up of ``warmup_s``."""
        rate = steady_steps / run_s if steady_steps > 0 and run_s > 0 else math.nan
        return cls(warmup_s, run_s, warmup_s + run_s, rate, pretrain_s)

    def as_dict(self) -> dict[str, float]:
        """The record's ``timing``: every field, ``pretrain_s`` only where there was pre-training."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass(frozen=True)
class TraceStep:
    """One step of a trace (``Capabilities.trace``/``pretrain_trace``), as ``harness.parity.localise`` reads it:
    the loss before the update, the gradients (the hand-written labs: their update directions; an RBM: its CD
    statistics), the update (new - old parameters), the parameters and running statistics after the step; float64
    arrays in the shared layout. Build one with :func:`trace_step`."""

    loss: float
    grads: Params
    updates: Params
    params: Params
    state: Params

    def as_dict(self) -> dict[str, Any]:
        """The record as a mapping of its fields (no copies)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def trace_step(loss: object, grads: Mapping[str, Any], before: Mapping[str, Any], params: Mapping[str, Any],
               state: Mapping[str, Any] | None = None) -> TraceStep:
    """A :class:`TraceStep` from host arrays in float64, the update ``params - before`` computed in float64."""
    f64 = lambda arrays: {k: np.asarray(v, np.float64) for k, v in (arrays or {}).items()}  # noqa: E731
    after, old = f64(params), f64(before)
    return TraceStep(float(loss), f64(grads), {k: after[k] - old[k] for k in after}, after, f64(state))


def choose_learner(spec: RunSpec, module: type[L], manual: type[L]) -> type[L]:
    """The learner class for ``spec``: ``manual`` (hand-written backprop) for the manual labs, else ``module``."""
    return manual if spec.lab.manual else module



@dataclass
class TrainResult:
    """What a framework hands back: the loss at every step (before its update), outputs on the eval sets after
    each of ``spec.eval_steps`` updates, final weights and state, and timing."""

    losses: np.ndarray
    outputs: dict[int, dict[str, np.ndarray]]
    params: Params
    state: Params
    timing: Timing
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
    """What every backend module provides (the required capabilities; the optional ones: :class:`Capabilities`).
    Every function may import its framework; none is called at import time of ``harness``."""

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
        """The execution modes offered on ``device``: :func:`executions_on` of its registry entry."""

    def matmul_timer(self, device: str, n: int, dtype: str = "float32") -> Callable[[], float]:
        """A function timing one ``n`` x ``n`` matmul of ``dtype`` operands (float32 at full precision; bfloat16,
        float16), ended by a device sync, in seconds."""

    def make_stepper(self, spec: RunSpec, mode: str, fuse_steps: int = 10) -> Stepper:
        """Steady-state training of ``spec`` in ``mode`` for the timing protocol."""


@dataclass(frozen=True)
class Capabilities:
    """A backend's optional capabilities, each where it lives (``"module:attribute"``; ``"module"`` for a module),
    None where it offers none; :func:`capability` imports one. ``trace(spec, steps) -> list[TraceStep]``: every
    tensor of the first steps (the exact tier localises with it); ``pretrain_trace(spec, rbm, steps)``: the same of
    RBM pre-training's CD steps; ``native_params(model, seed, dtype) -> Params``: the untrained weights its native
    init draws (``run --weights native``; ``harness.parity.initcheck``); ``warm_up()``: pay up front what the
    framework defers to a process's first run; ``train_ensemble(spec, params_list, steps, seeds)``: losses
    ``[members, steps]`` (else the statistical tier loops over ``train``); ``mutations``: the mutation suite's
    planted bugs (``selfcheck.Mutation``s); ``parallel``: its data-parallel module (``harness.run.parallel``);
    ``precision_trace(spec, steps, policy, loss_scale, mutation)``: the first steps under a reduced precision
    (``harness.parity.precision``); ``precision_mutations``: its precision bugs (name -> policies where each is)."""

    trace: str | None = None
    pretrain_trace: str | None = None
    native_params: str | None = None
    warm_up: str | None = None
    train_ensemble: str | None = None
    mutations: str | None = None
    parallel: str | None = None
    precision_trace: str | None = None
    precision_mutations: str | None = None


CAPABILITIES = tuple(f.name for f in fields(Capabilities))


@dataclass(frozen=True)
class BackendInfo:
    """A registry entry. ``module`` is imported lazily and must satisfy :class:`Backend`.

    ``executions``: the ``--execution`` values it accepts (the first is its default), ``execution_devices`` those
    limited to some devices, ``execution_text`` how the report names them (else :data:`EXECUTION_TEXT`),
    ``parallel_executions`` those its data-parallel runs take. ``thread_policy``: "per_task" (one intra-op thread
    for the tiny XOR nets, every core otherwise; settable at run time) or "fixed" (sized at start-up, recorded
    only). ``cost``: rough seconds per run of ``(setup, per_step)`` on a CPU, for ETAs. ``float64_only``: it
    computes in float64 whatever dtype is asked (a referee). ``course``: the labs' own framework (its native init
    draws the course's weights; the report). ``bench_fuse_steps``: steps per fused program by task (absent: a
    whole timed block); ``bench_block_factor``: by mode and task, how many times longer its timed blocks are;
    ``bench_order``: the order bench times its modes in (default: ``executions``)."""

    name: str
    label: str
    color: str
    module: str
    executions: tuple[str, ...]
    thread_policy: str = "fixed"
    cost: tuple[float, float] = (1.0, 100e-6)
    companion_color: str | None = None
    float64_only: bool = False
    capabilities: Capabilities = Capabilities()
    execution_devices: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    execution_text: Mapping[str, str] = field(default_factory=dict)
    parallel_executions: tuple[str, ...] = ()
    course: bool = False
    bench_fuse_steps: Mapping[str, int] = field(default_factory=dict)
    bench_block_factor: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    bench_order: tuple[str, ...] = ()
    precision_executions: tuple[str, ...] = ()  # the executions that train a reduced precision (empty: every one)


EXECUTION_TEXT = {"fused": "fused (lax.scan)", "per_step": "one step per call", "eager": "eager",
                  "compiled": "compiled", "cuda_graph": "CUDA graph", "loop": "one step per iteration"}
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


def _import(name: str, module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendError(f"framework {name!r} is not usable here: {exc}") from None


def load(name: str) -> Backend:
    """Import the backend module of ``name``; a BackendError naming the missing package otherwise."""
    return _import(name, info(name).module)


def offers(name: str, what: str) -> bool:
    """Whether backend ``name`` declares the optional capability ``what`` (a :data:`CAPABILITIES`); no import."""
    if what not in CAPABILITIES:
        raise BackendError(f"unknown capability {what!r}; choose from {', '.join(CAPABILITIES)}")
    return getattr(info(name).capabilities, what) is not None


def capability(name: str, what: str) -> Any:
    """The optional capability ``what`` of backend ``name`` (as :class:`Capabilities` says), imported now."""
    if not offers(name, what):
        offered = [c for c in CAPABILITIES if offers(name, c)]
        raise BackendError(f"backend {name!r} does not offer {what!r} (it offers: {', '.join(offered) or 'none'})")
    module, _, attribute = getattr(info(name).capabilities, what).partition(":")
    load(name)
    found = _import(name, module)
    if attribute and not hasattr(found, attribute):
        raise BackendError(f"backend {name!r} declares {what!r} as {module}:{attribute}, which does not exist")
    return getattr(found, attribute) if attribute else found


def executions_on(name: str, device: str) -> tuple[str, ...]:
    """The execution modes backend ``name`` offers on ``device`` (its ``modes``), in its ``bench_order``."""
    entry = info(name)
    return tuple(e for e in entry.bench_order or entry.executions if device in entry.execution_devices.get(e, DEVICES))


def all_executions(include: Sequence[str] | None = None) -> tuple[str, ...]:
    """Every execution mode of the registered backends (or of those in ``include``), in registration order."""
    found: dict[str, None] = {}
    for name in include if include is not None else names():
        found.update(dict.fromkeys(info(name).executions))
    return tuple(found)


def resolve_execution(name: str, execution: str | None, device: str | None = None, fallback: bool = False) -> str:
    """The canonical execution mode backend ``name`` runs for ``execution`` (None: its default; ``fallback``: its
    default for one it does not have, as a comparison side takes the command's ``--execution``); with ``device``,
    one it offers there. A BackendError naming the choices otherwise. The one resolver of execution modes."""
    entry = info(name)
    if execution is None or (fallback and execution not in entry.executions):
        return entry.executions[0]
    if execution not in entry.executions:
        raise BackendError(f"{name} has no execution {execution!r}; choose from {', '.join(entry.executions)}")
    needs = entry.execution_devices.get(execution, DEVICES)
    if device is not None and device not in needs:
        raise BackendError(f"execution {execution!r} needs a {'/'.join(d.upper() for d in needs)} "
                           f"(--device {needs[0]})")
    return execution


def execution_text(name: str, execution: str | None) -> str:
    """How backend ``name`` runs ``execution`` (None: its default), in words, for the report."""
    if name not in REGISTRY:
        return execution or "?"
    entry = info(name)
    mode = execution if execution in entry.executions else entry.executions[0]
    return entry.execution_text.get(mode) or EXECUTION_TEXT.get(mode, mode)


def source_dir(name: str) -> Path | None:
    """The folder of backend ``name``'s top-level package, found without importing it (the code fingerprint)."""
    spec = importlib.util.find_spec(info(name).module.partition(".")[0])
    return Path(spec.submodule_search_locations[0]) if spec and spec.submodule_search_locations else None


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


def _capabilities(package: str, **more: str) -> Capabilities:
    """The capabilities a framework package of this repository lays out alike (``torch_impl``, ``jax_impl``)."""
    return Capabilities(trace=f"{package}.probe:trace", pretrain_trace=f"{package}.rbm:trace",
                        native_params=f"{package}.backend:native_params",
                        train_ensemble=f"{package}.ensemble:train_ensemble",
                        mutations=f"{package}.mutations:MUTATIONS", parallel=f"{package}.parallel",
                        precision_trace=f"{package}.precision:trace",
                        precision_mutations=f"{package}.precision:MUTATIONS", **more)


register(BackendInfo("torch", "PyTorch", "#ee4c2c", "torch_impl.backend", ("eager", "compiled", "cuda_graph"),
                     thread_policy="per_task", cost=(1.0, 300e-6), companion_color="#f4a582",
                     capabilities=_capabilities("torch_impl", warm_up="torch_impl.backend:warm_up"),
                     execution_devices={"cuda_graph": ("gpu",)}, parallel_executions=("eager",), course=True,
                     precision_executions=("eager",),
                     # bench: steps per torch.compile graph / CUDA graph, per task (harness.bench.workloads)
                     bench_fuse_steps={"xor": 10, "gates": 10, "mnist": 1}))
register(BackendInfo("jax", "JAX/Flax", "#3b6fb6", "jax_impl.backend", ("fused", "per_step"),
                     thread_policy="fixed", cost=(2.0, 20e-6), companion_color="#92c5de",
                     capabilities=_capabilities("jax_impl"), parallel_executions=("fused", "per_step"),
                     bench_order=("per_step", "fused"),
                     # bench: fused XOR steps take ~10 us, so their timed blocks are ten times longer
                     bench_block_factor={"fused": {"xor": 10, "gates": 10}}))
register(BackendInfo("numpy", "NumPy referee", "#2ca02c", "harness.referee.backend", ("loop",),
                     thread_policy="per_task", cost=(0.1, 100e-6), float64_only=True,
                     capabilities=Capabilities(trace="harness.referee.train:trace",
                                               pretrain_trace="harness.referee.rbm:trace")))
