"""The report's section of each lab (runs, parity, the course's numbers, batch norm, pre-training), with the
helpers the summary shares (accuracies, % of peak, execution modes, threads); the job-wide sections are in
:mod:`harness.report.job_sections`. Backends are named from the registry."""

from __future__ import annotations

from typing import Any

import harness.report.course as course
from harness import backend
from harness.report.doc import Doc, num
from harness.report.doc import pct as fmt_pct

MODEL_NAMES = {"bn": "BN", "plain": "no BN"}
NATIVE = "native"


def fmt_acc(acc: Any) -> str:
    """An accuracy: a number, or one per gate."""
    if isinstance(acc, dict):
        return ", ".join(f"{k} {num(v, 3)}" for k, v in acc.items())
    return num(acc, 4)


def pct_peak(rec: dict, fw: str, peak: dict) -> float | None:
    """Matmul FLOPs per second of the run's steady state as % of the matmul peak measured in the job that ran
    it (``rec["peak"]``; ``peak`` for a record without)."""
    sps = rec.get("runs", {}).get(fw, {}).get("timing", {}).get("steps_per_s")
    gflops = rec.get("peak", peak).get(fw, {}).get("gflops")
    if not sps or not gflops or not rec.get("flops_per_step"):
        return None
    return 100.0 * rec["flops_per_step"] * sps / (gflops * 1e9)


MODE_TEXT = {"fused": "fused (lax.scan)", "per_step": "one step per call", "eager": "eager",
             "compiled": "compiled", "cuda_graph": "CUDA graph"}


def mode_text(fw: str, execution: str | None) -> str:
    """How backend ``fw`` ran its steps, in words: the execution mode ``execution`` stands for in the registry
    (an alias such as torch's old "fused" is its eager default), described by the registry's ``extras``
    ("execution_text") or :data:`MODE_TEXT`."""
    if fw not in backend.names():
        return execution or "?"
    entry = backend.info(fw)
    mode = execution if execution in entry.executions else None
    if mode is None:
        mode = getattr(entry, "execution_aliases", {}).get(execution) or entry.executions[0]
    return entry.extras.get("execution_text", {}).get(mode) or MODE_TEXT.get(mode, mode)


def threads_text(rec: dict) -> str:
    """The intra-op threads each backend ran the lab with ("" when not recorded)."""
    threads = rec.get("threads") or {}
    return ", ".join(f"{backend.label(fw)} {n}" for fw, n in threads.items() if n)


def _run_table(doc: Doc, rec: dict, results: dict) -> None:
    runs = [(fw, "shared", run) for fw, run in rec.get("runs", {}).items()]
    runs += [(fw, NATIVE, run) for fw, run in rec.get(NATIVE, {}).items()]
    test = any(course.metric(run, "test_accuracy") is not None for _, _, run in runs)
    rows = []
    for fw, init, run in runs:
        t = run.get("timing", {})
        pct = pct_peak(rec, fw, results.get("peak", {})) if init == "shared" else None
        acc = course.metric(run, "test_accuracy" if test else "train_accuracy")
        row = [backend.label(fw), init, mode_text(fw, run.get("execution")), _steps_text(run),
               num(course.metric(run, "train_loss"))]
        row += [num(course.metric(run, "test_loss"))] if test else []
        rows.append(row + [fmt_acc(acc), num(t.get("warmup_s"), 3), num(t.get("run_s"), 3),
                           num(t.get("steps_per_s"), 4), fmt_pct(pct), run.get("status", "?")])
    header = ["run", "init", "execution", "steps", "training loss, last step"] + (["test loss"] if test else [])
    header += ["test accuracy" if test else "training-set accuracy", "warm-up/compile s", "steady s", "steps/s",
               "% peak", "status"]
    doc.table(header, rows, right=range(3, len(header) - 1))


def _steps_text(run: dict) -> str:
    return str(run["steps"][-1] + 1) if run.get("steps") else "–"


def _onset(figures: dict) -> str | int:
    """The first step over the threshold, or "never"."""
    first = figures.get("first_divergence_step")
    return "never" if first is None else first


def _label(side: str) -> str:
    """A side's name in words: the backend's label where the side is a backend."""
    return backend.label(side) if side in backend.names() else side


def _exact_item(t: dict) -> str:
    """The exact tier in a sentence: its window, its largest difference, its tolerance, what it found."""
    judged = (f", judged over the first {t['judged_steps']}: a float64 twin drifts past "
              f"{num(t['tolerance'].get('chaos'))} there" if t.get("chaos_step") is not None else "")
    tol = (f"max({t['tolerance']['floor']:g}, {t['tolerance']['factor']:g} × the "
           f"{_label(t.get('twin', {}).get('side', ''))} float64 twin)")
    quantities = t.get("quantities", {})
    passed = sum(1 for f in quantities.values() if f.get("ok"))
    found = (f"all {passed} quantities within {tol}" if t.get("ok")
             else f"{len(quantities) - passed} of {len(quantities)} quantities over {tol} (the first: see the verdict)")
    internals = t.get("internals", {})
    agrees = internals.get("referee_agrees")
    referee = "" if not agrees else (
        f"; in the first {internals['steps']} steps, traced tensor by tensor, the float64 referee agrees with "
        + (" and ".join(_label(k) for k, v in agrees.items() if v) or "neither"))
    return (f"exact tier (float64, same weights, batches and masks, {t['steps']} steps{judged}): largest relative "
            f"training-loss difference {num(t.get('max_rel_diff'), 2)}; {found}{referee}")


def _ensemble_item(t: dict) -> str:
    """The statistical tier in a sentence: its ensemble, its window, the ratio against its limit."""
    saturated = (f", the twins' band saturating at step {t['saturated_at']}"
                 if t.get("saturated_at") is not None else "")
    masks = "; own dropout masks, judged against the mask spread" if t.get("masks") == "own" else ""
    return (f"statistical tier ({t.get('members')} one-ulp twins a side, the first {t.get('window')} "
            f"steps{saturated}): {t.get('summary') or t['text']}, worst at step {t.get('at_step')}{masks}")


def _parity(doc: Doc, rec: dict) -> None:
    p = rec.get("parity")
    if not p:
        return
    items = [f"the runs as trained: max absolute difference of the per-step training losses "
             f"{num(p.get('max_abs_diff'), 3)}, max relative {num(p.get('max_rel_diff'), 3)} over {p.get('steps')} "
             f"steps; first step over {num(p.get('threshold'))}: {_onset(p)}; growth of the difference per step: "
             f"{num(p.get('growth_per_step'), 3)}"]
    nf = p.get("noise_floor")
    if nf:
        items.append(f"noise floor ({backend.label(nf['framework'])} twin, one ulp on every initial weight): max "
                     f"relative {num(nf.get('max_rel_diff'), 3)}, first step over threshold {_onset(nf)}, "
                     f"growth {num(nf.get('growth_per_step'), 3)}")
    c = rec.get("companion_parity")
    if c:
        items.append(f"the second model ({MODEL_NAMES.get(c.get('model'), c.get('model'))}): max relative "
                     f"difference {num(c.get('max_rel_diff'), 3)}, first step over threshold {_onset(c)}")
    tiers = p.get("tiers") or {}
    if "exact" in tiers:
        items.append(_exact_item(tiers["exact"]))
    if "ensemble" in tiers:
        items.append(_ensemble_item(tiers["ensemble"]))
    if p.get("verdict"):
        items.append(f"verdict: **{p['verdict']}**")
    if rec.get("masks") == "shared":
        items.append("dropout masks drawn by the harness and given to every backend (`--masks shared`)")
    doc.bullets(items)


def _pick(steps: list[int], most: int = 8) -> list[int]:
    if len(steps) <= most:
        return steps
    inner = steps[2:-1]
    take = [inner[round(i * (len(inner) - 1) / (most - 4))] for i in range(most - 3)]
    return sorted(set(steps[:2] + take + steps[-1:]))


def _loss_at(run: dict | None, step: int) -> float | None:
    if not run or step not in run.get("steps", []):
        return None
    return run["loss"][run["steps"].index(step)]


def _trajectory(doc: Doc, rec: dict, ref: dict) -> None:
    cols = [(f"{backend.label(fw)} native", r) for fw, r in rec.get(NATIVE, {}).items()]
    cols += [(f"{backend.label(fw)} shared", r) for fw, r in rec.get("runs", {}).items()]
    steps = sorted(int(s) for s in ref["loss"])
    worst: dict[str, float] = {}
    for s in steps:
        for name, run in cols:
            got = _loss_at(run, s)
            if got is not None:
                worst[name] = max(worst.get(name, 0.0), abs(got - ref["loss"][str(s)]) / abs(ref["loss"][str(s)]))
    rows = [[str(s), num(ref["loss"][str(s)], 8)] + [num(_loss_at(r, s), 8) for _, r in cols] for s in _pick(steps)]
    same = [backend.label(fw) for fw, r in rec.get(NATIVE, {}).items() if r.get("same_as_shared")]
    doc.para("The course's printed training losses beside this run's, at the same steps (a native init draws "
             "the same weights as the shared init for these labs, from the same seed"
             + (f"; {', '.join(same)}'s own draw is bit for bit the shared weights, so its native run is its "
                "shared run" if same else "") + "):")
    doc.table(["step", "course"] + [n for n, _ in cols], rows, right=range(len(cols) + 2))
    reached = sum(1 for s in steps if any(_loss_at(r, s) is not None for _, r in cols))
    doc.para(f"Largest relative difference from the course over the {reached} of its {len(steps)} printed steps "
             "this run reached: "
             + (", ".join(f"{n} {num(w, 3)}" for n, w in worst.items()) or "–")
             + f" (tolerance {num(ref.get('rtol'))}).")


def _reference(doc: Doc, rec: dict) -> None:
    ref = rec.get("reference") or {}
    runs = rec.get("runs", {})
    labels = [backend.label(fw) for fw in runs]
    if rec.get("raw_pixel_reference"):
        doc.para("*raw pixels*: the course's accuracy for this lab came from raw 0..255 test pixels (a quirk of "
                 "the notebooks); ours from test pixels scaled like the training pixels.")
    if isinstance(ref.get("loss"), dict):
        _trajectory(doc, rec, ref)
    elif isinstance(ref.get("cost"), dict):
        rows = []
        for epoch in sorted(int(e) for e in ref["cost"]):
            vals = [num(r.get("epoch_cost", [])[epoch - 1]) if len(r.get("epoch_cost", [])) >= epoch else "–"
                    for r in runs.values()]
            rows.append([f"mean training loss, epoch {epoch}", num(ref["cost"][str(epoch)], 9)] + vals)
        raw = " (course: *raw pixels*)" if rec.get("raw_pixel_reference") else ""
        rows.append([f"test accuracy, end{raw}", num(ref.get("accuracy"))]
                    + [fmt_acc(course.metric(r, "test_accuracy")) for r in runs.values()])
        doc.table(["", "course (full MNIST)"] + labels, rows, right=range(1, len(runs) + 2))
    elif "correct_of_first_1000" in ref:
        rows = []
        for it in sorted(int(i) for i in ref["correct_of_first_1000"]):
            vals = [num(r.get("evals", {}).get(str(it), {}).get("test", {}).get("correct_of_first_1000"))
                    for r in runs.values()]
            rows.append([str(it), str(ref["correct_of_first_1000"][str(it)])] + vals)
        doc.para("Correct answers among the first 1000 test images, every 1000 iterations:")
        doc.table(["iteration", "course"] + labels, rows, right=range(len(runs) + 2))
    elif isinstance(ref.get("accuracy"), dict):
        doc.para(f"Course: {fmt_acc(ref['accuracy'])}. Here (training-set accuracy): " + "; ".join(
            f"{backend.label(fw)} {fmt_acc(course.metric(r, 'train_accuracy'))}" for fw, r in runs.items()) + ".")


def bn_series(run: dict) -> dict[str, dict[str, list[float]]]:
    """Per-epoch train/validation loss and accuracy of each model of a two-model lab (``run["epochs"]``)."""
    out: dict[str, dict[str, list[float]]] = {}
    for row in run.get("epochs", []):
        for model, metrics in row.items():
            if model == "epoch":
                continue
            series = out.setdefault(MODEL_NAMES.get(model, model), {k: [] for k in metrics})
            for k, v in metrics.items():
                series[k].append(v)
    return out


def bn_lines(rec: dict) -> list[tuple[str, str, dict[str, list[float]]]]:
    """:func:`bn_series` of every backend: ``(model, backend, series)``."""
    return [(model, fw, s) for fw, run in rec.get("runs", {}).items() for model, s in bn_series(run).items()]


def bn_reference(rec: dict) -> tuple[dict[str, dict[str, float]], int]:
    """The course's per-model figures at its one printed epoch, keyed like :func:`bn_series`, and that epoch."""
    ref = rec.get("reference") or {}
    key = next((k for k in ref if k.startswith("epoch_")), None)
    if key is None:
        return {}, 0
    return {MODEL_NAMES.get(m, m): v for m, v in ref[key].items()}, int(key.split("_")[1])


def _batchnorm(doc: Doc, rec: dict, has: set[str]) -> None:
    lines = bn_lines(rec)
    if not lines:
        return
    keys = (("train_loss", "train loss"), ("train_acc", "train acc"), ("valid_loss", "valid loss"),
            ("valid_acc", "valid acc"))
    doc.para("Per epoch, in eval mode, on the whole training set and on the test set (the course's validation "
             "set):")
    for fw, run in rec.get("runs", {}).items():
        series = bn_series(run)
        if not series:
            continue
        header = ["epoch"] + [f"{model} {label}" for model in series for _, label in keys]
        epochs = max(len(s["train_loss"]) for s in series.values())
        rows = [[str(e + 1)] + [num(s[k][e]) if e < len(s[k]) else "–" for s in series.values() for k, _ in keys]
                for e in range(epochs)]
        doc.para(f"{backend.label(fw)}:")
        doc.table(header, rows, right=range(len(header)))
    ref, epoch = bn_reference(rec)
    if ref:
        doc.para(f"Course, epoch {epoch}: " + "; ".join(
            f"{m} train loss {v['train_loss']} ({v['train_acc']}), valid {v['valid_loss']} ({v['valid_acc']})"
            for m, v in ref.items()) + ".")
    by_fw = {fw: bn_series(run) for fw, run in rec.get("runs", {}).items()}
    ahead = {fw: all(b < p for b, p in zip(s["BN"]["valid_loss"], s["no BN"]["valid_loss"]))
             for fw, s in by_fw.items() if "BN" in s and "no BN" in s}
    if not ahead:
        doc.para("The model without batch norm has no per-epoch records in this run, so only the BN model is "
                 "shown.")
    else:
        doc.para("BN ahead of no BN in validation loss at every epoch: " + ", ".join(
            f"{backend.label(fw)} {'yes' if a else 'no'}" for fw, a in ahead.items()) + " (the course: yes).")
    if f"plots/{rec['lab']}_epochs.png" in has:
        doc.image(f"plots/{rec['lab']}_epochs.png", "batch norm vs no batch norm, per epoch (eval mode)")


def _pretraining(doc: Doc, rec: dict) -> None:
    """Each run's RBM pre-training: reconstruction error per epoch of every RBM, and its time."""
    runs = {fw: run["pretrain"] for fw, run in rec.get("runs", {}).items() if run.get("pretrain")}
    for fw, pre in runs.items():
        errors = "; ".join(f"rbm{i} " + ", ".join(f"{e:.4f}" for e in r["recon_epoch"])
                           for i, r in enumerate(pre["rbms"]))
        doc.para(f"{backend.label(fw)}: RBM pre-training (CD-{pre['k']}, {pre['rbms'][0]['steps']} steps an RBM, "
                 f"{num(pre['seconds'], 2)} s before training), reconstruction error per epoch: {errors}.")


def lab_section(doc: Doc, rec: dict, results: dict, has: set[str]) -> None:
    """A lab's section: its runs, parity, the course's numbers beside ours, plots."""
    doc.heading(2, f"{rec['lab']}: {rec.get('title', '')}", anchor=rec["lab"])
    threads = threads_text(rec)
    doc.para(f"Course notebook `{rec.get('notebook')}`. Lab time {num(rec.get('wall_s'), 3)} s"
             + (f"; intra-op threads: {threads}." if threads else "."))
    if rec.get("status") == "error":
        doc.para(f"**error**: {rec.get('error')}")
        return
    if rec.get("status") == "diverged":
        doc.para(f"**diverged**: {rec.get('error')}")
    _run_table(doc, rec, results)
    _pretraining(doc, rec)
    _parity(doc, rec)
    _reference(doc, rec)
    if f"plots/{rec['lab']}.png" in has:
        doc.image(f"plots/{rec['lab']}.png", f"{rec['lab']} loss and parity")
    if any(s for _, _, s in bn_lines(rec)):
        _batchnorm(doc, rec, has)
    if rec.get("notes"):
        doc.para(f"Note: {rec['notes']}")
