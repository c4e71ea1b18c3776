"""``compare LAB --precision P`` (or sides that carry a precision, ``--a jax:bfloat16``): the precision tier
(``harness.parity.precision``) for the two sides, each held against the referee's emulation of its policy, in
the parity vocabulary: ``follows mixed_bfloat16 (...)`` or ``differs: jax: ... off the emulated ... policy``."""

from __future__ import annotations

import time

from harness import backend as registry
from harness.errors import UsageError
from harness.labs import Lab
from harness.parity import precision as tier_mod
from harness.precision import REDUCED, get_policy
from harness.run.runner import RunOptions, prepare

SYNTAX = "BACKEND[:DEVICE][:PRECISION]"


def parse_side(text: str, precision: str | None, device: str) -> tuple[str, str, str | None]:
    """``(backend, device, precision)`` of a side written ``BACKEND[:DEVICE][:PRECISION]`` (a field left out:
    ``device``, ``precision``); UsageError naming the choices for a field it does not know."""
    backend, *fields = [t.strip() for t in text.split(":")]
    if backend not in registry.names(include_referees=False):
        raise UsageError(f"unknown backend {backend!r} in {text!r}; choose from "
                         f"{', '.join(registry.names(include_referees=False))}")
    for value in fields:
        if value in registry.DEVICES:
            device = value
        elif value in REDUCED:
            precision = value
        else:
            raise UsageError(f"unknown field {value!r} in {text!r} ({SYNTAX}); choose from "
                             f"{', '.join((*registry.DEVICES, *REDUCED))}")
    return backend, device, precision


def wanted(precision: str | None, a: str | None, b: str | None) -> bool:
    """Whether a compare asks for the precision tier: ``--precision`` reduced, or a side carrying one."""
    fields = [f for side in (a, b) if side for f in side.split(":")[1:]]
    return precision in REDUCED or any(f in REDUCED for f in fields)


def compare(lab: Lab, options: RunOptions, precision: str | None, a: str | None = None,
            b: str | None = None) -> dict:
    """The precision tier of ``lab`` for sides ``a`` and ``b`` (default: the first two registered backends);
    a side's precision is its own or ``precision``. One tier per precision asked for; the verdict names every
    side that is off its policy."""
    names = registry.names(include_referees=False)
    texts = [a or names[0], b or names[1]]
    sides = [parse_side(t, precision, options.device) for t in texts]
    missing = [f"{s[0]}" for s in sides if s[2] is None]
    if missing:
        raise UsageError(f"no precision for {', '.join(missing)}: give --precision or a side's "
                         f"{SYNTAX} with one of {', '.join(REDUCED)}")
    if any(s[1] != "cpu" for s in sides) or options.device != "cpu":
        raise UsageError("the precision tier's emulation runs on the cpu; the sides too (--device cpu)")
    prepared = prepare(lab, RunOptions(**{**vars(options), "weights": "shared", "mask_mode": "shared",
                                          "dtype": "float32"}))
    result: dict = {"lab": lab.name, "tier": "precision", "sides": {}, "tiers": {}}
    start = time.perf_counter()
    for name in dict.fromkeys(s[2] for s in sides):
        group = [s[0] for s in sides if s[2] == name]
        keys = {f"{backend}:{name}" for backend in group}
        if len(keys) < len(group):
            raise UsageError(f"both sides are {group[0]}:{name}: compare two backends (or two precisions)")
        r = tier_mod.tier(prepared.spec, get_policy(name), tier_mod.backend_sides(group))
        result["tiers"][name] = r
        for backend in group:
            result["sides"][f"{backend}:{name}"] = {"backend": backend, "precision": name}
    result["seconds"] = time.perf_counter() - start
    kinds = [r["verdict_kind"] for r in result["tiers"].values()]
    result["verdict_kind"] = "differs" if "differs" in kinds else "follows policy"
    result["verdict"] = "; ".join(r["verdict"] for r in result["tiers"].values())
    return result


def summary_lines(result: dict) -> list[str]:
    """What ``compare --precision`` prints."""
    lines = [f"{result['lab']}: precision tier ({', '.join(result['sides'])}; {result['seconds']:.1f} s)"]
    for name, r in result["tiers"].items():
        scale = r.get("loss_scale")
        if scale:
            lines.append(f"  {name}: probe loss scale {scale['initial']:g}, growth every {scale['growth_interval']} "
                         f"finite steps x{scale['growth_factor']:g}, backoff x{scale['backoff_factor']:g}")
        for side, s in r["sides"].items():
            closest = s["closest"]
            lines.append(f"  {name} {side}: closest {closest['share']:.2g} of tolerance ({closest['what']})")
    lines.append(f"verdict: {result['verdict']}")
    return lines
