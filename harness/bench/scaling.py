"""Scaling figures of data-parallel training (``dlzta bench --devices 1,2,...``): for each lab, backend and device
count N, steps/s and samples/s of the data-parallel step (:mod:`harness.run.parallel`) under the bench protocol
(:func:`harness.bench.protocol.time_stepper`: the first dispatch, which compiles, and the warm-up blocks timed
apart; then blocks of steps each ended by a device sync; medians over blocks), and the efficiency against the
smallest N measured (one device when N = 1 is in the list).

Strong scaling (the default): the lab's global batch is split over N devices, so the ideal is N times the steps/s
of one device; efficiency = speedup / N. Weak scaling (``weak``): each device keeps the lab's batch (the global
batch grows N-fold); efficiency = samples/s / (N x samples/s of one device). Every N runs the same data-parallel
code path (N = 1 is a one-device mesh / a one-rank process group), so N is the only difference.

On a CPU, N host devices (JAX) or N processes (torch) share the same cores: the figures check the method and the
collectives' cost, not a speed-up.
"""

from __future__ import annotations

import argparse
import datetime
import sys
from dataclasses import dataclass
from typing import Any

import harness.bench.peak as peak_mod
from harness import backend as backends
from harness.bench.formats import check_outputs
from harness.bench.protocol import ms_stats, time_stepper
from harness.commands.bounds import COUNTS
from harness.commands.progress import Progress
from harness.errors import UsageError
from harness.labs import get_lab
from harness.run import parallel
from harness.run.machine import machine_busy
from harness.run.results import atomic_write, write_json
from harness.run.runner import RunOptions, prepare

SCHEMA = "dlzta-scaling/1"
DEFAULT_LABS = ("mnist_relu_xavier", "mnist_batchnorm")
MODES = {"strong": "the lab's global batch split over N devices", "weak": "the lab's batch on each device"}


@dataclass(frozen=True)
class Protocol:
    """The bench protocol with its block sizes, as a picklable callable that every rank runs in step."""

    block_steps: int = 20
    blocks: int = 9
    warmup_blocks: int = 1

    def __call__(self, stepper: Any) -> dict:
        return time_stepper(stepper, self.block_steps, self.blocks, self.warmup_blocks)


def _spec(lab: str, device: str, n: int, protocol: Protocol, data: str, batch: int | None, weak: bool) -> Any:
    """The float32 run spec timed at ``n`` devices: a pool of ``block_steps`` batches, cycled; the harness's
    shared initial weights (the same in every backend, and JAX compiles no eager random draws)."""
    base = batch or get_lab(lab).batch_size
    overrides = {"batch_size": base * n if weak else base}
    return prepare(get_lab(lab), RunOptions(device=device, steps=protocol.block_steps, data=data, weights="shared",
                                            overrides=overrides)).spec


def _entry(lab: str, framework: str, device: str, n: int, spec: Any, timing: dict, protocol: Protocol,
           bn: str) -> dict:
    ms = ms_stats(timing["block_s"], protocol.block_steps)
    batch = spec.batches.shape[1]
    return {"lab": lab, "framework": framework, "device": device, "devices": n, "batch_norm": bn,
            "global_batch": batch, "per_device_batch": batch // n, "block_steps": protocol.block_steps,
            "blocks": protocol.blocks, "warmup_blocks": protocol.warmup_blocks, "compile_s": timing["compile_s"],
            "warmup_s": timing["warmup_s"], "block_s": timing["block_s"], "ms_per_step": ms,
            "steps_per_s": 1e3 / ms["median"], "samples_per_s": batch * 1e3 / ms["median"],
            "loadavg": peak_mod.loadavg(), "status": "ok"}


def add_efficiency(entries: list[dict], weak: bool) -> None:
    """Speed-up and efficiency of each entry against the smallest device count of its lab and backend."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for e in entries:
        groups.setdefault((e["lab"], e["framework"]), []).append(e)
    for group in groups.values():
        base = min(group, key=lambda e: e["devices"])
        for e in group:
            ratio = e["devices"] / base["devices"]
            figure = "samples_per_s" if weak else "steps_per_s"
            e["baseline_devices"] = base["devices"]
            e["speedup"] = e[figure] / base[figure]
            e["efficiency"] = e["speedup"] / ratio


def plan(labs: tuple[str, ...], device: str, devices: tuple[int, ...], protocol: Protocol, bn: str = "sync",
         data: str = "mnist-5k", batch: int | None = None, weak: bool = False,
         threads: int | None = None) -> list[tuple[Any, parallel.Parallel, Protocol]]:
    """One ``harness.run.parallel.bench_many`` job per lab x device count (labs outer); ``threads``: intra-op threads
    per device process where the backend sets them (None: the cores shared out)."""
    return [(_spec(lab, device, n, protocol, data, batch, weak), parallel.Parallel(n, bn=bn, threads=threads),
             protocol) for lab in labs for n in devices]


def entries(labs: tuple[str, ...], framework: str, jobs: list[tuple], timings: list[dict]) -> list[dict]:
    """The entries of :func:`plan`'s jobs from their timings."""
    out = []
    for lab, (spec, par, protocol), t in zip([lab for lab in labs for _ in range(len(jobs) // len(labs))], jobs,
                                             timings):
        e = _entry(lab, framework, spec.device, par.devices, spec, t, protocol, par.bn)
        e["threads_per_device"] = t.get("threads")
        out.append(e)
    return out


def measure(labs: tuple[str, ...], framework: str, device: str, devices: tuple[int, ...], protocol: Protocol,
            bn: str = "sync", data: str = "mnist-5k", batch: int | None = None, weak: bool = False,
            threads: int | None = None) -> list[dict]:
    """Entries for every lab x device count of one backend (one launch: JAX sees max(devices) host devices)."""
    jobs = plan(labs, device, devices, protocol, bn, data, batch, weak, threads)
    return entries(labs, framework, jobs, parallel.bench_many(framework, jobs))


def run(labs: tuple[str, ...], frameworks: tuple[str, ...], device: str, devices: tuple[int, ...],
        protocol: Protocol, bn: str = "sync", data: str = "mnist-5k", batch: int | None = None,
        weak: bool = False, threads: int | None = None, echo: bool = True, progress: Progress | None = None) -> dict:
    """The scaling record: machine, load, protocol and one entry per lab x backend x device count; ``progress``
    is told each backend as it starts (its total: the backends)."""
    progress = progress or Progress(0, quiet=True)
    progress.total = len(frameworks)
    record: dict[str, Any] = {
        "schema": SCHEMA, "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": peak_mod.machine_info(), "loadavg_start": peak_mod.loadavg(), "device": device,
        "devices": list(devices), "scaling": "weak" if weak else "strong", "scaling_means": MODES["weak" if weak
                                                                                                    else "strong"],
        "batch_norm": bn, "protocol": {"block_steps": protocol.block_steps, "blocks": protocol.blocks,
                                       "warmup_blocks": protocol.warmup_blocks}, "results": [],
    }
    for fw in frameworks:
        progress.begin(f"{fw} on {device} x {','.join(map(str, devices))}")
        entries = measure(labs, fw, device, devices, protocol, bn, data, batch, weak, threads)
        progress.advance()
        add_efficiency(entries, weak)
        record["results"].extend(entries)
        if echo:
            for e in entries:
                (print if progress.quiet else progress.print)(format_entry(e))
    record["loadavg_end"] = peak_mod.loadavg()
    return record


def format_entry(e: dict) -> str:
    """One line per entry."""
    ms = e["ms_per_step"]
    return (f"{e['lab']:<20} {e['framework']:<5} {e['device']} x{e['devices']:<2} batch {e['global_batch']} "
            f"({e['per_device_batch']}/device)  compile {e['compile_s']:.2f}s  {ms['median']:.4g} ms/step "
            f"[p5 {ms['p5']:.4g}, p95 {ms['p95']:.4g}]  {e['steps_per_s']:,.1f} steps/s  "
            f"{e['samples_per_s']:,.0f} samples/s  efficiency {e['efficiency']:.2f} (vs x{e['baseline_devices']})")


def format_markdown(record: dict) -> str:
    """The scaling figures as a markdown table, with the machine and the method above it."""
    m = record["machine"]
    lines = [f"Machine: {m['cpu_model']}, {m['cpu_count']} cores; load average {record['loadavg_start']} at the "
             f"start, {record['loadavg_end']} at the end; {record['created']}.", "",
             f"{record['scaling'].capitalize()} scaling ({record['scaling_means']}); batch norm: "
             f"{record['batch_norm']}; {record['protocol']['blocks']} blocks of {record['protocol']['block_steps']} "
             "steps after the compile and warm-up, medians over blocks; efficiency against the smallest device "
             "count. Threads/device: intra-op threads of each device's process (pool: the backend's own pool, "
             "shared by its devices).", "",
             "| lab | framework | devices | threads/device | global batch | per device | compile s | "
             "ms/step median [p5, p95] | steps/s | samples/s | speed-up | efficiency |",
             "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for e in record["results"]:
        ms = e["ms_per_step"]
        threads = e.get("threads_per_device") or "pool"
        lines.append(f"| {e['lab']} | {e['framework']} | {e['devices']} | {threads} | {e['global_batch']} | "
                     f"{e['per_device_batch']} | {e['compile_s']:.2f} | {ms['median']:.4g} [{ms['p5']:.4g}, "
                     f"{ms['p95']:.4g}] | {e['steps_per_s']:,.1f} | {e['samples_per_s']:,.0f} | "
                     f"{e['speedup']:.2f} | {e['efficiency']:.2f} |")
    return "\n".join(lines) + "\n"


def write(record: dict, out: str | None, markdown: str | None) -> None:
    """The JSON record and the markdown table, each written atomically (either may be None)."""
    if out:
        write_json(out, record, "scaling")
    if markdown:
        atomic_write(markdown, format_markdown(record))


MAX_DEVICES = COUNTS["devices"][1]


def devices_arg(text: str) -> tuple[str | int, ...]:
    """``bench --devices``: device kinds (``cpu,gpu``), device counts (``1,2,4``: scaling figures on cpu) or both
    (``gpu,1,2,4``: scaling figures on gpu); kinds as given, counts ascending without repeats."""
    kinds, counts = [], set()
    for word in (w.strip() for w in text.split(",") if w.strip()):
        if word.isdigit() and 1 <= int(word) <= MAX_DEVICES:
            counts.add(int(word))
        elif word in backends.DEVICES:
            kinds.append(word)
        else:
            raise argparse.ArgumentTypeError(f"unknown device {word!r}: give kinds ({', '.join(backends.DEVICES)}) "
                                             f"and/or device counts (1,2,4; at most {MAX_DEVICES})")
    if not kinds and not counts:
        raise argparse.ArgumentTypeError(f"no device in {text!r}")
    return (*dict.fromkeys(kinds), *sorted(counts))


UNSCALED = ("compare", "github_action", "inject", "targets", "modes", "fuse_steps", "overhead_rounds")


def bench_scaling(args: argparse.Namespace, kinds: tuple[str, ...], counts: tuple[int, ...]) -> int:
    """``dlzta bench --devices`` with device counts: the scaling figures of each device kind at each count."""
    given = [f"--{o.replace('_', '-')}" for o in UNSCALED if getattr(args, o, None)]
    if given:
        raise UsageError(f"{', '.join(given)} cannot be combined with device counts in --devices")
    check_outputs(args.out, None, args.markdown, tuple(f".{k}" for k in kinds) if len(kinds) > 1 else ("",))
    base = Protocol()
    protocol = Protocol(args.block_steps or base.block_steps, args.blocks or base.blocks,
                        base.warmup_blocks if args.warmup_blocks is None else args.warmup_blocks)
    labs = tuple(args.labs) or DEFAULT_LABS
    threads = args.threads or (1 if machine_busy()[0] else None)  # a busy machine: one thread per process
    for kind in kinds:
        with Progress(0, "bench", args.quiet, unit="backends") as progress:  # the live line on a terminal
            record = run(labs, tuple(args.frameworks), kind, counts, protocol, args.batch_norm, args.data,
                         args.batch_size, args.weak_scaling, threads, progress=progress)
        record["argv"] = sys.argv[1:]
        suffix = f".{kind}" if len(kinds) > 1 else ""
        write(record, args.out and args.out + suffix, args.markdown and args.markdown + suffix)
    return 0
