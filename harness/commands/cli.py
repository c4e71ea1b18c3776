"""The command line: ``dlzta`` or ``python -m harness``. Each subcommand declares its own options here; the
shared ones come in groups (:mod:`harness.commands.options`: data, device, dtype, steps/epochs, frameworks,
threads, output); lists are comma-separated everywhere, and lab lists take the groups ``xor``, ``mnist`` and
``all``. The command functions live beside the code they drive and are imported only when their subcommand runs.

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
from harness.commands import interrupts
from harness.commands.bounds import count, threshold
from harness.commands.options import (
    DATA_HELP,
    WEIGHTS,
    LabsAction,
    Parser,
    add_data,
    add_device,
    add_frameworks,
    add_length,
    add_masks,
    add_output,
    add_parallel,
    add_precision,
    add_run_options,
    add_threads,
    add_weights,
    executions,
    lab_list,
    metavar,
    name_list,
    one_of,
    precision_labs,
)
from harness.errors import EXIT_USAGE, USER_ERRORS, UsageError
from harness.labs import GROUPS, LABS

__all__ = ["EXIT_USAGE", "UsageError", "build_parser", "main", "main_exit"]


# ------------------------------------------------------------------------------------------- subcommands


EXIT_HELP = {  # the exit statuses of the commands that judge, as ``diff``'s: scripts and CI read them
    "compare": "exit status: 0 same (same math, within rounding noise, or not judged: no check found a "
               "difference); 1 differs (a tier, or with --weights native the native init, found one; or beyond "
               "rounding noise); 2 bad input (one error: line). The JSON's verdict_kind says which.",
    "report": "exit status: 0 every lab ran and no verdict differs; 1 a lab failed, or a verdict is differs or "
              "beyond rounding noise; 2 bad input (one error: line); 130 interrupted, 143 terminated (the "
              "finished labs kept).",
    "selfcheck": "exit status: 0 every planted bug caught and no false alarm; 1 a bug missed or a control failed; "
                 "2 bad input (one error: line).",
}


def _sub(sub: Any, name: str, func: Callable[[argparse.Namespace], int], help_text: str,
         description: str | None = None) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_text, description=description or help_text, epilog=EXIT_HELP.get(name))
    p.set_defaults(func=func)
    return p


def _add_run(sub: Any) -> None:
    from harness.commands.core import cmd_run

    p = _sub(sub, "run", cmd_run, "train one lab in one framework")
    p.add_argument("lab", nargs="?", help="a lab name (see `dlzta list`)")
    names = backends.names()
    p.add_argument("--framework", type=one_of(names, "framework"), metavar=metavar(names),
                   help="the backend to train in (required, unless --config gives it)")
    p.add_argument("--config", metavar="FILE.json", help="rerun a run record (`run --out`; its `config`) or a config "
                   "object (lab, framework, options); options given here win")
    add_weights(p, "native")
    add_masks(p)
    add_output(p, "write the result as JSON (every logged step)", "only the summary lines")
    add_run_options(p)
    add_precision(p, "train under a precision policy (docs/precision.md): bfloat16 (everything bf16), "
                  "mixed_bfloat16 / mixed_float16 (float32 master weights, low-precision compute; float16 with a "
                  "dynamic loss scale); default: the dtype's own")
    add_parallel(p)


COMPARE_HELP = """Train one lab on two sides from the same initial weights and batches, and say whether they compute the
same thing. A side is BACKEND[:DEVICE][:EXECUTION][:DTYPE], e.g. torch, torch:compiled, jax:gpu, jax:float64
(default: the first two registered backends as --device/--execution/--dtype say). The exact tier always
retrains both in float64 from the same weights, batches and dropout masks and names the first step and tensor
that part; float32, mixed-dtype and own-mask (--masks own) comparisons are also judged statistically against
an ensemble of one-ulp twins. Dropout masks are shared by default."""


def _add_compare(sub: Any) -> None:
    from harness.commands.core import cmd_compare

    p = _sub(sub, "compare", cmd_compare, "train one lab in two run configurations from the same weights; parity "
             "tiers and verdict", COMPARE_HELP)
    p.add_argument("lab", help="a lab name (see `dlzta list`)")
    g = p.add_argument_group("sides (BACKEND[:DEVICE][:EXECUTION][:DTYPE]; a field left out: --device, --execution, "
                             "--dtype)")
    add_precision(g, "a precision policy (docs/precision.md); a reduced one (bfloat16, mixed_*) is judged by the "
                  "precision tier instead of the dtype's tiers, and a side may carry its own (jax:bfloat16)")
    g.add_argument("--a", dest="side_a", metavar="CONFIG", help="first side (default: the first registered backend)")
    g.add_argument("--b", dest="side_b", metavar="CONFIG", help="second side (default: the second)")
    g = p.add_argument_group("parity")
    g.add_argument("--threshold", type=threshold(), default=1e-4, help="relative difference reported as the run's "
                   "first divergence (figures only; the tiers judge)")
    g.add_argument("--no-noise", action="store_true", help="skip the statistical tier (float32/own masks)")
    g.add_argument("--no-exact", action="store_true", help="skip the exact (float64) tier")
    g.add_argument("--exact-steps", type=count("exact-steps"), help="the exact tier's window (default: the whole run "
                   "for XOR labs, 200 steps for MNIST, fewer for the largest nets)")
    g.add_argument("--trace-steps", type=count("trace-steps"), default=2, help="steps from the start whose gradients, "
                   "updates, weights and state the exact tier compares tensor by tensor (at most 1000)")
    g.add_argument("--referee", default="auto", type=one_of(("auto", "always", "never"), "referee"),
                   metavar="{auto,always,never}", help="the float64 referee backend in the exact tier: in its "
                   "traces and on a failure (auto), also over every window (always), or not at all")
    add_output(p, "write both runs, the figures, the tiers and the verdict as JSON", "no progress line on stderr "
                "(shown only on a terminal)")
    g.add_argument("--weights", default="shared", type=one_of(WEIGHTS, "weights"), metavar=metavar(WEIGHTS),
                   help="native: also test each side's own initial draw against the declared distributions "
                   "(harness.parity.initcheck); both sides still train from shared weights")
    add_masks(p)
    p.set_defaults(mask_mode="shared")  # compare: shared dropout masks unless --masks own (judged statistically)
    add_run_options(p)
    add_parallel(p)


def _add_reproduce(sub: Any) -> None:
    from harness.commands.reproduce import __doc__ as doc
    from harness.commands.reproduce import cmd_reproduce

    p = _sub(sub, "reproduce", cmd_reproduce, "each lab in every framework with its own settings, beside the "
             "course's printed numbers", (doc or "").split("\n\n")[0])
    p.add_argument("--labs", type=lab_list, default=GROUPS["mnist"], metavar="LIST",
                   help="comma-separated lab names or groups (xor, mnist, all); default: mnist")
    add_frameworks(p, "frameworks to run")
    add_data(p)
    add_length(p, "cap every lab at this many steps (quick looks)", "epochs of the minibatch labs (default: "
                "each lab's own)")
    add_weights(p, "shared")
    add_masks(p)
    add_device(p)
    add_precision(p, "train every run under this precision policy (docs/precision.md); default: the dtype's own")
    p.add_argument("--repeats", type=count("repeats"), default=1, help="runs per framework, the extra ones from the "
                   "shared weights nudged by 1, 2, ... ulps: the spread of float32 rounding noise")
    add_threads(p)
    add_output(p, "write every run and the table as JSON", "print only the table")


def _bench_precisions(text: str) -> tuple[str, ...]:
    from harness.bench.workloads import precision_list

    try:
        return precision_list(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_bench(sub: Any) -> None:
    from harness.bench import INJECTIONS, MIN_THRESHOLD, SUITES
    from harness.bench.scaling import devices_arg
    from harness.commands.bench import cmd_bench
    from harness.run.parallel import BN_MODES

    p = _sub(sub, "bench", cmd_bench, "step-throughput benchmarks against the machine's matmul peak; regression "
             "gate", "Time training steps of the labs in each framework and mode (compile and warm-up apart, "
             "blocks of steps ended by a device sync), in each --precision, against the matmul peak of that "
             "precision's dtype each framework measures in the same run on the same threads. --compare gates "
             "against a baseline results file: exit 1 on a regression.")
    p.add_argument("labs", nargs="*", type=lab_list, action=LabsAction, default=[],
                   help="labs or groups to time (xor, mnist, all; default: the suite's)")
    p.add_argument("--suite", choices=tuple(SUITES), default="ci",
                   help="ci: xor_wide_deep and mnist_dropout, about a minute; full: every MLP lab and mode")
    add_frameworks(p, "frameworks to time")
    p.add_argument("--devices", type=devices_arg, default=("cpu",), metavar="LIST",
                   help=f"comma-separated, from {', '.join(backends.DEVICES)}; device counts (1,2,4; gpu,1,2) time "
                   "data-parallel training at each count instead: scaling figures (docs/scaling.md)")
    p.add_argument("--batch-norm", default="sync", choices=tuple(BN_MODES), help="with device counts: batch-norm "
                   "statistics over the global batch or each device's shard")
    p.add_argument("--weak-scaling", action="store_true", help="with device counts: each device keeps the lab's "
                   "batch (default: the global batch is split)")
    p.add_argument("--modes", type=name_list(executions(), "mode"), metavar="LIST",
                   help=f"comma-separated, from {', '.join(executions())} (default: the suite's)")
    p.add_argument("--precision", type=_bench_precisions, default=("float32",), metavar="LIST",
                   help="comma-separated, from float32, bfloat16, mixed_bfloat16, mixed_float16, or all (default "
                   "float32; float32 is always timed: each precision's speed-up is over it, and its % of peak is of "
                   "its own dtype's matmul peak, measured in the same run)")
    g = p.add_argument_group("timing protocol")
    g.add_argument("--block-steps", type=count("block-steps"),
                   help="steps per timed block (default 1000 XOR, 10000 for JAX fused XOR, 20 MNIST)")
    g.add_argument("--blocks", type=count("blocks"), help="timed blocks (default: the suite's)")
    g.add_argument("--warmup-blocks", type=count("warmup-blocks"),
                   help="untimed blocks after compiling (default: the suite's)")
    g.add_argument("--fuse-steps", type=count("fuse-steps"),
                   help="steps per fused program (default: JAX a block; torch 10 XOR, 1 MNIST)")
    g.add_argument("--threads", type=count("threads"), help="intra-op threads of every framework (a pool sized at "
                   "start-up is pinned as its backend starts; default: the suite's, else 1 for XOR, every core "
                   "for MNIST)")
    g.add_argument("--overhead-rounds", type=count("overhead-rounds"),
                   help="rounds of the harness-vs-bare-loop check (0: skip)")
    g.add_argument("--batch-size", type=count("batch-size"), help="override the labs' batch size")
    g.add_argument("--peak-repeats", type=count("peak-repeats"), default=20,
                   help="matmuls timed for each peak measurement")
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
    g.add_argument("--threshold", type=threshold("bench-threshold"), default=MIN_THRESHOLD,
                   help="smallest relative drop that fails the gate; the noise of both runs widens it")
    g.add_argument("--retries", type=count("retries"), default=3, help="measure a suspected regression again")
    g.add_argument("--inject", choices=INJECTIONS,
                   help="testing the gate: read the loss back after every dispatch (a deliberate slowdown)")


def _add_report(sub: Any) -> None:
    from harness.report import cmd_report

    p = _sub(sub, "report", cmd_report, "every lab in every framework: comparison report with plots (the main "
             "job)", "Run the labs in every framework from shared weights, compare the trajectories, time them "
             "and write OUT/report.md, report.html, results.json and plots/.")
    p.add_argument("--labs", type=lab_list, default=tuple(LABS), metavar="LIST",
                   help="comma-separated lab names or groups (xor, mnist, all); default: all")
    add_frameworks(p, "frameworks to run (one: no comparison)")
    add_data(p)
    add_device(p)
    add_length(p, "cap every lab at this many steps (quick looks, tests)", "epochs of the MNIST labs (default: "
                "each lab's own)")
    g = p.add_argument_group("comparison")
    g.add_argument("--threshold", type=threshold(), default=1e-4, help="relative difference reported as a run's first "
                   "divergence (figures only; the tiers judge)")
    g.add_argument("--no-noise", dest="noise", action="store_false", help="skip the statistical tier (the one-ulp "
                   "twin ensembles): float32 runs are then not judged; the exact float64 tier still runs")
    g.add_argument("--no-init-study", dest="init_study", action="store_false",
                   help="skip the weight-initialisation comparison")
    g.add_argument("--init-steps", type=count("init-steps"), default=200, help="steps of each initialisation run")
    g.add_argument("--precision-labs", type=precision_labs, default=None, metavar="LIST",
                   help="labs of the precision section, each trained again in bfloat16, mixed_bfloat16 and "
                   "mixed_float16 beside its float32 run (docs/precision.md); none: no section (default: "
                   "mnist_batchnorm, when the job runs it)")
    add_threads(p)
    g = p.add_argument_group("output")
    g.add_argument("--out", default="report", help="output folder")
    g.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                   help="reuse labs already in OUT/labs/ with the same options (default: yes)")
    g.add_argument("--no-html", dest="html", action="store_false", help="skip report.html")
    g.add_argument("--quiet", action="store_true", help="print only the final summary (CI logs)")


def _add_selfcheck(sub: Any) -> None:
    from harness.selfcheck.run import TIERS, cmd_selfcheck

    p = _sub(sub, "selfcheck", cmd_selfcheck, "the parity checks' own test on this device and dtype: every planted "
             "porting bug must be caught, correct code must pass", "Inject each planted porting bug of the chosen "
             "backends (each backend's mutations.py) one at a time, judge it by the check it belongs to (exact, "
             "statistical, native init) on --device in --dtype, and the same settings unmutated as false-alarm "
             "controls. The precision part plants each backend's precision-placement bugs (precision.py's "
             "MUTATIONS: the loss in bfloat16, no master weights, a loss scaler that does not skip...) on one side "
             "under each reduced policy where each is a bug, judged by the precision tier (compare --precision; "
             "cpu only), which must name that side; correct code under every reduced policy is its control. Exit "
             "0 when every bug is caught (a precision bug with its side named) and no control fails, 1 otherwise.")
    add_frameworks(p, "backends whose bugs are planted (the first two are compared)")
    add_device(p)
    p.add_argument("--only", metavar="TEXT", help="only the mutations whose name contains TEXT")
    p.add_argument("--tiers", type=name_list(TIERS, "tier"), metavar="LIST", default=TIERS,
                   help=f"only the mutations these checks judge (default: all); comma-separated, from "
                   f"{', '.join(TIERS)} (precision: the precision tier's planted bugs and controls alone)")
    add_threads(p)
    add_output(p, "write the record as JSON", "only the closing line")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    from harness.commands.core import cmd_list

    parser = Parser(prog="dlzta", description="Deep Learning Zero To All (season 2, part 2) labs in "
                     f"{', '.join(map(backends.label, backends.names()))}: run, compare, benchmark and report.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    _sub(sub, "list", cmd_list, "every lab, one line each")
    for add in (_add_run, _add_compare, _add_reproduce, _add_bench, _add_report, _add_selfcheck):
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2: bad input; 130/143: stopped by SIGINT/SIGTERM, see
    :mod:`harness.commands.interrupts`)."""
    with interrupts.policy():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "config", None):  # run --config FILE
            from harness.commands.core import with_config

            args = with_config(parser, args, sys.argv[1:] if argv is None else argv)
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
        print(f"error: {interrupts.message()}", file=sys.stderr)
        return interrupts.exit_status()


def main_exit() -> None:
    """Console-script entry point: the status, then a shutdown a signal cannot turn into a traceback."""
    status = main()
    interrupts.shutting_down()
    sys.exit(status)


if __name__ == "__main__":
    main_exit()
