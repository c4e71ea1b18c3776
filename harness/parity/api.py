"""``compare``: two run configurations of one lab, from the same weights, with every tier.

The run the user asked for (its dtype, device, execution mode, masks) trains on both sides and its figures are
kept: the training loss's ``max_abs_diff``, ``max_rel_diff``, ``first_divergence_step``, ``growth_per_step`` and
per-step differences, the companion's, and every quantity's (``quantities``, against ``threshold``). Then the
tiers judge it: the exact tier (:mod:`harness.parity.exact`) always, and for a float32, mixed-dtype or own-mask
comparison the statistical tier (``harness.parity.ensemble``). ``verdict`` says it in one line
(:mod:`harness.parity.verdict`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import harness.parity.quantities as qty
import harness.parity.verdict as words
from harness import backend as registry
from harness.backend import TrainResult
from harness.commands.progress import Progress
from harness.errors import RunDiverged
from harness.labs import Lab
from harness.parity.configs import RunConfig, default_configs, for_config, lowest_dtype, parse_config, run_keys
from harness.parity.divergence import divergence, public
from harness.parity.ensemble import ensemble_tier
from harness.parity.exact import TRACE_STEPS, exact_tier, window
from harness.run.costs import phase
from harness.run.runner import Prepared, RunOptions, prepare, run_prepared


def statistical_tier(prepared: Prepared, a: RunConfig, b: RunConfig,
                     runs: tuple[Any, Any] | None = None) -> dict:
    """The statistical (ensemble) tier of :mod:`harness.parity.ensemble` on sides ``a`` and ``b``; ``runs``: the
    training losses of the sides' own runs (the cross difference is taken between them)."""
    return ensemble_tier(prepared, a, b, runs=runs)


def _train_sides(prepared: Prepared, configs: tuple[RunConfig, RunConfig], names: tuple[str, str],
                 progress: Progress, size: float) -> tuple[dict, dict[str, list[TrainResult]]]:
    records: dict[str, dict] = {}
    results: dict[str, list[TrainResult]] = {}
    for name, config in zip(names, configs):
        registry.check_device(config.backend, config.device)
        progress.begin(f"training {name}", size)
        try:
            with phase(f"train {name}"):
                records[name], results[name] = run_prepared(for_config(prepared, config), config.backend)
        except RunDiverged as exc:
            exc.result = {"lab": prepared.lab.name, "runs": {**records, name: exc.result}}
            raise
        progress.advance(size)
    return records, results


def _with_steps(d: dict) -> dict:
    return {**public(d), "per_step": {"abs_diff": d["abs_diff"], "rel_diff": d["rel_diff"]}}


def user_figures(prepared: Prepared, results: dict[str, list[TrainResult]], names: tuple[str, str],
                 threshold: float) -> dict:
    """The figures of the run in the user's configuration: training loss (flat, as before), companion, and
    every quantity against ``threshold``."""
    a, b = results[names[0]], results[names[1]]
    cross = divergence(a[0].losses, b[0].losses, threshold)
    out: dict[str, Any] = {**public(cross), "per_step": {"abs_diff": cross["abs_diff"], "rel_diff": cross["rel_diff"]}}
    if prepared.companion is not None:
        other = divergence(a[1].losses, b[1].losses, threshold)
        out["companion"] = {"model": prepared.lab.model_labels[1], **_with_steps(other)}
    out["quantities"] = {k: qty.figures(q, threshold) for k, q in qty.measure(prepared, a, b).items()}
    return out


def noise_floor(losses: Any, twin: Any, threshold: float, side: RunConfig, dtype: str) -> dict:
    """The one-ulp twin's divergence from its own side's run (figures and per-step relative differences)."""
    floor = divergence(losses, twin, threshold)
    return {"framework": side.backend, "nudge": f"1 ulp ({dtype}) on every initial weight", **_with_steps(floor)}


def resolve(options: RunOptions, a: RunConfig | str | None, b: RunConfig | str | None) -> tuple[RunConfig, RunConfig]:
    """The two sides: given (as RunConfig or ``BACKEND[:FIELD]...``) or the first two registered backends."""
    defaults = default_configs(options) if a is None or b is None else (None, None)
    sides = [defaults[i] if c is None else parse_config(c, options) if isinstance(c, str) else c
             for i, c in enumerate((a, b))]
    return sides[0], sides[1]  # type: ignore[return-value]


def _reusable(prepared: Prepared, configs: tuple[RunConfig, RunConfig], steps: int | None) -> bool:
    """Whether the user's runs are the exact tier's: float64 both, shared masks where there is dropout, and the
    window the whole run."""
    spec = prepared.spec
    return (all(c.dtype == "float64" for c in configs) and (spec.masks is not None or spec.model.dropout == 0)
            and min(steps or window(prepared), prepared.steps) == prepared.steps)


def compare(lab: Lab, options: RunOptions, threshold: float = 1e-4, noise: bool = True, *,
            a: RunConfig | str | None = None, b: RunConfig | str | None = None, exact: bool = True,
            exact_steps: int | None = None, referee: str = "auto", trace_steps: int = TRACE_STEPS,
            progress: Progress | None = None) -> dict:
    """Train ``lab`` on sides ``a`` and ``b`` (default: the first two registered backends as ``options`` runs
    them) from shared weights on the same batches; their figures, the tiers and the verdict. ``noise``: run the
    statistical tier where the comparison needs one. ``exact``: run the exact tier (``exact_steps``: its
    window; ``referee``, ``trace_steps``: see :func:`harness.parity.exact.exact_tier`). ``progress``: told each
    phase (training, the tiers) as it starts; its total is set to the steps all of them train."""
    progress = progress or Progress(0, quiet=True)
    configs = resolve(options, a, b)
    names = run_keys(*configs)
    prepared = prepare(lab, dataclasses.replace(options, weights="shared", dtype=lowest_dtype(*configs)))
    header = _header(prepared, configs, names)
    needs = _needs(header, configs)
    sizes = _phases(prepared, exact, exact_steps, bool(noise and needs))
    progress.total = 2 * sizes["side"] + sizes["exact"] + sizes["statistical"]
    records, results = _train_sides(prepared, configs, names, progress, sizes["side"])
    out = {**header, "runs": records, **user_figures(prepared, results, names, threshold)}
    tiers: dict[str, dict] = {}
    if exact:
        progress.begin("exact tier (float64)", sizes["exact"])
        with phase("exact tier"):
            tiers["exact"] = _exact(prepared, configs, names, results, out, threshold, exact_steps, referee,
                                    trace_steps)
        progress.advance(sizes["exact"])
    if noise and needs:
        progress.begin("statistical tier", sizes["statistical"])
        with phase("statistical tier"):
            tiers["ensemble"] = statistical_tier(prepared, *configs,
                                                 runs=(results[names[0]][0].losses, results[names[1]][0].losses))
        progress.advance(sizes["statistical"])
    if "noise_floor" in out:
        out["per_step"]["noise_rel_diff"] = out["noise_floor"].pop("per_step")["rel_diff"]
    out["tiers"] = tiers
    why = "statistical tier off" if not noise else "no statistical tier here"
    out["verdict"], out["verdict_kind"] = words.combine(tiers.get("exact"), tiers.get("ensemble"), needs, why)
    return out


def _phases(prepared: Prepared, exact: bool, exact_steps: int | None, statistical: bool) -> dict[str, float]:
    """Steps each phase of :func:`compare` trains (a rough measure of its work, for the progress display): one
    side's run, the exact tier (both sides and a twin), the statistical tier (twin ensembles on both sides)."""
    models = 1 if prepared.companion is None else 2
    sizes = {"side": float(prepared.steps * models), "exact": 0.0, "statistical": 0.0}
    if exact:
        sizes["exact"] = 3.0 * min(exact_steps or window(prepared), prepared.steps) * models
    if statistical:
        from harness.parity.ensemble import LAG, MEMBERS, WINDOW

        sizes["statistical"] = 2.0 * (1 + MEMBERS) * min(WINDOW + LAG, prepared.steps)
    return sizes


def _header(prepared: Prepared, configs: tuple[RunConfig, RunConfig], names: tuple[str, str]) -> dict:
    spec = prepared.spec
    masks = "shared" if spec.masks is not None else "own" if spec.model.dropout > 0 else "none"
    return {"lab": prepared.lab.name, "dtype": "/".join(dict.fromkeys(c.dtype for c in configs)),
            "device": "/".join(dict.fromkeys(c.device for c in configs)), "weights": "shared", "masks": masks,
            "sides": {n: c.as_dict() for n, c in zip(names, configs)}}


def _needs(out: dict, configs: tuple[RunConfig, RunConfig]) -> str | None:
    """What the exact tier alone does not settle: own masks, or a dtype other than float64 (None: nothing)."""
    if out["masks"] == "own":
        return "own dropout masks"
    return None if all(c.dtype == "float64" for c in configs) else out["dtype"]


def _exact(prepared: Prepared, configs: tuple[RunConfig, RunConfig], names: tuple[str, str], results: dict,
           out: dict, threshold: float, steps: int | None, referee: str, trace_steps: int) -> dict:
    """The exact tier; where it reuses the user's float64 runs, its twin's divergence is the noise floor."""
    raw: dict = {}
    reuse = (results[names[0]], results[names[1]]) if _reusable(prepared, configs, steps) else None
    tier = exact_tier(prepared, configs[0], configs[1], names, steps, referee, trace_steps, reuse=reuse, raw=raw)
    if reuse is not None:
        side = configs["ab".index(raw["base"])]
        out["noise_floor"] = noise_floor(raw[raw["base"]][0].losses, raw["twin"][0].losses, threshold, side, "float64")
    return tier
