"""Compare everything a run produces, not the training loss alone.

A *quantity* is one thing both sides produce, as a series of points: the training loss at every step, each
evaluation set's loss, accuracy and raw outputs at every evaluation, and every final parameter and batch-norm
running statistic (one point, at the last step); the companion model's under ``companion/``. Each point carries
its step and the absolute and relative difference (see :mod:`harness.parity.divergence`); accuracies are
compared as plain differences of fractions. :func:`figures` sums a quantity up against a tolerance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harness.backend import RunSpec, TrainResult
from harness.parity.divergence import first_over, norm, rel_series, tensor_diff
from harness.run.metrics import evaluate
from harness.run.runner import Prepared


@dataclass
class Quantity:
    """The points of one compared quantity: ``steps[i]`` (a step index for the training loss, an update count
    for evaluations and final tensors), its absolute and relative differences, and ``floor``, the least
    tolerance that makes sense for it (one example's worth for an accuracy)."""

    steps: np.ndarray
    abs: np.ndarray
    rel: np.ndarray
    floor: float = 0.0


def _points(steps: Sequence[int], pairs: Sequence[tuple[float, float]], floor: float = 0.0) -> Quantity:
    arr = np.asarray(pairs, np.float64).reshape(-1, 2)
    return Quantity(np.asarray(steps, np.int64), arr[:, 0], arr[:, 1], floor)


def _accuracy(value: float | dict) -> np.ndarray:
    return np.asarray(list(value.values()) if isinstance(value, dict) else [value], np.float64)


def _evaluations(prepared: Prepared, a: TrainResult, b: TrainResult) -> dict[str, Quantity]:
    """Loss, accuracy and outputs of every evaluation set, at every evaluation both sides made."""
    lab = prepared.lab
    done = sorted(set(a.outputs) & set(b.outputs))
    out: dict[str, Quantity] = {}
    for name, targets in prepared.eval_targets.items():
        rows: dict[str, list] = {"loss": [], "accuracy": [], "outputs": []}
        for step in done:
            oa, ob = a.outputs[step][name], b.outputs[step][name]
            ma, mb = evaluate(lab.task, lab.loss, oa, targets), evaluate(lab.task, lab.loss, ob, targets)
            if "loss" in ma:
                rows["loss"].append(tuple(x[0] for x in rel_series([ma["loss"]], [mb["loss"]])))
            gap = float(np.abs(_accuracy(ma["accuracy"]) - _accuracy(mb["accuracy"])).max())
            rows["accuracy"].append((gap, gap))
            rows["outputs"].append(tensor_diff(oa, ob))
        one_example = 1.0 / max(len(targets), 1)
        for what, pairs in rows.items():
            if pairs:
                floor = 1.5 * one_example if what == "accuracy" else 0.0  # a near-tie may flip one example
                out[f"eval/{name}/{what}"] = _points(done, pairs, floor)
    return out


def _finals(kind: str, a: dict, b: dict, step: int, initial: dict | None) -> dict[str, Quantity]:
    """Final tensors, each relative to at least its initial norm (weights that collapse towards zero, as a
    perceptron's on XOR, are not judged against their own vanishing size)."""
    out = {}
    for key in sorted(set(a) | set(b)):
        scale = norm(initial[key]) if initial and key in initial else 0.0
        pair = tensor_diff(a[key], b[key], scale) if key in a and key in b else (float("nan"), float("nan"))
        out[f"{kind}/{key}"] = _points([step], [pair])
    return out


def measure_one(prepared: Prepared, a: TrainResult, b: TrainResult, spec: RunSpec | None = None) -> dict[str, Quantity]:
    """Every quantity of one model trained on both sides (``spec``: the run's, for the initial weights)."""
    n = min(len(a.losses), len(b.losses))
    abs_diff, rel = rel_series(a.losses[:n], b.losses[:n])
    out = {"loss": Quantity(np.arange(n), abs_diff, rel)}
    out.update(_evaluations(prepared, a, b))
    out.update(_finals("params", a.params, b.params, n, spec.params if spec else None))
    out.update(_finals("state", a.state, b.state, n, spec.state if spec else None))
    out.update(_pretraining(a, b, spec))
    return out


def _pretraining(a: TrainResult, b: TrainResult, spec: RunSpec | None) -> dict[str, Quantity]:
    """RBM pre-training: each RBM's reconstruction error at every CD step (``pretrain/rbm0/recon``), and its
    final weights (``pretrain/rbm0/kernel``, at its step count)."""
    out = {}
    for i, (ra, rb) in enumerate(zip(a.pretrain_recon, b.pretrain_recon)):
        n = min(len(ra), len(rb))
        abs_diff, rel = rel_series(ra[:n], rb[:n])
        out[f"pretrain/rbm{i}/recon"] = Quantity(np.arange(n), abs_diff, rel)
    if a.pretrain_recon and (a.pretrain_params or b.pretrain_params):
        out.update(_finals("pretrain", a.pretrain_params, b.pretrain_params, len(a.pretrain_recon[0]),
                           spec.params if spec else None))
    return out


def measure(prepared: Prepared, a: Sequence[TrainResult], b: Sequence[TrainResult],
            specs: Sequence[RunSpec] | None = None) -> dict[str, Quantity]:
    """Every quantity of the main model and (``companion/...``) of its companion (``specs``: their runs', for
    the initial weights; default: ``prepared``'s)."""
    specs = specs or [s for s in (prepared.spec, prepared.companion) if s is not None]
    out = measure_one(prepared, a[0], b[0], specs[0])
    if len(a) > 1 and len(b) > 1:
        out.update({f"companion/{k}": v for k, v in measure_one(prepared, a[1], b[1], specs[1]).items()})
    return out


def _max(values: np.ndarray) -> float:
    """Largest value; NaN if any is not finite (a diverged side), 0 for none."""
    if not len(values):
        return 0.0
    return float(values.max()) if np.isfinite(values).all() else float("nan")


def figures(q: Quantity, tolerance: np.ndarray | float, judged: int | None = None) -> dict:
    """Largest absolute and relative difference of ``q`` (over every point, and over the judged ones), and the
    first step whose relative difference passes ``tolerance`` (per point, or one for all), looking at the first
    ``judged`` points only (None: all)."""
    tol = np.maximum(np.broadcast_to(np.asarray(tolerance, np.float64), q.rel.shape), q.floor)
    n = len(q.rel) if judged is None else judged
    first = first_over(q.rel[:n], tol[:n])
    return {"max_abs_diff": _max(q.abs), "max_rel_diff": _max(q.rel), "max_rel_judged": _max(q.rel[:n]),
            "first_step_over": None if first is None else int(q.steps[first]),
            "rel_at_first": None if first is None else float(q.rel[first]),
            "tolerance": float(tol[first] if first is not None else (tol[:n].max() if n else 0.0)),
            "points": len(q.rel), "judged_points": n}
