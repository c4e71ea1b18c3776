"""The report's PNG plots, drawn with matplotlib's object API (Agg, no pyplot state) and returned as bytes.

Every function takes the JSON form of the results (what ``report/labs/<lab>.json`` holds), so a resumed lab
plots exactly like a fresh one. matplotlib is imported only here, and only when a plot is drawn.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

COLORS = {"torch": "#ee4c2c", "jax": "#3b6fb6", "native": "#555555", "noise": "#999999", "reference": "black"}
FRAMEWORK_LABEL = {"torch": "PyTorch", "jax": "JAX/Flax"}


def _figure(width: float, height: float, rows: int = 1, cols: int = 1, **kw: Any) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False, **kw)


def to_png(fig: Any) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _positive(values: Sequence[float | None]) -> np.ndarray:
    a = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return a[np.isfinite(a) & (a > 0)]


def _wants_log(series: list[Sequence[float | None]]) -> bool:
    """Log scale when every value is positive and they span more than a decade."""
    vals = [np.array([np.nan if v is None else v for v in s], dtype=np.float64) for s in series if len(s)]
    if not vals:
        return False
    flat = np.concatenate(vals)
    flat = flat[np.isfinite(flat)]
    return bool(flat.size and flat.min() > 0 and flat.max() / flat.min() > 10)


COMPANION_COLORS = {"torch": "#f4a582", "jax": "#92c5de"}
MODEL_NAMES = {"bn": "BN", "plain": "no BN"}


def _model_names(record: dict) -> tuple[str, str]:
    """Legend suffixes of the main and the companion model (empty for a one-model lab)."""
    labels = record.get("model_labels")
    if not labels:
        return "", ""
    return tuple(f", {MODEL_NAMES.get(m, m)}" for m in labels)


def _reference_points(record: dict) -> tuple[list[int], list[float]]:
    ref = record.get("reference", {}).get("loss")
    if not isinstance(ref, dict):
        return [], []
    pts = sorted((int(k), float(v)) for k, v in ref.items())
    return [p[0] for p in pts], [p[1] for p in pts]


def lab_figure(record: dict) -> bytes:
    """Loss of each framework overlaid (course reference and torch-native run where present), and below, the
    per-step relative difference of the two frameworks beside the one-ulp noise floor."""
    runs = record.get("runs", {})
    per_step = record.get("per_step", {})
    two = "rel_diff" in per_step
    fig, axes = _figure(8, 6.2 if two else 3.6, 2 if two else 1, 1, sharex=True)
    ax = axes[0][0]
    curves = []
    names = _model_names(record)
    for fw, run in runs.items():
        ax.plot(run["steps"], run["loss"], color=COLORS[fw], lw=1.6 if fw == "torch" else 1.0,
                ls="-" if fw == "torch" else "--", label=f"{FRAMEWORK_LABEL[fw]} (shared init){names[0]}")
        curves.append(run["loss"])
        other = run.get("companion", {})
        if other.get("loss"):
            ax.plot(other["steps"], other["loss"], color=COMPANION_COLORS[fw], lw=1.2 if fw == "torch" else 0.8,
                    ls="-" if fw == "torch" else "--", label=f"{FRAMEWORK_LABEL[fw]}{names[1]}")
            curves.append(other["loss"])
    native = record.get("native", {}).get("torch")
    if native:
        ax.plot(native["steps"], native["loss"], color=COLORS["native"], lw=0.8, ls=":",
                label="PyTorch (native init)")
        curves.append(native["loss"])
    rs, rv = _reference_points(record)
    if rs:
        ax.plot(rs, rv, "x", color=COLORS["reference"], ms=5 if len(rs) < 30 else 3, label="course notebook")
    if _wants_log(curves):
        ax.set_yscale("log")
    ax.set_ylabel("training loss")
    ax.set_title(f"{record['lab']}: {record.get('title', '')}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if two:
        ax = axes[1][0]
        rel = np.array([np.nan if v is None else v for v in per_step["rel_diff"]], dtype=np.float64)
        steps = np.arange(len(rel))
        dots = dict(marker=".", ms=2) if np.count_nonzero(rel > 0) < 300 else {}
        ax.plot(steps, np.where(rel > 0, rel, np.nan), color="#7a3db8", lw=0.8, label=f"|torch - JAX| / loss{names[0]}",
                **dots)
        if "companion_rel_diff" in per_step:
            other = np.array([np.nan if v is None else v for v in per_step["companion_rel_diff"]], dtype=np.float64)
            ax.plot(np.arange(len(other)), np.where(other > 0, other, np.nan), color="#e08214", lw=0.6,
                    label=f"|torch - JAX| / loss{names[1]}", **dots)
        if "noise_rel_diff" in per_step:
            noise = np.array([np.nan if v is None else v for v in per_step["noise_rel_diff"]], dtype=np.float64)
            ax.plot(np.arange(len(noise)), np.where(noise > 0, noise, np.nan), color=COLORS["noise"], lw=0.8,
                    label="noise floor (JAX, 1-ulp nudge)", **dots)
        threshold = record.get("parity", {}).get("threshold")
        if threshold:
            ax.axhline(threshold, color="black", lw=0.6, ls="--", label=f"threshold {threshold:g}")
        if _positive(rel).size:
            ax.set_yscale("log")
        ax.set_ylabel("relative difference")
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        zeros = int(np.sum(rel == 0))
        if zeros:
            ax.text(0.99, 0.02, f"{zeros} of {len(rel)} steps identical (not drawn)", transform=ax.transAxes,
                    ha="right", va="bottom", fontsize=7, color="#555555")
    else:
        ax.set_xlabel("step")
    return to_png(fig)


BN_PANELS = (("train_loss", "train loss"), ("valid_loss", "validation loss"), ("train_acc", "train accuracy"),
             ("valid_acc", "validation accuracy"))


def batchnorm_figure(series: dict[str, dict[str, list[float]]], title: str = "") -> bytes:
    """The course's four plots: train/validation loss and accuracy per epoch, one line per model and framework.
    ``series`` maps a line label (e.g. "BN, PyTorch") to the four per-epoch lists of :data:`BN_PANELS`."""
    from matplotlib.ticker import MaxNLocator

    fig, axes = _figure(9, 6.5, 2, 2)
    for i, (key, label) in enumerate(BN_PANELS):
        ax = axes[i // 2][i % 2]
        for name, s in series.items():
            values = s.get(key)
            if not values:
                continue
            style = "-" if "PyTorch" in name else "--"
            color = "#1f77b4" if name.startswith("BN") else "#ff7f0e"
            ax.plot(range(1, len(values) + 1), values, style, color=color, marker="o", ms=3, lw=1.2, label=name)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    return to_png(fig)


def init_figure(study: dict) -> bytes:
    """Training loss of the same network under each weight initialisation, and the test accuracy reached."""
    fig, axes = _figure(9, 3.8, 1, 2, width_ratios=[2.2, 1])
    ax, bar = axes[0]
    names, accs = [], []
    for name, run in study["runs"].items():
        if run.get("status") != "ok":
            continue
        ax.plot(run["steps"], run["loss"], lw=1.0, label=name)
        names.append(name)
        accs.append(run["final"].get("accuracy", 0.0))
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(f"{study['lab']}: weight initialisation ({study['framework']}, {study['steps']} steps)",
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    y = np.arange(len(names))
    bar.barh(y, accs, color="#4c9a6a")
    bar.set_yticks(y, names, fontsize=8)
    bar.invert_yaxis()
    bar.set_xlim(0, 1)
    bar.set_xlabel("test accuracy")
    for yi, a in zip(y, accs):
        bar.text(min(a, 0.98), yi, f"{a:.3f}", va="center", ha="right", fontsize=7, color="white")
    return to_png(fig)


def throughput_figure(rows: list[dict]) -> bytes:
    """Training steps per second of every lab in each framework (log scale), labelled with % of peak.
    ``rows``: dicts with ``lab`` and per framework ``{fw: {"steps_per_s": x, "pct_peak": y}}``."""
    frameworks = [fw for fw in ("torch", "jax") if any(fw in r for r in rows)]
    fig, axes = _figure(9, 0.45 * len(rows) + 1.4)
    ax = axes[0][0]
    height = 0.8 / max(1, len(frameworks))
    y = np.arange(len(rows))
    for i, fw in enumerate(frameworks):
        vals = [r.get(fw, {}).get("steps_per_s") or 0.0 for r in rows]
        pos = y + (i - (len(frameworks) - 1) / 2) * height
        ax.barh(pos, vals, height, color=COLORS[fw], label=FRAMEWORK_LABEL[fw])
        for p, r, v in zip(pos, rows, vals):
            pct = r.get(fw, {}).get("pct_peak")
            if v > 0:
                ax.text(v, p, f" {v:,.0f}" + (f" ({pct:.2g}%)" if pct is not None else ""), va="center",
                        fontsize=7)
    ax.set_yticks(y, [r["lab"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("training steps per second (steady state); in brackets: % of measured matmul peak")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8, loc="lower right")
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo, hi * 8)  # room for the labels
    return to_png(fig)
