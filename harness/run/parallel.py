"""Data-parallel training, framework-neutral: how a global batch and its shared masks are split over N devices,
the two batch-norm behaviours, launching a backend's data-parallel run (in this process, in a worker process, or
as several cooperating processes on this host), and the parity of a data-parallel run against another run.

Each backend's twin is its ``parallel`` capability (``torch_impl.parallel``, ``jax_impl.parallel``; the registry's
``Capabilities.parallel``, the modes it runs data-parallel its entry's ``parallel_executions``): a module with
``train_many(jobs)``, ``bench_many(jobs)``, ``prepare_devices(device, n)``, ``process_env(device, n)``,
``multiprocess_env(index, count, address)``, ``process_count(devices)`` and ``is_primary()``. The frameworks' own
engines do the work (``jax.sharding``; ``torch.distributed`` with ``DistributedDataParallel``).

Semantics (every backend): the lab's global batch of B examples is split into N contiguous shards of B/N rows,
shard ``k`` on device ``k``; the dropout masks are the harness's shared masks, each shard taking its rows; the
gradient is the average over devices of the per-device mean gradients (= the global-batch mean gradient); the
reported loss of a step is the global-batch mean loss.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from harness import backend as backends
from harness.backend import RunSpec, TrainResult
from harness.errors import BackendError, LabError
from harness.parity import verdict as words
from harness.run.results import atomic_write

# Batch norm under data parallelism: two different computations, both named.
BN_MODES = {
    "sync": "synchronised statistics: each device normalises by the mean and variance of the global batch "
            "(torch: SyncBatchNorm on GPUs, an autograd all_reduce of the statistics on a CPU; JAX: the sharded "
            "program's global-batch mean), the same computation as one device",
    "local": "per-device statistics: each device normalises its shard by the shard's own mean and variance "
             "(DDP's plain BatchNorm; JAX: statistics per shard); running statistics are the mean over devices",
}
# How gradients are combined across devices. "sum" is a deliberate bug, for tests that show it is caught.
REDUCTIONS = ("mean", "sum")
PARITY_RTOL = 1e-12  # float64: data-parallel with synchronised batch norm equals one device to this, every step
DEFAULT_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Parallel:
    """How to spread one run over devices: ``devices`` in all (over ``processes`` cooperating processes, each
    seeing ``devices // processes``), the batch-norm mode, the gradient reduction (``sum``: tests only), and the
    intra-op threads of each device's process on a CPU where the backend sets them (None: the cores shared out)."""

    devices: int = 1
    bn: str = "sync"
    reduce: str = "mean"
    processes: int = 1
    timeout_s: float = DEFAULT_TIMEOUT_S
    threads: int | None = None

    def check(self) -> None:
        """LabError for a value outside its choices."""
        if self.devices < 1 or self.processes < 1 or self.devices % self.processes:
            raise LabError(f"devices ({self.devices}) must be a positive multiple of processes ({self.processes})")
        if self.bn not in BN_MODES:
            raise LabError(f"unknown batch-norm mode {self.bn!r}; choose from {', '.join(BN_MODES)}")
        if self.reduce not in REDUCTIONS:
            raise LabError(f"unknown gradient reduction {self.reduce!r}; choose from {', '.join(REDUCTIONS)}")


def check_spec(spec: RunSpec, par: Parallel) -> None:
    """LabError unless ``spec`` can be split over ``par.devices``: an autograd lab with minibatches whose size
    the device count divides."""
    par.check()
    if spec.lab.manual:
        raise LabError(f"{spec.lab.name}: data-parallel training needs an autograd model (this lab is manual)")
    if spec.batches is None:
        raise LabError(f"{spec.lab.name}: data-parallel training needs a minibatch lab (this one is full-batch)")
    if spec.lab.pretrain is not None:
        raise LabError(f"{spec.lab.name}: data-parallel training does not run RBM pre-training (run it on one device)")
    if spec.precision is not None:
        raise LabError(f"{spec.lab.name}: data-parallel training runs float32 or float64, not {spec.precision} "
                       "(run reduced precision on one device)")
    batch = spec.batches.shape[1]
    if batch % par.devices:
        raise LabError(f"{spec.lab.name}: batch size {batch} does not split over {par.devices} devices")


def shard(rows: int, devices: int, index: int) -> slice:
    """The rows of device ``index`` among ``devices`` equal contiguous shards of ``rows``."""
    if rows % devices:
        raise LabError(f"{rows} rows do not split over {devices} devices")
    size = rows // devices
    return slice(index * size, (index + 1) * size)


def shard_spec(spec: RunSpec, devices: int, index: int) -> RunSpec:
    """``spec`` as device ``index`` sees it: its rows of every step's batch and of every shared mask."""
    rows = shard(spec.batches.shape[1], devices, index)
    masks = None if spec.masks is None else [m[:, rows] for m in spec.masks]
    return dataclasses.replace(spec, batches=spec.batches[:, rows], masks=masks)


def with_shared_masks(spec: RunSpec) -> RunSpec:
    """``spec`` with the harness's shared dropout masks when its model drops out and it has none: a data-parallel
    run takes the single-device run's masks, each shard its rows (own draws would differ per device count)."""
    if spec.model.dropout == 0 or spec.masks is not None:
        return spec
    from harness.run.runner import dropout_masks  # runner imports backend; keep this module light

    return dataclasses.replace(spec, masks=dropout_masks(spec.model, spec.batches, spec.steps, spec.seed))


def describe(spec: RunSpec, par: Parallel) -> dict:
    """What a record says about the data-parallel layout."""
    batch = spec.batches.shape[1] if spec.batches is not None else None
    return {"devices": par.devices, "processes": par.processes, "global_batch": batch,
            "per_device_batch": batch // par.devices if batch else None,
            "batch_norm": par.bn if spec.model.batchnorm else None,
            "batch_norm_means": BN_MODES[par.bn] if spec.model.batchnorm else None,
            "gradient_reduction": par.reduce}


# ------------------------------------------------------------------------------------------------ backends


def backend_module(framework: str) -> ModuleType:
    """The data-parallel twin of ``framework`` (its ``parallel`` capability); BackendError if it has none."""
    if not backends.offers(framework, "parallel"):
        raise BackendError(f"framework {framework!r} has no data-parallel support")
    return backends.capability(framework, "parallel")


def _call(module: ModuleType, call: str) -> Callable[[list], list]:
    """``train_many`` or ``bench_many`` of a data-parallel module."""
    calls = {"train_many": module.train_many, "bench_many": module.bench_many}
    if call not in calls:
        raise BackendError(f"no data-parallel call {call!r}; choose from {', '.join(calls)}")
    return calls[call]


def prepare_jobs(framework: str, jobs: list[tuple]) -> list[tuple]:
    """Jobs ``(spec, par, *rest)`` checked, each spec with shared masks, ``framework``'s execution mode resolved
    and no progress callback (specs travel to other processes)."""
    backend_module(framework)
    out, offered = [], backends.info(framework).parallel_executions
    for spec, par, *rest in jobs:
        check_spec(spec, par)
        execution = backends.resolve_execution(framework, spec.execution, spec.device)
        if execution not in offered:
            raise BackendError(f"{framework} runs data-parallel in {', '.join(offered)}, not {execution!r}")
        out.append((dataclasses.replace(with_shared_masks(spec), execution=execution, progress=None), par, *rest))
    return out


def train(spec: RunSpec, framework: str, par: Parallel) -> TrainResult:
    """Train ``spec`` data-parallel in this process (a backend may start its own ranks); see the module doc."""
    return train_many(framework, [(spec, par)])[0]


def train_many(framework: str, jobs: list[tuple[RunSpec, Parallel]]) -> list[TrainResult]:
    """Several data-parallel runs in this process; a backend that cannot host the devices asked for here (JAX
    started with fewer host devices) runs them in a worker process instead."""
    return _run(framework, "train_many", jobs)


def bench_many(framework: str, jobs: list[tuple[RunSpec, Parallel, Any]]) -> list[dict]:
    """Time data-parallel steppers: ``(spec, par, protocol)`` jobs, ``protocol(stepper) -> timing dict`` (a
    picklable callable with a ``block_steps`` attribute, run by every rank in step); each job's timing as the
    first device measured it."""
    return _run(framework, "bench_many", jobs)


def _run(framework: str, call: str, jobs: list[tuple]) -> list:
    jobs = prepare_jobs(framework, jobs)
    module = backend_module(framework)
    if module.prepare_devices(jobs[0][0].device, max(j[1].devices for j in jobs)):
        return _call(module, call)(jobs)
    return launch(framework, call, jobs).result()


def process_count(framework: str, devices: int) -> int:
    """How many processes ``framework`` runs ``devices`` devices with here (torch: one per device; JAX: the
    processes ``jax.distributed`` joined, one without it)."""
    return int(backend_module(framework).process_count(devices))


def is_primary(framework: str) -> bool:
    """Whether this process writes the results (rank/process 0, or not part of a process group)."""
    return bool(backend_module(framework).is_primary())


# ------------------------------------------------------------------------------------------------ launching


def free_port() -> int:
    """A TCP port free on localhost now (for a coordinator on this host)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Pending:
    """Worker processes started by :func:`launch`; :meth:`result` waits (bounded) for the first one's answer."""

    def __init__(self, procs: list[subprocess.Popen], folder: tempfile.TemporaryDirectory, timeout_s: float) -> None:
        self.procs, self.folder, self.timeout_s = procs, folder, timeout_s

    def result(self) -> Any:
        """The answer of process 0; BackendError (with the tail of its output) on a failure or a timeout."""
        path = Path(self.folder.name)
        try:
            for i, proc in enumerate(self.procs):
                try:
                    proc.wait(timeout=self.timeout_s)
                except subprocess.TimeoutExpired:
                    self.stop()
                    raise BackendError(f"data-parallel worker {i} still running after {self.timeout_s:.0f} s; "
                                       "stopped") from None
            for i, proc in enumerate(self.procs):
                if proc.returncode != 0:
                    tail = (path / f"log{i}").read_text(errors="replace").strip().splitlines()[-12:]
                    raise BackendError(f"data-parallel worker {i} failed (exit {proc.returncode}): "
                                       + " | ".join(tail))
            return pickle.loads((path / "out0").read_bytes())
        finally:
            self.stop()
            self.folder.cleanup()

    def stop(self) -> None:
        """Kill every worker still running, with the processes it started (its own process group)."""
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def launch(framework: str, call: str, jobs: list[tuple], processes: int = 1,
           timeout_s: float | None = None) -> Pending:
    """Run ``<package>.parallel.<call>(jobs)`` (``train_many`` or ``bench_many``) in ``processes`` fresh worker
    processes on this host (each in its own process group, stopped after ``timeout_s``), with the environment the
    backend asks for: its devices, and with several processes the coordinator address, process count and index.
    Returns at once."""
    module = backend_module(framework)
    jobs = prepare_jobs(framework, jobs)
    device = jobs[0][0].device
    devices = max(j[1].devices for j in jobs)
    timeout_s = timeout_s or max(j[1].timeout_s for j in jobs)
    folder = tempfile.TemporaryDirectory(prefix="dlzta-parallel-")
    path = Path(folder.name)
    atomic_write(path / "in", pickle.dumps({"framework": framework, "call": call, "jobs": jobs}))
    address = f"127.0.0.1:{free_port()}"
    procs = []
    for i in range(processes):
        env = {**os.environ, **module.process_env(device, devices // processes)}
        if processes > 1:
            env.update(module.multiprocess_env(i, processes, address))
        with open(path / f"log{i}", "wb") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "harness.run.parallel", str(path / "in"),
                                           str(path / f"out{i}")], env=env, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
    return Pending(procs, folder, timeout_s)


def worker(argv: list[str]) -> int:
    """``python -m harness.run.parallel IN OUT``: run the pickled call of IN, write its answer to OUT."""
    request = pickle.loads(Path(argv[0]).read_bytes())
    module = backend_module(request["framework"])
    answer = _call(module, request["call"])(request["jobs"])
    atomic_write(argv[1], pickle.dumps(answer))
    return 0


# ------------------------------------------------------------------------------------------------ parity


def null_directions(params: dict[str, np.ndarray]) -> set[str]:
    """Weights the loss does not depend on: biases of Linear layers followed by batch norm (which subtracts the
    batch mean). Their gradient is rounding noise, which Adam scales up to steps of ~lr: they are reported apart."""
    return {k for k in params if k.startswith("dense") and k.endswith("/bias")
            and f"bn{k[len('dense'):].split('/')[0]}/scale" in params}


def _rel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    diff = np.abs(a - b)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = diff / np.maximum(np.abs(a), np.abs(b))
    return np.where(diff == 0, 0.0, rel)


def _max_scaled(a: dict, b: dict, keys: set[str] | list[str]) -> float:
    """Largest |a - b| of each array relative to that array's largest magnitude, over ``keys``."""
    out = 0.0
    for k in keys:
        scale = max(float(np.abs(a[k]).max()), 1e-300)
        out = max(out, float(np.abs(np.asarray(a[k], np.float64) - b[k]).max()) / scale)
    return out


def parity(reference: TrainResult, other: TrainResult, rtol: float = PARITY_RTOL, dtype: str = "float64") -> dict:
    """How far ``other`` is from ``reference``: the loss of every step (relative), the final weights and batch-norm
    state and the evaluation outputs (each array's largest difference relative to its largest magnitude; the
    weights the loss does not depend on apart), and whether every step's loss is within ``rtol``."""
    n = min(len(reference.losses), len(other.losses))
    rel = _rel(reference.losses[:n], other.losses[:n])
    over = np.flatnonzero(~(rel <= rtol))
    complete = n > 0 and len(reference.losses) == len(other.losses)
    null = null_directions(reference.params)
    outputs = [(reference.outputs[s][k], other.outputs[s][k]) for s in reference.outputs if s in other.outputs
               for k in reference.outputs[s] if k in other.outputs[s]]
    agree = complete and not over.size
    if dtype != "float64":  # rounding moves float32 runs apart: only an ensemble could judge them
        text, kind = f"{dtype}: not judged (no statistical tier for data-parallel runs; figures only)", "not judged"
    elif agree:
        text, kind = words.same_math(n, float(rel.max()) if n else 0.0), "same math"
    else:
        at = int(over[0]) if over.size else n
        text = words.differs(f"training loss at step {at}", float(rel[at]) if at < n else None)
        kind = "differs"
    return {"verdict": text, "verdict_kind": kind,
        "steps": n, "rtol": rtol, "loss_rel_per_step": rel.tolist(), "loss_max_rel": float(rel.max()) if n else 0.0,
        "first_step_over": int(over[0]) if over.size else None, "agree": agree,
        "params_max_rel": _max_scaled(reference.params, other.params, set(reference.params) - null),
        "null_params_max_rel": _max_scaled(reference.params, other.params, null) if null else None,
        "state_max_rel": _max_scaled(reference.state, other.state, list(reference.state)) if reference.state else None,
        "outputs_max_rel": max((float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-300)) for a, b in outputs),
                               default=None),
    }


def parity_line(name: str, p: dict) -> str:
    """One line of a parity summary, in the verdict vocabulary of ``harness.parity.verdict``."""
    verdict = p.get("verdict") or ("agree" if p["agree"] else f"differs at step {p['first_step_over']}")
    return (f"{name}: {verdict}; loss max rel {p['loss_max_rel']:.2e} over {p['steps']} steps, weights "
            f"{p['params_max_rel']:.2e}" + (f", batch-norm state {p['state_max_rel']:.2e}"
                                             if p["state_max_rel"] is not None else ""))


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1:]))
