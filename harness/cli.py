"""The command line: ``dlzta`` or ``python -m harness``.

Every failure a user can cause (unknown lab, bad option value, missing device or data, a diverging run) ends
with a one-line ``error: ...`` on stderr and exit status 2; results already written stay intact.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from harness.labs import LABS, LabError, get_lab
from harness.runner import RunOptions

EXIT_USAGE = 2


class UsageError(Exception):
    """A command line that cannot be run; the message is the one line shown."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not usage + message
        raise UsageError(f"{self.prog}: {message}")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that trains: device, dtype, init, data, lab overrides."""
    p.add_argument("--device", default="cpu", help="cpu, gpu or tpu (default cpu)")
    p.add_argument("--dtype", default="float32", help="float32 or float64 (x64 in JAX, double in torch)")
    p.add_argument("--seed", type=int, help="override the lab's seed")
    p.add_argument("--steps", type=_positive_int, help="stop after this many steps")
    p.add_argument("--log-every", type=_positive_int, help="log the loss every N steps (1: every step)")
    p.add_argument("--execution", default="fused", help="fused (JAX lax.scan; torch eager), per_step, or torch's "
                   "eager, compiled (torch.compile) and cuda_graph (GPU)")
    p.add_argument("--data", default="auto", help="auto, mnist-5k, tfds, tfds:NAME or idx:DIR (MNIST labs)")
    p.add_argument("--data-dir", help="TFDS data directory")
    p.add_argument("--masks", default="own", help="dropout masks: own (each framework draws) or shared")
    g = p.add_argument_group("lab overrides (default: the lab's declaration)")
    g.add_argument("--lr", type=float)
    g.add_argument("--optimizer", dest="optimizer_name", help="sgd, adadelta, rmsprop or adam")
    g.add_argument("--activation", help="sigmoid, tanh, relu, leaky_relu or selu")
    g.add_argument("--weight-init", dest="weight_init", help="torch_default, normal, xavier_uniform, xavier_normal, "
                   "he_uniform, he_normal or flax_default")
    g.add_argument("--dropout", type=float)
    g.add_argument("--epochs", type=_positive_int)
    g.add_argument("--batch-size", type=_positive_int)


def run_options(args: argparse.Namespace, init: str) -> RunOptions:
    """RunOptions from parsed arguments."""
    overrides = {"lr": args.lr, "optimizer_name": args.optimizer_name, "activation": args.activation,
                 "init": args.weight_init, "dropout": args.dropout, "epochs": args.epochs,
                 "batch_size": args.batch_size}
    return RunOptions(
        device=args.device, dtype=args.dtype, init=init, seed=args.seed, log_every=args.log_every,
        steps=args.steps, execution=args.execution, data=args.data, data_dir=args.data_dir, masks=args.masks,
        overrides={k: v for k, v in overrides.items() if v is not None},
    )


def cmd_list(args: argparse.Namespace) -> int:
    """One line per lab."""
    width = max(map(len, LABS))
    for lab in LABS.values():
        print(f"{lab.name:<{width}}  {lab.title}  [{lab.notebook}]")
    return 0


def _write(path: str | None, obj: dict) -> None:
    if path:
        from harness.results import write_json

        write_json(path, obj)


def _fmt(v: Any) -> str:
    if isinstance(v, dict):  # one eval set's metrics (labs evaluated on several)
        return "(" + ", ".join(f"{k} {_fmt(x)}" for k, x in v.items() if k in ("loss", "accuracy")) + ")"
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def cmd_run(args: argparse.Namespace) -> int:
    """Train one lab in one framework and print its trajectory and timing."""
    from harness.runner import RunDiverged, course_lines, run

    lab = get_lab(args.lab)
    try:
        result = run(lab, args.framework, run_options(args, args.init))
    except RunDiverged as exc:
        _write(args.out, exc.result)
        raise
    if not args.quiet:
        for step, loss in zip(result["steps"], result["loss"]):
            print(f"{step:>6} {loss:.10f}")
    for line in course_lines(result):
        print(line)
    final = ", ".join(f"{k} {_fmt(v)}" for k, v in result["final"].items())
    t = result["timing"]
    print(f"{lab.name} [{args.framework}, {result['device']}, {result['dtype']}, init {result['init']}] final: {final}")
    print(f"time: {t['total_s']:.2f} s (warm-up/compile {t['warmup_s']:.2f} s), {t['steps_per_s']:.0f} steps/s")
    _write(args.out, result)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    """Train one lab in both frameworks from shared weights and report the parity figures."""
    from harness.compare import compare
    from harness.runner import RunDiverged

    lab = get_lab(args.lab)
    try:
        result = compare(lab, run_options(args, "shared"), threshold=args.threshold, noise=not args.no_noise)
    except RunDiverged as exc:
        _write(args.out, exc.result)
        raise
    first = result["first_divergence_step"]
    print(f"{lab.name} [{result['dtype']}, shared init, {result['runs']['torch']['steps'][-1] + 1} steps]")
    for fw in ("torch", "jax"):
        final = ", ".join(f"{k} {_fmt(v)}" for k, v in result["runs"][fw]["final"].items())
        print(f"  {fw:<5} final: {final}")
    print(f"  max |diff| {result['max_abs_diff']:.3e}, max rel diff {result['max_rel_diff']:.3e}, "
          f"first step over {args.threshold:g}: {first if first is not None else 'never'}, "
          f"growth/step: {_fmt(result['growth_per_step'])}")
    if "noise_floor" in result:
        nf = result["noise_floor"]
        nfirst = nf["first_divergence_step"]
        print(f"  noise floor ({nf['framework']} twin, 1 ulp): max rel diff {nf['max_rel_diff']:.3e}, "
              f"first step over {args.threshold:g}: {nfirst if nfirst is not None else 'never'}, "
              f"growth/step: {_fmt(nf['growth_per_step'])}")
        print(f"  verdict: {result['verdict']}")
    _write(args.out, result)
    return 0


# Modules that add their own subcommands: each has ``register(sub)`` adding a parser whose defaults set
# ``func`` (a callable taking the parsed arguments, returning the exit status). Heavy imports stay inside func.
PLUGINS = ("harness.reproduce", "harness.bench", "harness.report")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = _Parser(prog="dlzta", description="Deep Learning Zero To All (season 2, part 2) labs in PyTorch and "
                     "JAX: run, compare, benchmark and report.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("list", help="every lab, one line each").set_defaults(func=cmd_list)
    p = sub.add_parser("run", help="train one lab in one framework")
    p.set_defaults(func=cmd_run)
    p.add_argument("lab")
    p.add_argument("--framework", required=True, help="torch or jax")
    p.add_argument("--init", default="native", help="native (the framework draws) or shared (the harness draws)")
    p.add_argument("--out", help="write the result as JSON")
    p.add_argument("--quiet", action="store_true", help="only the summary lines")
    add_run_options(p)
    p = sub.add_parser("compare", help="train one lab in both frameworks from the same weights; parity figures")
    p.set_defaults(func=cmd_compare)
    p.add_argument("lab")
    p.add_argument("--threshold", type=float, default=1e-4, help="relative difference that counts as divergence")
    p.add_argument("--no-noise", action="store_true", help="skip the one-ulp noise-floor twin")
    p.add_argument("--out", help="write both runs and the parity figures as JSON")
    add_run_options(p)
    for name in PLUGINS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    from harness.backend import BackendError
    from harness.data import DataError
    from harness.runner import RunDiverged

    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "framework", None) not in (None, "torch", "jax"):
            raise UsageError(f"unknown framework {args.framework!r}; choose from torch, jax")
        return args.func(args)
    except (UsageError, LabError, BackendError, DataError, RunDiverged) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def main_exit() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    main_exit()
