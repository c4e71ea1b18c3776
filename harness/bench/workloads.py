"""What ``bench`` times: the suites, one :class:`Workload` per lab x backend x device x mode, and their defaults.

Per-backend figures come from the registry (:mod:`harness.backend`): ``thread_policy`` says whether intra-op
threads are set per task, ``extras["bench_fuse_steps"]`` the steps per fused program by task (absent: a whole
block) and ``extras["bench_block_factor"]`` longer blocks for a mode whose steps are very short. No backend is
named here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from harness import backend as backends
from harness.labs import get_lab
from harness.run.machine import default_threads

# Steps per timed block, per task: about 0.05-1 s a block on a 2-core CPU (a block shorter than a scheduler's time
# slice is at the mercy of neighbours; a backend whose steps are much shorter asks for longer blocks).
BLOCK_STEPS = {"xor": 1000, "gates": 1000, "mnist": 20}
# Fewer timed blocks than this and the p5/p95 spread is not meaningful (bench warns).
MIN_MEANINGFUL_BLOCKS = 5


@dataclass(frozen=True)
class Suite:
    """A named set of workloads: labs, modes left out (every other mode each backend offers is timed), how long to
    time them, and the intra-op threads of backends that set them per task (None: :func:`default_threads`)."""

    labs: tuple[str, ...]
    blocks: int
    warmup_blocks: int
    overhead_rounds: int
    skip_modes: tuple[str, ...] = ()
    threads: int | None = None


SUITES = {
    # Under a minute on a 2-core CPU, without the overhead rounds (the full suite has them). Compiled modes are left
    # out (compiling takes longer than the whole suite), and per-task thread pools run one thread: OpenMP's barriers
    # stall badly when a neighbour's job takes a core, so one thread keeps the gate steady on a shared machine (the
    # full suite uses every core for MNIST).
    "ci": Suite(("xor_wide_deep", "mnist_dropout"), blocks=9, warmup_blocks=1, overhead_rounds=0,
                skip_modes=("compiled",), threads=1),
    "full": Suite(("xor_mlp", "xor_wide_deep", "xor_backprop_manual", "mnist_softmax", "mnist_relu_xavier",
                   "mnist_deep_xavier", "mnist_dropout", "mnist_batchnorm"),
                  blocks=15, warmup_blocks=2, overhead_rounds=10),
}


@dataclass(frozen=True)
class Workload:
    """One timed configuration (``framework``: a registered backend's name)."""

    lab: str
    framework: str
    device: str
    mode: str
    block_steps: int
    blocks: int
    warmup_blocks: int
    fuse_steps: int
    threads: int | None
    overhead_rounds: int

    @property
    def key(self) -> str:
        """``lab/framework/device/mode``: how results and baselines are matched."""
        return f"{self.lab}/{self.framework}/{self.device}/{self.mode}"


def sets_threads(framework: str) -> bool:
    """Whether ``framework`` sets its intra-op threads at run time (registry ``thread_policy`` "per_task")."""
    return backends.info(framework).thread_policy == "per_task"


def all_modes() -> tuple[str, ...]:
    """Every execution mode some registered backend offers, in registry order."""
    return tuple(dict.fromkeys(m for name in backends.names() for m in backends.info(name).executions))


def default_block_steps(framework: str, mode: str, task: str) -> int:
    """Steps per timed block: the task's, times the backend's factor for ``mode`` (registry extras)."""
    factor = backends.info(framework).extras.get("bench_block_factor", {}).get(mode, {}).get(task, 1)
    return BLOCK_STEPS[task] * factor


def default_fuse_steps(framework: str, task: str, block_steps: int) -> int:
    """Steps per fused program: the backend's per-task figure (registry extras), else a whole block."""
    return backends.info(framework).extras.get("bench_fuse_steps", {}).get(task, block_steps)


@dataclass(frozen=True)
class Overrides:
    """Command-line settings that replace a suite's or a default (None: keep it)."""

    block_steps: int | None = None
    blocks: int | None = None
    warmup_blocks: int | None = None
    fuse_steps: int | None = None
    threads: int | None = None
    overhead_rounds: int | None = None


def plan(labs: tuple[str, ...], frameworks: tuple[str, ...], devices: tuple[str, ...],
         modes: tuple[str, ...] | None, suite: Suite, overrides: Overrides | None = None) -> list[Workload]:
    """Every workload of a run, grouped by framework and device (each group is timed between its peaks).
    ``modes``: the modes to time wherever a backend offers them (None: all but the suite's ``skip_modes``)."""
    o = overrides or Overrides()
    work = []
    for fw in frameworks:
        offered = backends.load(fw).modes
        for device in devices:
            for lab_name in labs:
                task = get_lab(lab_name).task
                for mode in offered(device):
                    if (mode not in modes) if modes is not None else (mode in suite.skip_modes):
                        continue
                    steps = o.block_steps or default_block_steps(fw, mode, task)
                    fuse = o.fuse_steps or default_fuse_steps(fw, task, steps)
                    threads = o.threads or (suite.threads if sets_threads(fw) else None) \
                        or default_threads(fw, task)
                    work.append(Workload(
                        lab_name, fw, device, mode, steps, o.blocks or suite.blocks,
                        suite.warmup_blocks if o.warmup_blocks is None else o.warmup_blocks, math.gcd(fuse, steps),
                        threads, suite.overhead_rounds if o.overhead_rounds is None else o.overhead_rounds))
    return work

