"""The report's precision section, computed: each chosen lab (``--precision-labs``) trained again in every reduced
precision (:data:`PRECISIONS`, ``harness.precision``) in each chosen framework that has a precision learner, at the
lab's own length in this job (same epochs, same caps, same shared weights and data, the same thread counts as its
float32 run), beside that float32 run (the lab's own, not retrained); the precision tier's verdict per precision
(``harness.parity.precision``: both frameworks' first steps against the referee's emulation of the policy).

The record goes to ``OUT/labs/precision.json`` and into ``results.json`` (``precision``); a rerun reuses it when
its key (the precision labs, the precisions, and each lab's own key) is unchanged."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from harness import backend as backends
from harness.errors import UsageError
from harness.labs import get_lab
from harness.report.options import FORMAT, JobOptions
from harness.report.typed import LabRecord, PrecisionRecord, RunRecord

TASK = "precision"  # the task's name in the plan, the progress line and the cost history
# the default (those of them among the job's labs): 10 epochs of 125 steps, batch norm under each policy
DEFAULT_LABS = ("mnist_batchnorm",)
PRECISIONS = ("bfloat16", "mixed_bfloat16", "mixed_float16")
EPOCHS = 3  # the section's length for a lab that evaluates every epoch (its float32 figures at that epoch exist)
NUM = (int, float, type(None))
ROW = {"framework": str, "precision": str, "status": str, "test_accuracy": NUM, "final_loss": NUM,
       "steps_per_s": NUM, "speedup": NUM, "accuracy_cost": NUM, "*": object}
SHAPE = {"format": int, "key": dict, "status": str, "precisions": [str], "frameworks": [str],
         "labs": {"*": {"rows": [ROW], "tiers": {"*": {"verdict": str, "verdict_kind": str, "*": object}},
                        "*": object}}, "wall_s?": NUM, "error?": str, "*": object}


def chosen(opts: JobOptions) -> tuple[str, ...]:
    """The section's labs: ``--precision-labs`` as given, else those of :data:`DEFAULT_LABS` the job runs."""
    if opts.precision_labs is not None:
        return opts.precision_labs
    return tuple(name for name in DEFAULT_LABS if name in opts.labs)


def frameworks(opts: JobOptions) -> tuple[str, ...]:
    """The chosen frameworks that train reduced precision (not a float64-only referee)."""
    return tuple(fw for fw in opts.frameworks if not backends.info(fw).float64_only)


def active(opts: JobOptions) -> bool:
    """Whether the job has a precision section: labs chosen, a float32 job, a framework to train them."""
    return bool(chosen(opts)) and opts.dtype == "float32" and bool(frameworks(opts))


def check(opts: JobOptions) -> None:
    """UsageError for precision labs the section cannot take: not among the job's labs (their float32 run is
    the column compared against), or a lab with hand-written backprop (reduced precision covers module labs)."""
    for name in opts.precision_labs or ():
        lab = get_lab(name)
        if name not in opts.labs:
            raise UsageError(f"--precision-labs {name}: not among the job's labs (--labs); its float32 run is the "
                             "column the precisions are compared with")
        if lab.manual:
            raise UsageError(f"--precision-labs {name}: the lab writes its backprop by hand; reduced precision "
                             "covers the module labs")


def key(opts: JobOptions) -> dict:
    """Everything the section depends on: the labs, the precisions, the frameworks and each lab's own key."""
    return {"labs": list(chosen(opts)), "precisions": list(PRECISIONS), "frameworks": list(frameworks(opts)),
            "lab_keys": {name: opts.lab_key(get_lab(name)) for name in chosen(opts)}}


def estimate(opts: JobOptions, train_size: int) -> float:
    """Rough seconds of the section: each precision's runs as long as the lab's own, and its tier (~2 s)."""
    from harness.report.plan import estimate_seconds

    alone = dataclasses.replace(opts, frameworks=frameworks(opts), noise=False)
    return sum(len(PRECISIONS) * (estimate_seconds(get_lab(n), alone, train_size) + 2.0) for n in chosen(opts))


def plan_task(plan: Any, opts: JobOptions, train_size: int) -> None:
    """Add the section to the job's ``plan`` (:mod:`.plan`): reused under the same key, else estimated."""
    from harness.report.plan import _estimate, _saved

    if active(opts):
        key_, old = key(opts), (plan.previous or {}).get("precision")
        plan.saved[TASK] = rec = _saved(plan, opts, TASK, key_, old, {TASK: (SHAPE, "precision")})
        plan.estimates[TASK] = 0.0 if rec else _estimate(plan, TASK, key_, old, lambda: estimate(opts, train_size))


def figures(run: RunRecord) -> tuple[float | None, float | None]:
    """(test accuracy, final loss) of a run: the loss is the mean training loss of its last epoch (the course's
    cost), else its last step's."""
    if run.get("status") != "ok":
        return None, None
    final = run.get("final") or {}
    loss = run["epoch_cost"][-1] if run.get("epoch_cost") else final.get("train_loss")
    return final.get("test_accuracy"), loss


def _row(fw: str, precision: str, run: RunRecord | None, base: RunRecord | None, error: str | None = None) -> dict:
    acc, loss = figures(run) if run else (None, None)
    sps = (run or {}).get("timing", {}).get("steps_per_s")
    base_sps = (base or {}).get("timing", {}).get("steps_per_s")
    base_acc = figures(base)[0] if base else None
    row = {"framework": fw, "precision": precision, "status": (run or {}).get("status", "error"),
           "test_accuracy": acc, "final_loss": loss, "steps_per_s": sps, "execution": (run or {}).get("execution"),
           "speedup": sps / base_sps if sps and base_sps else None,
           "accuracy_cost": base_acc - acc if acc is not None and base_acc is not None else None}
    if error:
        row["error"] = error
    return row


def epochs_for(lab: Any, own: dict[str, RunRecord]) -> int | None:
    """The epochs the section trains ``lab`` for: :data:`EPOCHS` where the lab's own runs went further and
    evaluated the test set after each epoch (its float32 column is then taken there, not retrained); None: the
    lab's own length."""
    runs = list(own.values())
    if not lab.eval_every_epoch or not runs or any(r.get("status") != "ok" for r in runs):
        return None
    if all(len(r.get("epoch_cost") or []) > EPOCHS and str(EPOCHS * _per_epoch(lab, r)) in r.get("evals", {})
           for r in runs):
        return EPOCHS
    return None


def _per_epoch(lab: Any, run: RunRecord) -> int:
    return run["data"]["train_size"] // lab.batch_size


def at_epoch(lab: Any, run: RunRecord, epochs: int | None) -> RunRecord:
    """``run`` as it stood after ``epochs`` epochs (None: as it ended): its test accuracy evaluated then and the
    epoch-mean training losses so far; its steady-state timing."""
    if epochs is None:
        return run
    step = str(epochs * _per_epoch(lab, run))
    final = {"test_accuracy": run["evals"][step]["test"]["accuracy"]}
    return {**run, "final": final, "epoch_cost": run["epoch_cost"][:epochs], "steps": list(range(int(step)))}


def _tier(name: str, options: Any, precision: str, sides: tuple[str, ...]) -> dict:
    """The precision tier of lab ``name`` under ``precision`` for ``sides`` (each backend's precision trace)."""
    from harness.parity import precision as tier_mod
    from harness.precision import get_policy
    from harness.run.runner import RunOptions, prepare

    start = time.perf_counter()
    prepared = prepare(get_lab(name), RunOptions(**{**vars(options), "weights": "shared", "mask_mode": "shared",
                                                    "dtype": "float32", "precision": None}))
    r = tier_mod.tier(prepared.spec, get_policy(precision), tier_mod.backend_sides(sides))
    return {"verdict": r["verdict"], "verdict_kind": r["verdict_kind"], "steps": r["steps"], "sides": list(sides),
            "seconds": time.perf_counter() - start}


def compute_lab(name: str, opts: JobOptions, rec: LabRecord) -> dict:
    """One lab's precision runs and tiers beside its own float32 runs (``rec``)."""
    from harness.errors import RunDiverged
    from harness.report.compute import backend_threads
    from harness.report.plan import run_options, thread_counts
    from harness.run.costs import phase
    from harness.run.runner import run

    lab = get_lab(name)
    options, fws = run_options(lab, opts), frameworks(opts)
    counts = {fw: n for fw, n in thread_counts(lab.task, opts).items() if fw in fws}
    own, epochs = rec.get("runs", {}), epochs_for(lab, rec.get("runs", {}))
    if epochs is not None:
        options = dataclasses.replace(options, overrides={**options.overrides, "epochs": epochs})
        own = {fw: at_epoch(lab, run, epochs) for fw, run in own.items()}
    rows = [_row(fw, "float32", own.get(fw), own.get(fw)) for fw in fws]
    tiers, traced = {}, tuple(fw for fw in fws if backends.offers(fw, "precision_trace"))[:2]
    with backend_threads(counts):
        for precision in PRECISIONS:
            for fw in fws:
                with phase(f"{name} {fw} {precision}"):
                    try:
                        rows.append(_row(fw, precision, run(lab, fw, dataclasses.replace(options, precision=precision)),
                                         own.get(fw)))
                    except RunDiverged as exc:
                        rows.append(_row(fw, precision, exc.result, own.get(fw), str(exc)))
                    except Exception as exc:  # recorded; the others still run
                        rows.append(_row(fw, precision, None, own.get(fw), f"{type(exc).__name__}: {exc}"))
            if traced:
                with phase(f"{name} tier {precision}"):
                    try:
                        tiers[precision] = _tier(name, options, precision, traced)
                    except Exception as exc:
                        tiers[precision] = {"verdict": f"error: {type(exc).__name__}: {exc}", "verdict_kind": "error",
                                            "steps": 0, "sides": list(traced), "seconds": 0.0}
    runs = [r for r in own.values() if r.get("status") == "ok"]
    return {"epochs": len(runs[0]["epoch_cost"]) if runs and runs[0].get("epoch_cost") else None,
            "steps": runs[0]["steps"][-1] + 1 if runs and runs[0].get("steps") else None, "threads": counts,
            "rows": rows, "tiers": tiers}


def compute(opts: JobOptions, labs: dict[str, LabRecord]) -> PrecisionRecord:
    """The section's record: each precision lab (its float32 record in ``labs``) computed by :func:`compute_lab`."""
    from harness.report.compute import jsonable

    start = time.perf_counter()
    out, errors = {}, []
    for name in chosen(opts):
        rec = labs.get(name)
        if rec is None or rec.get("status") != "ok":
            errors.append(f"{name}: its float32 run did not finish")
            continue
        out[name] = compute_lab(name, opts, rec)
        errors += [f"{name} {r['framework']} {r['precision']}: {r['error']}" for r in out[name]["rows"]
                   if r["status"] == "error"]
    record = {"format": FORMAT, "key": key(opts), "precisions": list(PRECISIONS), "frameworks": list(frameworks(opts)),
              "labs": out, "status": "error" if errors else "ok", "wall_s": time.perf_counter() - start}
    if errors:
        record["error"] = "; ".join(errors)
    return jsonable(record)
