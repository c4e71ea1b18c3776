"""The shared parts of the command line: value parsers, the parser class (one-line errors) and the option groups
several subcommands take (data, device and dtype, run length, frameworks, threads, output, weights, masks, data
parallel, the run options of ``run``/``compare``). Each subcommand declares its own options in
:mod:`harness.commands.cli`."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from harness import backend as backends
from harness.commands.bounds import count, threads
from harness.errors import LabError, UsageError
from harness.labs import ACTIVATIONS, INITS, OPTIMIZERS, lab_names
from harness.precision import PRECISIONS
from harness.run.runner import MASK_MODES, WEIGHTS, RunOptions

DATA_HELP = "MNIST source: auto, mnist-5k, tfds, tfds:NAME or idx:DIR"


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown after each help text; a None default (the lab's or the backend's own) is not shown."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default is None or isinstance(action.default, bool):
            return action.help or ""
        return super()._get_help_string(action) or ""


class Parser(argparse.ArgumentParser):
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


def one_of(choices: tuple[str, ...], what: str) -> Callable[[str], str]:
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


def precision_labs(text: str) -> tuple[str, ...]:
    """``report --precision-labs``: comma-separated lab names and groups, or ``none`` (no precision section)."""
    return () if text.strip() == "none" else lab_list(text)


class LabsAction(argparse.Action):
    """Positional lab lists (``bench xor mnist_softmax``): each word a name, a group or a comma list, flattened."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        names = [n for v in values for n in v]
        setattr(namespace, self.dest, list(dict.fromkeys(names)))


def metavar(choices: Sequence[str]) -> str:
    return "{" + ",".join(choices) + "}"


def executions() -> tuple[str, ...]:
    """Every execution mode of the registered backends (``harness.backend.all_executions``)."""
    return backends.all_executions()


# ----------------------------------------------------------------------------------------- option groups


def add_data(p: argparse.ArgumentParser, default: str = "auto") -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", default=default, help=DATA_HELP)
    g.add_argument("--data-dir", help="TFDS data directory (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")


def add_device(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("device and precision")
    g.add_argument("--device", default="cpu", type=one_of(backends.DEVICES, "device"),
                   metavar=metavar(backends.DEVICES), help="where to train")
    g.add_argument("--dtype", default="float32", type=one_of(backends.DTYPES, "dtype"),
                   metavar=metavar(backends.DTYPES), help="float64: x64 in JAX, double in torch")


def add_precision(p: argparse.ArgumentParser, help_text: str) -> None:
    """``--precision``: a policy of ``harness.precision`` (docs/precision.md); float32/float64 are the dtypes'."""
    p.add_argument("--precision", type=one_of(PRECISIONS, "precision"), metavar=metavar(PRECISIONS), help=help_text)


def add_length(p: argparse.ArgumentParser, steps: str, epochs: str) -> None:
    g = p.add_argument_group("run length")
    g.add_argument("--steps", type=count("steps"), help=steps)
    g.add_argument("--epochs", type=count("epochs"), help=epochs)


def add_frameworks(p: argparse.ArgumentParser, help_text: str, default: tuple[str, ...] | None = None) -> None:
    names = backends.names()
    p.add_argument("--frameworks", type=name_list(names, "framework"), metavar="LIST",
                   default=default if default is not None else backends.names(include_referees=False),
                   help=f"{help_text}; comma-separated, from {', '.join(names)}")


def add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", default="auto", type=threads,
                   help="intra-op threads of backends that set them per task: auto (1 for XOR, every core for "
                   "MNIST; 1 on a busy machine) or a count up to 1024")


def add_output(p: argparse.ArgumentParser, out: str, quiet: str, default: str | None = None) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--out", default=default, help=out)
    g.add_argument("--quiet", action="store_true", help=quiet)


def add_weights(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--weights", default=default, type=one_of(WEIGHTS, "weight source"),
                   metavar=metavar(WEIGHTS), help="initial weights: native (each framework draws its own) or shared "
                   "(the harness draws them once for all)")


def add_masks(p: argparse.ArgumentParser) -> None:
    p.add_argument("--masks", dest="mask_mode", default="own", type=one_of(MASK_MODES, "masks"),
                   metavar=metavar(MASK_MODES), help="dropout masks: own (each framework draws) or shared (the "
                   "harness draws them once for all)")


def add_parallel(p: argparse.ArgumentParser) -> None:
    from harness.run.parallel import BN_MODES

    g = p.add_argument_group("data parallel (harness.run.parallel; docs/scaling.md)")
    g.add_argument("--devices", type=count("devices"), default=1, help="split each global batch over N devices")
    g.add_argument("--batch-norm", default="sync", type=one_of(tuple(BN_MODES), "batch-norm mode"),
                   metavar=metavar(tuple(BN_MODES)), help="with --devices: statistics over the global batch (sync) "
                   "or each device's shard (local)")


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Options of a single training run (run, compare): device, dtype, data, length, execution, lab overrides."""
    add_device(p)
    add_data(p)
    g = p.add_argument_group("run")
    g.add_argument("--seed", type=int, help="override the lab's seed")
    g.add_argument("--log-every", type=count("log-every"), help="log the loss every N steps (1: every step; default: "
                   "the lab's)")
    g.add_argument("--execution", type=one_of(executions(), "execution"), metavar=metavar(executions()),
                   help="how the backend runs its steps (default: the backend's first): " + "; ".join(
                       f"{n} {', '.join(backends.info(n).executions)}" for n in backends.names()))
    add_length(p, "stop after this many steps", "epochs of a minibatch lab (default: the lab's)")
    g = p.add_argument_group("lab overrides (default: the lab's declaration)")
    g.add_argument("--lr", type=float, help="learning rate (positive, finite)")
    g.add_argument("--optimizer", dest="optimizer_name", type=one_of(OPTIMIZERS, "optimizer"),
                   metavar=metavar(OPTIMIZERS), help="optimizer (torch's default settings)")
    g.add_argument("--activation", type=one_of(ACTIVATIONS, "activation"), metavar=metavar(ACTIVATIONS),
                   help="hidden-layer activation")
    g.add_argument("--weight-init", dest="weight_init", type=one_of(INITS, "weight init"), metavar=metavar(INITS),
                   help="weight initialisation scheme")
    g.add_argument("--dropout", type=float, help="dropout rate of the hidden layers, in [0, 1)")
    g.add_argument("--batch-size", type=count("batch-size"), help="minibatch size (MNIST labs)")


# Where each run option comes from: the RunOptions field and the argparse ``dest``; the lab overrides and theirs.
RUN_FIELDS = ("device", "dtype", "weights", "seed", "log_every", "steps", "execution", "data", "data_dir", "mask_mode",
              "precision")
OVERRIDES = {"lr": "lr", "optimizer_name": "optimizer_name", "activation": "activation", "init": "weight_init",
             "dropout": "dropout", "epochs": "epochs", "batch_size": "batch_size"}


def run_options(args: argparse.Namespace, **fixed: Any) -> RunOptions:
    """The one way from parsed arguments to :class:`RunOptions`: every run field and lab override the command
    declares (others keep RunOptions' defaults), then ``fixed`` on top (``weights="shared"`` for compare)."""
    given = {f: getattr(args, f) for f in RUN_FIELDS if getattr(args, f, None) is not None}
    overrides = {k: getattr(args, dest) for k, dest in OVERRIDES.items() if getattr(args, dest, None) is not None}
    return RunOptions(**{**given, "overrides": overrides, **fixed})
