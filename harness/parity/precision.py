"""The precision tier: does each side follow the declared reduced-precision policy (``harness.precision``)?

The float64 exact tier cannot see a precision-placement bug (a loss computed in bfloat16, optimizer state kept
in bfloat16, a missing unscale...): in float64 it vanishes. Here each side's first steps under the policy
(``<backend>.precision_trace``) are held, tensor by tensor, against the numpy referee's emulation of the policy
(``harness.referee.precision``: bfloat16/float16 rounding exactly at the declared cast points, float64 between
them). The tolerance is float32 accumulation noise, measured: ``TWINS`` float32 emulations of the same policy
(plain, and with every matmul's and batch sum's accumulation jittered) differ from the float64 emulation by what
float32 arithmetic alone moves each tensor by, a bf16/f16 rounding flipped here and there included; each quantity is
held to ``max(FLOOR, FACTOR x`` the twins' largest difference on it so far ``)`` (``STATE_FACTOR`` for running
statistics); the jittered twins move every matmul entry and every batch sum (bias gradients, batch-norm statistics)
by a random accumulation error of float32's typical size (2**-24 x the root sum of squares of its terms), so that
they flip about as many low-precision roundings as a framework's own summation order (or thread count) does, at
random places. Correct code sits at the twins' own level (torch matches the float32 emulation bit for bit in pure
bfloat16); a misplaced cast moves every entry by about a unit of the low precision (2**-8 in bfloat16), orders
above.

Under ``mixed_float16`` the traced steps use ``PROBE_LOSS_SCALE`` (GradScaler's rule, parameters that make the
first steps overflow, skip, back off and grow), and each side's reported scale and skipped steps are checked
against the rule replayed on its own finite flags: a scaler that does not skip, or grows on another schedule,
is named at its first wrong step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import numpy as np

from harness.backend import RunSpec
from harness.parity.localise import KINDS, grow
from harness.parity.localise import _rel as rel_of
from harness.parity.localise import _tensors as tensors_of
from harness.parity.localise import describe as describe_kind
from harness.precision import PROBE_LOSS_SCALE, LossScale, Policy

TRACE_STEPS = 3  # steps traced (bfloat16 policies)
SCALE_STEPS = 6  # steps traced under a loss scale: overflow, skip, back off, grow, overflow again
TWINS = (None, *range(6))  # the float32 emulations: plain, and every matmul and batch sum jittered (seeds 0-5; a
# sample of the roundings a summation order flips: with 3, one JAX flip on xor_wide_deep met the floor)
FACTOR = 300.0  # times the float32 twins' largest difference (an Adam update of a gradient near its eps
# amplifies one summation-order flip: 88x the twins' on mnist_softmax under mixed_float16, correct code)
STATE_FACTOR = 30.0  # running statistics: batch means and variances of the forward pass, no optimizer or gradient
# cancellation to amplify a flip (correct code: at most 1.09x the twins' over mnist_batchnorm x 5 seeds x 3 policies
# x torch and JAX on 1 and 2 threads); 300 let an input rounded to bfloat16 hide there (5e-4 against 2e-3)
Side = Callable[[RunSpec, int, Policy, LossScale | None], list[dict]]  # (spec, steps, policy, scale) -> trace
FLOOR = 1e-5  # the least tolerance (float32 arithmetic alone moves a tensor by ~1e-7, an Adam update up to 3e-6)


def probe_scale(policy: Policy) -> LossScale | None:
    """The loss scale the tier's traces use: ``PROBE_LOSS_SCALE`` where the policy scales its loss."""
    return PROBE_LOSS_SCALE if policy.loss_scale is not None else None


def steps_for(policy: Policy) -> int:
    """How many steps the tier traces under ``policy``."""
    return SCALE_STEPS if policy.loss_scale is not None else TRACE_STEPS


def references(spec: RunSpec, policy: Policy, steps: int | None = None) -> tuple[list[dict], list[list[dict]]]:
    """The float64 emulation of ``policy`` and its float32 twins, over the tier's steps."""
    from harness.referee import precision as emulation

    steps = steps or steps_for(policy)
    scale = probe_scale(policy)
    ref = emulation.trace(spec, steps, policy, "float64", scale)
    return ref, [emulation.trace(spec, steps, policy, "float32", scale, jitter=seed) for seed in TWINS]


def noise(ref: dict, twins: Sequence[dict], kind: str, key: str, scale: float) -> float:
    """The twins' largest difference from the reference on one tensor of one step (NaN where one is not finite)."""
    t0 = tensors_of(ref, kind)
    return max((rel_of(t0, tensors_of(t, kind), key, scale) for t in twins), default=0.0)


def judge(side: Sequence[dict], ref: Sequence[dict], twins: Sequence[Sequence[dict]]) -> dict:
    """Hold trace ``side`` against the emulation ``ref`` tensor by tensor (tolerance from ``twins``): the first
    step and kind that parts (``off``: its worst tensor, the others over tolerance, ``what``), or None; and the
    ``closest`` a tensor came to its tolerance (its share)."""
    scales: dict = {}
    seen: dict = {}  # (kind, tensor) -> the twins' largest difference so far
    closest = {"what": None, "share": 0.0, "rel": 0.0}
    for step in range(min(len(side), len(ref))):
        grow(scales, ref[step])
        if bool(side[step].get("finite", True)) != bool(ref[step].get("finite", True)):
            said = "finite" if side[step].get("finite", True) else "overflowed"
            return {"off": {"step": step, "kind": "grads", "tensor": None, "rel": math.inf, "tolerance": 0.0,
                            "what": f"gradients {said} at step {step}, the policy's did not", "also": []},
                    "closest": closest}
        for kind in (*KINDS, "opt_state"):
            if kind == "grads" and not ref[step].get("finite", True):
                continue  # an overflowing step: its gradients hold inf/nan on both sides; it must be skipped
            mine, theirs = tensors_of(side[step], kind), tensors_of(ref[step], kind)
            over = []
            for key in sorted(set(mine) | set(theirs)):
                s = scales.get((kind, key), 0.0)
                n = noise(ref[step], [t[step] for t in twins], kind, key, s)
                seen[kind, key] = max(seen.get((kind, key), 0.0), n) if not math.isnan(n) else math.inf
                tol = max(FLOOR, (STATE_FACTOR if kind == "state" else FACTOR) * seen[kind, key])
                rel = rel_of(mine, theirs, key, s)
                ratio = math.inf if not math.isfinite(rel) else rel / tol
                if ratio > closest["share"]:
                    closest = {"what": describe(kind, key, step), "share": ratio, "rel": rel}
                if not rel <= tol:
                    over.append({"tensor": key, "rel": rel, "tolerance": tol, "ratio": ratio})
            if over:
                over.sort(key=lambda o: -o["ratio"])
                w = over[0]
                return {"off": {"step": step, "kind": kind, "tensor": w["tensor"], "rel": w["rel"],
                                "tolerance": w["tolerance"], "what": describe(kind, w["tensor"], step),
                                "also": [o["tensor"] for o in over[1:]]}, "closest": closest}
    return {"off": None, "closest": closest}


def check_scale(side: Sequence[dict], rule: LossScale | None) -> dict | None:
    """The first step where ``side``'s loss scale breaks ``rule`` replayed on its own finite flags: a scale other
    than the rule's, or a step with non-finite gradients that was not skipped; None where it follows it."""
    if rule is None:
        return None
    expected = rule.schedule([bool(r["finite"]) for r in side])
    for step, (record, want) in enumerate(zip(side, expected)):
        if record["loss_scale"] != want:
            return {"step": step, "what": f"loss scale at step {step} ({record['loss_scale']:g}, the rule says "
                                          f"{want:g})"}
        moved = any(np.any(u != 0) for u in record["updates"].values())
        if not record["finite"] and moved:
            return {"step": step, "what": f"overflowing step {step} not skipped (its gradients hold inf/nan)"}
    return None


def describe(kind: str, tensor: str, step: int) -> str:
    """As ``harness.parity.localise.describe``, and ``dense0/kernel:m optimizer state, after step 0``."""
    if kind == "opt_state":
        return f"{tensor} optimizer state, after step {step}"
    return describe_kind(kind, tensor, step)


def network_spec(spec: RunSpec) -> RunSpec:
    """``spec`` as the tier's sides and emulation all train it: a lab with RBM pre-training starts from the
    referee's pre-trained network weights, held in float32 (each side pre-training in its own arithmetic would
    start the policies from weights one float32 rounding apart)."""
    if spec.lab.pretrain is None:
        return spec
    from harness.referee import rbm

    net = rbm.pretrained(spec)[0]
    params = {k: np.asarray(v, np.float32) for k, v in net.params.items()}
    return dataclasses.replace(net, lab=dataclasses.replace(spec.lab, pretrain=None), params=params)


def tier(spec: RunSpec, policy: Policy, sides: dict[str, Side]) -> dict:
    """The precision tier of ``spec`` under ``policy``: each side's trace (``sides[name](spec, steps, policy,
    loss_scale)``) against the emulation. Per side ``off`` (or None), ``scale_off`` (or None), ``closest``;
    ``verdict`` and ``verdict_kind`` (``follows policy`` / ``differs``) in the parity vocabulary."""
    steps = steps_for(policy)
    spec = network_spec(spec)
    ref, twins = references(spec, policy, steps)
    out: dict = {"policy": policy.record(), "steps": steps, "loss_scale": None, "sides": {}}
    scale = probe_scale(policy)
    if scale is not None:
        out["loss_scale"] = {**vars(scale), "reference_finite": [bool(r["finite"]) for r in ref]}
    for name, run in sides.items():
        trace = run(spec, steps, policy, scale)
        result = judge(trace, ref, twins)
        result["scale_off"] = check_scale(trace, scale)
        out["sides"][name] = result
    out["verdict"], out["verdict_kind"] = verdict(out, policy)
    return out


def backend_sides(names: Sequence[str], mutation: str | None = None, mutated: str | None = None) -> dict[str, Side]:
    """Each registered backend's ``precision_trace`` as a tier side; ``mutation`` planted in backend ``mutated``
    (the selfcheck's precision-placement bugs, each backend's ``precision_mutations`` capability)."""
    from harness import backend as registry

    def side(name: str) -> Side:
        run = registry.capability(name, "precision_trace")
        planted = mutation if name == mutated else None
        return lambda spec, steps, policy, scale: run(spec, steps, policy, scale, planted)

    return {name: side(name) for name in names}


def verdict(result: dict, policy: Policy) -> tuple[str, str]:
    """"follows mixed_bfloat16 (3 steps, closest 0.02 of tolerance)" or "differs: torch: dense0/kernel gradient
    at step 0 (rel 3e-03, tolerance 1e-06) off the emulated policy" (every side that is off, named)."""
    offs = []
    for name, r in result["sides"].items():
        found = [(o["step"], i, o) for i, o in enumerate((r["scale_off"], r["off"])) if o]
        first = min(found, key=lambda f: f[:2])[2] if found else None
        if first is not None:
            figures = f" (rel {first['rel']:.0e}, tolerance {first['tolerance']:.0e})" if "rel" in first else ""
            offs.append(f"{name}: {first['what']}{figures}")
    if offs:
        return f"differs: {'; '.join(offs)} off the emulated {policy.name} policy", "differs"
    share = max((r["closest"]["share"] for r in result["sides"].values()), default=0.0)
    return f"follows {policy.name} ({result['steps']} steps, closest {share:.2g} of tolerance)", "follows policy"
