"""The ``list``, ``run`` and ``compare`` commands (their options are declared in :mod:`harness.commands.cli`), and
``run --config``: a run record's ``config`` turned back into options."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from typing import Any

from harness.commands.options import run_options
from harness.errors import UsageError
from harness.labs import LABS, get_lab
from harness.run.results import STDOUT, check_result_out, write_result


def cmd_list(args: argparse.Namespace) -> int:
    """One line per lab."""
    width = max(map(len, LABS))
    for lab in LABS.values():
        print(f"{lab.name:<{width}}  {lab.title}  [{lab.notebook}]")
    return 0


def lines_to_stderr(out: str | None) -> contextlib.AbstractContextManager:
    """With ``--out -`` the JSON alone goes to standard output: the printed lines go to stderr."""
    return contextlib.redirect_stdout(sys.stderr) if out == STDOUT else contextlib.nullcontext()


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


# a run record's ``config`` (or a config object) -> the ``run`` option it stands for
CONFIG_OPTIONS = {"framework": "--framework", "device": "--device", "dtype": "--dtype", "weights": "--weights",
                  "masks": "--masks", "seed": "--seed", "steps": "--steps", "log_every": "--log-every",
                  "execution": "--execution", "data": "--data", "data_dir": "--data-dir", "devices": "--devices",
                  "batch_norm": "--batch-norm", "lr": "--lr", "optimizer": "--optimizer",
                  "activation": "--activation", "weight_init": "--weight-init", "dropout": "--dropout",
                  "epochs": "--epochs", "batch_size": "--batch-size", "precision": "--precision"}
CONFIG_IGNORED = ("effective", "notes")  # what the run trained with: recorded, not options


def config_argv(path: str, with_lab: bool = True) -> list[str]:
    """``run --config FILE``: the command-line words of the configuration in FILE (a run record, whose
    ``config`` is taken, or a config object: ``lab``, ``framework`` and any of ``CONFIG_OPTIONS``, overrides
    flat or under ``overrides``), checked by the same parser as typed options; UsageError for a file that
    cannot be read or holds anything else."""
    import json

    from harness.run.results import read_input

    try:
        obj = json.loads(read_input(path, "--config"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise UsageError(f"--config {path}: cannot be read as JSON ({getattr(exc, 'strerror', None) or exc})") \
            from None
    config = obj.get("config", obj) if isinstance(obj, dict) else obj
    if not isinstance(config, dict) or not isinstance(config.get("lab"), str):
        raise UsageError(f"--config {path}: not a run record or a config object (no lab name)")
    overrides = config.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise UsageError(f"--config {path}: overrides must be an object")
    flat = {**{k: v for k, v in config.items() if k not in ("lab", "overrides", *CONFIG_IGNORED)}, **overrides}
    unknown = sorted(set(flat) - set(CONFIG_OPTIONS))
    if unknown:
        raise UsageError(f"--config {path}: unknown key {', '.join(unknown)}; known: {', '.join(CONFIG_OPTIONS)}")
    words = [config["lab"]] if with_lab else []
    for key, value in flat.items():
        if value is None:
            continue
        if isinstance(value, (bool, dict, list)):
            raise UsageError(f"--config {path}: {key} must be a number or a name, got {json.dumps(value)[:40]}")
        words += [f"{CONFIG_OPTIONS[key]}={value}"]
    return words


def with_config(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: Sequence[str]) -> argparse.Namespace:
    """``run --config FILE``: ``argv`` parsed again with the file's options first, so the command line's win."""
    given = list(argv)
    at = given.index("run")
    return parser.parse_args([*given[:at + 1], *config_argv(args.config, args.lab is None), *given[at + 1:]])


def cmd_run(args: argparse.Namespace) -> int:
    """Train one lab in one framework and print its trajectory and timing."""
    if args.lab is None or args.framework is None:
        raise UsageError(f"run: {'a lab name' if args.lab is None else '--framework'} is required (or --config "
                         "FILE.json with it)")
    lab = get_lab(args.lab)
    check_result_out(args.out)
    stdout = sys.stdout
    with lines_to_stderr(args.out):
        result = _run(args, lab, stdout)
    if result is not None:
        write_result(args.out, result, stdout, "run")
    return 0


def _run(args: argparse.Namespace, lab: Any, stdout: Any) -> dict | None:
    """``cmd_run``'s training and printout; the record (None: another process of a group writes it)."""
    from harness.errors import RunDiverged
    from harness.run.runner import course_lines, run

    try:
        if getattr(args, "devices", 1) > 1:  # data parallel (harness.commands.parallel)
            from harness.commands.parallel import options, run_record

            result = run_record(lab, args.framework, run_options(args), options(args))
            if result is None:  # not the first process of a process group: it prints and writes
                return None
        else:
            result = run(lab, args.framework, run_options(args))
    except RunDiverged as exc:
        write_result(args.out, exc.result, stdout, "run")
        raise
    if getattr(args, "devices", 1) > 1:
        result.setdefault("config", {}).update(devices=args.devices, batch_norm=args.batch_norm)
    for note in result.get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    if not args.quiet:
        print("\n".join(_trajectory(result, per_epoch=args.log_every is None)))
    for line in course_lines(result):
        print(line)
    final = final_text(result["final"])
    t = result["timing"]
    print(f"{lab.name} [{args.framework}, {result['device']}, {result['precision']['name']}, "
          f"weights {result['weights']}] "
          f"final: {final}")
    pre = f"; RBM pre-training before it {t['pretrain_s']:.2f} s" if "pretrain_s" in t else ""
    print(f"time: {t['total_s']:.2f} s (warm-up/compile {t['warmup_s']:.2f} s), {t['steps_per_s']:.0f} steps/s{pre}")
    return result


def cmd_compare(args: argparse.Namespace) -> int:
    """Train one lab on two sides from shared weights; print the figures, the tiers and the verdict. Exit status
    as ``diff``'s: 0 same (or within rounding noise), 1 differs (:func:`harness.parity.verdict.exit_status`)."""
    from harness.parity.verdict import exit_status

    check_result_out(args.out)
    stdout = sys.stdout
    with lines_to_stderr(args.out):
        if getattr(args, "devices", 1) > 1:  # data parallel over N devices vs one (harness.commands.parallel)
            from harness.commands.parallel import cmd_compare_devices

            return cmd_compare_devices(args, run_options(args, weights="shared"), stdout)
        result = _compare(args, stdout)
    write_result(args.out, result, stdout, "compare")
    return exit_status(result["verdict_kind"])


def _compare(args: argparse.Namespace, stdout: Any) -> dict:
    """``cmd_compare``'s work and printout; the record."""
    from harness.commands.progress import Progress
    from harness.errors import RunDiverged
    from harness.parity.api import compare
    from harness.parity.text import summary_lines
    from harness.parity.verdict import with_native_init

    lab = get_lab(args.lab)
    options = run_options(args, weights="shared")
    from harness.parity import precision_compare

    if precision_compare.wanted(args.precision, args.side_a, args.side_b):  # the precision tier (docs/precision.md)
        result = precision_compare.compare(lab, options, args.precision, args.side_a, args.side_b)
        print("\n".join(precision_compare.summary_lines(result)))
        return result
    try:
        with Progress(0, f"compare {lab.name}", args.quiet, unit="steps") as progress:  # the live line on a terminal
            result = compare(lab, options, threshold=args.threshold, noise=not args.no_noise,
                             a=args.side_a, b=args.side_b, exact=not args.no_exact, exact_steps=args.exact_steps,
                             referee=args.referee, trace_steps=args.trace_steps, progress=progress)
    except RunDiverged as exc:
        write_result(args.out, exc.result, stdout, "compare")
        raise
    if args.weights == "native":  # each side's own initial draw against the declared distributions
        from harness.parity.initcheck import check_lab

        backends = tuple(side["backend"] for side in result["sides"].values())
        result["native_init"] = check_lab(lab, options, backends)
        result["verdict"], result["verdict_kind"] = with_native_init(result["verdict"], result["verdict_kind"],
                                                                     result["native_init"])
    for line in summary_lines(result, args.threshold, final_text):
        print(line)
    return result
