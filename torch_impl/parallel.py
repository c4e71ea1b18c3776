"""Data-parallel training in PyTorch (mirrors ``jax_impl/parallel.py``; semantics in ``harness.run.parallel``).

``torch.distributed`` with ``DistributedDataParallel``: one process per device (gloo on a CPU, NCCL on GPUs), each
training the lab's own learner (``train._ModuleLearner``) on its shard of every global batch; DDP averages the
gradients. Ranks are started here with ``torch.multiprocessing.spawn`` (a file rendezvous in a private folder,
bounded by a timeout), or are already running under ``torchrun`` (or :func:`harness.run.parallel.launch` with several
processes): then this process is one rank and ``init_method="env://"``.

Batch norm: ``sync`` is ``torch.nn.SyncBatchNorm`` on GPUs; torch 2.13's SyncBatchNorm refuses CPU tensors
("SyncBatchNorm expected input tensor to be on GPU"), so on a CPU :class:`AllReduceBatchNorm` takes the global
statistics with torch's differentiable functional ``all_reduce`` (``torch.distributed._functional_collectives``,
which torch 2.13 names in place of the deprecated ``torch.distributed.nn.functional.all_reduce``). ``local`` keeps
the plain BatchNorm1d (per-rank statistics), with DDP's buffer sync off and the running statistics averaged over
ranks before each evaluation (the average of the ranks' moving averages is the moving average of the average).
"""

from __future__ import annotations

import datetime
import multiprocessing
import os
import pickle
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.distributed import _functional_collectives as collectives
from torch.nn.parallel import DistributedDataParallel

from harness.backend import BackendError, RunSpec, Stepper, TrainResult
from harness.run.parallel import Parallel, shard_spec
from torch_impl import train as torch_train

EXECUTIONS = ("eager",)  # data-parallel runs: DDP's eager step
# Imported once by the server the ranks fork from: torch.optim imports torch._dynamo when the first optimizer is
# made (several seconds), which every rank would pay.
PRELOAD = ("torch._dynamo",)


def process_env(device: str, n: int) -> dict[str, str]:
    """Environment a worker process needs for ``n`` devices: nothing (ranks are processes started here)."""
    return {}


def multiprocess_env(index: int, count: int, address: str) -> dict[str, str]:
    """Environment of process ``index`` of ``count`` cooperating processes, as torchrun sets it (``env://``)."""
    host, port = address.rsplit(":", 1)
    return {"RANK": str(index), "LOCAL_RANK": str(index), "WORLD_SIZE": str(count), "LOCAL_WORLD_SIZE": str(count),
            "MASTER_ADDR": host, "MASTER_PORT": port}


def _launched() -> bool:
    """Whether this process is a rank already (torchrun, or ``harness.run.parallel.launch`` with several processes)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def prepare_devices(device: str, n: int) -> bool:
    """Whether ``n`` devices can be driven from here: ranks are spawned on a CPU, one per GPU otherwise."""
    if device == "gpu" and torch.cuda.device_count() < n and not _launched():
        raise BackendError(f"{n} GPUs asked, {torch.cuda.device_count()} present")
    if device == "tpu":
        raise BackendError("torch data-parallel runs on cpu or gpu")
    return True


def process_count(devices: int) -> int:
    """Processes a run over ``devices`` devices takes: one rank per device."""
    return devices


def is_primary() -> bool:
    """Rank 0 of a launched process group (torchrun's ``RANK``), or a process that is no rank (it spawned them)."""
    return os.environ.get("RANK", "0") == "0"


class AllReduceBatchNorm(nn.BatchNorm1d):
    """BatchNorm1d with statistics over the global batch (every rank's shard, equal shard sizes), for CPUs where
    SyncBatchNorm is refused: mean and biased variance from differentiable all_reduce sums (whose backward
    all-reduces the gradient), so gradients flow across ranks as in SyncBatchNorm; running statistics as torch
    keeps them (unbiased variance, global count)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        n = x.shape[0] * dist.get_world_size()
        mean = collectives.all_reduce(x.sum(0), "sum", dist.group.WORLD) / n
        centred = x - mean
        var = collectives.all_reduce((centred * centred).sum(0), "sum", dist.group.WORLD) / n
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(mean, alpha=m)
            self.running_var.mul_(1 - m).add_(var * (n / (n - 1)), alpha=m)
            self.num_batches_tracked.add_(1)
        return centred / torch.sqrt(var + self.eps) * self.weight + self.bias


def _synchronise(bn: nn.BatchNorm1d, device: torch.device) -> nn.Module:
    """``bn`` with synchronised statistics, sharing its parameters and buffers (so the optimizer keeps them)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(bn)
    out = AllReduceBatchNorm(bn.num_features, bn.eps, bn.momentum, dtype=bn.weight.dtype, device=device)
    out.weight, out.bias = bn.weight, bn.bias
    out.running_mean, out.running_var, out.num_batches_tracked = bn.running_mean, bn.running_var, \
        bn.num_batches_tracked
    return out


def _sum_hook(state: object, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """The planted bug: gradients summed over ranks instead of averaged (tests show that it is caught)."""
    return dist.all_reduce(bucket.buffer(), async_op=True).get_future().then(lambda fut: fut.value()[0])


# DDP checks a hook's annotations as objects; this module's are strings (``from __future__ import annotations``).
_sum_hook.__annotations__ = {"state": object, "bucket": dist.GradBucket, "return": torch.futures.Future[torch.Tensor]}


def _average_buffers(module: nn.Module) -> None:
    """Running statistics averaged over ranks (``local`` batch norm; gloo has no AVG reduction)."""
    for buf in module.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf)
            buf.div_(dist.get_world_size())


class _Rank:
    """This rank's learner for one job: the lab's own learner on its shard, its module wrapped in DDP."""

    def __init__(self, spec: RunSpec, par: Parallel, rank: int, world: int, device: torch.device) -> None:
        self.spec, self.par, self.device = shard_spec(spec, world, rank), par, device
        self.dtype = torch_train.DTYPES[spec.dtype]
        self.learner = torch_train._ModuleLearner(self.spec, self.dtype, device)
        self.inner = self.learner.module
        if par.bn == "sync":
            for i, bn in enumerate(self.inner.bn):
                self.inner.bn[i] = _synchronise(bn, device)
        ids = [device.index] if device.type == "cuda" else None
        self.ddp = DistributedDataParallel(self.inner, device_ids=ids, forward_sync_buffers=False)
        if par.reduce == "sum":
            self.ddp.register_comm_hook(None, _sum_hook)
        self.learner.module = self.ddp  # the learner's step now runs DDP's forward and backward

    def data(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[torch.Tensor] | None]:
        s, to = self.spec, torch_train._to
        masks = None if s.masks is None else [to(m, self.device, self.dtype) for m in s.masks]
        return to(s.train_x, self.device, self.dtype), to(s.train_y, self.device), to(s.batches, self.device), masks

    def sync_state(self) -> None:
        if self.par.bn == "local" and len(self.inner.bn):
            _average_buffers(self.inner)

    @torch.no_grad()
    def outputs(self, x: torch.Tensor) -> np.ndarray:
        self.inner.eval()
        out = self.inner(x).cpu().numpy()
        self.inner.train()
        return out


def train(spec: RunSpec, par: Parallel, rank: int, world: int, device: torch.device) -> TrainResult:
    """Train this rank's part of ``spec``; every rank returns the global loss per step and the (common) result."""
    r = _Rank(spec, par, rank, world, device)
    x, y, batches, masks = r.data()
    eval_sets = {k: torch_train._to(a, device, r.dtype) for k, (a, _) in spec.eval_sets.items()}
    outputs: dict[int, dict[str, np.ndarray]] = {}

    def batch(s: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor] | None]:
        idx = batches[s]
        return x[idx], y[idx], None if masks is None else [m[s] for m in masks]

    def evaluate(done: int) -> None:
        if done in spec.eval_steps:
            r.sync_state()
            outputs[done] = {k: r.outputs(a) for k, a in eval_sets.items()}

    torch_train.set_precision()
    losses, timing = torch_train._run_loop(r.spec, r.learner.step, batch, evaluate, lambda: torch_train.sync(device))
    dist.all_reduce(losses)  # each rank's shard mean; equal shards: the global mean is their average
    losses /= world
    r.sync_state()
    params, state = torch_train.models.get_params(r.inner)
    return TrainResult(losses.cpu().numpy().astype(np.float64), outputs, params, state, timing,
                       f"{world}x {device.type}")


def make_stepper(spec: RunSpec, par: Parallel, rank: int, world: int, device: torch.device) -> Stepper:
    """A :class:`harness.backend.Stepper` of this rank's DDP step, on its shard of pooled batches (cycled)."""
    r = _Rank(spec, par, rank, world, device)
    x, y, batches, masks = r.data()
    views = [(x[batches[j]], y[batches[j]], None if masks is None else [m[j] for m in masks])
             for j in range(len(batches))]
    last: list[torch.Tensor] = []
    state = {"i": 0}

    def unit() -> None:
        last[:] = [r.learner.step(*views[state["i"] % len(views)])]
        state["i"] += 1

    def bare(units: int) -> None:
        for _ in range(units):
            unit()

    return Stepper("eager", unit, 1, lambda: torch_train.sync(device), lambda: float(last[0]), bare,
                   {"pool_steps": len(views), "ranks": world, "backend": dist.get_backend()})


# ------------------------------------------------------------------------------------------------ ranks


def _init(rank: int, world: int, par: Parallel, device: str, init_method: str) -> torch.device:
    """Join the process group; this rank's device, with its intra-op threads (``par.threads``, or the CPU's cores
    shared out among the ranks on this host)."""
    use_cuda = device == "gpu"
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", rank))
        torch.cuda.set_device(local)
    else:
        ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(par.threads or max(1, (os.cpu_count() or 1) // ranks_here))
    dist.init_process_group("nccl" if use_cuda else "gloo", init_method=init_method, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=par.timeout_s))
    return torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")


def _run_jobs(kind: str, jobs: list, rank: int, world: int, init_method: str) -> list:
    """Every job of one device count on this rank, in order (all ranks run the same list)."""
    device = _init(rank, world, jobs[0][1], jobs[0][0].device, init_method)
    try:
        if kind == "train":
            return [train(spec, par, rank, world, device) for spec, par in jobs]
        return [{**protocol(make_stepper(spec, par, rank, world, device)), "threads": torch.get_num_threads()}
                for spec, par, protocol in jobs]
    finally:
        dist.barrier()
        dist.destroy_process_group()


def _spawned(rank: int, world: int, kind: str, jobs: list, folder: str) -> None:
    out = _run_jobs(kind, jobs, rank, world, f"file://{folder}/rendezvous")
    if rank == 0:
        Path(folder, "out").write_bytes(pickle.dumps(out))


def _spawn(kind: str, jobs: list, world: int) -> list:
    """Start ``world`` ranks on this host and wait (bounded) for rank 0's answers. Ranks fork from a server process
    that imported torch, this module and :data:`PRELOAD` once (``forkserver``): spawning each from scratch costs
    every rank those imports, seconds apiece on a busy machine; forking from this process could inherit a running
    thread pool."""
    timeout = max(j[1].timeout_s for j in jobs)
    multiprocessing.get_context("forkserver").set_forkserver_preload([__name__, *PRELOAD])
    with tempfile.TemporaryDirectory(prefix="dlzta-ddp-") as folder:
        ctx = mp.start_processes(_spawned, args=(world, kind, jobs, folder), nprocs=world, join=False,
                                 start_method="forkserver")
        deadline = time.monotonic() + timeout
        try:
            while not ctx.join(timeout=max(0.1, deadline - time.monotonic())):
                if time.monotonic() > deadline:
                    raise BackendError(f"torch data-parallel ranks still running after {timeout:.0f} s; stopped")
        except (mp.ProcessRaisedException, mp.ProcessExitedException) as exc:  # a rank failed: its last line
            lines = [line for line in str(exc).splitlines() if line.strip()]
            raise BackendError(f"torch data-parallel rank {exc.error_index} failed: {lines[-1][:300]}") from None
        finally:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
        return pickle.loads(Path(folder, "out").read_bytes())


def _dispatch(kind: str, jobs: list) -> list:
    if _launched():
        world = int(os.environ["WORLD_SIZE"])
        if any(j[1].devices != world for j in jobs):
            raise BackendError(f"this process is one of {world} ranks; --devices must be {world}")
        return _run_jobs(kind, jobs, int(os.environ["RANK"]), world, "env://")
    out: dict[int, Any] = {}
    for world in sorted({j[1].devices for j in jobs}):
        picked = [i for i, j in enumerate(jobs) if j[1].devices == world]
        out.update(zip(picked, _spawn(kind, [jobs[i] for i in picked], world)))
    return [out[i] for i in range(len(jobs))]


def train_many(jobs: list[tuple[RunSpec, Parallel]]) -> list[TrainResult]:
    """Train each ``(spec, par)`` data-parallel (one group of ranks per device count)."""
    return _dispatch("train", jobs)


def bench_many(jobs: list[tuple[RunSpec, Parallel, Callable[[Stepper], dict]]]) -> list[dict]:
    """``protocol(stepper)`` of each job on every rank in step; rank 0's timings."""
    return _dispatch("bench", jobs)
