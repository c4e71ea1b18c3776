"""The exact tier ("same math"): both sides in float64, from the same weights, batches and dropout masks.

Whatever dtype the user asked for, both run configurations train again in float64 over a window of the run:
the shared weights the user's run started from (float32 widened exactly, not a fresh float64 draw), the same
batches, and shared dropout masks always. The window is the whole run for the XOR labs and the first
``MNIST_STEPS`` steps of an MNIST lab (fewer for the largest nets: at most ``WORK`` float64 FLOPs a run, never
under ``MIN_STEPS``). A float64 one-ulp twin (every initial weight moved by one ulp) of the cheaper side sets
the tolerance of every quantity: ``max(FLOOR, FACTOR x`` the twin's difference up to that point ``)``, and ends
the judged window early where the twin's own training loss has drifted past ``CHAOS`` (the trajectory has
turned chaotic: float64 rounding itself is amplified there). Correct ports agree to ~1e-15..1e-12; a learning
rate off by one part in a million differs by 1e-6.

Every quantity (``harness.parity.quantities``) is judged, and the first few steps' internals always are
(``TRACE_STEPS`` steps of per-tensor gradients, updates, parameters and state, :mod:`harness.parity.localise`);
on a failure the first step and tensor that part are named, and a float64 referee backend, where one is
registered and usable, says which side is off.
"""

from __future__ import annotations

import contextvars
import dataclasses
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

import harness.parity.localise as loc
import harness.parity.quantities as qty
import harness.parity.verdict as verdict
from harness import backend as registry
from harness.backend import RunSpec, TrainResult
from harness.errors import BackendError
from harness.parity.configs import RunConfig, cast_arrays, retarget
from harness.run.costs import phase
from harness.run.machine import SMALL_TASKS
from harness.run.runner import Prepared, dropout_masks
from harness.weights import nudge

T = TypeVar("T")
U = TypeVar("U")

MNIST_STEPS = 200
WORK = 4e10  # float64 FLOPs (6 x batch x weights per step) one run of the window may take
MIN_STEPS = 20
CHAOS = 1e-9  # the twin's relative loss difference where the judged window ends
TRACE_STEPS = 2  # steps whose internals are always compared
TRACE_BYTES = 6e8  # memory a localising trace may take (every run's tensors of every traced step)
TRACE_MAX = 1000  # steps a localising trace may run


def window(prepared: Prepared) -> int:
    """Steps of the exact tier: the whole run (XOR labs), else ``MNIST_STEPS`` capped by ``WORK``."""
    if prepared.lab.task != "mnist":
        return prepared.steps
    sizes = prepared.spec.model.sizes
    flops = 6 * (prepared.lab.batch_size or 1) * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    return min(prepared.steps, max(MIN_STEPS, min(MNIST_STEPS, int(WORK // flops))))


def exact_spec(prepared: Prepared, spec: RunSpec, steps: int, evals: tuple[int, ...] | None = None) -> RunSpec:
    """``spec`` cut to ``steps`` steps in float64, its weights widened, with shared dropout masks, evaluated after
    ``evals`` updates (default: at the window's end only: each further point costs JAX a compile)."""
    batches = None if spec.batches is None else spec.batches[:steps]
    masks = ([m[:steps] for m in spec.masks] if spec.masks is not None
             else dropout_masks(spec.model, batches, steps, prepared.seed))
    return dataclasses.replace(
        spec, dtype="float64", steps=steps, batches=batches, masks=masks, progress=None,
        eval_steps=(steps,) if evals is None else evals,
        params=cast_arrays(spec.params, "float64"), state=cast_arrays(spec.state, "float64"))


def _specs(prepared: Prepared, steps: int, evals: tuple[int, ...] | None = None) -> list[RunSpec]:
    return [exact_spec(prepared, s, steps, evals) for s in (prepared.spec, prepared.companion) if s is not None]


def _train(config: RunConfig, specs: Sequence[RunSpec], nudged: bool = False) -> list[TrainResult]:
    registry.check_device(config.backend, config.device)
    module = registry.load(config.backend)
    out = []
    for spec in specs:
        spec = retarget(spec, config)
        out.append(module.train(dataclasses.replace(spec, params=nudge(spec.params)) if nudged else spec))
    return out


def side_by_side(first: Callable[[], T], second: Callable[[], U], together: bool) -> tuple[T, U]:
    """``first()`` and ``second()``; with ``together``, ``second`` in a thread beside ``first`` (the tiny XOR
    nets: each side trains on one core, so the machine's second core is free; no thread pool is shared)."""
    if not together:
        return first(), second()
    with ThreadPoolExecutor(max_workers=1) as pool:
        later = pool.submit(contextvars.copy_context().run, second)
        return first(), later.result()


def float64(config: RunConfig) -> RunConfig:
    """``config`` in float64."""
    return dataclasses.replace(config, dtype="float64")


def cheaper(a: RunConfig, b: RunConfig, steps: int) -> RunConfig:
    """The side whose backend the registry expects to run ``steps`` steps sooner (ties: ``a``)."""
    def cost(c: RunConfig) -> float:
        setup, per_step = registry.info(c.backend).cost
        return setup + steps * per_step

    return b if cost(b) < cost(a) else a


def referee_config(a: RunConfig, b: RunConfig) -> RunConfig | None:
    """The first registered float64 referee that is not one of the sides, on the CPU; None: none usable."""
    for name in registry.names():
        entry = registry.info(name)
        if entry.float64_only and name not in (a.backend, b.backend):
            try:
                registry.load(name)
            except BackendError:
                continue
            return RunConfig(name, "cpu", entry.executions[0], "float64")
    return None


def chaos_step(twin: dict[str, qty.Quantity]) -> int | None:
    """The first step where the twin's training loss has drifted past ``CHAOS`` (None: never)."""
    over = np.flatnonzero(~(twin["loss"].rel <= CHAOS))
    return int(over[0]) if over.size else None


def _twin_bound(q: qty.Quantity, twin: qty.Quantity | None) -> np.ndarray:
    """At each point of ``q``, the largest relative difference the twin showed on the same quantity up to that
    step: 0 where the twin has no point at or before it (the tolerance's floor then holds), inf where the twin's
    value was not finite (it diverged: no bound)."""
    if twin is None or not len(twin.rel):
        return np.zeros(q.rel.shape)
    running = np.fmax.accumulate(np.nan_to_num(twin.rel, nan=np.inf, posinf=np.inf))
    at = np.searchsorted(twin.steps, q.steps, side="right") - 1
    return np.where(at >= 0, running[np.maximum(at, 0)], 0.0)


def judge(cross: dict[str, qty.Quantity], twin: dict[str, qty.Quantity], limit: int | None) -> dict[str, dict]:
    """Figures of every quantity against ``max(FLOOR, FACTOR x`` the twin's running maximum ``)``, judged at the
    points before step ``limit`` (None: all)."""
    out = {}
    for name, q in cross.items():
        judged = len(q.steps) if limit is None else int(np.searchsorted(q.steps, limit))
        fig = qty.figures(q, loc.tolerance(_twin_bound(q, twin.get(name))), judged)
        out[name] = {**fig, "ok": fig["first_step_over"] is None}
    return out


def first_failure(figs: dict[str, dict]) -> tuple[str, dict] | None:
    """The quantity that passes its tolerance first (by step; the training loss before the rest)."""
    failed = [(f["first_step_over"], i, name) for i, (name, f) in enumerate(figs.items()) if not f["ok"]]
    if not failed:
        return None
    name = min(failed)[2]
    return name, figs[name]


@dataclasses.dataclass
class _Sides:
    """The exact tier's run configurations (float64) and names: ``a``, ``b``, the twin's (a copy of ``a`` or
    ``b``, whose unnudged run is ``base``), and the referee's (None: none)."""

    a: RunConfig
    b: RunConfig
    twin: RunConfig
    base: str  # "a" or "b"
    referee: RunConfig | None
    names: tuple[str, str]


def _trace(config: RunConfig, spec: RunSpec, steps: int, nudged: bool = False) -> list[dict] | None:
    fn = getattr(registry.load(config.backend), "trace", None)
    if fn is None:
        return None
    spec = retarget(spec, config)
    return fn(dataclasses.replace(spec, params=nudge(spec.params)) if nudged else spec, steps)


def traces(sides: _Sides, spec: RunSpec, steps: int) -> dict[str, list[dict]] | None:
    """``steps`` steps of ``spec`` traced on both sides, the twin, and the referee where there is one (None:
    a side's backend has no ``trace``)."""
    out = {"a": _trace(sides.a, spec, steps), "b": _trace(sides.b, spec, steps),
           "twin": _trace(sides.twin, spec, steps, nudged=True)}
    if any(v is None for v in out.values()):
        return None
    if sides.referee is not None:
        try:
            ref = _trace(sides.referee, spec, steps)
        except BackendError:
            ref = None
        if ref is not None:
            out["referee"] = ref
    return out


def _localise(t: dict[str, list[dict]], base: str) -> dict | None:
    return loc.localise(t["a"], t["b"], t[base], t["twin"])


def trace_cap(spec: RunSpec, runs: int = 4) -> int:
    """Steps a localising trace may cover within ``TRACE_BYTES`` (three tensors a weight, float64, per run)."""
    weights = sum(int(np.prod(v.shape)) for v in spec.params.values())
    return max(1, min(TRACE_MAX, int(TRACE_BYTES // (runs * 3 * 8 * max(weights, 1)))))


def _sided(sides: _Sides, agrees: dict[str, bool]) -> dict:
    """The referee's finding from whether each side (by name) agrees with it."""
    a, b = sides.names
    off = b if agrees[a] and not agrees[b] else a if agrees[b] and not agrees[a] else None
    other = None if off is None else a if off == b else b
    return {"backend": sides.referee.backend, "agrees": agrees, "off": off,
            "text": loc.side_text(off, other, sides.referee.backend)}


def referee_side(sides: _Sides, t: dict[str, list[dict]], at: dict) -> dict:
    """Which side agrees with the referee's trace on the tensor that parts (two against one)."""
    base, twin, ref = t[sides.base], t["twin"], t["referee"]
    return _sided(sides, {name: loc.agrees_at(t[k], ref, base, twin, at) for name, k in zip(sides.names, "ab")})


def referee_window(sides: _Sides, prepared: Prepared, specs: list[RunSpec], runs: dict, twin_q: dict,
                   limit: int | None, names: list[str]) -> dict | None:
    """Which side agrees with the referee's whole window on the quantities ``names`` (None: the referee cannot
    run this lab)."""
    try:
        ref = _train(sides.referee, specs)
    except BackendError:
        return None
    agrees = {}
    for label, k in zip(sides.names, "ab"):
        cross = qty.measure(prepared, runs[k], ref, specs)
        agrees[label] = all(f["ok"] for f in judge({n: cross[n] for n in names}, twin_q, limit).values())
    return _sided(sides, agrees)


def make_sides(a: RunConfig, b: RunConfig, names: tuple[str, str], steps: int, referee: str) -> _Sides:
    """Both sides in float64, the twin on the cheaper one, and the referee unless ``referee`` is "never"."""
    a64, b64 = float64(a), float64(b)
    twin = cheaper(a64, b64, steps)
    return _Sides(a64, b64, twin, "a" if twin == a64 else "b",
                  None if referee == "never" else referee_config(a, b), names)


def check_internals(sides: _Sides, specs: list[RunSpec], figs: dict, steps: int,
                    trace_steps: int) -> tuple[dict, dict | None, dict | None]:
    """The first ``trace_steps`` steps traced and compared; where they agree but a training quantity of the window
    does not, the steps up to its first failure (within ``trace_cap``). Returns the summary of the always-on check,
    the localisation (None: nothing parted in the traced steps) and the traces it came from."""
    t = traces(sides, specs[0], min(trace_steps, steps, trace_cap(specs[0])))
    if t is None:
        return {"steps": 0, "ok": None, "note": "a side's backend has no trace"}, None, None
    found = _localise(t, sides.base)
    summary = {"steps": len(t["a"]), "ok": found is None,
               "closest": loc.closest(t["a"], t["b"], t[sides.base], t["twin"])}
    if "referee" in t:  # two against one over the traced steps, whatever the verdict
        summary["referee_agrees"] = {name: loc.localise(t[k], t["referee"], t[sides.base], t["twin"]) is None
                                     for name, k in zip(sides.names, "ab")}
    failure = first_failure(figs)
    if found is None and failure is not None and not failure[0].split("companion/")[-1].startswith("eval/"):
        name, fig = failure  # (an evaluation alone parting: no training step to trace)
        companion = name.startswith("companion/") and len(specs) > 1
        spec = specs[1] if companion else specs[0]
        want = min(fig["first_step_over"] + 1, steps, trace_cap(spec))
        if companion or want > summary["steps"]:
            t = traces(sides, spec, want)
            found = None if t is None else _localise(t, sides.base)
            if found is not None and companion:
                found["what"] = f"companion {found['what']}"
    return summary, found, t


def _verdict(figs: dict, found: dict | None, ref: dict | None, judged: int) -> tuple[bool, str]:
    failure = first_failure(figs)
    side = ref["text"] if ref else ""
    if found is not None:
        return False, verdict.differs(found["what"], found["rel"], side)
    if failure is not None:
        name, fig = failure
        return False, verdict.differs(f"{name} at step {fig['first_step_over']}", fig["rel_at_first"], side)
    return True, verdict.same_math(judged, figs["loss"]["max_rel_judged"])


def exact_tier(prepared: Prepared, a: RunConfig, b: RunConfig, names: tuple[str, str] = ("a", "b"),
               steps: int | None = None, referee: str = "auto", trace_steps: int = TRACE_STEPS,
               reuse: tuple[list[TrainResult], list[TrainResult]] | None = None, raw: dict | None = None) -> dict:
    """The exact tier of ``prepared`` (shared weights) between ``a`` and ``b`` (called ``names``) over ``steps``
    steps (default :func:`window`). ``referee``: "auto" (in the traces, and over the window on a failure),
    "always" (also over the window when all agree) or "never". ``reuse``: float64 results of both sides over
    exactly this window (shared masks; evaluated where ``prepared`` evaluates), to save training them again.
    ``raw``: a dict to receive the float64 results (``a``, ``b``, ``twin``) and the twin's side."""
    wall, cpu = time.perf_counter(), time.process_time()
    n = min(steps or window(prepared), prepared.steps)
    specs = _specs(prepared, n, prepared.spec.eval_steps if reuse else None)
    sides = make_sides(a, b, names, n, referee)
    with phase("float64 runs"):
        runs = dict(zip("ab", reuse or side_by_side(lambda: _train(sides.a, specs), lambda: _train(sides.b, specs),
                                                    prepared.lab.task in SMALL_TASKS)))
    with phase("twin"):
        runs["twin"] = _train(sides.twin, specs, nudged=True)
    if raw is not None:
        raw.update(runs, base=sides.base)
    twin_q = qty.measure(prepared, runs[sides.base], runs["twin"], specs)
    limit = chaos_step(twin_q)
    figs = judge(qty.measure(prepared, runs["a"], runs["b"], specs), twin_q, limit)
    with phase("traces"):
        internals, found, t = check_internals(sides, specs, figs, n, trace_steps)
        if prepared.lab.pretrain is not None:  # RBM pre-training comes first: a difference there is the answer
            import harness.parity.rbm_trace as pretrain

            internals, found, t = pretrain.check(sides, specs[0], figs, internals, found, t, trace_steps)
    failure = first_failure(figs)
    ref = None
    with phase("referee"):
        if sides.referee is not None and found is not None and t is not None and "referee" in t:
            ref = referee_side(sides, t, found)
        elif sides.referee is not None and (failure is not None or referee == "always"):
            ref = referee_window(sides, prepared, specs, runs, twin_q, limit,
                                 [failure[0]] if failure else list(figs))
    judged = n if limit is None else limit
    ok, text = _verdict(figs, found, ref, judged)
    return {"tier": "exact", "ok": ok, "text": text, "dtype": "float64", "steps": n, "judged_steps": judged,
            "chaos_step": limit, "max_rel_diff": figs["loss"]["max_rel_judged"], "quantities": figs,
            "internals": internals, "localised": found, "referee": ref,
            "sides": {name: c.as_dict() for name, c in zip(names, (sides.a, sides.b))},
            "twin": {"side": names["ab".index(sides.base)], "nudge": "1 ulp (float64) on every initial weight"},
            "tolerance": {"floor": loc.FLOOR, "factor": loc.FACTOR, "chaos": CHAOS},
            "seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu}
