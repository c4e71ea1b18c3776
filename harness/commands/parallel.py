"""``run --devices N`` and ``compare --devices N``: data-parallel runs on the command line (the options are declared
in :mod:`harness.commands.cli`; the training in :mod:`harness.run.parallel`).

``run``: the lab trained over N devices (its companion model too), summarised like a one-device run, with a
``parallel`` section; under ``torchrun`` or several ``jax.distributed`` processes only process 0 prints and writes.
``compare``: every backend over N devices and on one device from the same weights, batches and masks; each
backend's N-device run against its one-device run (per-device batch norm: by how much they differ) and the
backends' N-device runs against each other.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from harness import backend as backends
from harness.errors import UsageError
from harness.labs import Lab, get_lab
from harness.parity.verdict import exit_status
from harness.run import parallel
from harness.run.parallel import Parallel
from harness.run.results import check_result_out, write_result
from harness.run.runner import RunOptions, add_companion, execute, prepare, summarize


def options(args: argparse.Namespace) -> Parallel:
    """The data-parallel layout from parsed arguments (``--devices``, ``--batch-norm``)."""
    par = Parallel(args.devices, bn=args.batch_norm)
    par.check()
    return par


def run_record(lab: Lab, framework: str, run_options: RunOptions, par: Parallel) -> dict | None:
    """Train ``lab`` over ``par.devices`` devices (and its companion on the same batches); the run record, with
    a ``parallel`` section; None in a process other than the first of a process group."""
    prepared = prepare(lab, run_options)
    specs = [prepared.spec] + ([prepared.companion] if prepared.companion is not None else [])
    results = parallel.train_many(framework, [(s, par) for s in specs])
    if not parallel.is_primary(framework):
        return None
    record = summarize(prepared, framework, results[0])
    if len(results) > 1:
        add_companion(record, prepared, framework, results[1])
    record["parallel"] = parallel.describe(prepared.spec, par)
    record["parallel"]["processes"] = parallel.process_count(framework, par.devices)
    return record


def compare_record(lab: Lab, run_options: RunOptions, par: Parallel, frameworks: tuple[str, ...]) -> dict:
    """Each of ``frameworks`` over ``par.devices`` devices and on one; parity of each against its one-device run
    and of the first against each other, every one from the same weights, batches and shared masks."""
    run_options = dataclasses.replace(run_options, weights="shared", mask_mode="shared")
    prepared = prepare(lab, run_options)
    # Data-parallel first: a backend that must start its devices before anything else (JAX's host devices) can.
    spread = {fw: parallel.train(prepared.spec, fw, par) for fw in frameworks}
    single = {fw: execute(prepared, fw) for fw in frameworks}
    out = {"lab": prepared.lab.name, "dtype": run_options.dtype, "device": run_options.device,
           "parallel": parallel.describe(prepared.spec, par), "rtol": parallel.PARITY_RTOL,
           "vs_one_device": {fw: parallel.parity(single[fw], spread[fw], dtype=run_options.dtype)
                             for fw in frameworks},
           "across": {f"{frameworks[0]}-{fw}": parallel.parity(spread[frameworks[0]], spread[fw],
                                                                dtype=run_options.dtype) for fw in frameworks[1:]}}
    out["losses"] = {fw: {"one_device": single[fw].losses.tolist(), "parallel": spread[fw].losses.tolist()}
                     for fw in frameworks}
    return out


def compare_lines(result: dict) -> list[str]:
    """The summary of :func:`compare_record`."""
    p = result["parallel"]
    bn = f", batch norm {p['batch_norm']}" if p["batch_norm"] else ""
    lines = [f"{result['lab']} [{result['dtype']}, {p['devices']} x {result['device']}, batch {p['global_batch']} "
             f"= {p['devices']} x {p['per_device_batch']}{bn}]"]
    for fw, par in result["vs_one_device"].items():
        lines.append(parallel.parity_line(f"{backends.label(fw)} x{p['devices']} vs one device", par))
    for pair, par in result["across"].items():
        a, b = pair.split("-", 1)
        lines.append(parallel.parity_line(f"{backends.label(a)} vs {backends.label(b)}, x{p['devices']}", par))
    return lines


def cmd_compare_devices(args: argparse.Namespace, run_options: RunOptions, stdout: Any = None) -> int:
    """``compare LAB --devices N`` with ``run_options`` (from the command's arguments, shared weights)."""
    if args.side_a or args.side_b:
        raise UsageError("--a/--b pick two configurations; with --devices every backend is compared with itself on "
                         "one device and with the others")
    check_result_out(args.out)
    frameworks = backends.names(include_referees=False)
    result = compare_record(get_lab(args.lab), run_options, options(args), frameworks)
    for line in compare_lines(result):
        print(line)
    write_result(args.out, result, stdout)
    pairs = [*result["vs_one_device"].values(), *result["across"].values()]
    return exit_status([p["verdict_kind"] for p in pairs])  # 1 when any pair differs, as ``compare``
