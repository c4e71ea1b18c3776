"""Machine figures for ``harness.bench``: what the machine is, its matrix-multiply peak as a framework measures
it, and the analytic FLOPs of a training step.

FLOPs per training step of an MLP (matrix multiplies only; activations, losses and optimizer updates are
ignored): the forward pass costs ``2 * B * in * out`` per Linear layer of a batch of ``B``; the backward pass
twice that (the weight gradient ``x^T dy`` and the input gradient ``dy W^T``), so a step is
``6 * B * sum(in * out)``. Autograd skips the input gradient of the first layer (its input needs none), so for
the MNIST networks the matmuls a framework actually runs are a little fewer (``matmul_flops_run``: 11% fewer
for 784-512-512-512-512-10); the 6x figure is the usual convention and is the one both frameworks are held to.
"""

from __future__ import annotations

import math
import os
import platform
import statistics
from pathlib import Path

from harness.labs import Model
from harness.run.machine import cpu_model, loadavg

__all__ = ["cpu_flags", "cpu_model", "flops_per_step", "loadavg", "machine_info", "merge_peaks", "peak_record",
           "quantile"]


def flops_per_step(model: Model, batch: int, manual: bool = False) -> dict[str, int]:
    """``forward`` and ``backward`` matmul FLOPs of one training step, their ``total`` (the 6x convention), and
    ``matmul_flops_run`` (without the first layer's input gradient, unless the backprop is hand-written, which
    computes it)."""
    products = [a * b for a, b in zip(model.sizes[:-1], model.sizes[1:])]
    forward = 2 * batch * sum(products)
    first_input_grad = 0 if manual else 2 * batch * products[0]
    return {"forward": forward, "backward": 2 * forward, "total": 3 * forward,
            "matmul_flops_run": 3 * forward - first_input_grad}


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (linear interpolation between order statistics)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def peak_record(times: list[float], n: int) -> dict:
    """GFLOP/s of ``n`` x ``n`` matmuls timed ``times`` (seconds each): best and median, and ``spread``, how
    tight the fast tail is ((p25 - best) / p25 of the times), the noise of the best figure."""
    flops = 2 * n**3
    best, median, p25 = min(times), statistics.median(times), quantile(times, 0.25)
    return {"n": n, "repeats": len(times), "gflops": flops / best / 1e9, "gflops_median": flops / median / 1e9,
            "spread": (p25 - best) / p25, "seconds": times}


def merge_peaks(*records: dict) -> dict:
    """One peak from several measurements of it (spread over a run): :func:`peak_record` of all their times
    together, with each measurement's summary kept."""
    times = [t for r in records for t in r["seconds"]]
    merged = {k: v for k, v in peak_record(times, records[0]["n"]).items() if k != "seconds"}
    return {**merged, "measurements": [{k: v for k, v in r.items() if k != "seconds"} for r in records]}


def cpu_flags() -> list[str]:
    """The vector-unit flags that bound a CPU's matmul peak (AVX2, FMA, AVX-512 ...)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return sorted(f for f in flags if f.startswith(("avx", "fma", "amx")))
    except OSError:
        pass
    return []


def machine_info() -> dict:
    """The machine the figures come from."""
    return {"cpu_model": cpu_model(), "cpu_count": os.cpu_count(), "cpu_flags": cpu_flags(),
            "platform": platform.platform(), "python": platform.python_version()}
