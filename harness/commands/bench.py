"""``dlzta bench``, the one command function of the benchmarks (its options are declared in
:mod:`harness.commands.cli`): device counts in ``--devices`` give the scaling figures
(:func:`harness.bench.scaling.bench_scaling`), device kinds the step-throughput suite
(:func:`harness.bench.command.bench_suite`)."""

from __future__ import annotations

import argparse


def cmd_bench(args: argparse.Namespace) -> int:
    """Time the chosen labs: the suite on each device kind, or the scaling figures at each device count."""
    kinds = tuple(d for d in args.devices if isinstance(d, str)) or ("cpu",)
    counts = tuple(d for d in args.devices if isinstance(d, int))
    if counts:
        from harness.bench.scaling import bench_scaling

        return bench_scaling(args, kinds, counts)
    from harness.bench.command import bench_suite

    args.devices = kinds
    return bench_suite(args)
