"""Parity: two loss trajectories in, divergence figures out; and the controlled torch-vs-JAX comparison.

Both frameworks train from the same initial weights on the same batches (and dropout masks, when asked). To
tell a framework difference from rounding noise, a twin of one framework starts from weights nudged by one
unit in the last place; its divergence from the untouched run is the noise floor.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from harness.init import nudge
from harness.labs import Lab
from harness.runner import RunDiverged, RunOptions, execute, prepare, run_prepared

NOISE_FRAMEWORK = "jax"  # the twin runs in JAX: its fused loop makes the extra run cheap


def divergence(a: np.ndarray, b: np.ndarray, threshold: float = 1e-4) -> dict:
    """Per-step absolute and relative difference of two trajectories, their maxima, the first step whose
    relative difference passes ``threshold`` (None: never), and the growth of the difference: the median
    factor per step while it climbs from 1e-12 to 1e-2 (None where it never climbs through that band)."""
    n = min(len(a), len(b))
    a, b = np.asarray(a[:n], np.float64), np.asarray(b[:n], np.float64)
    abs_diff = np.abs(a - b)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = abs_diff / np.maximum(np.abs(a), np.abs(b))
    rel = np.where(abs_diff == 0, 0.0, rel)
    over = np.flatnonzero(~(rel <= threshold))
    return {
        "steps": n,
        "abs_diff": abs_diff,
        "rel_diff": rel,
        "max_abs_diff": float(np.nanmax(abs_diff)) if n else 0.0,
        "max_rel_diff": float(np.nanmax(rel)) if n else 0.0,
        "first_divergence_step": int(over[0]) if over.size else None,
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


def verdict(cross: dict, noise: dict) -> str:
    """"agree" when the frameworks never pass the threshold; "agree within rounding noise" when they do, but
    no earlier and growing no faster than the one-ulp twin; "beyond rounding noise" otherwise."""
    if cross["first_divergence_step"] is None:
        return "agree"
    if noise["first_divergence_step"] is None or cross["first_divergence_step"] < noise["first_divergence_step"]:
        return "beyond rounding noise"
    g_cross, g_noise = cross["growth_per_step"], noise["growth_per_step"]
    if g_cross is not None and g_noise is not None and g_cross > g_noise * 1.05:
        return "beyond rounding noise"
    return "agree within rounding noise"


def _public(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in ("abs_diff", "rel_diff")}


def compare(lab: Lab, options: RunOptions, threshold: float = 1e-4, noise: bool = True) -> dict:
    """Train ``lab`` in torch and JAX from shared weights on the same batches; parity figures and verdict. A lab's
    companion model is trained too, and its parity reported under ``companion``."""
    options = dataclasses.replace(options, init="shared")
    prepared = prepare(lab, options)
    runs, results = {}, {}
    for framework in ("torch", "jax"):
        try:
            runs[framework], results[framework] = run_prepared(prepared, framework)
        except RunDiverged as exc:
            exc.result = {"lab": lab.name, "runs": {**runs, framework: exc.result}}
            raise
    losses = {fw: r[0].losses for fw, r in results.items()}
    cross = divergence(losses["torch"], losses["jax"], threshold)
    out = {"lab": prepared.lab.name, "dtype": options.dtype, "device": options.device, "init": "shared",
           "masks": options.masks, "runs": runs, **_public(cross)}
    out["per_step"] = {"abs_diff": cross["abs_diff"], "rel_diff": cross["rel_diff"]}
    if prepared.companion is not None:
        other = divergence(results["torch"][1].losses, results["jax"][1].losses, threshold)
        out["companion"] = {"model": prepared.lab.model_labels[1], **_public(other),
                            "per_step": {"abs_diff": other["abs_diff"], "rel_diff": other["rel_diff"]}}
    if noise:
        spec = dataclasses.replace(prepared.spec, params=nudge(prepared.spec.params))
        twin = execute(prepared, NOISE_FRAMEWORK, spec)
        floor = divergence(losses[NOISE_FRAMEWORK], twin.losses, threshold)
        out["noise_floor"] = {"framework": NOISE_FRAMEWORK, "nudge": "1 ulp on every initial weight",
                              **_public(floor)}
        out["per_step"]["noise_rel_diff"] = floor["rel_diff"]
        out["verdict"] = verdict(cross, floor)
    return out
