"""``bench``: step throughput of the labs in each framework, held against the machine's own matmul peak.

The timing protocol, for each lab x framework x device x mode:

1. A stepper (``<framework>_impl.bench``) runs the trainer's own step; every batch is gathered onto the device
   before timing. Thread counts and full float32 matmul precision (no silent TF32) are set explicitly and
   recorded.
2. Compile and warm-up apart: the first dispatch (which compiles) is timed alone (``compile_s``), then
   ``warmup_blocks`` blocks (``warmup_s``); neither counts in the steady state.
3. Steady state: ``blocks`` blocks of ``block_steps`` steps, each ended by an explicit device sync
   (``block_until_ready``, ``torch.cuda.synchronize``) and timed alone: ms/step median, p5 and p95 over blocks.
4. Figures: steps/s, samples/s, analytic FLOPs per step (:mod:`harness.bench.peak`), GFLOP/s, and that as a percentage
   of the float32 matmul peak the same framework measured on the same device in the same run (before its first
   workload and after each; the best of all).
5. The harness's own overhead: rounds of one protocol block against the same steps as a bare loop of the same
   step function (``Stepper.bare``), alternating which goes first; overhead = median over rounds of the ratio of
   their times - 1 (CPU time on a CPU, wall-clock time on an accelerator; both recorded).

The gate (``--compare BASELINE.json``) compares a machine-normalised figure, so a baseline carries between
machines: each timed block's throughput as a percentage of the matmul rate timed right after it, the median over
blocks (``pct_paired``). Pairing each block with a matmul of the same moment keeps a shared machine's bursts of
other work out of the ratio; raw figures are shown beside it. An entry regresses when it falls below the baseline
by more than a threshold that grows with the spread of both runs' per-block figures; suspects are measured again
(``--retries``) before failing.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from harness.backend import FRAMEWORKS, BackendError, Stepper, check_device, load_backend
from harness.bench import peak as peak_mod
from harness.labs import get_lab
from harness.runner import RunOptions, prepare

SCHEMA = "dlzta-bench/1"
EXIT_REGRESSION = 1
# Steps per timed block, per task: about 0.05-1 s a block on a 2-core CPU; JAX's fused XOR steps take ~10 us, so
# its blocks are ten times longer (a block shorter than a scheduler's time slice is at the mercy of neighbours).
BLOCK_STEPS = {"xor": 1000, "gates": 1000, "mnist": 20}
FUSED_BLOCK_FACTOR = {"xor": 10, "gates": 10, "mnist": 1}
# torch.compile / CUDA graphs: steps per captured graph. Fusing ten XOR steps amortises the call (13x eager);
# an MNIST step is long enough alone, and compile time grows with the graph.
TORCH_FUSE_STEPS = {"xor": 10, "gates": 10, "mnist": 1}
PEAK_N = {"cpu": 1024, "gpu": 8192, "tpu": 8192}
INJECTIONS = ("sync",)


@dataclass(frozen=True)
class Suite:
    """A named set of workloads: labs, modes per framework (None: every mode) and how long to time them."""

    labs: tuple[str, ...]
    modes: dict[str, tuple[str, ...]] | None
    blocks: int
    warmup_blocks: int
    overhead_rounds: int
    threads: dict[str, int] = dataclasses.field(default_factory=dict)  # per framework; default: default_threads


SUITES = {
    # Under a minute on a 2-core CPU, without the overhead rounds (the full suite has them). torch.compile is left
    # out (compiling takes longer than the whole suite), and torch runs one thread: OpenMP's barriers stall badly
    # when a neighbour's job takes a core, so one thread keeps the gate steady on a shared machine (the full suite
    # uses every core for MNIST).
    "ci": Suite(("xor_wide_deep", "mnist_dropout"), {"torch": ("eager",), "jax": ("per_step", "fused")},
                blocks=9, warmup_blocks=1, overhead_rounds=0, threads={"torch": 1}),
    "full": Suite(("xor_mlp", "xor_wide_deep", "xor_backprop_manual", "mnist_softmax", "mnist_relu_xavier",
                   "mnist_deep_xavier", "mnist_dropout", "mnist_batchnorm"), None,
                  blocks=15, warmup_blocks=2, overhead_rounds=10),
}


@dataclass(frozen=True)
class Workload:
    """One timed configuration."""

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


def load_bench(framework: str) -> ModuleType:
    """Import ``<framework>_impl.bench``; a BackendError naming the missing package otherwise."""
    load_backend(framework)
    return importlib.import_module(f"{framework}_impl.bench")


def default_threads(framework: str, task: str) -> int | None:
    """torch's intra-op threads per workload: one for the 4-example XOR nets (more threads only add
    synchronisation), every core for MNIST. JAX's cannot be set after start-up (recorded, not set)."""
    if framework != "torch":
        return None
    return 1 if task in ("xor", "gates") else os.cpu_count()


def ms_stats(block_s: list[float], block_steps: int) -> dict[str, float]:
    """ms/step over blocks: median, p5, p25, p95 (linear interpolation), min, max."""
    ms = [t * 1e3 / block_steps for t in block_s]
    q = peak_mod.quantile
    return {"median": q(ms, 0.5), "p5": q(ms, 0.05), "p25": q(ms, 0.25), "p95": q(ms, 0.95), "min": min(ms),
            "max": max(ms)}


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
    """Steps 2 and 3 of the protocol: compile, warm-up, then ``blocks`` timed blocks each ended by a sync (and,
    given ``matmul``, each followed by one timed matmul: the peak at that moment)."""
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


def harness_overhead(stepper: Stepper, block_steps: int, rounds: int, device: str) -> dict:
    """Step 5 of the protocol: in each round, one block as the protocol times it (through the stepper, ended by a
    sync) and the same steps as a bare loop of the same step function (one sync at the end), in alternating order
    so that both see the same machine; overhead = median over rounds of the ratio of their times, minus one.

    Both wall-clock and process CPU time are taken. On a CPU the overhead is judged in CPU time, the work each
    loop does, which other jobs on a shared machine do not disturb the way they disturb wall-clock time; on an
    accelerator (where the host's CPU time says little) in wall-clock time."""
    units = block_steps // stepper.unit_steps
    wall, cpu = [], []
    for r in range(rounds):
        pair = {}
        for which in (("protocol", "bare") if r % 2 == 0 else ("bare", "protocol")):
            start, start_cpu = time.perf_counter(), time.process_time()
            if which == "protocol":
                timed_blocks(stepper, block_steps, 1)
            else:
                stepper.bare(units)
                stepper.sync()
            pair[which] = (time.perf_counter() - start, time.process_time() - start_cpu)
        wall.append(pair["protocol"][0] / pair["bare"][0])
        cpu.append(pair["protocol"][1] / pair["bare"][1] if pair["bare"][1] > 0 else float("nan"))
    pct_wall = (statistics.median(wall) - 1) * 100
    pct_cpu = (statistics.median(cpu) - 1) * 100
    basis = "cpu_time" if device == "cpu" else "wall_clock"
    return {"pct": pct_cpu if basis == "cpu_time" else pct_wall, "basis": basis, "pct_wall_clock": pct_wall,
            "pct_cpu_time": pct_cpu, "rounds": rounds, "ratios_wall_clock": wall, "ratios_cpu_time": cpu}


def _options(lab_name: str, w: Workload, data: str, batch_size: int | None) -> RunOptions:
    lab = get_lab(lab_name)
    pool = w.block_steps if lab.task == "mnist" else 1
    overrides = {"batch_size": batch_size} if batch_size else {}
    return RunOptions(device=w.device, steps=pool, data=data, overrides=overrides)


def measure(w: Workload, data: str = "mnist-5k", batch_size: int | None = None, inject: str | None = None,
            peak_n: int | None = None) -> dict:
    """Time one workload (steps 1-3 and 5 of the protocol); the entry as it goes into the results."""
    fw = load_bench(w.framework)
    prepared = prepare(get_lab(w.lab), _options(w.lab, w, data, batch_size))
    spec = prepared.spec
    batch = len(spec.batches[0]) if spec.batches is not None else len(spec.train_x)
    entry: dict[str, Any] = {
        "key": w.key, "lab": w.lab, "framework": w.framework, "device": w.device, "mode": w.mode,
        "dtype": spec.dtype, "batch_size": batch, "block_steps": w.block_steps, "blocks": w.blocks,
        "warmup_blocks": w.warmup_blocks, "data": prepared.data_record.get("name", prepared.data_record["source"]),
        "injected": inject, "loadavg": peak_mod.loadavg(),
    }
    settings = fw.configure(w.threads)
    entry["threads"] = settings["threads"]
    start = time.perf_counter()
    try:
        stepper = fw.make_stepper(spec, w.mode, w.fuse_steps)
        if inject == "sync":
            stepper = inject_sync(stepper)
        entry["setup_s"] = time.perf_counter() - start
        n = peak_n or PEAK_N[w.device]
        timing = time_stepper(stepper, w.block_steps, w.blocks, w.warmup_blocks, fw.matmul_timer(w.device, n))
    except BackendError as exc:
        return {**entry, "status": "unavailable", "reason": str(exc)}
    entry.update(unit_steps=stepper.unit_steps, info=stepper.info, **timing)
    entry["ms_per_step"] = ms_stats(timing["block_s"], w.block_steps)
    if w.overhead_rounds:
        entry["overhead"] = harness_overhead(stepper, w.block_steps, w.overhead_rounds, w.device)
    entry["final_loss"] = stepper.loss()
    entry["status"] = "ok" if math.isfinite(entry["final_loss"]) else "diverged"
    flops = peak_mod.flops_per_step(spec.model, batch, spec.lab.manual)
    entry["flops_per_step"] = flops["total"]
    entry["flops"] = flops
    ms = entry["ms_per_step"]
    entry["steps_per_s"] = 1e3 / ms["median"]
    entry["steps_per_s_best"] = 1e3 / ms["p5"]
    entry["samples_per_s"] = batch * entry["steps_per_s"]
    entry["gflops"] = flops["total"] / ms["median"] / 1e6
    entry["gflops_best"] = flops["total"] / ms["p5"] / 1e6
    # Each block against the matmul timed right after it: the same moment of a shared machine.
    paired = [100 * (flops["total"] * w.block_steps / t) / (2 * n**3 / m)
              for t, m in zip(timing["block_s"], timing["paired_matmul_s"])]
    q = peak_mod.quantile
    entry["pct_paired"] = {"median": q(paired, 0.5), "p25": q(paired, 0.25), "p75": q(paired, 0.75), "n": n}
    return entry


def measure_peak(framework: str, device: str, n: int, repeats: int) -> dict:
    """The framework's float32 matmul peak on ``device`` (every core), GFLOP/s."""
    fw = load_bench(framework)
    settings = fw.configure(os.cpu_count() if framework == "torch" and device == "cpu" else None)
    return {**peak_mod.peak_record(fw.matmul_times(device, n, repeats), n), "threads": settings["threads"],
            "loadavg": peak_mod.loadavg()}


def add_peak_figures(entry: dict, peak: dict) -> None:
    """GFLOP/s as a percentage of ``peak`` (the best matmul rate): of the median block and of the best blocks."""
    if entry.get("status") != "ok":
        return
    entry["peak_gflops"] = peak["gflops"]
    entry["pct_peak"] = 100 * entry["gflops"] / peak["gflops"]
    entry["pct_peak_best"] = 100 * entry["gflops_best"] / peak["gflops"]
    paired = entry["pct_paired"]
    entry["noise"] = {"paired": (paired["median"] - paired["p25"]) / paired["median"]}


def plan(labs: tuple[str, ...], frameworks: tuple[str, ...], devices: tuple[str, ...],
         modes: dict[str, tuple[str, ...]] | None, suite: Suite, block_steps: int | None = None,
         blocks: int | None = None, warmup_blocks: int | None = None, fuse_steps: int | None = None,
         threads: int | None = None, overhead_rounds: int | None = None) -> list[Workload]:
    """Every workload of a run, grouped by framework and device (each group is timed between its peaks)."""
    work = []
    for fw in frameworks:
        bench = load_bench(fw)
        for device in devices:
            for lab_name in labs:
                lab = get_lab(lab_name)
                for mode in bench.modes(device):
                    if modes is not None and mode not in modes.get(fw, ()):
                        continue
                    steps = block_steps or BLOCK_STEPS[lab.task] * (
                        FUSED_BLOCK_FACTOR[lab.task] if (fw, mode) == ("jax", "fused") else 1)
                    fuse = fuse_steps or (steps if fw == "jax" else TORCH_FUSE_STEPS[lab.task])
                    work.append(Workload(
                        lab_name, fw, device, mode, steps, blocks or suite.blocks,
                        suite.warmup_blocks if warmup_blocks is None else warmup_blocks, math.gcd(fuse, steps),
                        threads or suite.threads.get(fw) or default_threads(fw, lab.task),
                        suite.overhead_rounds if overhead_rounds is None else overhead_rounds))
    return work


def run(work: list[Workload], data: str = "mnist-5k", batch_size: int | None = None, inject: str | None = None,
        peak_repeats: int = 20, peak_n: int | None = None, echo: bool = True) -> dict:
    """Time every workload; the whole results record (machine, frameworks with settings and peaks, entries)."""
    record: dict[str, Any] = {
        "schema": SCHEMA, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": peak_mod.machine_info(), "loadavg_start": peak_mod.loadavg(), "frameworks": {}, "results": [],
    }
    groups: dict[tuple[str, str], list[Workload]] = {}
    for w in work:
        groups.setdefault((w.framework, w.device), []).append(w)
    for (fw, device), items in groups.items():
        check_device(fw, device)
        bench = load_bench(fw)
        info = record["frameworks"].setdefault(fw, {"versions": load_backend(fw).versions(), "devices": {}})
        n = peak_n or PEAK_N[device]
        samples = [measure_peak(fw, device, n, peak_repeats)]
        entries = []
        for w in items:  # the peak is sampled again after every workload: the best of all is the machine's
            entries.append(measure(w, data, batch_size, inject, n))
            samples.append(measure_peak(fw, device, n, max(3, peak_repeats // 4)))
            if echo:
                print(format_entry(entries[-1]), flush=True)
        merged = peak_mod.merge_peaks(*samples)
        info["devices"][device] = {"peak": merged, "settings": bench.configure(None), **bench.device_info(device)}
        for entry in entries:
            add_peak_figures(entry, merged)
        record["results"].extend(entries)
        if echo:
            print(f"  {fw} {device} matmul peak: {merged['gflops']:.1f} GFLOP/s (n={n}, best of "
                  f"{merged['repeats']}; median {merged['gflops_median']:.1f})", flush=True)
    record["loadavg_end"] = peak_mod.loadavg()
    record["targets"] = check_targets(record["results"])
    return record


# --- targets (issue 5): reported with the figures, never pass/fail -------------------------------------------

TARGETS = (
    # (description, labs (task or names), framework, figure, bound)
    ("JAX fused execution on the XOR labs: at least 100k steps/s", "xor", "jax", ("fused",), "steps_per_s", 1e5),
    ("PyTorch's best mode on the XOR labs: at least 10k steps/s", "xor", "torch", None, "steps_per_s", 1e4),
    ("JAX at batch 100: at least 70% of the measured sgemm peak", ("mnist_dropout", "mnist_deep_xavier"), "jax",
     None, "pct_peak", 70.0),
    ("PyTorch at batch 100: at least 50% of the measured sgemm peak", ("mnist_dropout", "mnist_deep_xavier"),
     "torch", None, "pct_peak", 50.0),
)
OVERHEAD_TARGET_PCT = 2.0


def check_targets(results: list[dict]) -> list[dict]:
    """Each target against the figures of this run (best mode per lab where the target says so)."""
    out = []
    ok = [e for e in results if e.get("status") == "ok"]
    for text, labs, fw, modes, figure, bound in TARGETS:
        chosen: dict[tuple[str, str], dict] = {}
        for e in ok:
            in_labs = get_lab(e["lab"]).task == labs if isinstance(labs, str) else e["lab"] in labs
            if not in_labs or e["framework"] != fw or (modes and e["mode"] not in modes):
                continue
            if e.get("batch_size") != 100 and figure == "pct_peak":
                continue
            k = (e["lab"], e["device"])
            if k not in chosen or e[figure] > chosen[k][figure]:
                chosen[k] = e
        for (lab, device), e in sorted(chosen.items()):
            out.append({"target": text, "lab": lab, "device": device, "mode": e["mode"], "figure": figure,
                        "value": e[figure], "bound": bound, "met": e[figure] >= bound})
    for e in ok:
        if "overhead" in e:
            out.append({"target": f"harness overhead at most {OVERHEAD_TARGET_PCT:g}% against a bare loop",
                        "lab": e["lab"], "device": e["device"], "mode": f"{e['framework']} {e['mode']}",
                        "figure": "overhead_pct", "value": e["overhead"]["pct"], "bound": OVERHEAD_TARGET_PCT,
                        "met": e["overhead"]["pct"] <= OVERHEAD_TARGET_PCT})
    return out


# --- the regression gate ---------------------------------------------------------------------------------------

MIN_THRESHOLD = 0.25  # never flag less than a 25% drop: this 2-core machine is shared and noisy
MAX_THRESHOLD = 0.4  # always flag a drop of 40% or more, however noisy the runs were
NOISE_FACTOR = 2.0  # threshold = NOISE_FACTOR x the combined relative noise of both runs, within those bounds


def _noise(entry: dict) -> float:
    """Relative noise of an entry's gated figure: the spread of its per-block figures ((median - p25) / median)."""
    return (entry.get("noise") or {}).get("paired", 0.0)


def gate(current: dict, baseline: dict, min_threshold: float = MIN_THRESHOLD,
         noise_factor: float = NOISE_FACTOR) -> list[dict]:
    """One row per entry of either run: the machine-normalised figure (``pct_paired`` median) of both, their ratio,
    the noise-aware threshold and a status: ok, regression, improved, new, missing or unavailable."""
    base = {e["key"]: e for e in baseline.get("results", [])}
    cur = {e["key"]: e for e in current.get("results", [])}
    rows = []
    for key in list(base) + [k for k in cur if k not in base]:
        b, c = base.get(key), cur.get(key)
        row: dict[str, Any] = {"key": key}
        if c is None:
            rows.append({**row, "status": "missing"})
            continue
        if b is None or b.get("status") != "ok":
            rows.append({**row, "status": "new"})
            continue
        if c.get("status") != "ok":
            rows.append({**row, "status": "unavailable", "reason": c.get("reason", c.get("status"))})
            continue
        threshold = min(max(min_threshold, noise_factor * math.hypot(_noise(b), _noise(c))),
                        max(min_threshold, MAX_THRESHOLD))
        ratio = c["pct_paired"]["median"] / b["pct_paired"]["median"]
        status = "regression" if ratio < 1 - threshold else "improved" if ratio > 1 + threshold else "ok"
        rows.append({**row, "status": status, "ratio": ratio, "threshold": threshold,
                     "baseline_pct_peak": b["pct_paired"]["median"], "pct_peak": c["pct_paired"]["median"],
                     "baseline_ms_per_step": b["ms_per_step"]["median"], "ms_per_step": c["ms_per_step"]["median"],
                     "baseline_steps_per_s": b["steps_per_s"], "steps_per_s": c["steps_per_s"],
                     "baseline_peak_gflops": b["peak_gflops"], "peak_gflops": c["peak_gflops"]})
    return rows


def regressions(rows: list[dict]) -> list[str]:
    """Keys of the rows that regressed."""
    return [r["key"] for r in rows if r["status"] == "regression"]


def format_gate(rows: list[dict]) -> str:
    """The gate as a table: normalised figure (the verdict) and raw figures beside it."""
    lines = ["gate figure: each block's GFLOP/s as % of a matmul timed right after it (median over blocks)",
             f"{'workload':<42} {'% base':>10} {'% now':>10} {'ratio':>6} {'limit':>6}  "
             f"{'ms/step base':>12} {'ms/step now':>12} {'peak GF base/now':>17}  status"]
    for r in rows:
        if "ratio" not in r:
            lines.append(f"{r['key']:<42} {'':>10} {'':>10} {'':>6} {'':>6}  {'':>12} {'':>12} {'':>17}  "
                         f"{r['status']}{': ' + r['reason'] if r.get('reason') else ''}")
            continue
        lines.append(f"{r['key']:<42} {r['baseline_pct_peak']:>10.4g} {r['pct_peak']:>10.4g} {r['ratio']:>6.2f} "
                     f"{1 - r['threshold']:>6.2f}  {r['baseline_ms_per_step']:>12.4g} {r['ms_per_step']:>12.4g} "
                     f"{r['baseline_peak_gflops']:>8.1f}/{r['peak_gflops']:<8.1f}  {r['status']}")
    return "\n".join(lines)


def load_results(path: str) -> dict:
    """A results file written by ``bench --out``; a UsageError naming the problem otherwise."""
    from harness.errors import UsageError

    try:
        record = json.loads(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"cannot read baseline {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise UsageError(f"baseline {path} is not JSON: {exc.msg} at line {exc.lineno}") from None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise UsageError(f"baseline {path} is not a bench results file (schema {SCHEMA})")
    return record


# --- output ----------------------------------------------------------------------------------------------------

def format_entry(e: dict) -> str:
    """One line per workload."""
    head = f"{e['lab']:<20} {e['framework']:<5} {e['device']:<3} {e['mode']:<10}"
    if e.get("status") not in ("ok", "diverged"):
        return f"{head} {e.get('status')}: {e.get('reason', '')}"
    ms = e["ms_per_step"]
    over = f" overhead {e['overhead']['pct']:+.1f}% ({e['overhead']['basis'].replace('_', ' ')})" \
        if "overhead" in e else ""
    pct = f" {e['pct_peak']:.1f}% of peak" if "pct_peak" in e else ""
    return (f"{head} thr {e['threads']} compile {e['compile_s']:.2f}s  {ms['median']:.4g} ms/step "
            f"[p5 {ms['p5']:.4g}, p95 {ms['p95']:.4g}]  {e['steps_per_s']:,.0f} steps/s  "
            f"{e['samples_per_s']:,.0f} samples/s  {e['gflops']:.3g} GFLOP/s{pct}{over}")


def format_targets(targets: list[dict]) -> str:
    """The issue's targets with this run's figures."""
    return "\n".join(f"  [{'met' if t['met'] else 'MISSED'}] {t['target']}: {t['lab']} ({t['device']}, "
                     f"{t['mode']}) {_target_value(t)}" for t in targets)


def _target_value(t: dict) -> str:
    if t["figure"] == "steps_per_s":
        return f"{t['value']:,.0f} steps/s"
    return f"{t['value']:.1f}% of peak" if t["figure"] == "pct_peak" else f"{t['value']:+.1f}%"


def format_markdown(record: dict) -> str:
    """The figures of a run as markdown tables (docs/benchmarks.md): the machine, the peaks, one row per workload,
    and the targets."""
    m = record["machine"]
    lines = [f"Machine: {m['cpu_model']}, {m['cpu_count']} cores ({', '.join(m.get('cpu_flags', []))}); "
             f"{m['platform']}; Python {m['python']}; load average {record.get('loadavg_start')} at the start, "
             f"{record.get('loadavg_end')} at the end; {record['created']}.", ""]
    for fw, info in record["frameworks"].items():
        versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        for device, d in info["devices"].items():
            gpu = f" on {d['gpu']}" if d.get("gpu") else ""
            lines.append(f"- {fw} ({versions}){gpu}: float32 matmul peak {d['peak']['gflops']:.1f} GFLOP/s on "
                         f"{device} (n={d['peak']['n']}, best of {d['peak']['repeats']}, median "
                         f"{d['peak']['gflops_median']:.1f})")
    lines += ["", "| lab | framework | device | mode | threads | batch | compile s | ms/step median [p5, p95] | "
              "steps/s | samples/s | GFLOP/s | % of peak | overhead |", "|" + "---|" * 13]
    for e in record["results"]:
        head = f"| {e['lab']} | {e['framework']} | {e['device']} | {e['mode']} |"
        if e.get("status") != "ok":
            lines.append(f"{head} | | | {e.get('status')}: {e.get('reason', '')} | | | | | |")
            continue
        ms = e["ms_per_step"]
        over = f"{e['overhead']['pct']:+.1f}%" if "overhead" in e else ""
        lines.append(f"{head} {e['threads']} | {e['batch_size']} | {e['compile_s']:.2f} | {ms['median']:.4g} "
                     f"[{ms['p5']:.4g}, {ms['p95']:.4g}] | {e['steps_per_s']:,.0f} | {e['samples_per_s']:,.0f} | "
                     f"{e['gflops']:.3g} | {e.get('pct_peak', float('nan')):.3g} | {over} |")
    if record.get("targets"):
        lines += ["", "| target | lab | mode | this run | |", "|---|---|---|---|---|"]
        for t in record["targets"]:
            lines.append(f"| {t['target']} | {t['lab']} | {t['mode']} | {_target_value(t)} | "
                         f"{'met' if t['met'] else 'missed'} |")
    return "\n".join(lines) + "\n"


def github_action(record: dict) -> tuple[list[dict], list[dict]]:
    """The figures in github-action-benchmark's ``customSmallerIsBetter`` and ``customBiggerIsBetter`` formats."""
    smaller, bigger = [], []
    for e in record["results"]:
        if e.get("status") != "ok":
            continue
        ms = e["ms_per_step"]
        extra = f"threads {e['threads']}, batch {e['batch_size']}, {e['blocks']} blocks of {e['block_steps']} steps"
        smaller.append({"name": f"{e['key']} ms/step", "unit": "ms/step", "value": ms["median"],
                        "range": f"p5 {ms['p5']:.4g} .. p95 {ms['p95']:.4g}", "extra": extra})
        bigger.append({"name": f"{e['key']} steps/s", "unit": "steps/s", "value": e["steps_per_s"],
                       "extra": extra})
        if "pct_peak" in e:
            bigger.append({"name": f"{e['key']} % of matmul peak", "unit": "% of peak", "value": e["pct_peak"],
                           "extra": f"peak {e['peak_gflops']:.1f} GFLOP/s; {extra}"})
    return smaller, bigger


def write_outputs(record: dict, out: str | None, github: str | None, markdown: str | None = None) -> None:
    """The results JSON and, with a prefix, the two github-action-benchmark files; the markdown tables."""
    from harness.results import atomic_write, write_json

    if out:
        write_json(out, record)
    if markdown:
        atomic_write(markdown, format_markdown(record))
    if github:
        smaller, bigger = github_action(record)
        write_json(f"{github}-smaller-is-better.json", smaller)
        write_json(f"{github}-bigger-is-better.json", bigger)


# --- the command -----------------------------------------------------------------------------------------------

def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmarks; print, write and gate them."""
    from harness.errors import UsageError

    suite = SUITES[args.suite]
    for name in args.labs:
        get_lab(name)
    labs = tuple(args.labs) or suite.labs
    modes = suite.modes if args.modes is None else {fw: args.modes for fw in FRAMEWORKS}
    if not 0 < args.threshold < 1:
        raise UsageError(f"--threshold must be between 0 and 1, got {args.threshold}")
    baseline = load_results(args.compare) if args.compare else None
    if "gpu" in args.devices:  # torch and JAX share the card: JAX must not take 75% of it at start-up
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    work = plan(labs, args.frameworks, args.devices, modes, suite, args.block_steps, args.blocks,
                args.warmup_blocks, args.fuse_steps, args.threads, args.overhead_rounds)
    if not work:
        raise UsageError("no workload: none of the frameworks has the modes asked for")
    record = run(work, args.data, args.batch_size, args.inject, args.peak_repeats)
    record.update(suite=args.suite, argv=sys.argv[1:])
    print("targets:\n" + format_targets(record["targets"]))
    status = 0
    if baseline is not None:
        rows = gate(record, baseline, args.threshold)
        for attempt in range(args.retries):
            suspects = set(regressions(rows))
            if not suspects:
                break
            print(f"gate: {len(suspects)} suspected regression(s); measuring again ({attempt + 1}/{args.retries})")
            rerun(record, [w for w in work if w.key in suspects], args)
            rows = gate(record, baseline, args.threshold)
        print(format_gate(rows))
        for name, rec in (("this run", record), ("the baseline", baseline)):
            load, cores = (rec.get("loadavg_start") or [0])[0], rec.get("machine", {}).get("cpu_count") or 1
            if load > cores:
                print(f"gate: note: {name} ran on a busy machine (load average {load} on {cores} cores); its "
                      "figures are noisier than usual")
        failed = regressions(rows)
        record["gate"] = {"baseline": args.compare, "min_threshold": args.threshold, "rows": rows,
                          "regressions": failed}
        print(f"gate: {'FAILED, ' + ', '.join(failed) if failed else 'passed'} (against {args.compare})")
        status = EXIT_REGRESSION if failed else 0
    write_outputs(record, args.out, args.github_action, args.markdown)
    return status


def rerun(record: dict, work: list[Workload], args: argparse.Namespace) -> None:
    """Measure ``work`` again (peak included) and keep, per entry, the better of the two measurements."""
    again = run(work, args.data, args.batch_size, args.inject, args.peak_repeats, echo=True)
    fresh = {e["key"]: e for e in again["results"]}
    for i, e in enumerate(record["results"]):
        new = fresh.get(e["key"])
        if new is not None and new.get("status") == "ok" and (
                e.get("status") != "ok" or new["pct_paired"]["median"] > e["pct_paired"]["median"]):
            record["results"][i] = {**new, "attempts": e.get("attempts", 1) + 1}
        elif new is not None:
            record["results"][i] = {**e, "attempts": e.get("attempts", 1) + 1}
