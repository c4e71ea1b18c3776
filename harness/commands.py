"""The ``list``, ``run`` and ``compare`` commands (their options are declared in :mod:`harness.cli`)."""

from __future__ import annotations

import argparse
from typing import Any

from harness.labs import LABS, get_lab
from harness.results import check_output_file
from harness.runner import RunOptions


def run_options(args: argparse.Namespace, weights: str | None = None) -> RunOptions:
    """RunOptions from parsed ``run``/``compare`` arguments (``weights`` overrides ``args.weights``)."""
    overrides = {"lr": args.lr, "optimizer_name": args.optimizer_name, "activation": args.activation,
                 "init": args.weight_init, "dropout": args.dropout, "epochs": args.epochs,
                 "batch_size": args.batch_size}
    return RunOptions(
        device=args.device, dtype=args.dtype, weights=weights or args.weights, seed=args.seed,
        log_every=args.log_every, steps=args.steps, execution=args.execution, data=args.data,
        data_dir=args.data_dir, mask_mode=args.mask_mode,
        overrides={k: v for k, v in overrides.items() if v is not None},
    )


def cmd_list(args: argparse.Namespace) -> int:
    """One line per lab."""
    width = max(map(len, LABS))
    for lab in LABS.values():
        print(f"{lab.name:<{width}}  {lab.title}  [{lab.notebook}]")
    return 0


def _write(path: str | None, obj: dict, kind: str) -> None:
    if path:
        from harness.results import write_json

        write_json(path, obj, kind)


def fmt(v: Any) -> str:
    """A final metric for a summary line (a dict: per-output values, as the gates' accuracy)."""
    if isinstance(v, dict):
        return "(" + ", ".join(f"{k} {fmt(x)}" for k, x in v.items()) + ")"
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def final_text(final: dict) -> str:
    """The ``final`` metrics of a run record."""
    return ", ".join(f"{k} {fmt(v)}" for k, v in final.items())


def _trajectory(result: dict, per_epoch: bool) -> list[str]:
    """The printed loss lines: one per epoch (the mean training loss, as the course prints its cost) for the
    minibatch labs unless ``--log-every`` was given, else every logged step."""
    if per_epoch and result.get("epoch_cost"):
        return [f"epoch {e:>3} cost {c:.9f}" for e, c in enumerate(result["epoch_cost"], 1)]
    return [f"{step:>6} {loss:.10f}" for step, loss in zip(result["steps"], result["loss"])]


def cmd_run(args: argparse.Namespace) -> int:
    """Train one lab in one framework and print its trajectory and timing."""
    from harness.errors import RunDiverged
    from harness.runner import course_lines, run

    lab = get_lab(args.lab)
    if args.out:
        check_output_file(args.out)
    try:
        if getattr(args, "devices", 1) > 1:  # data parallel (harness.parallel_commands)
            from harness.parallel_commands import options, run_record

            result = run_record(lab, args.framework, run_options(args), options(args))
            if result is None:  # not the first process of a process group: it prints and writes
                return 0
        else:
            result = run(lab, args.framework, run_options(args))
    except RunDiverged as exc:
        _write(args.out, exc.result, "run")
        raise
    if not args.quiet:
        print("\n".join(_trajectory(result, per_epoch=args.log_every is None)))
    for line in course_lines(result):
        print(line)
    final = final_text(result["final"])
    t = result["timing"]
    print(f"{lab.name} [{args.framework}, {result['device']}, {result['dtype']}, weights {result['weights']}] "
          f"final: {final}")
    pre = f"; RBM pre-training before it {t['pretrain_s']:.2f} s" if "pretrain_s" in t else ""
    print(f"time: {t['total_s']:.2f} s (warm-up/compile {t['warmup_s']:.2f} s), {t['steps_per_s']:.0f} steps/s{pre}")
    _write(args.out, result, "run")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Train one lab on two sides from shared weights; print the figures, the tiers and the verdict."""
    from harness.errors import RunDiverged
    from harness.parity.api import compare
    from harness.parity.text import summary_lines
    from harness.progress import Progress

    if getattr(args, "devices", 1) > 1:  # data parallel over N devices vs one (harness.parallel_commands)
        from harness.parallel_commands import cmd_compare_devices

        return cmd_compare_devices(args, run_options(args, "shared"))
    lab = get_lab(args.lab)
    if args.out:
        check_output_file(args.out)
    try:
        with Progress(0, f"compare {lab.name}", args.quiet, unit="steps") as progress:  # the live line on a terminal
            result = compare(lab, run_options(args, "shared"), threshold=args.threshold, noise=not args.no_noise,
                             a=args.side_a, b=args.side_b, exact=not args.no_exact, exact_steps=args.exact_steps,
                             referee=args.referee, trace_steps=args.trace_steps, progress=progress)
    except RunDiverged as exc:
        _write(args.out, exc.result, "compare")
        raise
    for line in summary_lines(result, args.threshold, final_text):
        print(line)
    if args.weights == "native":  # each side's own initial draw against the declared distributions
        from harness.parity.initcheck import check_lab

        backends = tuple(side["backend"] for side in result["sides"].values())
        result["native_init"] = check_lab(lab, run_options(args, "shared"), backends)
        print(result["native_init"]["text"])
    _write(args.out, result, "compare")
    return 0
