"""The job's computations: one lab in every chosen framework (compared when there are two or more), the
weight-initialisation study, and each framework's matmul peak. Each returns its record in JSON form."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import Iterator
from typing import Any

from harness import backend as backends
from harness.labs import Lab, get_lab
from harness.references import LossSeries, as_dict
from harness.report.options import FORMAT, INIT_STUDY_LAB, INIT_STUDY_LABS, INIT_STUDY_SCHEMES, JobOptions
from harness.report.plan import course_frameworks, flops_per_step, run_options, thread_counts
from harness.report.typed import LabRecord, StudyRecord
from harness.run.costs import phase
from harness.run.results import to_jsonable

PARITY_KEYS = ("steps", "threshold", "max_abs_diff", "max_rel_diff", "first_divergence_step", "growth_per_step",
               "noise_floor", "sides", "quantities", "tiers", "verdict", "verdict_kind")
PEAK_REPEATS = 10


def jsonable(obj: Any) -> Any:
    """``obj`` exactly as it reads back from JSON."""
    return json.loads(json.dumps(to_jsonable(obj)))


def _round(values: Any, digits: int = 4) -> list[float]:
    return [float(f"{float(v):.{digits}g}") for v in values]


@contextlib.contextmanager
def backend_threads(counts: dict[str, int]) -> Iterator[None]:
    """Run the body with each named backend on its intra-op thread count, restored afterwards."""
    from harness.run.machine import threads_set

    with contextlib.ExitStack() as stack:
        for fw, count in counts.items():
            stack.enter_context(threads_set(fw, count))
        yield


def thread_record(opts: JobOptions, counts: dict[str, int]) -> dict[str, int | None]:
    """The intra-op threads each framework ran with: the count set for the task, else the backend's own."""
    return {fw: counts[fw] if fw in counts else backends.load(fw).thread_count() for fw in opts.frameworks}


def lab_header(lab: Lab, opts: JobOptions) -> dict:
    """What a lab's record says about the lab, whatever the outcome."""
    return {"format": FORMAT, "lab": lab.name, "title": lab.title, "notebook": lab.notebook, "task": lab.task,
            "key": opts.lab_key(lab)}


def error_record(lab: Lab, opts: JobOptions, exc: BaseException) -> LabRecord:
    """The record of a lab that crashed (a rerun tries it again)."""
    return jsonable({**lab_header(lab, opts), "status": "error", "error": f"{type(exc).__name__}: {exc}"})


def compared_pair(opts: JobOptions) -> tuple[str, str]:
    """The two frameworks the job compares: the first two chosen, a float64-only referee after the others."""
    order = sorted(opts.frameworks, key=lambda fw: backends.info(fw).float64_only)
    return order[0], order[1]


def _compare(lab: Lab, options: Any, opts: JobOptions) -> dict:
    """The parity comparison of the chosen frameworks (``harness.parity.api``: figures, tiers, verdict), in the
    record's layout."""
    from harness.parity.api import compare

    a, b = compared_pair(opts)
    result = compare(lab, options, threshold=opts.threshold, noise=opts.noise, a=a, b=b)
    rec: dict[str, Any] = {"runs": result["runs"], "parity": {k: result[k] for k in PARITY_KEYS if k in result}}
    rec["per_step"] = {k: _round(v) for k, v in result["per_step"].items() if k != "abs_diff"}
    if "companion" in result:
        other = result["companion"]
        rec["companion_parity"] = {k: v for k, v in other.items() if k != "per_step"}
        rec["per_step"]["companion_rel_diff"] = _round(other["per_step"]["rel_diff"])
    return rec


def _train(lab: Lab, options: Any, opts: JobOptions) -> dict:
    """The lab's runs in every chosen framework, in their order, and the parity figures of the comparison (two
    or more frameworks; figures only for the frameworks it covers): ``status`` "ok" or "diverged"."""
    from harness.errors import RunDiverged
    from harness.run.runner import run

    try:
        rec = _compare(lab, options, opts) if opts.compares else {"runs": {}}
        for fw in opts.frameworks:  # those the comparison does not cover run alone
            if fw not in rec["runs"]:
                rec["runs"][fw] = run(lab, fw, options)
        rec["runs"] = {fw: rec["runs"][fw] for fw in opts.frameworks}
        return {**rec, "status": "ok"}
    except RunDiverged as exc:
        runs = exc.result.get("runs", {exc.result.get("framework", "?"): exc.result})
        return {"status": "diverged", "error": str(exc), "runs": runs}


def same_start(lab: Lab, options: Any, fw: str, shared: dict | None) -> bool:
    """Whether ``fw``'s native initial weights for ``lab`` are bit for bit the shared ones its run ``shared``
    started from (torch's own draw of a uniform scheme: the harness ports its generator), so that a native run
    would repeat that run exactly."""
    import numpy as np

    from harness.run.runner import shared_weights

    if not backends.offers(fw, "native_params") or not shared or shared.get("status") != "ok" \
            or lab.companion is not None:
        return False
    native = backends.capability(fw, "native_params")
    model = lab.with_options(**options.overrides).model if options.overrides else lab.model
    ours, theirs = shared_weights(model, shared["seed"], options.dtype)[0], native(model, shared["seed"], options.dtype)
    return ours.keys() == theirs.keys() and all(
        ours[k].dtype == theirs[k].dtype and np.array_equal(ours[k], theirs[k]) for k in ours)


def _native(lab: Lab, options: Any, opts: JobOptions, shared: dict) -> dict:
    """For a lab with the course's printed loss trajectory: a run in each chosen course framework from its own
    (native) initial weights; where those are bit for bit the shared weights its compared run started from
    (:func:`same_start`), that run's record stands for it (``same_as_shared``), not trained again."""
    from harness.errors import RunDiverged
    from harness.run.runner import run

    native = {}
    for fw in course_frameworks(opts):
        with phase(f"native run {fw}"):
            if same_start(lab, options, fw, shared.get(fw)):
                native[fw] = {**shared[fw], "weights": "native", "same_as_shared": True}
                continue
            try:
                native[fw] = run(lab, fw, dataclasses.replace(options, weights="native"))
            except RunDiverged as exc:
                native[fw] = exc.result
    return native


def compute_lab(lab: Lab, opts: JobOptions) -> LabRecord:
    """Train ``lab`` in the job's frameworks (compared when there are two or more) on the task's thread counts;
    for labs with the course's printed loss trajectory, once more natively (:func:`_native`)."""
    options = run_options(lab, opts)
    counts = thread_counts(lab.task, opts)
    rec: dict[str, Any] = {**lab_header(lab, opts), "reference": as_dict(lab.reference), "notes": lab.notes,
                           "masks": options.mask_mode, "flops_per_step": flops_per_step(lab),
                           "raw_pixel_reference": lab.reference_raw_pixels}
    if lab.companion is not None:
        rec["model_labels"] = list(lab.model_labels)
    start = time.perf_counter()
    with backend_threads(counts):
        rec["threads"] = thread_record(opts, counts)
        rec.update(_train(lab, options, opts))
        if lab.reference.of(LossSeries) and course_frameworks(opts):
            rec["native"] = _native(lab, options, opts, rec.get("runs", {}))
    rec["wall_s"] = time.perf_counter() - start
    return jsonable(rec)


def compute_init_study(opts: JobOptions) -> StudyRecord:
    """The same network trained briefly under each weight initialisation the lectures list (RBM pre-training:
    its own lab, the same network and training), in ``opts.study_framework()``; a scheme whose run fails is
    recorded with its error."""
    from harness.errors import RunDiverged
    from harness.run.runner import run

    lab = get_lab(INIT_STUDY_LAB)
    fw, steps = opts.study_framework(), opts.study_steps()
    start = time.perf_counter()
    runs, errors = {}, {}
    with backend_threads({k: v for k, v in thread_counts(lab.task, opts).items() if k == fw}):
        for scheme in INIT_STUDY_SCHEMES:
            own = get_lab(INIT_STUDY_LABS[scheme]) if scheme in INIT_STUDY_LABS else None  # e.g. RBM pre-training
            options = dataclasses.replace(run_options(own or lab, opts), steps=steps,
                                          overrides={} if own else {"init": scheme})
            try:
                runs[scheme] = run(own or lab, fw, options)
            except RunDiverged as exc:
                runs[scheme] = exc.result
            except Exception as exc:  # recorded (a rerun tries again); the job goes on
                errors[scheme] = f"{type(exc).__name__}: {exc}"
    try:
        native = native_init_study(lab, opts)
    except Exception as exc:  # recorded, like a scheme's run; the job goes on
        native, errors["native init check"] = None, f"{type(exc).__name__}: {exc}"
    rec = {"format": FORMAT, "lab": lab.name, "framework": fw, "steps": steps, "key": opts.study_key(),
           "runs": runs, "status": "ok" if not errors else "error", "native_init": native,
           "wall_s": time.perf_counter() - start}
    if errors:
        rec["errors"] = errors
        rec["error"] = "; ".join(dict.fromkeys(errors.values()))
    return jsonable(rec)


def native_init_study(lab: Lab, opts: JobOptions) -> dict:
    """The native-initialisation check (``harness.parity.initcheck``) of every study scheme that is an init scheme
    (not a lab of its own, as RBM pre-training) in the job's frameworks that draw native weights: each scheme's
    one-line verdict, and ``ok`` for all."""
    from harness.parity.initcheck import ALPHA, check

    start = time.perf_counter()
    fws = tuple(fw for fw in opts.frameworks if backends.offers(fw, "native_params"))
    schemes = [s for s in INIT_STUDY_SCHEMES if s not in INIT_STUDY_LABS]
    checks = {s: check(lab.with_options(init=s).model, fws, lab.seed) for s in schemes} if fws else {}
    return {"frameworks": list(fws), "ok": all(c["ok"] for c in checks.values()), "alpha": ALPHA,
            "tests": sum(c["tests"] for c in checks.values()), "text": {s: c["text"] for s, c in checks.items()},
            "wall_s": time.perf_counter() - start}


def measure_peaks(opts: JobOptions) -> dict[str, dict]:
    """Each framework's float32 matmul peak on the job's device, measured as ``dlzta bench`` measures it, on
    the threads the MNIST labs get."""
    from harness.bench.measure import PEAK_N, measure_peak

    counts = thread_counts("mnist", opts)
    peaks = {}
    for fw in opts.frameworks:
        record = measure_peak(fw, opts.device, PEAK_N[opts.device], PEAK_REPEATS, counts.get(fw))
        peaks[fw] = {k: v for k, v in record.items() if k != "seconds"}
    return peaks
