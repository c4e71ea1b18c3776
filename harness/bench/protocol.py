"""The timing protocol: compile and warm-up apart, steady-state blocks ended by a device sync, their statistics,
and the harness's own overhead against a bare loop. Works on any :class:`~harness.backend.Stepper`."""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Callable

from harness.backend import Stepper
from harness.bench.peak import quantile

INJECTIONS = ("sync",)


def ms_stats(block_s: list[float], block_steps: int) -> dict[str, float]:
    """ms/step over blocks: median, p5, p25, p75, p95 (linear interpolation), min, max."""
    ms = [t * 1e3 / block_steps for t in block_s]
    return {"median": quantile(ms, 0.5), "p5": quantile(ms, 0.05), "p25": quantile(ms, 0.25),
            "p75": quantile(ms, 0.75), "p95": quantile(ms, 0.95), "min": min(ms), "max": max(ms)}


def half_width(stats: dict[str, float]) -> float:
    """Half the p5..p95 width of a figure's statistics: the ``± X`` of the github-action files."""
    return (stats["p95"] - stats["p5"]) / 2


def inject_sync(stepper: Stepper) -> Stepper:
    """The same stepper with an extra host sync after every dispatch (every step, in per-step modes): wait for
    the device and read the loss back, as a stray ``.item()`` does. A deliberate slowdown, to show that the gate
    catches one."""
    unit, loss = stepper.unit, stepper.loss

    def slow() -> None:
        unit()
        loss()

    def slow_bare(units: int) -> None:
        for _ in range(units):
            unit()
            loss()

    return dataclasses.replace(stepper, unit=slow, bare=slow_bare)


def time_stepper(stepper: Stepper, block_steps: int, blocks: int, warmup_blocks: int,
                 matmul: Callable[[], float] | None = None) -> dict:
    """Compile, warm-up, then ``blocks`` timed blocks each ended by a sync (and, given ``matmul``, each followed by
    one timed matmul: the peak at that moment)."""
    start = time.perf_counter()
    stepper.unit()
    stepper.sync()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(warmup_blocks):
        stepper.run(block_steps)
    stepper.sync()
    warmup_s = time.perf_counter() - start
    paired: list[float] = []
    block_s = timed_blocks(stepper, block_steps, blocks, paired.append if matmul else None, matmul)
    return {"compile_s": compile_s, "warmup_s": warmup_s, "block_s": block_s,
            **({"paired_matmul_s": paired} if matmul else {})}


def timed_blocks(stepper: Stepper, block_steps: int, blocks: int, record: Callable[[float], None] | None = None,
                 matmul: Callable[[], float] | None = None) -> list[float]:
    """Seconds of each of ``blocks`` blocks of ``block_steps`` steps, each ended by a device sync; with
    ``matmul``, a matmul is timed after each block and handed to ``record``."""
    times = []
    for _ in range(blocks):
        start = time.perf_counter()
        stepper.run(block_steps)
        stepper.sync()
        times.append(time.perf_counter() - start)
        if matmul is not None and record is not None:
            record(matmul())
    return times


def _timed_pair(stepper: Stepper, block_steps: int, protocol_first: bool) -> dict[str, tuple[float, float]]:
    """(wall, CPU) seconds of one protocol block and of the same steps as a bare loop, in the order given."""
    pair = {}
    for which in (("protocol", "bare") if protocol_first else ("bare", "protocol")):
        start, start_cpu = time.perf_counter(), time.process_time()
        if which == "protocol":
            timed_blocks(stepper, block_steps, 1)
        else:
            stepper.bare(block_steps // stepper.unit_steps)
            stepper.sync()
        pair[which] = (time.perf_counter() - start, time.process_time() - start_cpu)
    return pair


def harness_overhead(stepper: Stepper, block_steps: int, rounds: int, device: str) -> dict:
    """In each round, one block as the protocol times it (through the stepper, ended by a sync) and the same steps
    as a bare loop of the same step function (one sync at the end), in alternating order so that both see the same
    machine; overhead = median over rounds of the ratio of their times, minus one.

    Both wall-clock and process CPU time are taken. On a CPU the overhead is judged in CPU time, the work each
    loop does, which other jobs on a shared machine do not disturb the way they disturb wall-clock time; on an
    accelerator (where the host's CPU time says little) in wall-clock time."""
    wall, cpu = [], []
    for r in range(rounds):
        pair = _timed_pair(stepper, block_steps, r % 2 == 0)
        wall.append(pair["protocol"][0] / pair["bare"][0])
        cpu.append(pair["protocol"][1] / pair["bare"][1] if pair["bare"][1] > 0 else float("nan"))
    pct_wall = (statistics.median(wall) - 1) * 100
    pct_cpu = (statistics.median(cpu) - 1) * 100
    basis = "cpu_time" if device == "cpu" else "wall_clock"
    return {"pct": pct_cpu if basis == "cpu_time" else pct_wall, "basis": basis, "pct_wall_clock": pct_wall,
            "pct_cpu_time": pct_cpu, "rounds": rounds, "ratios_wall_clock": wall, "ratios_cpu_time": cpu}
