"""Divergence figures: how far two trajectories, or two tensors, are apart.

Relative differences throughout: ``|a - b| / max(|a|, |b|)`` for scalars (0 where equal, NaN where a value is not
finite, so a NaN counts as over any tolerance), and ``||a - b|| / max(||a||, ||b||, scale)`` (Euclidean norms)
for a tensor: the difference relative to the tensor's size (``scale``: its size elsewhere, e.g. its initial
norm, for weights that collapse towards zero), so that neither its near-zero entries nor a few entries that
rounding alone moves far (Adam divides tiny gradients by tiny second moments) dominate it, while a change of
every entry by one part in a million reads as 1e-6.
"""

from __future__ import annotations

import numpy as np


def rel_series(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-point absolute and relative difference of two equally long series of scalars."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    abs_diff = np.abs(a - b)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = abs_diff / np.maximum(np.abs(a), np.abs(b))
    return abs_diff, np.where(abs_diff == 0, 0.0, rel)


def norm(a: np.ndarray) -> float:
    """Euclidean norm of every entry (no BLAS call: its thread pool stalls on a busy machine)."""
    return float(np.sqrt(np.square(np.asarray(a, np.float64)).sum()))


def tensor_diff(a: np.ndarray, b: np.ndarray, scale: float = 0.0) -> tuple[float, float]:
    """Largest absolute difference of two arrays of one shape, and their relative difference in norm, relative
    to at least ``scale`` (the tensor's size elsewhere: its initial or largest norm); NaN where either holds a
    non-finite value, or the shapes differ."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return float("nan"), float("nan")
    if a.size == 0:
        return 0.0, 0.0
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan"), float("nan")
    diff = float(np.abs(a - b).max())
    return diff, (0.0 if diff == 0 else norm(a - b) / max(norm(a), norm(b), scale))


def first_over(rel: np.ndarray, tolerance: np.ndarray | float) -> int | None:
    """Index of the first point whose relative difference is over ``tolerance`` (or not finite); None: never."""
    over = np.flatnonzero(~(np.asarray(rel) <= tolerance))
    return int(over[0]) if over.size else None


def divergence(a: np.ndarray, b: np.ndarray, threshold: float = 1e-4) -> dict:
    """Per-step absolute and relative difference of two trajectories, their maxima, the first step whose
    relative difference passes ``threshold`` (None: never), and the growth of the difference: the median
    factor per step while it climbs from 1e-12 to 1e-2 (None where it never climbs through that band)."""
    n = min(len(a), len(b))
    abs_diff, rel = rel_series(np.asarray(a)[:n], np.asarray(b)[:n])
    return {
        "steps": n,
        "abs_diff": abs_diff,
        "rel_diff": rel,
        "max_abs_diff": float(np.nanmax(abs_diff)) if n else 0.0,
        "max_rel_diff": float(np.nanmax(rel)) if n else 0.0,
        "first_divergence_step": first_over(rel, threshold),
        "growth_per_step": growth_rate(rel),
        "threshold": threshold,
    }


def growth_rate(rel: np.ndarray, low: float = 1e-12, high: float = 1e-2) -> float | None:
    """Factor by which the relative difference grows per step, fitted (least squares on log10) over the steps
    from its first rise above ``low`` until it first reaches ``high``."""
    above = np.flatnonzero(rel > low)
    if above.size == 0:
        return None
    start = above[0]
    top = np.flatnonzero(rel[start:] >= high)
    stop = start + (top[0] + 1 if top.size else len(rel) - start)
    window = np.arange(start, stop)
    window = window[rel[window] > 0]
    if window.size < 3 or not top.size:
        return None
    slope = np.polyfit(window, np.log10(rel[window]), 1)[0]
    return float(10**slope)


def public(d: dict) -> dict:
    """``d`` without its per-step arrays."""
    return {k: v for k, v in d.items() if k not in ("abs_diff", "rel_diff")}
