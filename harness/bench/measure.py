"""Measuring: the matmul peak of a backend, one workload's entry (protocol + figures), and a whole run's record
(machine, backends with settings and peaks, entries). Backends come from the registry only."""

from __future__ import annotations

import datetime
import math
import os
import time
from collections.abc import Callable
from typing import Any

import harness.bench.peak as peak_mod
from harness import backend as backends
from harness.backend import BackendError
from harness.bench.protocol import harness_overhead, inject_sync, ms_stats, time_stepper
from harness.bench.workloads import Workload, sets_threads
from harness.commands.progress import Progress
from harness.labs import get_lab
from harness.run.machine import threads_set
from harness.run.runner import RunOptions, prepare

SCHEMA = "dlzta-bench/1"
PEAK_N = {"cpu": 1024, "gpu": 8192, "tpu": 8192}


def matmul_times(framework: str, device: str, n: int, repeats: int, dtype: str = "float32") -> list[float]:
    """Seconds per ``n`` x ``n`` matmul of ``dtype`` in ``framework`` on ``device``, ``repeats`` of them."""
    timed = backends.load(framework).matmul_timer(device, n, dtype=dtype)
    return [timed() for _ in range(repeats)]


def measure_peak(framework: str, device: str, n: int, repeats: int, threads: int | None = None,
                 dtype: str = "float32") -> dict:
    """The framework's matmul peak in ``dtype`` (float32, bfloat16, float16) on ``device``, GFLOP/s: on ``threads``
    intra-op threads (None: every core, for a backend that sets them per task, on a CPU); the thread count in
    effect before is restored."""
    if threads is None and device == "cpu" and sets_threads(framework):
        threads = os.cpu_count()
    with threads_set(framework, threads):
        settings = backends.load(framework).configure_threads(None)
        times = matmul_times(framework, device, n, repeats, dtype)
    return {**peak_mod.peak_record(times, n), "dtype": dtype, "threads": settings["threads"],
            "loadavg": peak_mod.loadavg()}


def precision_peaks(framework: str, device: str, n: int, repeats: int, threads: int | None = None,
                    dtypes: tuple[str, ...] = ("float32", "bfloat16", "float16")) -> dict[str, dict]:
    """The framework's matmul peak in each of ``dtypes``, measured one after the other (the same moment of a
    shared machine): each precision's own peak; a dtype the backend cannot time is left out with its reason."""
    out: dict[str, dict] = {}
    for dtype in dtypes:
        try:
            out[dtype] = measure_peak(framework, device, n, repeats, threads, dtype)
        except BackendError as exc:
            out[dtype] = {"status": "unavailable", "reason": str(exc)}
    return out


def _options(w: Workload, data: str, batch_size: int | None) -> RunOptions:
    pool = w.block_steps if get_lab(w.lab).task == "mnist" else 1
    overrides = {"batch_size": batch_size} if batch_size else {}
    reduced = {} if w.precision == "float32" else {"precision": w.precision}
    return RunOptions(device=w.device, steps=pool, data=data, overrides=overrides, **reduced)


def _figures(timing: dict, block_steps: int, batch: int, flops: int, n: int) -> dict[str, Any]:
    """Throughput figures of one entry from its block times, and each block against the matmul timed right after
    it (the same moment of a shared machine): ``pct_paired``, the gate's figure."""
    ms = ms_stats(timing["block_s"], block_steps)
    paired = [100 * (flops * block_steps / t) / (2 * n**3 / m)
              for t, m in zip(timing["block_s"], timing["paired_matmul_s"])]
    q = peak_mod.quantile
    return {"ms_per_step": ms, "steps_per_s": 1e3 / ms["median"], "steps_per_s_best": 1e3 / ms["p5"],
            "samples_per_s": batch * 1e3 / ms["median"], "gflops": flops / ms["median"] / 1e6,
            "gflops_best": flops / ms["p5"] / 1e6,
            "pct_paired": {"median": q(paired, 0.5), "p25": q(paired, 0.25), "p75": q(paired, 0.75), "n": n}}


def measure(w: Workload, data: str = "mnist-5k", batch_size: int | None = None, inject: str | None = None,
            peak_n: int | None = None) -> dict:
    """Time one workload (protocol, overhead, figures); the entry as it goes into the results."""
    b = backends.load(w.framework)
    prepared = prepare(get_lab(w.lab), _options(w, data, batch_size))
    spec = prepared.spec
    batch = len(spec.batches[0]) if spec.batches is not None else len(spec.train_x)
    entry: dict[str, Any] = {
        "key": w.key, "lab": w.lab, "framework": w.framework, "device": w.device, "mode": w.mode,
        "dtype": spec.dtype, "precision": w.precision, "batch_size": batch, "block_steps": w.block_steps,
        "blocks": w.blocks,
        "warmup_blocks": w.warmup_blocks, "data": prepared.data_record.get("name", prepared.data_record["source"]),
        "injected": inject, "loadavg": peak_mod.loadavg(), "threads": b.configure_threads(w.threads)["threads"],
    }
    n = peak_n or PEAK_N[w.device]
    start = time.perf_counter()
    try:
        stepper = b.make_stepper(spec, w.mode, w.fuse_steps)
        if inject == "sync":
            stepper = inject_sync(stepper)
        entry["setup_s"] = time.perf_counter() - start
        timing = time_stepper(stepper, w.block_steps, w.blocks, w.warmup_blocks,
                              b.matmul_timer(w.device, n, dtype=w.peak_dtype))
    except BackendError as exc:
        return {**entry, "status": "unavailable", "reason": str(exc)}
    entry.update(unit_steps=stepper.unit_steps, info=stepper.info, **timing)
    if w.overhead_rounds:
        entry["overhead"] = harness_overhead(stepper, w.block_steps, w.overhead_rounds, w.device)
    entry["final_loss"] = stepper.loss()
    entry["status"] = "ok" if math.isfinite(entry["final_loss"]) else "diverged"
    flops = peak_mod.flops_per_step(spec.model, batch, spec.lab.manual)
    entry.update(flops_per_step=flops["total"], flops=flops)
    entry.update(_figures(timing, w.block_steps, batch, flops["total"], n))
    return entry


def add_peak_figures(entry: dict, peak: dict) -> None:
    """GFLOP/s as a percentage of ``peak`` (the best matmul rate of the entry's precision, on its threads): of the
    median block and of the best blocks."""
    if entry.get("status") != "ok" or "gflops" not in peak:
        return
    entry.update(peak_gflops=peak["gflops"], peak_dtype=peak.get("dtype", "float32"), peak_threads=peak.get("threads"))
    entry["pct_peak"] = 100 * entry["gflops"] / peak["gflops"]
    entry["pct_peak_best"] = 100 * entry["gflops_best"] / peak["gflops"]
    paired = entry["pct_paired"]
    entry["noise"] = {"paired": (paired["median"] - paired["p25"]) / paired["median"]}


def format_peak(framework: str, device: str, peak: dict) -> str:
    """One line: a backend's merged matmul peak in one dtype, on its threads."""
    if "gflops" not in peak:
        return f"  {framework} {device} {peak.get('dtype')} matmul peak: unavailable ({peak.get('reason')})"
    return (f"  {framework} {device} {peak.get('dtype', 'float32')} matmul peak on {peak.get('threads')} thread(s): "
            f"{peak['gflops']:.1f} GFLOP/s (n={peak['n']}, best of {peak['repeats']}; median "
            f"{peak['gflops_median']:.1f})")


def _peak_sample(fw: str, device: str, n: int, repeats: int, threads: int | None, dtype: str) -> dict:
    """One peak measurement, or an unavailable record with the reason (a dtype the backend cannot time)."""
    try:
        return measure_peak(fw, device, n, repeats, threads, dtype)
    except BackendError as exc:
        return {"status": "unavailable", "reason": str(exc), "dtype": dtype, "threads": threads}


def _time_group(items: list[Workload], n: int, peak_repeats: int, measure_one: Callable[[Workload], dict],
                echo: Callable[[dict], None] | None) -> tuple[list[dict], dict[str, dict]]:
    """The workloads of one backend, device and thread count, each precision's peak sampled before the first and
    after each workload of that precision (the best of all is the machine's), on those threads; the entries with
    their peak figures, and the merged peak of each dtype."""
    fw, device, threads = items[0].framework, items[0].device, items[0].threads
    dtypes = tuple(dict.fromkeys(w.peak_dtype for w in items))
    samples = {d: [_peak_sample(fw, device, n, peak_repeats, threads, d)] for d in dtypes}
    entries = []
    for w in items:
        entries.append(measure_one(w))
        if "gflops" in samples[w.peak_dtype][0]:
            samples[w.peak_dtype].append(measure_peak(fw, device, n, max(3, peak_repeats // 4), threads,
                                                      w.peak_dtype))
        if echo:
            echo(entries[-1])
    merged = {d: ({**peak_mod.merge_peaks(*s), "dtype": d, "threads": s[0]["threads"]} if "gflops" in s[0]
                  else s[0]) for d, s in samples.items()}
    for w, entry in zip(items, entries):
        add_peak_figures(entry, merged[w.peak_dtype])
    return entries, merged


def add_speedups(results: list[dict]) -> None:
    """Each precision's speed-up over float32 of the same lab, backend, device and mode (steps/s against
    steps/s), where both ran."""
    base = {(e["lab"], e["framework"], e["device"], e["mode"]): e for e in results
            if e.get("precision", "float32") == "float32" and e.get("status") == "ok"}
    for e in results:
        b = base.get((e["lab"], e["framework"], e["device"], e["mode"]))
        if e.get("status") == "ok" and b is not None:
            e["speedup_vs_float32"] = e["steps_per_s"] / b["steps_per_s"]


def thread_summary(results: list[dict]) -> dict:
    """The intra-op threads each framework timed on (per CPU workload, as recorded), and whether every framework
    timed each lab on the same count (``like_for_like``; the labs where they differ in ``differ``)."""
    per_fw: dict[str, set] = {}
    per_lab: dict[tuple[str, str], dict[str, int | None]] = {}
    for e in results:
        if e.get("device") != "cpu" or e.get("status") == "unavailable":
            continue
        per_fw.setdefault(e["framework"], set()).add(e["threads"])
        per_lab.setdefault((e["lab"], e["device"]), {})[e["framework"]] = e["threads"]
    differ = sorted(lab for (lab, _), fws in per_lab.items() if len(set(fws.values())) > 1)
    return {"per_framework": {fw: sorted(t for t in ts if t is not None) for fw, ts in per_fw.items()},
            "like_for_like": not differ, "differ": differ}


def run(work: list[Workload], data: str = "mnist-5k", batch_size: int | None = None, inject: str | None = None,
        peak_repeats: int = 20, peak_n: int | None = None, echo: Callable[[str], None] | None = print,
        progress: Progress | None = None) -> dict:
    """Time every workload; the whole results record (machine, frameworks with settings and peaks per dtype and
    thread count, entries, each precision's speed-up, the threads each framework ran on).
    ``echo(line)`` is told each entry and peak as it is measured (None: silent); ``progress`` each workload as it
    starts (its total: the workloads)."""
    from harness.bench.formats import format_entry

    progress = progress or Progress(0, quiet=True)
    progress.total = len(work)

    def one(w: Workload, n: int) -> dict:
        progress.begin(f"{w.lab} {w.framework} {w.device} {w.mode} {w.precision}")
        entry = measure(w, data, batch_size, inject, n)
        progress.advance()
        return entry

    record: dict[str, Any] = {
        "schema": SCHEMA, "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": peak_mod.machine_info(), "loadavg_start": peak_mod.loadavg(), "frameworks": {}, "results": [],
    }
    groups: dict[tuple[str, str, int | None], list[Workload]] = {}
    for w in work:
        groups.setdefault((w.framework, w.device, w.threads), []).append(w)
    for (fw, device, threads), items in groups.items():
        b = backends.load(fw)
        if device == "cpu":
            b.configure_threads(threads)  # first: a pool sized at start-up is pinned as its backend starts
        backends.check_device(fw, device)
        info = record["frameworks"].setdefault(fw, {"versions": b.versions(), "devices": {}})
        n = peak_n or PEAK_N[device]
        entries, merged = _time_group(items, n, peak_repeats, lambda w, n=n: one(w, n),
                                      (lambda e: echo(format_entry(e))) if echo else None)
        dev = info["devices"].setdefault(device, {"peak": merged.get("float32", next(iter(merged.values()))),
                                                  "peaks": [], **b.device_info(device)})
        dev["peaks"].extend(merged.values())
        dev["settings"] = b.configure_threads(None)
        record["results"].extend(entries)
        if echo:
            for peak in merged.values():
                echo(format_peak(fw, device, peak))
    add_speedups(record["results"])
    record["threads"] = thread_summary(record["results"])
    record["loadavg_end"] = peak_mod.loadavg()
    return record


def better_paired(new: dict, old: dict) -> bool:
    """Whether entry ``new`` is the better measurement by the machine-normalised figure."""
    return new["pct_paired"]["median"] > old["pct_paired"]["median"]


def merge_rerun(record: dict, again: dict, better: Callable[[dict, dict], bool] = better_paired) -> None:
    """Keep, per entry of ``record`` measured again in ``again``, the ``better`` of the two measurements; count the
    attempts."""
    fresh = {e["key"]: e for e in again["results"]}
    for i, e in enumerate(record["results"]):
        new = fresh.get(e["key"])
        if new is None:
            continue
        keep_new = new.get("status") == "ok" and (e.get("status") != "ok" or better(new, e))
        record["results"][i] = {**(new if keep_new else e), "attempts": e.get("attempts", 1) + 1}
