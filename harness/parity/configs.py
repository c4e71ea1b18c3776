"""Run configurations: what one side of a comparison is (backend, device, execution mode, dtype), written on the
command line as ``BACKEND[:FIELD]...``, e.g. ``torch``, ``torch:compiled``, ``jax:gpu``, ``jax:float64``,
``torch:gpu:cuda_graph:float32``. Each field is recognised by its value (a device, a dtype or an execution mode
of that backend); a field left out takes the command's ``--device``/``--dtype``/``--execution`` (the execution:
the backend's default where that backend lacks it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from harness import backend as registry
from harness.backend import DEVICES, DTYPES, RunSpec
from harness.errors import UsageError
from harness.run.runner import Prepared, RunOptions

SYNTAX = "BACKEND[:DEVICE][:EXECUTION][:DTYPE]"


@dataclass(frozen=True)
class RunConfig:
    """One side of a comparison."""

    backend: str
    device: str = "cpu"
    execution: str = ""
    dtype: str = "float32"

    def label(self) -> str:
        """``torch:cpu:eager:float32``."""
        return f"{self.backend}:{self.device}:{self.execution}:{self.dtype}"

    def as_dict(self) -> dict:
        """The four fields, for results."""
        return dataclasses.asdict(self)

    def name_beside(self, spec: RunSpec) -> str:
        """The side named as plainly as it can be beside the run ``spec`` describes: ``torch``, or
        ``jax/per_step/float64`` with the fields that differ from ``spec`` (the execution: from the backend's
        default)."""
        default = registry.info(self.backend).executions[0] if self.backend in registry.names() else None
        fields = (None if self.device == spec.device else self.device,
                  None if self.execution in ("", default) else self.execution,
                  None if self.dtype == spec.dtype else self.dtype)
        return "/".join(v for v in (self.backend, *fields) if v)


def _execution(backend: str, wanted: str | None) -> str:
    """``wanted`` as ``backend`` runs it; its default where it has no such mode."""
    if backend not in registry.names():  # a test's backend object: runs what it is given
        return wanted or ""
    entry = registry.info(backend)
    if wanted in entry.executions or wanted in entry.execution_aliases:
        return registry.resolve_execution(backend, wanted)
    return entry.executions[0]


def parse_config(text: str, options: RunOptions) -> RunConfig:
    """A RunConfig from ``BACKEND[:FIELD]...``; UsageError naming the choices for a field it does not know."""
    backend, *fields = [t.strip() for t in text.split(":")]
    if backend not in registry.names():
        raise UsageError(f"unknown backend {backend!r} in {text!r}; choose from {', '.join(registry.names())}")
    entry = registry.info(backend)
    chosen: dict[str, str] = {}
    for value in fields:
        kind = ("device" if value in DEVICES else "dtype" if value in DTYPES
                else "execution" if value in entry.executions or value in entry.execution_aliases else None)
        if kind is None:
            allowed = ", ".join((*DEVICES, *entry.executions, *DTYPES))
            raise UsageError(f"unknown field {value!r} in {text!r} ({SYNTAX}); choose from {allowed}")
        if kind in chosen:
            raise UsageError(f"two {kind}s in {text!r} ({SYNTAX})")
        chosen[kind] = value
    execution = (registry.resolve_execution(backend, chosen["execution"]) if "execution" in chosen
                 else _execution(backend, options.execution))
    return RunConfig(backend, chosen.get("device", options.device), execution, chosen.get("dtype", options.dtype))


def config_of(spec: RunSpec, backend: str) -> RunConfig:
    """``backend`` as the run ``spec`` describes it (its device and dtype; its execution where the backend has it)."""
    return RunConfig(backend, spec.device, _execution(backend, spec.execution), spec.dtype)


def as_config(side: RunConfig | str, spec: RunSpec) -> RunConfig:
    """A side given as a RunConfig, or as a backend name run as ``spec`` describes."""
    if isinstance(side, RunConfig):
        return side
    if isinstance(side, str):
        return config_of(spec, side)
    raise TypeError(f"not a run configuration: {side!r}")


def default_configs(options: RunOptions) -> tuple[RunConfig, RunConfig]:
    """The first two registered backends that are not referees, as ``options`` runs them."""
    found = registry.names(include_referees=False)
    if len(found) < 2:
        raise UsageError(f"compare needs two backends; registered: {', '.join(registry.names()) or 'none'}")
    return tuple(RunConfig(n, options.device, _execution(n, options.execution), options.dtype)  # type: ignore
                 for n in found[:2])


def run_keys(a: RunConfig, b: RunConfig) -> tuple[str, str]:
    """Names of the two sides in results: the backend names where they differ, else the fields that differ
    (``torch:eager`` / ``torch:compiled``), else ``a``/``b``."""
    if a.backend != b.backend:
        return a.backend, b.backend
    differing = [f for f in ("device", "execution", "dtype") if getattr(a, f) != getattr(b, f)]
    if not differing:
        return f"{a.backend}:a", f"{b.backend}:b"
    return tuple(":".join([c.backend, *(getattr(c, f) for f in differing)]) for c in (a, b))  # type: ignore


def lowest_dtype(*configs: RunConfig) -> str:
    """The narrowest dtype among ``configs``: shared weights are drawn in it and widened for the others."""
    return min((c.dtype for c in configs), key=lambda d: np.finfo(np.dtype(d)).bits)


def cast_arrays(arrays: dict | None, dtype: str) -> dict | None:
    """Float arrays of ``arrays`` in ``dtype`` (widening is exact)."""
    if arrays is None:
        return None
    return {k: v.astype(dtype) if np.issubdtype(v.dtype, np.floating) else v for k, v in arrays.items()}


def _cast(a: np.ndarray | None, dtype: str) -> np.ndarray | None:
    return a.astype(dtype) if a is not None and np.issubdtype(a.dtype, np.floating) else a


def retarget(spec: RunSpec, config: RunConfig) -> RunSpec:
    """``spec`` as ``config`` runs it: its device, execution and dtype, the float arrays (weights, state, inputs)
    in that dtype (labels and masks kept; each backend converts its inputs to its dtype the same way)."""
    if config.dtype != spec.dtype:
        spec = dataclasses.replace(spec, train_x=_cast(spec.train_x, config.dtype),
                                   train_y=_cast(spec.train_y, config.dtype),
                                   eval_sets={k: (_cast(x, config.dtype), y) for k, (x, y) in spec.eval_sets.items()})
    return dataclasses.replace(spec, device=config.device, execution=config.execution or spec.execution,
                               dtype=config.dtype, params=cast_arrays(spec.params, config.dtype),
                               state=cast_arrays(spec.state, config.dtype))


def for_config(prepared: Prepared, config: RunConfig) -> Prepared:
    """``prepared`` as ``config`` runs it (main model and companion)."""
    options = dataclasses.replace(prepared.options, device=config.device, dtype=config.dtype,
                                  execution=config.execution)
    companion = retarget(prepared.companion, config) if prepared.companion is not None else None
    return dataclasses.replace(prepared, options=options, spec=retarget(prepared.spec, config), companion=companion)
