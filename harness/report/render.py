"""The report's content: the summary table, a section per lab, the studies; written as Markdown, HTML and JSON.

Everything here reads the JSON form of the results (``OUT/labs/<lab>.json``), so a report can be rebuilt from
those files alone. Files are written atomically; plots are drawn by :mod:`harness.report.plots`.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from harness.report.doc import Doc, num
from harness.results import atomic_write, write_json

FW_NAME = {"torch": "PyTorch", "jax": "JAX"}
VERDICT_HELP = ("**agree**: the relative difference of the two loss trajectories never passes the threshold; "
                "**agree within rounding noise**: it does, but no earlier and growing no faster than a JAX twin "
                "whose initial weights are nudged by one unit in the last place; **beyond rounding noise**: "
                "otherwise.")


# ----------------------------------------------------------------------------------------------- numbers


def final_metrics(run: dict) -> tuple[float | None, Any]:
    """(final loss, accuracy) of a run: the mean training loss of the last full epoch for the MNIST labs (the
    course's printed cost), else the loss at the last step; accuracy on the test set (training set for XOR)."""
    if run.get("status") != "ok":
        return None, None
    final = run.get("final", {})
    loss = run["epoch_cost"][-1] if run.get("epoch_cost") else final.get("loss")
    acc = final.get("accuracy")
    if acc is None and isinstance(final.get("test"), dict):
        acc = final["test"].get("accuracy")
    return loss, acc


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


def reference_text(rec: dict) -> str:
    """The course's headline numbers for a lab, in a few words."""
    ref = rec.get("reference") or {}
    if isinstance(ref.get("loss"), dict):
        last = max(ref["loss"], key=int)
        return f"loss {num(ref['loss'][last])} @ {last}, acc {fmt_acc(ref.get('accuracy'))}"
    if isinstance(ref.get("cost"), dict):
        last = max(ref["cost"], key=int)
        return f"cost {num(ref['cost'][last])} (epoch {last}), acc {num(ref.get('accuracy'))}"
    if "correct_of_first_1000" in ref:
        last = max(ref["correct_of_first_1000"], key=int)
        return f"{ref['correct_of_first_1000'][last]}/1000 correct @ {last}"
    if "epoch_10" in ref:
        bn = ref["epoch_10"]["bn"]
        return f"BN valid loss {num(bn['valid_loss'])}, acc {num(bn['valid_acc'])} (epoch 10)"
    if isinstance(ref.get("accuracy"), dict):
        return fmt_acc(ref["accuracy"])
    return "–"


def summary_rows(results: dict) -> list[dict]:
    """One machine-readable row per finished lab: reference, final metrics, parity and throughput."""
    rows = []
    for name, rec in results["labs"].items():
        row: dict[str, Any] = {"lab": name, "status": rec.get("status"), "reference": reference_text(rec)}
        for fw, run in rec.get("runs", {}).items():
            loss, acc = final_metrics(run)
            row[fw] = {"loss": loss, "accuracy": acc, "steps_per_s": run.get("timing", {}).get("steps_per_s"),
                       "pct_peak": pct_peak(rec, fw, results.get("peak", {}))}
        parity = rec.get("parity", {})
        row.update({k: parity.get(k) for k in ("max_rel_diff", "first_divergence_step", "verdict")})
        row["noise_max_rel_diff"] = parity.get("noise_floor", {}).get("max_rel_diff")
        rows.append(row)
    return rows


def summary_line(results: dict, out: Path) -> str:
    """The last line of the job: how long, how many labs, the verdicts, where the report is."""
    job = results["job"]
    verdicts: dict[str, int] = {}
    for row in summary_rows(results):
        v = row.get("verdict") or row["status"]
        verdicts[v] = verdicts.get(v, 0) + 1
    counts = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items()))
    reused = f" ({len(job['reused'])} reused)" if job.get("reused") else ""
    n = len(results["labs"])
    return (f"report: {job['status']} in {job.get('wall_s', 0):.0f} s: {n} lab{'' if n == 1 else 's'}{reused}"
            f"{': ' + counts if counts else ''}; {out / 'report.md'}")


# ----------------------------------------------------------------------------------------------- document


def _steps_text(run: dict) -> str:
    return str(run["steps"][-1] + 1) if run.get("steps") else "–"


def _summary(doc: Doc, results: dict) -> None:
    rows = summary_rows(results)
    fws = results["options"]["frameworks"]
    header = ["lab", "course reference"]
    for fw in fws:
        header += [f"{FW_NAME[fw]} loss", f"{FW_NAME[fw]} acc"]
    if len(fws) == 2:
        header += ["max rel diff", f"first step > {num(results['options']['threshold'])}", "verdict"]
    header += [f"{FW_NAME[fw]} steps/s (% peak)" for fw in fws]
    table = []
    for row in rows:
        cells = [f"[{row['lab']}](#{row['lab']})", row["reference"]]
        for fw in fws:
            r = row.get(fw, {})
            cells += [num(r.get("loss")), fmt_acc(r.get("accuracy"))]
        if len(fws) == 2:
            first = row["first_divergence_step"]
            cells += [num(row["max_rel_diff"], 3), "never" if first is None and row["verdict"] else num(first),
                      row["verdict"] or row["status"]]
        for fw in fws:
            r = row.get(fw, {})
            sps, pct = r.get("steps_per_s"), r.get("pct_peak")
            speed = "–" if not sps else f"{sps:,.0f}" if sps >= 100 else num(sps, 3)
            cells.append(f"{speed} ({num(pct, 2)}%)" if sps and pct is not None else speed)
        table.append(cells)
    numeric = [i for i, h in enumerate(header) if h not in ("lab", "course reference", "verdict")]
    doc.table(header, table, right=numeric)


def _intro(doc: Doc, results: dict) -> None:
    opts, job, data = results["options"], results["job"], results.get("data")
    status = {"complete": "complete", "interrupted": "**interrupted**: the labs below are those finished",
              "errors": "complete, **with errors** (see the labs marked error)", "running": "**in progress**",
              "failed": "**stopped by an error**"}.get(job["status"], job["status"])
    names = " and ".join(FW_NAME[f] for f in opts["frameworks"])
    doc.para(f"Every lab of the course's Part 2 (DNN), trained in {names}"
             " from the same initial weights on the same batches, compared step by step and timed. "
             f"Job status: {status}.")
    items = [f"command: `{results.get('command') or 'dlzta report'}`",
             f"generated {results.get('generated', '')}, device `{opts['device']}`, dtype `{opts['dtype']}`"]
    if data:
        items.append(f"MNIST data: `{data.get('name')}` from `{data.get('source')}` ({data.get('train_size')} train / "
                     f"{data.get('test_size')} test images, sha256 `{str(data.get('sha256'))[:12]}`)")
    if opts.get("steps") or opts.get("epochs"):
        items.append(f"shortened: steps capped at {opts.get('steps') or '–'}, "
                     f"MNIST epochs {opts.get('epochs') or 'as declared'}")
    if job.get("wall_s") is not None and job["status"] != "running":
        items.append(f"job time {job['wall_s']:.0f} s ({len(job.get('computed', []))} labs computed, "
                     f"{len(job.get('reused', []))} reused from an earlier run)")
    load = results.get("machine", {}).get("loadavg_start")
    threads = results["options"].get("torch_threads", "auto")
    if load:
        busy = load[0] >= (results["machine"].get("cpus") or 1) / 2
        items.append(f"load average when the job started: {load[0]:.2f} on {results['machine'].get('cpus')} cores"
                     + ("; **the machine was busy**, so torch ran on one thread and the timings are not "
                        "representative" if busy and threads == "auto" else "")
                     + (f"; torch threads: {threads}" if threads != "auto" else ""))
    if results.get("pending"):
        items.append("not run yet: " + ", ".join(f"`{p}`" for p in results["pending"]))
    doc.bullets(items)


def _notes(doc: Doc, results: dict) -> None:
    data = results.get("data") or {}
    notes = [
        "**loss**: for the MNIST labs, the mean training loss of the last epoch (what the course prints as cost); "
        "for the others, the loss at the last step. **acc**: test-set accuracy (MNIST), training-set accuracy "
        "(XOR and gates).",
        "**steps/s**: steady-state training steps per second (warm-up and JAX compilation timed apart); "
        "**% peak**: the run's matmul FLOPs (6·batch·in·out per Linear layer and step: forward, and backward "
        "for inputs and weights) per second, as a share of an n×n matmul measured in the same framework in this job.",
    ]
    if len(results["options"]["frameworks"]) == 2:
        notes.insert(1, VERDICT_HELP)
    if any(rec.get("parity", {}).get("verdict") == "beyond rounding noise" and rec.get("task") == "mnist"
           for rec in results["labs"].values()):
        notes.append("The MNIST trajectories are chaotic in float32: any difference, even one ulp on the initial "
                     "weights, grows until the per-step losses are unrelated within a few hundred steps (see each "
                     "lab's noise floor). There, **beyond rounding noise** means the frameworks part earlier or "
                     "faster than the one-ulp twin does: they round differently at every step, where the twin is "
                     "nudged once. The final losses and accuracies are the figures to hold side by side; with "
                     "`--dtype float64` the same comparisons stay within about 1e-13 relative over hundreds of steps.")
    if data.get("source") == "mnist-5k":
        notes.append("The course trained on the full 60,000-image MNIST; this job used the bundled 4,000-image "
                     "subset (40 steps an epoch at batch 100, against the course's 600), so the MNIST losses and "
                     "accuracies are not the course's numbers and are shown beside them only for orientation.")
    if any(rec.get("raw_pixel_reference") for rec in results["labs"].values()):
        notes.append("Most MNIST notebooks computed their accuracy on raw 0..255 test pixels while training on "
                     "[0, 1] pixels (a quirk of the course); here the test pixels are scaled like the training "
                     "pixels, so those course accuracies (marked *raw pixels* below) are not comparable.")
    doc.bullets(notes)


def _run_table(doc: Doc, rec: dict, results: dict) -> None:
    rows = []
    runs = dict(rec.get("runs", {}))
    if "native" in rec:
        runs["torch native"] = rec["native"]["torch"]
    for name, run in runs.items():
        fw = run.get("framework", name)
        loss, acc = final_metrics(run)
        t = run.get("timing", {})
        pct = pct_peak(rec, fw, results.get("peak", {})) if name in rec.get("runs", {}) else None
        init = "native" if name == "torch native" else "shared"
        rows.append([FW_NAME.get(name, name), init, _steps_text(run), num(loss), fmt_acc(acc),
                     num(t.get("warmup_s"), 3), num(t.get("run_s"), 3), num(t.get("steps_per_s"), 4),
                     num(pct, 2), run.get("status", "?")])
    doc.table(["run", "init", "steps", "final loss", "accuracy", "warm-up/compile s", "steady s", "steps/s",
               "% peak", "status"], rows, right=range(2, 9))


def _onset(figures: dict) -> str | int:
    """The first step over the threshold, or "never"."""
    first = figures.get("first_divergence_step")
    return "never" if first is None else first


def _parity(doc: Doc, rec: dict) -> None:
    p = rec.get("parity")
    if not p:
        return
    items = [f"max absolute difference of the losses {num(p.get('max_abs_diff'), 3)}, max relative "
             f"{num(p.get('max_rel_diff'), 3)} over {p.get('steps')} steps",
             f"first step over {num(p.get('threshold'))}: {_onset(p)}; "
             f"growth of the difference per step: {num(p.get('growth_per_step'), 3)}"]
    nf = p.get("noise_floor")
    if nf:
        items.append(f"noise floor ({nf['framework']} twin, one ulp on every initial weight): max relative "
                     f"{num(nf.get('max_rel_diff'), 3)}, first step over threshold {_onset(nf)}, "
                     f"growth {num(nf.get('growth_per_step'), 3)}")
    c = rec.get("companion_parity")
    if c:
        items.append(f"the second model ({MODEL_NAMES.get(c.get('model'), c.get('model'))}): max relative "
                     f"difference {num(c.get('max_rel_diff'), 3)}, first step over threshold {_onset(c)}")
    if p.get("verdict"):
        items.append(f"verdict: **{p['verdict']}**")
    if rec.get("masks") == "shared":
        items.append("dropout masks drawn by the harness and given to both frameworks (`--masks shared`)")
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


def _reference(doc: Doc, rec: dict) -> None:
    ref = rec.get("reference") or {}
    runs = rec.get("runs", {})
    if rec.get("raw_pixel_reference"):
        doc.para("*raw pixels*: the course's accuracy for this lab came from raw 0..255 test pixels.")
    if isinstance(ref.get("loss"), dict):
        native = rec.get("native", {}).get("torch")
        cols = [("torch native", native)] + [(f"{FW_NAME[fw]} shared", r) for fw, r in runs.items()]
        steps = sorted(int(s) for s in ref["loss"])
        rows = []
        worst = {name: 0.0 for name, _ in cols}
        for s in steps:
            want = ref["loss"][str(s)]
            for name, run in cols:
                got = _loss_at(run, s)
                if got is not None:
                    worst[name] = max(worst[name], abs(got - want) / abs(want))
        for s in _pick(steps):
            want = ref["loss"][str(s)]
            rows.append([str(s), num(want, 8)] + [num(_loss_at(r, s), 8) for _, r in cols])
        doc.para("The course's printed losses beside this run's (torch's native init draws the same weights as the "
                 "shared init for these labs, from the same seed):")
        doc.table(["step", "course"] + [n for n, _ in cols], rows, right=range(len(cols) + 2))
        doc.para("Largest relative difference from the course over all " + str(len(steps)) + " printed steps: "
                 + ", ".join(f"{n} {num(w, 3)}" for n, w in worst.items() if any(_loss_at(r, s) is not None
                             for nn, r in cols if nn == n for s in steps))
                 + f" (tolerance {num(ref.get('rtol'))}).")
    elif isinstance(ref.get("cost"), dict):
        rows = []
        for epoch in sorted(int(e) for e in ref["cost"]):
            vals = [num(r.get("epoch_cost", [])[epoch - 1]) if len(r.get("epoch_cost", [])) >= epoch else "–"
                    for r in runs.values()]
            rows.append([f"cost, epoch {epoch}", num(ref["cost"][str(epoch)], 9)] + vals)
        rows.append(["test accuracy", num(ref.get("accuracy"))] + [fmt_acc(final_metrics(r)[1]) for r in runs.values()])
        doc.table(["", "course (full MNIST)"] + [FW_NAME[fw] for fw in runs], rows, right=range(1, len(runs) + 2))
    elif "correct_of_first_1000" in ref:
        rows = []
        for it in sorted(int(i) for i in ref["correct_of_first_1000"]):
            vals = [num(r.get("evals", {}).get(str(it), {}).get("test", {}).get("correct_of_first_1000"))
                    for r in runs.values()]
            rows.append([str(it), str(ref["correct_of_first_1000"][str(it)])] + vals)
        doc.para("Correct answers among the first 1000 test images, every 1000 iterations:")
        doc.table(["iteration", "course"] + [FW_NAME[fw] for fw in runs], rows, right=range(len(runs) + 2))
    elif isinstance(ref.get("accuracy"), dict):
        doc.para(f"Course: {fmt_acc(ref['accuracy'])}. Here: " + "; ".join(
            f"{FW_NAME[fw]} {fmt_acc(final_metrics(r)[1])}" for fw, r in runs.items()) + ".")


MODEL_NAMES = {"bn": "BN", "plain": "no BN"}


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


def bn_lines(rec: dict) -> dict[str, dict[str, list[float]]]:
    """:func:`bn_series` of every framework, labelled "BN, PyTorch" and so on."""
    return {f"{label}, {FW_NAME[fw]}": s for fw, run in rec.get("runs", {}).items()
            for label, s in bn_series(run).items()}


def _batchnorm(doc: Doc, rec: dict, has: set[str]) -> None:
    lines = bn_lines(rec)
    if not lines:
        return
    keys = (("train_loss", "train loss"), ("train_acc", "train acc"), ("valid_loss", "valid loss"),
            ("valid_acc", "valid acc"))
    doc.para("Per epoch, evaluated in eval mode on the whole training set and on the test set (the course's "
             "validation set):")
    for fw, run in rec.get("runs", {}).items():
        series = bn_series(run)
        if not series:
            continue
        header = ["epoch"] + [f"{model} {label}" for model in series for _, label in keys]
        epochs = max(len(s["train_loss"]) for s in series.values())
        rows = [[str(e + 1)] + [num(s[k][e]) if e < len(s[k]) else "–" for s in series.values() for k, _ in keys]
                for e in range(epochs)]
        doc.para(f"{FW_NAME[fw]}:")
        doc.table(header, rows, right=range(len(header)))
    ref = rec.get("reference", {}).get("epoch_10")
    if ref:
        doc.para("Course, epoch 10: BN train loss {bt} ({ba}), valid {bv} ({bva}); no BN train {pt} ({pa}), valid "
                 "{pv} ({pva}).".format(bt=ref["bn"]["train_loss"], ba=ref["bn"]["train_acc"],
                                        bv=ref["bn"]["valid_loss"], bva=ref["bn"]["valid_acc"],
                                        pt=ref["plain"]["train_loss"], pa=ref["plain"]["train_acc"],
                                        pv=ref["plain"]["valid_loss"], pva=ref["plain"]["valid_acc"]))
    if not any(name.startswith("no BN") for name in lines):
        doc.para("The model without batch norm has no per-epoch records in this run, so only the BN model is "
                 "shown.")
    elif len(lines) >= 2:
        ahead = {fw: all(b < p for b, p in zip(lines[f"BN, {FW_NAME[fw]}"]["valid_loss"],
                                               lines[f"no BN, {FW_NAME[fw]}"]["valid_loss"]))
                 for fw in rec.get("runs", {}) if f"no BN, {FW_NAME[fw]}" in lines}
        doc.para("BN ahead of no BN in validation loss at every epoch: " + ", ".join(
            f"{FW_NAME[fw]} {'yes' if a else 'no'}" for fw, a in ahead.items()) + " (the course: yes).")
    if f"plots/{rec['lab']}_epochs.png" in has:
        doc.image(f"plots/{rec['lab']}_epochs.png", "batch norm vs no batch norm, per epoch")


def _lab_section(doc: Doc, rec: dict, results: dict, has: set[str]) -> None:
    doc.heading(2, f"{rec['lab']}: {rec.get('title', '')}", anchor=rec["lab"])
    threads = f", torch intra-op threads {rec['torch_threads']}" if rec.get("torch_threads") else ""
    doc.para(f"Course notebook `{rec.get('notebook')}`. Lab time {num(rec.get('wall_s'), 3)} s{threads}.")
    if rec.get("status") == "error":
        doc.para(f"**error**: {rec.get('error')}")
        return
    if rec.get("status") == "diverged":
        doc.para(f"**diverged**: {rec.get('error')}")
    _run_table(doc, rec, results)
    _parity(doc, rec)
    _reference(doc, rec)
    if f"plots/{rec['lab']}.png" in has:
        doc.image(f"plots/{rec['lab']}.png", f"{rec['lab']} loss and parity")
    if rec["lab"] == "mnist_batchnorm":
        _batchnorm(doc, rec, has)
    if rec.get("notes"):
        doc.para(f"Note: {rec['notes']}")


def _init_study(doc: Doc, study: dict, has: set[str]) -> None:
    doc.heading(2, "Weight initialisation", anchor="init-study")
    doc.para(f"`{study['lab']}` (784-256-256-10 ReLU, Adam 0.001) trained for {study['steps']} steps in "
             f"{FW_NAME[study['framework']]} from each initialisation the lectures list, on the same batches:")
    rows = []
    for scheme, run in study["runs"].items():
        loss, acc = final_metrics(run)
        first = run["loss"][0] if run.get("loss") else None
        rows.append([f"`{scheme}`", num(first), num(run["final"]["loss"] if run.get("final") else None),
                     fmt_acc(acc), run.get("status", "?")])
    doc.table(["init", "loss at step 0", "loss at the last step", "test accuracy", "status"], rows, right=(1, 2, 3))
    if "plots/init_study.png" in has:
        doc.image("plots/init_study.png", "loss per initialisation")


def _throughput(doc: Doc, results: dict, has: set[str]) -> None:
    doc.heading(2, "Throughput", anchor="throughput")
    peak = results.get("peak", {})
    if peak:
        doc.para("Matmul peak measured in this job (float32, the best of "
                 f"{next(iter(peak.values()))['repeats']} timed n×n products, as `dlzta bench` measures it): "
                 + ", ".join(f"{FW_NAME[fw]} {p['gflops']:.1f} GFLOP/s (n={p['n']}, median "
                             f"{p.get('gflops_median', p['gflops']):.1f}"
                             + (f", {p['threads']} thread{'s' if p['threads'] > 1 else ''}"
                                if fw == "torch" and p.get("threads") else "") + ")" for fw, p in peak.items())
                 + ". The steps/s come from the comparison runs above (one run each, "
                                         "steady state after warm-up/compilation); they are indicative, not a "
                                         "benchmark (see `dlzta bench`).")
    if "plots/throughput.png" in has:
        doc.image("plots/throughput.png", "steps per second per lab")


def _machine(doc: Doc, results: dict) -> None:
    doc.heading(2, "Machine and versions", anchor="machine")
    m = results.get("machine", {})
    versions: dict[str, str] = {}
    for rec in results["labs"].values():
        for run in rec.get("runs", {}).values():
            versions.update(run.get("versions", {}))
    doc.bullets([f"{m.get('platform')}, {m.get('cpus')} CPUs, Python {m.get('python')}",
                 ", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or "–"])


def build(results: dict, has: set[str]) -> Doc:
    """The report as a document; ``has`` lists the plot files present (paths relative to the report)."""
    doc = Doc("Deep Learning Zero To All, Part 2: PyTorch and JAX side by side")
    _intro(doc, results)
    doc.heading(2, "Summary", anchor="summary")
    if results["labs"]:
        _summary(doc, results)
    else:
        doc.para("No lab has finished yet.")
    _notes(doc, results)
    for rec in results["labs"].values():
        _lab_section(doc, rec, results, has)
    if results.get("init_study"):
        _init_study(doc, results["init_study"], has)
    if results["labs"]:
        _throughput(doc, results, has)
    _machine(doc, results)
    return doc


# ----------------------------------------------------------------------------------------------- files


def _write_png(path: Path, data: bytes) -> None:
    atomic_write(path, data)


def lab_plots(out: Path, rec: dict, force: bool = False) -> None:
    """Draw the lab's plots (and the batch-norm panels) unless present; ``force`` redraws."""
    from harness.report import plots

    if rec.get("status") == "error" or not rec.get("runs"):
        return
    path = out / "plots" / f"{rec['lab']}.png"
    if force or not path.exists():
        _write_png(path, plots.lab_figure(rec))
    lines = bn_lines(rec) if rec["lab"] == "mnist_batchnorm" else {}
    path = out / "plots" / f"{rec['lab']}_epochs.png"
    if lines and (force or not path.exists()):
        _write_png(path, plots.batchnorm_figure(lines, "MNIST 784-32-32-10: batch norm vs none"))


def study_plot(out: Path, study: dict, force: bool = False) -> None:
    """Draw the initialisation study's plot unless present."""
    from harness.report import plots

    path = out / "plots" / "init_study.png"
    if force or not path.exists():
        _write_png(path, plots.init_figure(study))


def write_report(out: Path, results: dict, html: bool = True, final: bool = False) -> None:
    """Write results.json, report.md and (``html``) report.html for the labs finished so far; ``final`` also
    draws the throughput plot."""
    from harness.report import plots

    results["generated"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    results["summary"] = summary_rows(results)
    if final and results["labs"]:
        rows = [{"lab": r["lab"], **{fw: r[fw] for fw in ("torch", "jax") if fw in r}} for r in results["summary"]]
        _write_png(out / "plots" / "throughput.png", plots.throughput_figure(rows))
    has = {p.relative_to(out).as_posix() for p in (out / "plots").glob("*.png")} if (out / "plots").exists() else set()
    doc = build(results, has)
    write_json(out / "results.json", results)
    atomic_write(out / "report.md", doc.markdown())
    if html:
        atomic_write(out / "report.html", doc.html(lambda p: (out / p).read_bytes() if (out / p).exists() else None))
