"""The statistical tier: a float32 (or GPU) comparison held against an ensemble of one-ulp twins, not one sample.

Each side of the comparison trains its unnudged run and ``members`` twins whose shared initial weights are each
moved by one unit in the last place, up or down at random (different signs per member and side); where a
framework draws its own dropout masks, every member also draws them from its own seed. Backends that offer
``train_ensemble`` (``jax_impl/ensemble.py``: one ``vmap``-ed program; ``torch_impl/ensemble.py``: a loop) run
the members together; any other backend is looped through its ``train``.

At each step of the early window the *band* is the largest relative distance of any twin, of either side, from
its own side's unnudged run: how far rounding alone moves the loss by then. Rounding moves it in jumps (a unit
changing side for one example) that come a step earlier or later from run to run, so each step is held against
the widest band within ``LAG`` steps of it, floored at the dtype's epsilon (a step where everything is below one
rounding is not judged). The *cross* difference is ``|a - b| / |a|`` between the two unnudged runs; the ratio
cross / band is taken at every step of the window, which ends at ``WINDOW`` steps or where the band reaches
``SATURATION`` (the twins have forgotten their common start: a band that wide hides everything). Its maximum is
the figure: "PyTorch-vs-JAX/Flax at 2.1x the twin band, limit 100x". ``LIMIT`` is calibrated on every lab
(``benchmarks/parity_calibration.py``; ``docs/parity.md``, statistical tier). Where each framework draws its own
masks the members differ by their masks from step 0: the whole window is judged against that spread, and the
text says so. Final accuracies (``finals=True``: every member trains the whole run) are reported as mean and
spread, not judged.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from harness import backend as registry
from harness.backend import RunSpec
from harness.parity.configs import RunConfig, as_config, retarget
from harness.weights import Params

MEMBERS = 4  # twins per side
WINDOW = 20  # step cap of the judged window
SATURATION = 1e-2  # the window ends where the band reaches this relative spread
LAG = 1  # steps by which a jump of the twins may lead or trail the cross difference
LIMIT = 100.0  # cross / band above this is beyond rounding noise (calibrated: docs/parity.md)


def signed_nudge(params: Params, rng: np.random.Generator) -> Params:
    """Every weight moved by one unit in the last place, up or down at random."""
    out = {}
    for key, value in params.items():
        towards = np.where(rng.random(value.shape) < 0.5, -np.inf, np.inf).astype(value.dtype)
        out[key] = np.nextafter(value, towards)
    return out


def window_spec(spec: RunSpec, steps: int, params: Params | None = None, seed: int | None = None) -> RunSpec:
    """``spec`` cut to its first ``steps`` steps with no evaluation, optionally from other weights and dropout
    seed: what one ensemble member trains."""
    steps = min(steps, spec.steps)
    return dataclasses.replace(
        spec, steps=steps, eval_steps=(), progress=None,
        params=spec.params if params is None else params, seed=spec.seed if seed is None else seed,
        batches=None if spec.batches is None else spec.batches[:steps],
        masks=None if spec.masks is None else [m[:steps] for m in spec.masks])


def ensemble_fn(backend: str) -> Callable[..., np.ndarray]:
    """``train_ensemble`` of ``backend`` (on its module, or in the ``ensemble`` module beside it), or a loop
    over its ``train``."""
    module = registry.load(backend)
    fn = getattr(module, "train_ensemble", None)
    package = registry.info(backend).module.rpartition(".")[0]
    if fn is None and package:
        try:
            fn = getattr(importlib.import_module(f"{package}.ensemble"), "train_ensemble", None)
        except ImportError:
            fn = None
    if fn is not None:
        return fn

    def loop(spec: RunSpec, params_list: Sequence[Params], steps: int, seeds: Sequence[int]) -> np.ndarray:
        return np.stack([module.train(window_spec(spec, steps, p, s)).losses for p, s in zip(params_list, seeds)])

    return loop


def members_of(params: Params, members: int, seed: int, side: int, own_masks: bool,
               base_seed: int) -> tuple[list[Params], list[int]]:
    """The unnudged weights and ``members`` twins of side number ``side``, and each one's dropout seed (the
    run's own seed, or a fresh one per twin where the framework draws its masks)."""
    twins = [signed_nudge(params, np.random.default_rng([seed, side, m])) for m in range(members)]
    seeds = [base_seed] + [base_seed + 7919 * (side * members + m + 1) if own_masks else base_seed
                           for m in range(members)]
    return [params, *twins], seeds


def _rel(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """|x - ref| / |ref|; 0 where equal, inf where not finite or the reference is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.abs(x - ref) / np.abs(ref)
    out = np.where(x == ref, 0.0, out)
    return np.where(np.isfinite(out), out, np.inf)


def envelope(band: np.ndarray, lag: int) -> np.ndarray:
    """At each step, the widest band the twins reach within ``lag`` steps of it (before or after): rounding
    noise moves the loss in jumps (a unit's activation changing side for one example), which come a few steps
    earlier or later in one run than in another."""
    padded = np.concatenate([np.full(lag, -np.inf), band, np.full(lag, -np.inf)])
    return np.lib.stride_tricks.sliding_window_view(padded, 2 * lag + 1).max(1)


def judge(a: np.ndarray, b: np.ndarray, eps: float, limit: float = LIMIT, window: int = WINDOW,
          own_masks: bool = False, saturation: float = SATURATION, lag: int = LAG,
          runs: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """The tier's figures from the losses ``[1 + members, steps]`` of each side (row 0: the unnudged run). ``runs``:
    the two sides' own runs (in their execution modes), whose difference is then the cross difference; the
    ensembles give the band."""
    n = min(a.shape[1], b.shape[1], *(len(r) for r in runs or ()))  # the window and up to ``lag`` more
    bands = np.stack([_rel(a[1:, :n], a[0, :n]).max(0), _rel(b[1:, :n], b[0, :n]).max(0)])
    band = bands.max(0)
    cross = _rel(a[0, :n], b[0, :n]) if runs is None else _rel(np.asarray(runs[0][:n]), np.asarray(runs[1][:n]))
    saturated = np.flatnonzero(band >= saturation)
    stop = n if own_masks or not saturated.size else max(int(saturated[0]), 1)
    end = min(stop, window)
    broken = np.flatnonzero(np.isinf(cross[:min(n, window)]))  # a run stopped being finite: judged, whatever the band
    end = max(end, int(broken[0]) + 1) if broken.size else end
    held = np.maximum(envelope(band[:max(end, min(stop, end + lag))], lag)[:end], eps)
    with np.errstate(invalid="ignore"):  # inf / inf where a run diverged: beyond any band
        ratio = np.where(np.isinf(cross[:end]), np.inf, cross[:end] / held)
    at = int(np.argmax(ratio))
    worst = float(ratio[at])
    over = np.flatnonzero(ratio > limit)
    first = int(over[0]) if over.size else None  # the first step beyond the band
    ok = bool(worst <= limit)
    return {"window": end, "saturated_at": None if own_masks or not saturated.size else int(saturated[0]),
            "ratio": worst, "at_step": at, "first_step_over": first, "limit": limit, "ok": ok, "floor": eps,
            "lag": lag,
            "asymmetry": asymmetry(bands[:, :end], eps),  # reported, not judged (docs/parity.md)
            "band": {"first": float(band[0]), "last": float(band[end - 1]), "median": float(np.median(band[:end])),
                     "max": float(band[:end].max())},
            "per_step": {"band": band[:end].tolist(), "cross": cross[:end].tolist()}}


def asymmetry(bands: np.ndarray, eps: float) -> dict:
    """How much wider one side's own twin band is than the other's (the median over the window of each, floored at
    ``eps``; ``side``: the wider, 0 or 1). Reported, not judged: a side that rounds more coarsely widens its own band
    as much as it moves its run, which the shared band then hides, but correct ports differ here too (up to 2,000x
    on mnist_deep_xavier), so no limit holds (docs/parity.md)."""
    floored = np.maximum(np.nan_to_num(bands, nan=np.inf), eps)
    med = np.median(floored, axis=1)
    side = int(np.argmax(med))
    return {"ratio": float(med[side] / med[1 - side]), "side": side}


def _times(x: float) -> str:
    return "inf" if not np.isfinite(x) else f"{x:.1f}" if x < 10 else f"{x:.0f}" if x < 1e4 else f"{x:.1e}"


def describe(fig: dict, dtype: str, a: str, b: str, own_masks: bool) -> tuple[str, str]:
    """The verdict text and the one-line summary of a judged tier."""
    masks = ", own dropout masks: judged against the mask spread" if own_masks else ""
    limit = f"limit {fig['limit']:g}x"
    if fig["ok"]:
        text = f"{dtype} within rounding noise ({_times(fig['ratio'])}x band{masks})"
    else:
        text = f"{dtype} beyond rounding noise ({_times(fig['ratio'])}x band at step {fig['at_step']}, {limit}{masks})"
    return text, f"{a}-vs-{b} at {_times(fig['ratio'])}x the twin band, {limit}"


def _accuracy(prepared: Any, outputs: dict) -> float | dict | None:
    """Final accuracy of one run on its test set (training set for the XOR labs)."""
    from harness.run.metrics import evaluate

    sets = outputs[max(outputs)] if outputs else {}
    name = "test" if "test" in sets else "train" if "train" in sets else None
    if name is None:
        return None
    return evaluate(prepared.lab.task, prepared.lab.loss, sets[name], prepared.eval_targets[name])["accuracy"]


def spread(values: Sequence[float | dict | None]) -> dict | None:
    """Mean, standard deviation (``spread``), min and max of final accuracies (per gate for dicts)."""
    if not values or any(v is None for v in values):
        return None
    if isinstance(values[0], dict):
        return {k: spread([v[k] for v in values]) for k in values[0]}  # type: ignore[index]
    a = np.asarray(values, np.float64)
    return {"n": len(a), "mean": float(a.mean()), "spread": float(a.std(ddof=1)) if len(a) > 1 else 0.0,
            "min": float(a.min()), "max": float(a.max())}


def run_side(prepared: Any, side: RunConfig, number: int, members: int, seed: int, steps: int,
             finals: bool) -> tuple[np.ndarray, dict | None]:
    """Losses ``[1 + members, steps]`` of side number ``number``'s ensemble (row 0 unnudged); with ``finals``
    every member trains the whole run (through the backend's ``train``) and the spread of its final accuracies
    comes back too."""
    registry.check_device(side.backend, side.device)
    spec = retarget(prepared.spec, side)
    params_list, seeds = members_of(spec.params, members, seed, number, own_masks(spec), spec.seed)
    if not finals:
        return ensemble_fn(side.backend)(spec, params_list, steps, seeds), None
    module = registry.load(side.backend)
    results = [module.train(dataclasses.replace(spec, params=p, seed=s, progress=None))
               for p, s in zip(params_list, seeds)]
    losses = np.stack([r.losses[:steps] for r in results])
    return losses, spread([_accuracy(prepared, r.outputs) for r in results])


def own_masks(spec: RunSpec) -> bool:
    """Whether each framework draws its own dropout masks in ``spec``."""
    return spec.masks is None and spec.model.dropout > 0


def ensemble_tier(prepared: Any, a: Any, b: Any, members: int = MEMBERS, window: int | None = None,
                  seed: int = 0, limit: float = LIMIT, finals: bool = False,
                  runs: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """The statistical tier of ``prepared`` (a ``harness.run.runner.Prepared`` with shared weights) between run
    configurations ``a`` and ``b`` (RunConfigs, or backend names run as ``prepared`` describes): ``members`` twins
    per side, judged over the first ``window`` steps (default ``WINDOW``) or until the band saturates. ``finals``: every
    member also trains the whole run, and the final accuracies are reported as mean and spread (not judged).
    ``runs``: the training losses of each side's own run (``compare`` passes the user's): the cross difference is
    taken between those, so that a side's execution mode is judged as it ran (JAX's ensemble is one ``vmap``
    program whatever the mode, so a bug of a ``lax.scan`` or compiled path alone shows only there)."""
    if prepared.spec.params is None:
        raise ValueError("the ensemble tier needs shared initial weights (weights='shared')")
    if members < 1:
        raise ValueError(f"members must be at least 1, got {members}")
    sides = [as_config(a, prepared.spec), as_config(b, prepared.spec)]
    names = [side.name_beside(prepared.spec) for side in sides]
    window = min(window or WINDOW, prepared.steps)
    steps = min(window + LAG, prepared.steps)
    losses, finals_by_side = [], {}
    for number, side in enumerate(sides):
        side_losses, accuracy = run_side(prepared, side, number, members, seed, steps, finals)
        losses.append(side_losses)
        finals_by_side[names[number]] = accuracy
    dtypes = [side.dtype for side in sides]
    eps = max(float(np.finfo(np.dtype(d)).eps) for d in dtypes)
    own = own_masks(prepared.spec)
    fig = judge(losses[0], losses[1], eps, limit, window, own, runs=runs)
    labels = [registry.label(s.backend) if n == s.backend else n for s, n in zip(sides, names)]
    text, summary = describe(fig, "/".join(dict.fromkeys(dtypes)), *labels, own)
    return {"tier": "ensemble", "sides": names, "members": members, "seed": seed,
            "masks": "own" if own else "shared" if prepared.spec.masks is not None else "none",
            **fig, "text": text, "summary": summary,
            "final_accuracy": finals_by_side if finals else None}
