"""The exact tier's look at RBM pre-training (labs with ``Lab.pretrain``): where the pre-training of two runs
parts, CD step by CD step and tensor by tensor, through each backend's ``pretrain_trace(spec, rbm, steps)``
(``torch_impl/rbm.py``, ``jax_impl/rbm.py``, ``harness/referee/rbm.py``), judged by
:mod:`harness.parity.localise` as the training steps are ("pretraining rbm0/visible_bias update at step 0",
"pretraining reconstruction error of rbm1 at step 3"). Pre-training comes first, so a difference found there is
the answer, and the referee's trace of it names the side."""

from __future__ import annotations

import dataclasses

import numpy as np

import harness.parity.localise as loc
from harness import backend as registry
from harness.backend import BackendError, RunSpec
from harness.parity.configs import RunConfig, retarget
from harness.weights import nudge

TRACE_BYTES = 6e8  # memory a pre-training trace may take (as the training steps' traces)


def _trace(config: RunConfig, spec: RunSpec, rbm: int, steps: int, nudged: bool = False) -> list[dict] | None:
    fn = getattr(registry.load(config.backend), "pretrain_trace", None)
    if fn is None:
        return None
    spec = retarget(spec, config)
    return fn(dataclasses.replace(spec, params=nudge(spec.params)) if nudged else spec, rbm, steps)


def traces(sides: object, spec: RunSpec, rbm: int, steps: int) -> dict[str, list[dict]] | None:
    """``steps`` CD steps of RBM ``rbm`` traced on both sides, the twin and the referee where there is one
    (None: a side's backend has no ``pretrain_trace``)."""
    out = {"a": _trace(sides.a, spec, rbm, steps), "b": _trace(sides.b, spec, rbm, steps),
           "twin": _trace(sides.twin, spec, rbm, steps, nudged=True)}
    if any(v is None for v in out.values()):
        return None
    if sides.referee is not None:
        try:
            ref = _trace(sides.referee, spec, rbm, steps)
        except BackendError:
            ref = None
        if ref is not None:
            out["referee"] = ref
    return out


def _where(figs: dict) -> tuple[int, int] | None:
    """(rbm, CD step) of the first pre-training quantity over its tolerance (None: all agree)."""
    failed = sorted((int(name.split("/")[1][3:]), f["first_step_over"]) for name, f in figs.items()
                    if name.startswith("pretrain/rbm") and not f["ok"])
    return failed[0] if failed else None


def cap(spec: RunSpec, rbm: int, runs: int = 4) -> int:
    """CD steps a trace of RBM ``rbm`` may cover within ``TRACE_BYTES`` (three tensors a weight, float64, per run)."""
    weights = sum(int(np.prod(v.shape)) for k, v in spec.params.items() if k.startswith(f"rbm{rbm}/"))
    return max(1, int(TRACE_BYTES // (runs * 3 * 8 * max(weights, 1))))


def check(sides: object, spec: RunSpec, figs: dict, internals: dict, found: dict | None, t: dict | None,
          trace_steps: int) -> tuple[dict, dict | None, dict | None]:
    """The pre-training traced (the first ``trace_steps`` CD steps of the first RBM; up to the first step over
    tolerance of the RBM a pre-training quantity names) and localised; returns ``check_internals``'s summary
    (with ``pretrain`` added), localisation and traces, the pre-training's where it parts."""
    where = _where(figs)
    rbm, steps = (0, trace_steps) if where is None else (where[0], where[1] + 1)
    steps = max(1, min(steps, len(spec.pretrain_batches), cap(spec, rbm)))
    pt = traces(sides, spec, rbm, steps)
    if pt is None:
        return {**internals, "pretrain": {"steps": 0, "ok": None}}, found, t
    hit = loc.localise(pt["a"], pt["b"], pt[sides.base], pt["twin"])
    internals = {**internals, "pretrain": {"rbm": rbm, "steps": len(pt["a"]), "ok": hit is None}}
    if hit is None:
        return internals, found, t
    what = (f"reconstruction error of rbm{rbm} at step {hit['step']}" if hit["kind"] == "loss"
            else hit["what"].replace(" gradient at", " CD statistic at"))
    return internals, {**hit, "what": f"pretraining {what}", "rbm": rbm}, pt
