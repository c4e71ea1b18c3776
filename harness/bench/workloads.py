"""What ``bench`` times: the suites, one :class:`Workload` per lab x backend x device x mode, and their defaults.

Per-backend figures come from the registry (:mod:`harness.backend`): ``thread_policy`` says whether intra-op
threads are set per task or sized once at start-up (then pinned when its backend starts: every framework times a
workload on the same threads, like for like), ``bench_fuse_steps`` the steps per fused program by task (absent: a whole
block) and ``bench_block_factor`` longer blocks for a mode whose steps are very short. No backend is
named here.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from harness import backend as backends
from harness.errors import UsageError
from harness.labs import get_lab
from harness.precision import PRECISIONS, REDUCED
from harness.run.machine import SMALL_TASKS, default_threads

# Steps per timed block, per task: about 0.05-1 s a block on a 2-core CPU (a block shorter than a scheduler's time
# slice is at the mercy of neighbours; a backend whose steps are much shorter asks for longer blocks).
BLOCK_STEPS = {"xor": 1000, "gates": 1000, "mnist": 20}
# Fewer timed blocks than this and the p5/p95 spread is not meaningful (bench warns).
MIN_MEANINGFUL_BLOCKS = 5
# ``--precision``: what bench can time (the bench steppers compute in float32 and reduced precisions) and ``all``;
# each precision's % of peak is of the matmul peak of its compute dtype, measured in the same run
BENCH_PRECISIONS = ("float32", *REDUCED)
PEAK_DTYPE = {"float32": "float32", "bfloat16": "bfloat16", "mixed_bfloat16": "bfloat16",
              "mixed_float16": "float16"}


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
    precision: str = "float32"

    @property
    def key(self) -> str:
        """``lab/framework/device/mode``, and ``/precision`` unless float32 (float32's names, the baselines', stay
        as they were): how results and baselines are matched."""
        base = f"{self.lab}/{self.framework}/{self.device}/{self.mode}"
        return base if self.precision == "float32" else f"{base}/{self.precision}"

    @property
    def peak_dtype(self) -> str:
        """The dtype whose matmul peak this workload's % of peak is of."""
        return PEAK_DTYPE[self.precision]


def precision_list(text: str) -> tuple[str, ...]:
    """``--precision``: comma-separated precisions, or ``all``; float32 first (every speed-up's base), each once.
    A UsageError (one line) for a name bench cannot time."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if names == ["all"]:
        return BENCH_PRECISIONS
    bad = [n for n in names if n not in BENCH_PRECISIONS]
    if bad or not names:
        why = "float64 is not timed by bench; " if "float64" in bad else ""
        known = "unknown " if any(n not in PRECISIONS for n in bad) else ""
        raise UsageError(f"--precision: {known}{', '.join(bad) or 'nothing given'}: {why}choose from "
                         f"{', '.join(BENCH_PRECISIONS)} or all")
    return tuple(dict.fromkeys(("float32", *names)))


def check_precisions(labs: tuple[str, ...], precisions: tuple[str, ...]) -> None:
    """A UsageError (one line) when a lab cannot train in a precision asked for: the hand-written backprop labs
    run float32 and float64 only."""
    reduced = [p for p in precisions if p in REDUCED]
    manual = [lab for lab in labs if get_lab(lab).manual]
    if reduced and manual:
        raise UsageError(f"--precision {','.join(reduced)}: {', '.join(manual)} (hand-written backprop) runs "
                         "float32 and float64 only")


def like_threads(framework: str, device: str, task: str, asked: int | None) -> int | None:
    """The intra-op threads a workload runs on: ``asked`` (``--threads`` or the suite's), else
    :func:`default_threads`; on a CPU the same for a backend whose pool is sized at start-up (pinned when it
    starts), so that every framework times a task on the same threads. None: leave them."""
    if sets_threads(framework):
        return asked or default_threads(framework, task)
    if device != "cpu":
        return None
    return asked or (1 if task in SMALL_TASKS else os.cpu_count())


def sets_threads(framework: str) -> bool:
    """Whether ``framework`` sets its intra-op threads at run time (registry ``thread_policy`` "per_task")."""
    return backends.info(framework).thread_policy == "per_task"


def all_modes() -> tuple[str, ...]:
    """Every execution mode some registered backend offers, in registry order."""
    return backends.all_executions()


def default_block_steps(framework: str, mode: str, task: str) -> int:
    """Steps per timed block: the task's, times the backend's factor for ``mode`` (registry entry)."""
    factor = backends.info(framework).bench_block_factor.get(mode, {}).get(task, 1)
    return BLOCK_STEPS[task] * factor


def default_fuse_steps(framework: str, task: str, block_steps: int) -> int:
    """Steps per fused program: the backend's per-task figure (registry entry), else a whole block."""
    return backends.info(framework).bench_fuse_steps.get(task, block_steps)


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
         modes: tuple[str, ...] | None, suite: Suite, overrides: Overrides | None = None,
         precisions: tuple[str, ...] = ("float32",)) -> list[Workload]:
    """Every workload of a run, grouped by framework, device and threads (each group is timed between its peaks),
    each in every one of ``precisions``. ``modes``: the modes to time wherever a backend offers them (None: all
    but the suite's ``skip_modes``)."""
    o = overrides or Overrides()
    check_precisions(labs, precisions)
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
                    threads = like_threads(fw, device, task, o.threads or suite.threads)
                    work.extend(Workload(
                        lab_name, fw, device, mode, steps, o.blocks or suite.blocks,
                        suite.warmup_blocks if o.warmup_blocks is None else o.warmup_blocks, math.gcd(fuse, steps),
                        threads, suite.overhead_rounds if o.overhead_rounds is None else o.overhead_rounds, p)
                        for p in precisions)
    return work
