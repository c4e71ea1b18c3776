"""The printed summary of a comparison (``dlzta compare``)."""

from __future__ import annotations

from collections.abc import Callable


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}" if isinstance(x, float) else str(x)


def _exact_lines(tier: dict) -> list[str]:
    judged = tier["judged_steps"]
    chaos = (f"; the float64 twin turns chaotic at step {tier['chaos_step']}, judged before it"
             if tier["chaos_step"] is not None else "")
    lines = [f"  exact tier (float64, {tier['steps']} steps{chaos}; tolerance max({tier['tolerance']['floor']:g}, "
             f"{tier['tolerance']['factor']:g} x the {tier['twin']['side']} twin)): {tier['text']}"
             f" [{tier['seconds']:.1f} s]"]
    internals = tier["internals"]
    if internals.get("steps"):
        near = internals["closest"]
        agrees = internals.get("referee_agrees")
        referee = "" if agrees is None else "; the referee agrees with " + (
            " and ".join(k for k, v in agrees.items() if v) or "neither")
        lines.append(f"    first {internals['steps']} steps' gradients, updates, weights and state: "
                     + (f"nearest its tolerance {near['what']} (rel {near['rel']:.1e}, {near['share']:.1e} of it)"
                        if near["what"] else "identical") + referee)
    pre = internals.get("pretrain") or {}
    if pre.get("steps"):
        lines.append(f"    RBM pre-training, first {pre['steps']} CD steps of rbm{pre['rbm']} (statistics, updates, "
                     f"weights): {'within tolerance' if pre['ok'] else 'parted'}")
    failed = [(f["first_step_over"], name, f) for name, f in tier["quantities"].items() if not f["ok"]]
    for step, name, f in sorted(failed)[:6]:
        lines.append(f"    {name}: rel {_num(f['rel_at_first'])} at step {step} (tolerance {f['tolerance']:.1e})")
    if not failed:
        lines.append(f"    {len(tier['quantities'])} quantities within tolerance over {judged} steps")
    return lines


def summary_lines(result: dict, threshold: float, final_text: Callable[[dict], str]) -> list[str]:
    """The figures of ``result`` (``harness.parity.api.compare``), one line each, the verdict last."""
    names = list(result["runs"])
    steps = result["steps"]
    lines = [f"{result['lab']} [{' vs '.join(names)}, {result['dtype']}, shared weights, masks {result['masks']}, "
             f"{steps} steps]"]
    width = max(map(len, names))
    for name, rec in result["runs"].items():
        lines.append(f"  {name:<{width}} final: {final_text(rec['final'])}")
    first = result["first_divergence_step"]
    lines.append(f"  training loss: max |diff| {result['max_abs_diff']:.3e}, max rel diff "
                 f"{result['max_rel_diff']:.3e}, first step over {threshold:g}: {'never' if first is None else first}, "
                 f"growth/step: {_num(result['growth_per_step'])}")
    tiers = result.get("tiers", {})
    if "exact" in tiers:
        lines += _exact_lines(tiers["exact"])
    if "ensemble" in tiers:
        t = tiers["ensemble"]
        lines.append(f"  statistical tier ({t.get('members', '?')} twins a side, {t.get('window')} steps): "
                     f"{t.get('summary') or t['text']}")
    if "noise_floor" in result:
        nf = result["noise_floor"]
        nfirst = nf["first_divergence_step"]
        lines.append(f"  noise floor ({nf['framework']} twin, {nf['nudge']}): max rel diff {nf['max_rel_diff']:.3e}, "
                     f"first step over {threshold:g}: {'never' if nfirst is None else nfirst}")
    if "native_init" in result:
        lines.append(f"  {result['native_init']['text']}")
    lines.append(f"  verdict: {result['verdict']}")
    return lines
