"""The report's content: the summary (the course's figures beside ours, like with like; the backends beside each
other), a section per lab, the studies; written as Markdown, HTML and JSON.

Everything here reads the JSON form of the results (``OUT/labs/<lab>.json``), so a report can be rebuilt from
those files alone. Files are written atomically; plots are drawn by :mod:`harness.report.plots`, the lab
sections by :mod:`harness.report.sections`, the like-with-like figures chosen by :mod:`harness.report.course`.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import harness.report.course as course
import harness.report.job_sections as job_sections
import harness.report.precision_section as precision_section
import harness.report.sections as sections
import harness.report.time_spent as report_costs
from harness import backend
from harness.parity.verdict import brief
from harness.report.doc import Doc, num
from harness.report.doc import pct as fmt_pct
from harness.report.sections import bn_lines, fmt_acc, pct_peak
from harness.report.typed import LabRecord, Results, RunRecord, StudyRecord
from harness.run.results import atomic_write, write_json

__all__ = ["build", "final_metrics", "fmt_acc", "lab_plots", "pct_peak", "precision_plot", "study_plot", "summary_line",
           "summary_rows", "verdict_help", "write_report"]

def verdict_help() -> str:
    """The note that explains the verdict column (the tiers' settings from :mod:`harness.parity`)."""
    from harness.parity.ensemble import LIMIT, MEMBERS, WINDOW
    from harness.parity.exact import CHAOS
    from harness.parity.localise import FACTOR, FLOOR

    return ("**verdict**, in two tiers. **same math (max X)**: the exact tier trained both backends again in "
            "float64 from the same weights, batches and dropout masks (the whole run for the XOR labs, the first "
            "steps for MNIST, ending early where a float64 twin drifts past "
            f"{CHAOS:g}), and every quantity (training loss, evaluations, companion model, parameters) stayed "
            f"within max({FLOOR:g}, {FACTOR:g} × the difference a one-ulp float64 twin makes); X is the largest "
            "relative training-loss difference. **differs: Q at step N**: the first quantity or tensor that "
            "parted (and, where the float64 referee could tell, the side that is off). **float32 within (beyond) "
            "rounding noise (R× band)**: the exact tier passed (same math), and the statistical tier held the "
            f"float32 difference of the backends over the first {WINDOW} steps against the spread of {MEMBERS} "
            f"one-ulp twins a side; R is the worst ratio, beyond {LIMIT:g}× it is beyond. **not judged**: the "
            "statistical tier was off (`--no-noise`). "
            "The max rel diff and first step columns describe the runs as trained (in the job's dtype): figures, "
            "not the verdict.")


# ----------------------------------------------------------------------------------------------- numbers


def final_metrics(run: RunRecord) -> tuple[float | None, Any]:
    """(loss, accuracy) of a run as the progress line prints them: the mean training loss of the last full epoch
    for the MNIST labs (the course's printed cost), else the last step's training loss; the test accuracy (the
    training-set accuracy where there is no test set)."""
    if run["status"] != "ok":
        return None, None
    loss = run["epoch_cost"][-1] if run.get("epoch_cost") else course.metric(run, "train_loss")
    return loss, course.accuracy(run)[0]


def _backend_row(rec: LabRecord, fw: str, run: RunRecord, peak: dict) -> dict:
    row = {key: course.metric(run, key) for key in course.METRICS}
    row.update({"steps_per_s": run["timing"]["steps_per_s"], "pct_peak": pct_peak(rec, fw, peak),
                "execution": run["execution"]})
    return row


def summary_rows(results: Results) -> list[dict]:
    """One machine-readable row per finished lab: the like-with-like figures beside the course's (``figures``),
    each backend's final metrics (one meaning per key; ``loss``/``accuracy`` as the progress line prints them),
    parity and throughput."""
    rows = []
    for name, rec in results["labs"].items():
        row: dict[str, Any] = {"lab": name, "status": rec["status"],
                               "figures": [f.asdict() for f in course.figures(rec)]}
        for fw, run in rec.get("runs", {}).items():
            row[fw] = _backend_row(rec, fw, run, results["peak"])
        parity = rec.get("parity", {})
        row.update({k: parity.get(k) for k in ("max_rel_diff", "first_divergence_step", "verdict", "verdict_kind")})
        row["verdict_brief"] = brief(parity) if parity else None
        row["noise_max_rel_diff"] = parity.get("noise_floor", {}).get("max_rel_diff")
        rows.append(row)
    return rows


def summary_line(results: Results, out: Path) -> str:
    """The last line of the job: how long, how many labs, the verdicts, where the report is."""
    job = results["job"]
    verdicts: dict[str, int] = {}
    for row in summary_rows(results):
        v = row.get("verdict_kind") or row.get("verdict") or row["status"]
        verdicts[v] = verdicts.get(v, 0) + 1
    counts = ", ".join(f"{n} {v}" for v, n in sorted(verdicts.items()))
    reused = f" ({len(job['reused'])} reused)" if job["reused"] else ""
    n = len(results["labs"])
    return (f"report: {job['status']} in {job.get('wall_s', 0):.0f} s: {n} lab{'' if n == 1 else 's'}{reused}"
            f"{': ' + counts if counts else ''}; {out / 'report.md'}")


# ----------------------------------------------------------------------------------------------- summary


def _value(value: Any, digits: int = 4) -> str:
    return fmt_acc(value) if isinstance(value, dict) else num(value, digits)


def _course_table(doc: Doc, results: Results) -> None:
    """The course's figures beside ours of the same kind, one row per figure."""
    fws = results["options"]["frameworks"]
    rows = []
    for name, rec in results["labs"].items():
        figures = course.figures(rec)
        if not figures:
            rows.append([f"[{name}](#{name})", rec["status"], "–"] + ["–"] * len(fws))
        for i, f in enumerate(figures):
            kind = f.kind + (f" (ours: {f.ours_at})" if f.ours_at else "")
            note = f" ({f.course_note})" if f.course_note else ""
            rows.append([f"[{name}](#{name})" if i == 0 else "", kind, _value(f.course) + note]
                        + [_value(f.ours.get(fw)) for fw in fws])
    doc.para("The course's figures beside ours of the same kind (same set, same step or epoch, same loss):")
    doc.table(["lab", "figure", "course"] + [backend.label(fw) for fw in fws], rows, right=range(2, len(fws) + 3))


def _speed(rec: LabRecord, fw: str, peak: dict) -> str:
    run = rec.get("runs", {}).get(fw)
    sps = run["timing"]["steps_per_s"] if run else None
    pct = pct_peak(rec, fw, peak)
    speed = "–" if not sps else f"{sps:,.0f}" if sps >= 100 else num(sps, 3)
    return f"{speed} ({fmt_pct(pct)}%)" if sps and pct is not None else speed


def _parity_table(doc: Doc, results: Results) -> None:
    """The backends beside each other: parity of the per-step losses and the steps per second."""
    fws = results["options"]["frameworks"]
    compared = any(rec.get("parity") for rec in results["labs"].values())
    header = ["lab"]
    if compared:
        header += ["max rel diff", f"first step > {num(results['options']['threshold'])}", "verdict"]
    header += [f"{backend.label(fw)} steps/s (% peak)" for fw in fws]
    rows = []
    for name, rec in results["labs"].items():
        cells = [f"[{name}](#{name})"]
        if compared:
            p = rec.get("parity")
            if p:  # its figures are required: a record without them fails its schema and is never reused
                first = p["first_divergence_step"]
                cells += [num(p["max_rel_diff"], 4), "never" if first is None else num(first), brief(p)]
            else:
                cells += ["–", "–", rec["status"]]
        rows.append(cells + [_speed(rec, fw, results["peak"]) for fw in fws])
    doc.para("The backends beside each other: the per-step training losses compared, and the speed:" if compared
              else "Speed:")
    doc.table(header, rows, right=[i for i, h in enumerate(header) if h not in ("lab", "verdict")])


def _intro(doc: Doc, results: Results) -> None:
    opts, job, data = results["options"], results["job"], results["data"]
    status = {"complete": "complete", "interrupted": "**interrupted**: the labs below are those finished",
              "errors": "complete, **with errors** (see the labs marked error)", "running": "**in progress**",
              "failed": "**stopped by an error**"}.get(job["status"], job["status"])
    names = " and ".join(backend.label(f) for f in opts["frameworks"])
    doc.para(f"Every lab of the course's Part 2 (DNN), trained in {names}"
             " from the same initial weights on the same batches, compared step by step and timed. "
             f"Job status: {status}.")
    items = [f"command: `{results['command'] or 'dlzta report'}`",
             f"generated {results.get('generated', '')}, device `{opts['device']}`, dtype `{opts['dtype']}`"]
    if data:
        items.append(f"MNIST data: `{data['name']}` from `{data['source']}` ({data['train_size']} train / "
                     f"{data.get('test_size')} test images, sha256 `{str(data.get('sha256'))[:12]}`)")
    if opts["steps"] or opts["epochs"]:
        items.append(f"shortened: steps capped at {opts['steps'] or '–'}, "
                     f"MNIST epochs {opts['epochs'] or 'as declared'}")
    if job.get("wall_s") is not None and job["status"] != "running":
        items.append(f"job time {job['wall_s']:.0f} s ({len(job['computed'])} labs computed, "
                     f"{len(job['reused'])} reused from an earlier run)")
    m = results["machine"]
    load, cpus, measured = m.get("loadavg_start"), m.get("cpus", m.get("cpu_count")), m.get("contention")
    if measured:  # what the busy rule measured (harness.run.machine.machine_busy)
        from harness.run.machine import busy_text

        items.append(f"contention when the job started: {busy_text(measured)}"
                     + (f" (load average {load[0]:.2f})" if load else "")
                     + ("; **the machine was busy**, so the backends that set their threads per task ran on one "
                        "thread and the timings are not representative" if measured.get("busy") else
                        ": not busy"))
    elif load:  # a report of an older job
        items.append(f"load average when the job started: {load[0]:.2f} on {cpus} cores")
    if results["pending"]:
        items.append("not run yet: " + ", ".join(f"`{p}`" for p in results["pending"]))
    doc.bullets(items)


def _notes(doc: Doc, results: Results) -> None:
    data = results["data"] or {}
    notes = [
        "**figure**: what the course printed and ours of the same kind beside it; where our run was shortened "
        "(`--steps`, `--epochs`), ours is taken where the run stopped, and the figure says where. **training "
        "loss**: the loss of a training step (the course's *cost* is its mean over an epoch); **validation** "
        "and **test**: the test set, in eval mode.",
        "**steps/s**: steady-state training steps per second (warm-up and compilation timed apart); **% peak**: "
        "the run's matmul FLOPs (6·batch·in·out per Linear layer and step: forward, and backward for inputs and "
        "weights) per second, as a share of an n×n matmul measured in the same backend in this job.",
    ]
    if any(rec.get("parity") for rec in results["labs"].values()):
        notes.insert(1, verdict_help())
    if any(rec["task"] == "mnist" and "parity" in rec and rec["parity"]["first_divergence_step"] is not None
           and results["options"]["dtype"] != "float64" for rec in results["labs"].values()):
        notes.append("The MNIST trajectories are chaotic in float32: any difference, even one ulp on the initial "
                     "weights, grows until the per-step losses are unrelated within a few hundred steps, so a large "
                     "max rel diff there is no sign of a bug. The verdict rests on the tiers: the float64 exact tier "
                     "for the math, the one-ulp twins over the first steps (before they saturate) for the float32 "
                     "rounding. The final losses and accuracies are the figures to hold side by side.")
    if data.get("source") == "mnist-5k":
        notes.append("The course trained on the full 60,000-image MNIST; this job used the bundled 4,000-image "
                     "subset (40 steps an epoch at batch 100, against the course's 600), so the MNIST figures are "
                     "of the same kind as the course's but not from the same data: shown for orientation.")
    if any(rec.get("raw_pixel_reference") for rec in results["labs"].values()):
        notes.append("\\* Most MNIST notebooks computed their accuracy on raw 0..255 test pixels while training on "
                     "[0, 1] pixels (a quirk of the course); here the test pixels are scaled like the training "
                     "pixels, so those course accuracies (marked *raw pixels*) are not comparable.")
    doc.bullets(notes)


def build(results: Results, has: set[str]) -> Doc:
    """The report as a document; ``has`` lists the plot files present (paths relative to the report)."""
    names = " and ".join(backend.label(f) for f in results["options"]["frameworks"])
    doc = Doc(f"Deep Learning Zero To All, Part 2: {names} side by side")
    _intro(doc, results)
    doc.heading(2, "Summary", anchor="summary")
    if results["labs"]:
        _course_table(doc, results)
        _parity_table(doc, results)
    else:
        doc.para("No lab has finished yet.")
    _notes(doc, results)
    for rec in results["labs"].values():
        sections.lab_section(doc, rec, results, has)
    precision_section.section(doc, results, has)
    if results.get("init_study"):
        job_sections.init_study(doc, results["init_study"], has)
    if results["labs"]:
        job_sections.throughput(doc, results, has)
    job_sections.machine(doc, results)
    report_costs.costs(doc, results)
    return doc


# ----------------------------------------------------------------------------------------------- files


def lab_plots(out: Path, rec: LabRecord, force: bool = False) -> None:
    """Draw the lab's plots (and the batch-norm panels) unless present; ``force`` redraws."""
    import harness.report.plots as plots

    if rec["status"] == "error" or not rec.get("runs"):
        return
    path = out / "plots" / f"{rec['lab']}.png"
    if force or not path.exists():
        atomic_write(path, plots.lab_figure(rec))
    lines = bn_lines(rec)
    path = out / "plots" / f"{rec['lab']}_epochs.png"
    if any(s for _, _, s in lines) and (force or not path.exists()):
        reference, epoch = sections.bn_reference(rec)
        atomic_write(path, plots.batchnorm_figure(lines, f"{rec['lab']}: {rec['title']}, per epoch",
                                                  reference, epoch))


def study_plot(out: Path, study: StudyRecord, force: bool = False) -> None:
    """Draw the initialisation study's plot unless present."""
    import harness.report.plots as plots

    path = out / "plots" / "init_study.png"
    if force or not path.exists():
        atomic_write(path, plots.init_figure(study))


def precision_plot(out: Path, rec: dict, force: bool = False) -> None:
    """Draw the precision section's plot unless present (nothing to draw: none)."""
    path = out / precision_section.PLOT
    if rec["labs"] and precision_section.plot_rows(rec) and (force or not path.exists()):
        atomic_write(path, precision_section.figure(rec))


def write_report(out: Path, results: Results, html: bool = True, final: bool = False) -> None:
    """Write results.json, report.md and (``html``) report.html for the labs finished so far; ``final`` also
    draws the throughput plot."""
    import harness.report.plots as plots

    results["generated"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    results["summary"] = summary_rows(results)
    if final and results["labs"]:
        modes = job_sections.run_modes(results)
        rows = [{"lab": r["lab"], **{fw: r[fw] for fw in modes if fw in r}} for r in results["summary"]]
        atomic_write(out / "plots" / "throughput.png",
                     plots.throughput_figure(rows, modes, results["options"]["device"]))
    has = {p.relative_to(out).as_posix() for p in (out / "plots").glob("*.png")} if (out / "plots").exists() else set()
    doc = build(results, has)
    write_json(out / "results.json", results, "results")
    atomic_write(out / "report.md", doc.markdown())
    if html:
        atomic_write(out / "report.html", doc.html(lambda p: (out / p).read_bytes() if (out / p).exists() else None))
