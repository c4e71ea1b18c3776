"""``dlzta bench``: plan the workloads, check a baseline before measuring, time them, print and write the
figures, gate them. Its options are declared in :mod:`harness.commands.cli`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from harness.bench.formats import check_outputs, format_threads, write_outputs
from harness.bench.gate import (
    EXIT_REGRESSION,
    GateError,
    better_for,
    busy_notes,
    check_overlap,
    compared,
    format_gate,
    load_baseline,
    regressions,
    run_gate,
)
from harness.bench.measure import merge_rerun, run
from harness.bench.targets import check_targets, format_targets
from harness.bench.workloads import MIN_MEANINGFUL_BLOCKS, SUITES, Overrides, Workload, plan
from harness.commands.progress import Progress
from harness.errors import UsageError


def _plan(args: argparse.Namespace) -> list[Workload]:
    suite = SUITES[args.suite]
    overrides = Overrides(args.block_steps, args.blocks, args.warmup_blocks, args.fuse_steps, args.threads,
                          args.overhead_rounds)
    work = plan(tuple(args.labs) or suite.labs, tuple(args.frameworks), tuple(args.devices), args.modes, suite,
                overrides, args.precision)
    if not work:
        raise UsageError("no workload: none of the frameworks has the modes asked for")
    return work


def _baseline(args: argparse.Namespace, work: list[Workload]) -> dict | None:
    """The checked baseline of ``--compare`` (before anything is measured), or None."""
    if not args.compare:
        return None
    try:
        baseline = load_baseline(args.compare)
        check_overlap([w.key for w in work], baseline, args.compare)
    except GateError as exc:
        raise UsageError(str(exc)) from None
    return baseline


def _remeasure(record: dict, work: list[Workload], args: argparse.Namespace,
               better: Callable[[dict, dict], bool]) -> Callable[[set[str]], None]:
    """Measure the workloads named again (peak included) and keep the better measurement of each."""
    def again(keys: set[str]) -> None:
        fresh = run([w for w in work if w.key in keys], args.data, args.batch_size, args.inject, args.peak_repeats)
        merge_rerun(record, fresh, better)

    return again


def _gate(record: dict, baseline: dict, work: list[Workload], args: argparse.Namespace) -> int:
    """Gate the run (retrying suspects), print the table and the verdict; the exit status. The rows go into
    ``record["gate"]``."""
    rows = run_gate(record, baseline, args.threshold, args.retries,
                    _remeasure(record, work, args, better_for(baseline, args.threshold)))
    print(format_gate(rows))
    for note in busy_notes(record, baseline):
        print(note)
    failed = regressions(rows)
    record["gate"] = {"baseline": args.compare, "min_threshold": args.threshold, "rows": rows,
                      "compared": compared(rows), "regressions": failed}
    if compared(rows):
        print(f"gate: {'FAILED, ' + ', '.join(failed) if failed else 'passed'} (against {args.compare})")
    return EXIT_REGRESSION if failed else 0


def bench_suite(args: argparse.Namespace) -> int:
    """``dlzta bench`` on one device kind: run the benchmarks; print, write and gate them."""
    if not 0 < args.threshold < 1:
        raise UsageError(f"--threshold must be between 0 and 1, got {args.threshold}")
    check_outputs(args.out, args.github_action, args.markdown)
    work = _plan(args)
    baseline = _baseline(args, work)
    blocks = min(w.blocks for w in work)
    if blocks < MIN_MEANINGFUL_BLOCKS:
        print(f"warning: {blocks} timed block(s) per workload: the p5/p95 spread over fewer than "
              f"{MIN_MEANINGFUL_BLOCKS} blocks is not meaningful", file=sys.stderr)
    with Progress(0, "bench", args.quiet, unit="workloads") as progress:  # the live line on a terminal
        record = run(work, args.data, args.batch_size, args.inject, args.peak_repeats,
                     echo=print if progress.quiet else progress.print, progress=progress)
    record.update(suite=args.suite, argv=sys.argv[1:])
    if "threads" in record:
        print(format_threads(record["threads"]))
    if getattr(args, "targets", False):
        record["targets"] = check_targets(record["results"])
        print("development targets (docs/benchmarks.md):\n" + format_targets(record["targets"]))
    status = _gate(record, baseline, work, args) if baseline is not None else 0
    write_outputs(record, args.out, args.github_action, args.markdown)
    ran = [e for e in record["results"] if e.get("status") != "unavailable"]
    if not ran:
        reasons = sorted({str(e.get("reason")) for e in record["results"]})
        raise UsageError(f"no workload could run ({len(record['results'])} unavailable: {'; '.join(reasons)})")
    if baseline is not None and not record["gate"]["compared"]:
        raise UsageError(f"nothing compared against {args.compare}: no workload of this run was measured in both "
                         "(see the table above)")
    return status
