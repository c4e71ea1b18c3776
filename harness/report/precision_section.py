"""The report's precision section, written: per lab a table (framework x precision: test accuracy, final loss,
steps per second, the speed-up over float32, the precision tier's verdict) and one plot, the accuracy cost against
the speed-up (drawn in :mod:`harness.report.plots`' style, one marker per framework and precision)."""

from __future__ import annotations

from typing import Any

from harness import backend
from harness.report.doc import Doc, num
from harness.report.typed import PrecisionRecord

PLOT = "plots/precision.png"
MARKERS = {"bfloat16": "s", "mixed_bfloat16": "^", "mixed_float16": "D"}


def _acc(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _speed(row: dict) -> str:
    sps = row.get("steps_per_s")
    return "–" if not sps else f"{sps:,.0f}" if sps >= 100 else num(sps, 3)


def section(doc: Doc, results: dict, has: set[str]) -> None:
    """The section (nothing when the job had none)."""
    rec: PrecisionRecord | None = results.get("precision")
    if not rec:
        return
    doc.heading(2, "Precision: float32, bfloat16 and mixed precision", anchor="precision")
    labs = ", ".join(f"`{name}`" for name in rec["labs"]) or "none finished"
    doc.para(f"Each lab of this section ({labs}; `--precision-labs`, `none` to leave it out) trained again in "
             f"{', '.join(f'`{p}`' for p in rec['precisions'])} in every framework with a precision learner, from "
             "the same shared weights and batches and on the same thread counts as its float32 run: for the epochs "
             "given below (3 where the lab evaluates every epoch and ran longer, else its own length in this job); "
             "the float32 rows are that run at the same epoch (the lab's own section), not trained again; "
             "the speed-ups hold each run's steady-state steps/s against its float32 run's. "
             "**accuracy** on the test set and **final loss** (the mean training loss of the last epoch) where the "
             "runs ended; **steps/s** steady state, **speed-up** over the same framework's float32 run; the "
             "**verdict** is the precision tier's (docs/precision.md): both frameworks' first steps, tensor by "
             "tensor, against the float64 referee's emulation of the policy.")
    for name, lab in rec["labs"].items():
        length = (f"{lab['epochs']} epochs, " if lab.get("epochs") else "") + f"{lab.get('steps')} steps"
        threads = ", ".join(f"{backend.label(fw)} {n}" for fw, n in (lab.get("threads") or {}).items())
        doc.para(f"`{name}` ({length}" + (f"; threads: {threads}" if threads else "") + "):")
        rows = []
        for row in lab["rows"]:
            tier = lab["tiers"].get(row["precision"], {})
            verdict = "(the reference)" if row["precision"] == "float32" else tier.get("verdict", "–")
            if row["status"] != "ok":
                verdict = f"{row['status']}: {row.get('error', '')}".rstrip(": ")
            rows.append([backend.label(row["framework"]), f"`{row['precision']}`", _acc(row["test_accuracy"]),
                         num(row["final_loss"], 4), _speed(row),
                         "–" if row["speedup"] is None else f"{row['speedup']:.2f}×", verdict])
        doc.table(["framework", "precision", "accuracy", "final loss", "steps/s", "speed-up", "verdict"], rows,
                  right=[2, 3, 4, 5])
    if PLOT in has:
        doc.image(PLOT, "test accuracy lost against the speed-up over float32, per framework and precision")


def figure(rec: PrecisionRecord) -> bytes:
    """Accuracy cost (float32's test accuracy minus the precision's, in points) against the speed-up over float32:
    one panel per lab, one marker per framework (registry colour) and precision (marker shape), labelled."""
    from harness.report.plots import _figure, color, to_png

    labs = list(rec["labs"].items())
    fig, axes = _figure(8, 4.4, 1, max(1, len(labs)))
    handles: dict[str, Any] = {}
    for ax, (name, lab) in zip(axes[0], labs):
        seen: set[str] = set()
        for row in plot_rows({**rec, "labs": {name: lab}}):
            x, y = row["speedup"], 100 * row["accuracy_cost"]
            label = f"{backend.label(row['framework'])}, {row['precision']}"
            (handles[label],) = ax.plot([x], [y], MARKERS.get(row["precision"], "o"), color=color(row["framework"]),
                                        ms=7)
            seen.add(label)
            ax.annotate(row["precision"], (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.axhline(0, color="black", lw=0.6)
        ax.axvline(1, color="black", lw=0.6, ls="--")
        ax.set_xlabel("speed-up over float32 (same framework)")
        ax.set_ylabel("accuracy cost (points:\nfloat32 minus the precision)")
        ax.set_title(f"{name}: reduced precision", fontsize=10)
        ax.grid(alpha=0.3)
        ax.margins(0.15, 0.15)  # room for the labels beside the markers
    if handles:  # one legend under the panels: inside, it would cover a marker
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=3, fontsize=9)
    return to_png(fig)


def plot_rows(rec: PrecisionRecord) -> list[dict[str, Any]]:
    """The plotted points of every lab (framework, precision, speed-up, accuracy cost), for the tests."""
    return [{**row, "lab": name} for name, lab in rec["labs"].items() for row in lab["rows"]
            if row["precision"] != "float32" and row["speedup"] is not None and row["accuracy_cost"] is not None]
