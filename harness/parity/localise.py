"""Where two runs part: step by step, tensor by tensor, through each backend's ``trace``.

A trace (``<backend>.trace(spec, steps)``, e.g. ``torch_impl/probe.py``) records per step the loss before the
update, the gradients, the update (new - old parameters), and the parameters and running statistics after the
step, in the shared layout. Two traces are held against each other in that order within a step, each tensor
against its own tolerance: ``max(FLOOR, FACTOR x`` the difference a float64 one-ulp twin makes to the same
tensor ``)``. A tensor's difference is relative to the largest norm it has had so far (a gradient that shrinks
towards zero at a plateau, or weights that collapse to zero, are not judged against their own vanishing size).
The first step and kind that parts, and its worst tensor, is the answer ("dense2/kernel update at step 0"); a
referee's trace, where there is one, names the side that is off (two against one).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from harness.parity.divergence import norm, tensor_diff

FLOOR = 1e-10  # the least tolerance on any relative difference (float64 runs agree to ~1e-15..1e-12)
FACTOR = 1e4  # times the float64 one-ulp twin's own difference
KINDS = ("loss", "grads", "updates", "params", "state")  # in the order a step computes them
WORDS = {"loss": "training loss", "grads": "gradient", "updates": "update", "params": "after the step",
         "state": "running statistic, after the step"}
Scales = dict[tuple[str, str], float]


def tolerance(twin_rel: float | np.ndarray) -> float | np.ndarray:
    """The tolerance a difference is held to, from the twin's difference on the same quantity (NaN: no bound)."""
    twin = np.nan_to_num(np.asarray(twin_rel, np.float64), nan=np.inf, posinf=np.inf)
    out = np.maximum(FLOOR, FACTOR * twin)
    return float(out) if out.ndim == 0 else out


def _tensors(record: dict, kind: str) -> dict[str, np.ndarray]:
    return {"loss": np.asarray(record["loss"])} if kind == "loss" else record.get(kind, {})


def _rel(a: dict, b: dict, key: str, scale: float = 0.0) -> float:
    if key not in a or key not in b:
        return math.nan
    if a[key].ndim == 0:
        x, y = float(a[key]), float(b[key])
        return 0.0 if x == y else abs(x - y) / max(abs(x), abs(y)) if math.isfinite(x - y) else math.nan
    return tensor_diff(a[key], b[key], scale)[1]


def grow(scales: Scales, record: dict) -> Scales:
    """``scales`` (the largest norm of every tensor so far) updated with one step's record."""
    for kind in KINDS[1:]:
        for key, value in _tensors(record, kind).items():
            scales[kind, key] = max(scales.get((kind, key), 0.0), norm(value))
    return scales


def describe(kind: str, tensor: str, step: int) -> str:
    """"dense2/kernel update", "bn0/var running statistic, after the step", "training loss", ... at a step."""
    if kind == "loss":
        return f"training loss at step {step}"
    return f"{tensor} {WORDS[kind]} at step {step}".replace(" after the step at step", " after step")


def compare_step(a: dict, b: dict, base: dict, twin: dict, kind: str, scales: Scales,
                 every: bool = False) -> list[dict]:
    """The tensors of ``kind`` over their tolerance (``every``: all of them) at one step of traces ``a`` and
    ``b``, worst first (relative to its tolerance); the tolerance from ``base`` against its one-ulp ``twin``;
    ``scales``: see :func:`grow`."""
    ta, tb, t0, t1 = (_tensors(r, kind) for r in (a, b, base, twin))
    out = []
    for key in sorted(set(ta) | set(tb)):
        scale = scales.get((kind, key), 0.0)
        rel, tol = _rel(ta, tb, key, scale), tolerance(_rel(t0, t1, key, scale))
        if every or not rel <= tol:
            out.append({"tensor": key, "rel": rel, "tolerance": tol,
                        "ratio": math.inf if not math.isfinite(rel) else rel / tol})
    return sorted(out, key=lambda o: -o["ratio"])


def localise(a: Sequence[dict], b: Sequence[dict], base: Sequence[dict], twin: Sequence[dict]) -> dict | None:
    """The first step and kind of tensor where traces ``a`` and ``b`` part, its worst tensor and the others
    over tolerance with it; None where they agree over every traced step."""
    scales: Scales = {}
    for step in range(min(len(a), len(b), len(base), len(twin))):
        grow(scales, base[step])
        for kind in KINDS:
            over = compare_step(a[step], b[step], base[step], twin[step], kind, scales)
            if over:
                worst = over[0]
                return {"step": step, "kind": kind, "tensor": worst["tensor"], "rel": worst["rel"],
                        "tolerance": worst["tolerance"], "what": describe(kind, worst["tensor"], step),
                        "also": [o["tensor"] for o in over[1:]]}
    return None


def closest(a: Sequence[dict], b: Sequence[dict], base: Sequence[dict], twin: Sequence[dict]) -> dict:
    """The traced tensor that came nearest its tolerance, and its share of it (the margin of correct code)."""
    scales: Scales = {}
    best = {"what": None, "rel": 0.0, "share": 0.0}
    for step in range(min(len(a), len(b), len(base), len(twin))):
        grow(scales, base[step])
        for kind in KINDS:
            for o in compare_step(a[step], b[step], base[step], twin[step], kind, scales, every=True)[:1]:
                if not o["ratio"] <= best["share"]:
                    best = {"what": describe(kind, o["tensor"], step), "rel": o["rel"], "share": o["ratio"]}
    return best


def agrees_at(a: Sequence[dict], ref: Sequence[dict], base: Sequence[dict], twin: Sequence[dict],
              at: dict) -> bool:
    """Whether trace ``a`` agrees with the referee's ``ref`` on the tensor and step ``at`` names."""
    step = at["step"]
    scales: Scales = {}
    for record in base[:step + 1]:
        grow(scales, record)
    over = compare_step(a[step], ref[step], base[step], twin[step], at["kind"], scales)
    return all(o["tensor"] != at["tensor"] for o in over)


def side_text(off: str | None, other: str | None, referee: str) -> str:
    """"; jax is off (the numpy referee sides with torch)", or "...sides with neither"."""
    who = referee if "referee" in referee else f"the {referee} referee"
    if off is None:
        return f"; {who} sides with neither"
    return f"; {off} is off ({who} sides with {other})"
