"""The command line: ``dlzta`` or ``python -m harness``. This module owns every option of every subcommand.

Options come in shared groups (data, device, dtype, steps/epochs, frameworks, threads, output); lists are
comma-separated everywhere, and lab lists take the groups ``xor``, ``mnist`` and ``all``. The command
functions live beside the code they drive and are imported only when their subcommand runs.

Every failure a user can cause (unknown lab, bad option value, missing device or data, a diverging run) ends
with a one-line ``error: ...`` on stderr and exit status 2; results already written stay intact.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from harness import __version__
from harness import backend as backends
from harness.errors import EXIT_USAGE, USER_ERRORS, LabError, UsageError
from harness.labs import ACTIVATIONS, GROUPS, INITS, LABS, OPTIMIZERS, lab_names

__all__ = ["EXIT_USAGE", "UsageError", "build_parser", "main", "main_exit"]

WEIGHTS = ("native", "shared")
MASK_MODES = ("own", "shared")
DATA_HELP = "MNIST source: auto, mnist-5k, tfds, tfds:NAME or idx:DIR"


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown after each help text; a None default (the lab's or the backend's own) is not shown."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or isinstance(action.default, bool):
            return action.help or ""
        return super()._get_help_string(action) or ""


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # one line, not usage + message
        raise UsageError(f"{self.prog}: {message}")


# ------------------------------------------------------------------------------------------ value parsers


def positive_int(text: str) -> int:
    """An integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _one_of(choices: tuple[str, ...], what: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"unknown {what} {text!r}; choose from {', '.join(choices)}")
        return text

    return parse


def name_list(choices: tuple[str, ...], what: str) -> Callable[[str], tuple[str, ...]]:
    """A parser of comma-separated names out of ``choices``, in order, without repeats."""
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
        bad = [n for n in names if n not in choices]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"unknown {what} {','.join(bad) or text!r}; "
                                             f"choose from {', '.join(choices)}")
        return names

    return parse


def lab_list(text: str) -> tuple[str, ...]:
    """Comma-separated lab names and groups (``xor``, ``mnist``, ``all``)."""
    try:
        return lab_names(text)
    except LabError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _LabsAction(argparse.Action):
    """Positional lab lists (``bench xor mnist_softmax``): each word a name, a group or a comma list, flattened."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        names = [n for v in values for n in v]
        setattr(namespace, self.dest, list(dict.fromkeys(names)))


def _threads(text: str) -> str:
    if text != "auto" and not (text.isdigit() and int(text) >= 1):
        raise argparse.ArgumentTypeError(f"must be auto or a positive count, got {text!r}")
    return text


def _meta(choices: Sequence[str]) -> str:
    return "{" + ",".join(choices) + "}"


def _executions() -> tuple[str, ...]:
    names: dict[str, None] = {}
    for name in backends.names():
        entry = backends.info(name)
        names.update(dict.fromkeys((*entry.executions, *entry.execution_aliases)))
    return tuple(names)


# ----------------------------------------------------------------------------------------- option groups


def _add_data(p: argparse.ArgumentParser, default: str = "auto") -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", default=default, help=DATA_HELP)
    g.add_argument("--data-dir", help="TFDS data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")


def _add_device(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("device and precision")
    g.add_argument("--device", default="cpu", type=_one_of(backends.DEVICES, "device"),
                   metavar=_meta(backends.DEVICES), help="where to train")
    g.add_argument("--dtype", default="float32", type=_one_of(backends.DTYPES, "dtype"),
                   metavar=_meta(backends.DTYPES), help="float64: x64 in JAX, double in torch")


def _add_length(p: argparse.ArgumentParser, steps: str, epochs: str) -> None:
    g = p.add_argument_group("run length")
    g.add_argument("--steps", type=positive_int, help=steps)
    g.add_argument("--epochs", type=positive_int, help=epochs)


def _add_frameworks(p: argparse.ArgumentParser, help_text: str, default: tuple[str, ...] | None = None) -> None:
    names = backends.names()
    p.add_argument("--frameworks", type=name_list(names, "framework"), metavar="LIST",
                   default=default if default is not None else backends.names(include_referees=False),
                   help=f"{help_text}; comma-separated, from {', '.join(names)}")


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", "--torch-threads", dest="torch_threads", default="auto", type=_threads,
                   help="intra-op threads of backends that set them per task: auto (1 for XOR, every core for "
                   "MNIST; 1 on a busy machine) or a count")


def _add_output(p: argparse.ArgumentParser, out: str, quiet: str, default: str | None = None) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--out", default=default, help=out)
    g.add_argument("--quiet", action="store_true", help=quiet)


def _add_weights(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--weights", "--init", dest="weights", default=default, type=_one_of(WEIGHTS, "init"),
                   metavar=_meta(WEIGHTS), help="initial weights: native (each framework draws its own) or shared "
                   "(the harness draws them once for all); --init is the old spelling")


def _add_masks(p: argparse.ArgumentParser) -> None:
    p.add_argument("--masks", dest="mask_mode", default="own", type=_one_of(MASK_MODES, "masks"),
                   metavar=_meta(MASK_MODES), help="dropout masks: own (each framework draws) or shared (the "
                   "harness draws them once for all)")


def _add_parallel(p: argparse.ArgumentParser) -> None:
    from harness.parallel import BN_MODES

    g = p.add_argument_group("data parallel (harness.parallel; docs/scaling.md)")
    g.add_argument("--devices", type=positive_int, default=1, help="split each global batch over N devices")
    g.add_argument("--batch-norm", default="sync", type=_one_of(tuple(BN_MODES), "batch-norm mode"),
                   metavar=_meta(tuple(BN_MODES)), help="with --devices: statistics over the global batch (sync) "
                   "or each device's shard (local)")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Options of a single training run (run, compare): device, dtype, data, length, execution, lab overrides."""
    _add_device(p)
    _add_data(p)
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, help="override the lab's seed")
    g.add_argument("--log-every", type=positive_int, help="log the loss every N steps (1: every step; default: "
                   "the lab's)")
    g.add_argument("--execution", type=_one_of(_executions(), "execution"), metavar=_meta(_executions()),
                   help="how the backend runs its steps (default: the backend's first): JAX fused (lax.scan) or "
                   "per_step; torch eager, compiled (torch.compile) or cuda_graph (GPU); torch's old fused and "
                   "per_step spellings run eager")
    _add_length(p, "stop after this many steps", "epochs of a minibatch lab (default: the lab's)")
    g = p.add_argument_group("lab overrides (default: the lab's declaration)")
    g.add_argument("--lr", type=float, help="learning rate (positive, finite)")
    g.add_argument("--optimizer", dest="optimizer_name", type=_one_of(OPTIMIZERS, "optimizer"),
                   metavar=_meta(OPTIMIZERS), help="optimizer (torch's default settings)")
    g.add_argument("--activation", type=_one_of(ACTIVATIONS, "activation"), metavar=_meta(ACTIVATIONS),
                   help="hidden-layer activation")
    g.add_argument("--weight-init", dest="weight_init", type=_one_of(INITS, "weight init"), metavar=_meta(INITS),
                   help="weight initialisation scheme")
    g.add_argument("--dropout", type=float, help="dropout rate of the hidden layers, in [0, 1)")
    g.add_argument("--batch-size", type=positive_int, help="minibatch size (MNIST labs)")


# ------------------------------------------------------------------------------------------- subcommands


EXIT_HELP = {  # the exit statuses of the commands that judge, as ``diff``'s: scripts and CI read them
    "compare": "exit status: 0 same (same math, within rounding noise, or not judged: no check found a "
               "difference); 1 differs (a tier, or with --weights native the native init, found one; or beyond "
               "rounding noise); 2 bad input (one error: line). The JSON's verdict_kind says which.",
    "report": "exit status: 0 every lab ran and no verdict differs; 1 a lab failed, or a verdict is differs or "
              "beyond rounding noise; 2 bad input (one error: line); 130 interrupted (the finished labs kept).",
    "selfcheck": "exit status: 0 every planted bug caught and no false alarm; 1 a bug missed or a control failed; "
                 "2 bad input (one error: line).",
}


def _sub(sub: Any, name: str, func: Callable[[argparse.Namespace], int], help_text: str,
         description: str | None = None) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=description or help_text, epilog=EXIT_HELP.get(name))
    p.set_defaults(func=func)
    return p


def _add_run(sub: Any) -> None:
    from harness.commands import cmd_run

    p = _sub(sub, "run", cmd_run, "train one lab in one framework")
    p.add_argument("lab", help="a lab name (see `dlzta list`)")
    names = backends.names()
    p.add_argument("--framework", required=True, type=_one_of(names, "framework"), metavar=_meta(names),
                   help="the backend to train in")
    _add_weights(p, "native")
    _add_masks(p)
    _add_output(p, "write the result as JSON (every logged step)", "only the summary lines")
    add_run_options(p)
    _add_parallel(p)


COMPARE_HELP = """Train one lab on two sides from the same initial weights and batches, and say whether they compute the
same thing. A side is BACKEND[:DEVICE][:EXECUTION][:DTYPE], e.g. torch, torch:compiled, jax:gpu, jax:float64
(default: the first two registered backends as --device/--execution/--dtype say). The exact tier always
retrains both in float64 from the same weights, batches and dropout masks and names the first step and tensor
that part; float32, mixed-dtype and own-mask (--masks own) comparisons are also judged statistically against
an ensemble of one-ulp twins. Dropout masks are shared by default."""


def _add_compare(sub: Any) -> None:
    from harness.commands import cmd_compare

    p = _sub(sub, "compare", cmd_compare, "train one lab in two run configurations from the same weights; parity "
             "tiers and verdict", COMPARE_HELP)
    p.add_argument("lab", help="a lab name (see `dlzta list`)")
    g = p.add_argument_group("sides (BACKEND[:DEVICE][:EXECUTION][:DTYPE]; a field left out: --device, --execution, "
                             "--dtype)")
    g.add_argument("--a", dest="side_a", metavar="CONFIG", help="first side (default: the first registered backend)")
    g.add_argument("--b", dest="side_b", metavar="CONFIG", help="second side (default: the second)")
    g = p.add_argument_group("parity")
    g.add_argument("--threshold", type=float, default=1e-4, help="relative difference reported as the run's first "
                   "divergence (figures only; the tiers judge)")
    g.add_argument("--no-noise", action="store_true", help="skip the statistical tier (float32/own masks)")
    g.add_argument("--no-exact", action="store_true", help="skip the exact (float64) tier")
    g.add_argument("--exact-steps", type=positive_int, help="the exact tier's window (default: the whole run for "
                   "XOR labs, 200 steps for MNIST, fewer for the largest nets)")
    g.add_argument("--trace-steps", type=positive_int, default=2, help="steps from the start whose gradients, "
                   "updates, weights and state the exact tier compares tensor by tensor (at most 1000)")
    g.add_argument("--referee", default="auto", type=_one_of(("auto", "always", "never"), "referee"),
                   metavar="{auto,always,never}", help="the float64 referee backend in the exact tier: in its "
                   "traces and on a failure (auto), also over every window (always), or not at all")
    _add_output(p, "write both runs, the figures, the tiers and the verdict as JSON", "no progress line on stderr "
                "(shown only on a terminal)")
    g.add_argument("--weights", default="shared", type=_one_of(WEIGHTS, "weights"), metavar=_meta(WEIGHTS),
                   help="native: also test each side's own initial draw against the declared distributions "
                   "(harness.parity.initcheck); both sides still train from shared weights")
    _add_masks(p)
    p.set_defaults(mask_mode="shared")  # compare: shared dropout masks unless --masks own (judged statistically)
    add_run_options(p)
    _add_parallel(p)


def _add_reproduce(sub: Any) -> None:
    from harness.reproduce import __doc__ as doc
    from harness.reproduce import cmd_reproduce

    p = _sub(sub, "reproduce", cmd_reproduce, "each lab in every framework with its own settings, beside the "
             "course's printed numbers", (doc or "").split("\n\n")[0])
    p.add_argument("--labs", type=lab_list, default=GROUPS["mnist"], metavar="LIST",
                   help="comma-separated lab names or groups (xor, mnist, all); default: mnist")
    _add_frameworks(p, "frameworks to run")
    _add_data(p)
    _add_length(p, "cap every lab at this many steps (quick looks)", "epochs of the minibatch labs (default: "
                "each lab's own)")
    _add_weights(p, "shared")
    _add_masks(p)
    _add_device(p)
    p.add_argument("--repeats", type=positive_int, default=1, help="runs per framework, the extra ones from the "
                   "shared weights nudged by 1, 2, ... ulps: the spread of float32 rounding noise")
    _add_threads(p)
    _add_output(p, "write every run and the table as JSON", "print only the table")


def _add_bench(sub: Any) -> None:
    from harness.bench import INJECTIONS, MIN_THRESHOLD, SUITES
    from harness.bench.scaling import cmd_bench, devices_arg
    from harness.parallel import BN_MODES

    p = _sub(sub, "bench", cmd_bench, "step-throughput benchmarks against the machine's matmul peak; regression "
             "gate", "Time training steps of the labs in each framework and mode (compile and warm-up apart, "
             "blocks of steps ended by a device sync), against the float32 matmul peak each framework measures in "
             "the same run. --compare gates against a baseline results file: exit 1 on a regression.")
    p.add_argument("labs", nargs="*", type=lab_list, action=_LabsAction, default=[],
                   help="labs or groups to time (xor, mnist, all; default: the suite's)")
    p.add_argument("--suite", choices=tuple(SUITES), default="ci",
                   help="ci: xor_wide_deep and mnist_dropout, about a minute; full: every MLP lab and mode")
    _add_frameworks(p, "frameworks to time")
    p.add_argument("--devices", type=devices_arg, default=("cpu",), metavar="LIST",
                   help=f"comma-separated, from {', '.join(backends.DEVICES)}; device counts (1,2,4; gpu,1,2) time "
                   "data-parallel training at each count instead: scaling figures (docs/scaling.md)")
    p.add_argument("--batch-norm", default="sync", choices=tuple(BN_MODES), help="with device counts: batch-norm "
                   "statistics over the global batch or each device's shard")
    p.add_argument("--weak-scaling", action="store_true", help="with device counts: each device keeps the lab's "
                   "batch (default: the global batch is split)")
    p.add_argument("--modes", type=name_list(_executions(), "mode"), metavar="LIST",
                   help=f"comma-separated, from {', '.join(_executions())} (default: the suite's)")
    g = p.add_argument_group("timing protocol")
    g.add_argument("--block-steps", type=positive_int,
                   help="steps per timed block (default 1000 XOR, 10000 for JAX fused XOR, 20 MNIST)")
    g.add_argument("--blocks", type=positive_int, help="timed blocks (default: the suite's)")
    g.add_argument("--warmup-blocks", type=int, help="untimed blocks after compiling (default: the suite's)")
    g.add_argument("--fuse-steps", type=positive_int,
                   help="steps per fused program (default: JAX a block; torch 10 XOR, 1 MNIST)")
    g.add_argument("--threads", type=positive_int, help="torch threads (default: 1 for XOR, every core for MNIST)")
    g.add_argument("--overhead-rounds", type=int, help="rounds of the harness-vs-bare-loop check (0: skip)")
    g.add_argument("--batch-size", type=positive_int, help="override the labs' batch size")
    g.add_argument("--peak-repeats", type=positive_int, default=20, help="matmuls timed for each peak measurement")
    p.add_argument("--data", default="mnist-5k", help=DATA_HELP)
    g = p.add_argument_group("output and gate")
    g.add_argument("--out", help="write every figure as JSON")
    g.add_argument("--github-action", metavar="PREFIX",
                   help="also write PREFIX-smaller-is-better.json and PREFIX-bigger-is-better.json "
                   "(github-action-benchmark's customSmallerIsBetter / customBiggerIsBetter)")
    g.add_argument("--markdown", metavar="FILE", help="also write the figures as markdown tables")
    g.add_argument("--targets", action="store_true",
                   help="also check the project's development targets (docs/benchmarks.md) against the figures")
    g.add_argument("--compare", metavar="BASELINE", help="gate against a results file: exit 1 on a regression")
    g.add_argument("--quiet", action="store_true", help="no progress line on stderr (shown only on a terminal); "
                   "the figures are printed all the same")
    g.add_argument("--threshold", type=float, default=MIN_THRESHOLD,
                   help="smallest relative drop that fails the gate; the noise of both runs widens it")
    g.add_argument("--retries", type=int, default=3, help="measure a suspected regression again")
    g.add_argument("--inject", choices=INJECTIONS,
                   help="testing the gate: read the loss back after every dispatch (a deliberate slowdown)")


def _add_report(sub: Any) -> None:
    from harness.report import cmd_report

    p = _sub(sub, "report", cmd_report, "every lab in every framework: comparison report with plots (the main "
             "job)", "Run the labs in every framework from shared weights, compare the trajectories, time them "
             "and write OUT/report.md, report.html, results.json and plots/.")
    p.add_argument("--labs", type=lab_list, default=tuple(LABS), metavar="LIST",
                   help="comma-separated lab names or groups (xor, mnist, all); default: all")
    _add_frameworks(p, "frameworks to run (one: no comparison)")
    _add_data(p)
    _add_device(p)
    _add_length(p, "cap every lab at this many steps (quick looks, tests)", "epochs of the MNIST labs (default: "
                "each lab's own)")
    g = p.add_argument_group("comparison")
    g.add_argument("--threshold", type=float, default=1e-4, help="relative difference reported as a run's first "
                   "divergence (figures only; the tiers judge)")
    g.add_argument("--no-noise", dest="noise", action="store_false", help="skip the statistical tier (the one-ulp "
                   "twin ensembles): float32 runs are then not judged; the exact float64 tier still runs")
    g.add_argument("--no-init-study", dest="init_study", action="store_false",
                   help="skip the weight-initialisation comparison")
    g.add_argument("--init-steps", type=positive_int, default=200, help="steps of each initialisation run")
    _add_threads(p)
    g = p.add_argument_group("output")
    g.add_argument("--out", default="report", help="output folder")
    g.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="reuse labs already in OUT/labs/ with the same options (default: yes)")
    g.add_argument("--no-html", dest="html", action="store_false", help="skip report.html")
    g.add_argument("--quiet", action="store_true", help="print only the final summary (CI logs)")


def _add_selfcheck(sub: Any) -> None:
    from harness.selfcheck.run import cmd_selfcheck

    p = _sub(sub, "selfcheck", cmd_selfcheck, "the parity checks' own test on this device and dtype: every planted "
             "porting bug must be caught, correct code must pass", "Inject each planted porting bug of the chosen "
             "backends (each backend's mutations.py) one at a time, judge it by the check it belongs to (exact, "
             "statistical, native init) on --device in --dtype, and the same settings unmutated as false-alarm "
             "controls. Exit 0 when every bug is caught and no control fails, 1 otherwise.")
    _add_frameworks(p, "backends whose bugs are planted (the first two are compared)")
    _add_device(p)
    p.add_argument("--only", metavar="TEXT", help="only the mutations whose name contains TEXT")
    _add_threads(p)
    _add_output(p, "write the record as JSON", "only the closing line")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    from harness.commands import cmd_list

    parser = _Parser(prog="dlzta", description="Deep Learning Zero To All (season 2, part 2) labs in "
                     f"{', '.join(map(backends.label, backends.names()))}: run, compare, benchmark and report.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _sub(sub, "list", cmd_list, "every lab, one line each")
    for add in (_add_run, _add_compare, _add_reproduce, _add_bench, _add_report, _add_selfcheck):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:  # bare ``dlzta``: the help, as ``pip`` does
            parser.print_help()
            return 0
        return args.func(args)
    except USER_ERRORS as exc:
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
