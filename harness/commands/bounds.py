"""The bounds of every numeric command-line option, in one table, and the argparse value parsers that enforce
them: a value outside its bounds is one ``error:`` line and exit status 2 before any work, never an overflow
deep in a framework (``torch.set_num_threads(10**20)``) or a loop that runs until killed (``--repeats 10**23``).

The bounds are fixed, not derived from this machine, so a command line means the same everywhere. They are far
above any useful value: ``--threads`` at most 1024 (torch and XLA accept more, but more intra-op threads than a
1024-core machine has only oversubscribe), ``--steps`` at most 10^8 (the longest lab runs 10,001 steps; the
batch order's memory is bounded separately), and so on in ``COUNTS``. Thresholds are finite and positive.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

MAX_THREADS = 1024

# option (without the dashes) -> (smallest, largest) integer it takes
COUNTS: dict[str, tuple[int, int]] = {
    "steps": (1, 10**8), "epochs": (1, 10**6), "log-every": (1, 10**8), "batch-size": (1, 10**7),
    "devices": (1, 1024), "exact-steps": (1, 10**8), "trace-steps": (1, 1000), "init-steps": (1, 10**8),
    "repeats": (1, 100), "threads": (1, MAX_THREADS), "block-steps": (1, 10**8), "blocks": (1, 10**6),
    "warmup-blocks": (0, 10**6), "fuse-steps": (1, 10**6), "overhead-rounds": (0, 1000), "retries": (0, 100),
    "peak-repeats": (1, 10**4),
}

# option -> (exclusive lower bound, exclusive upper bound) of a float
THRESHOLDS: dict[str, tuple[float, float]] = {
    "threshold": (0.0, math.inf),  # compare, report: a relative difference (figures only)
    "bench-threshold": (0.0, 1.0),  # bench: the smallest relative drop that fails the gate
}


def _shown(text: str) -> str:
    """A value as an error message shows it: at most 24 characters."""
    return repr(text if len(text) <= 24 else text[:21] + "...")


def count(option: str) -> Callable[[str], int]:
    """The parser of integer option ``option`` (a key of ``COUNTS``): an integer within its bounds."""
    lo, hi = COUNTS[option]

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer in {lo}..{hi}, got {_shown(text)}") from None
        if not lo <= value <= hi:
            least = "at least 1" if lo == 1 else f"in {lo}..{hi}"
            raise argparse.ArgumentTypeError(f"must be {least}{f' (at most {hi})' if lo == 1 else ''}, "
                                             f"got {_shown(text.strip())}")
        return value

    parse.__name__ = option.replace("-", "_")  # argparse names the type in "invalid ... value"
    return parse


def threads(text: str) -> str:
    """``auto`` or a thread count in 1..MAX_THREADS (kept as text: the backends read "auto")."""
    if text != "auto":
        try:
            value = int(text)
        except ValueError:
            value = 0
        if not 1 <= value <= MAX_THREADS:
            raise argparse.ArgumentTypeError(f"must be auto or a positive count (at most {MAX_THREADS}), got "
                                             f"{_shown(text)}")
        return str(value)
    return text


def threshold(option: str = "threshold") -> Callable[[str], float]:
    """The parser of float option ``option`` (a key of ``THRESHOLDS``): finite, strictly within its bounds."""
    lo, hi = THRESHOLDS[option]

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and lo < value < hi):
            within = f"between {lo:g} and {hi:g}" if math.isfinite(hi) else f"finite and above {lo:g}"
            raise argparse.ArgumentTypeError(f"must be {within}, got {_shown(text)}")
        return value

    parse.__name__ = "threshold"
    return parse
