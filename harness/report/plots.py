"""The report's PNG plots, drawn with matplotlib's object API (Agg, no pyplot state) and returned as bytes.

Every function takes the JSON form of the results (what ``report/labs/<lab>.json`` holds), so a resumed lab
plots exactly like a fresh one. Backends are named and coloured from the registry (:mod:`harness.backend`).
The PNGs are drawn at 1.5 times the screen's 96 pixels an inch (sharp on high-density screens; the HTML shows
them at their physical size, each a link to its file for a phone's reader to open at full resolution) and stored
with a 64-colour palette, which keeps them small. Legends and axis labels are 9 to 10 points (titles 10), so
that a figure scaled down to a phone's width keeps what can be read.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from harness import backend
from harness.report.doc import pct as fmt_pct
from harness.report.typed import LabRecord, StudyRecord

DPI = 144  # 1.5 pixels per CSS pixel (96 an inch): sharp on high-density screens, 30% fewer bytes than 2
COLORS = 64  # palette size: the plots' few colours and their anti-aliasing
LINESTYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D")
MODEL_NAMES = {"bn": "BN", "plain": "no BN"}
MODEL_COLORS = ("#1f5fa8", "#e07b00", "#2a9d4b", "#8c2d9c")  # the models of a two-model lab, in order
NATIVE_COLOR, NOISE_COLOR, REFERENCE_COLOR = "#555555", "#999999", "black"
PARITY_COLORS = ("#7a3db8", "#e08214")


def _figure(width: float, height: float, rows: int = 1, cols: int = 1, **kw: Any) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    return fig, fig.subplots(rows, cols, squeeze=False, **kw)


def to_png(fig: Any) -> bytes:
    """The figure as PNG bytes: a :data:`COLORS`-colour palette, its resolution recorded (pHYs) for the HTML."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    # the Agg canvas's pixels as they are, not through an intermediate PNG (encoded, then decoded): the same image
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    image = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba(), "raw", "RGBA", 0, 1)
    image = image.convert("RGB")
    palette = image.quantize(colors=COLORS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    palette.save(out, format="PNG", optimize=True, dpi=(DPI, DPI))
    return out.getvalue()


def color(framework: str, companion: bool = False) -> str:
    """A backend's colour from the registry (its companion colour for a lab's second model)."""
    if framework not in backend.names():
        return NATIVE_COLOR
    entry = backend.info(framework)
    return (entry.companion_color or entry.color) if companion else entry.color


def _array(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def smooth(values: Sequence[float | None], window: int) -> np.ndarray:
    """Trailing mean over ``window`` values (fewer at the start); NaN for a missing value stays out of it."""
    a = _array(values)
    if window <= 1 or a.size == 0:
        return a
    ok = np.isfinite(a)
    sums = np.concatenate([[0.0], np.cumsum(np.where(ok, a, 0.0))])
    counts = np.concatenate([[0], np.cumsum(ok)])
    idx = np.arange(1, a.size + 1)
    lo = np.maximum(0, idx - window)
    n = counts[idx] - counts[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (sums[idx] - sums[lo]) / n, np.nan)


def smoothing_window(n_points: int, logged_every: int) -> int:
    """Steps averaged per plotted point: about a fortieth of a run logged at every step; none for a sparse log."""
    return 1 if logged_every > 1 or n_points < 80 else int(min(200, max(5, n_points // 40)))


def _wants_log(series: list[Sequence[float | None]]) -> bool:
    """Log scale when every value is positive and they span more than a decade."""
    vals = [_array(s) for s in series if len(s)]
    if not vals:
        return False
    flat = np.concatenate(vals)
    flat = flat[np.isfinite(flat)]
    return bool(flat.size and flat.min() > 0 and flat.max() / flat.min() > 10)


def _model_names(record: LabRecord) -> tuple[str, str]:
    """Legend suffixes of the main and the companion model (empty for a one-model lab)."""
    labels = record.get("model_labels")
    if not labels:
        return "", ""
    return tuple(f", {MODEL_NAMES.get(m, m)}" for m in labels)  # type: ignore[return-value]


def _batch(record: LabRecord) -> tuple[int | None, int | None]:
    """(examples per step, steps per epoch) of the lab, from its declaration and the run's data record."""
    from harness.labs import LabError, get_lab

    try:
        lab = get_lab(record["lab"])
    except (LabError, KeyError):
        return None, None
    size = next(iter(record.get("runs", {}).values()), {}).get("data", {}).get("train_size")
    if lab.batch_size and size:
        return lab.batch_size, size // lab.batch_size if lab.epochs else None
    return size, None


def _loss_lines(record: LabRecord) -> list[tuple[str, int, str, dict, str]]:
    """``(backend, index, colour, run, label)`` of every loss curve: a one-model lab in the registry's backend
    colours; a two-model lab (batch norm) one colour per model, the backends told apart by line style."""
    runs = record.get("runs", {})
    names = _model_names(record)
    shared = " (shared init)" if record.get("native") else ""
    two = any(run.get("companion", {}).get("loss") for run in runs.values())
    lines = [(fw, i, MODEL_COLORS[0] if two else color(fw), run, f"{backend.label(fw)}{shared}{names[0]}")
             for i, (fw, run) in enumerate(runs.items())]
    lines += [(fw, i, MODEL_COLORS[1], run["companion"], f"{backend.label(fw)}{names[1]}")
              for i, (fw, run) in enumerate(runs.items()) if run.get("companion", {}).get("loss")]
    return lines


def _loss_panel(ax: Any, record: LabRecord) -> int:
    """Each backend's training loss (smoothed when logged every step) with the course's points; the last step."""
    first = next(iter(record.get("runs", {}).values()), {})
    steps = first.get("steps") or [0]
    every = steps[1] - steps[0] if len(steps) > 1 else 1
    window = smoothing_window(len(steps), every)
    sparse = dict(marker="o", ms=3) if len(steps) <= 30 else {}
    curves = []
    for _, i, col, run, label in _loss_lines(record):
        values = smooth(run["loss"], window)
        ax.plot(run["steps"], values, color=col, ls=LINESTYLES[i % 4], lw=1.6 if i == 0 else 1.1, label=label,
                mfc="none" if i else col, **sparse)
        curves.append(values)
    for fw, run in record.get("native", {}).items():
        ax.plot(run["steps"], smooth(run["loss"], window), color=NATIVE_COLOR, lw=0.8, ls=":",
                label=f"{backend.label(fw)} (its native init)")
    last = max(steps)
    _reference_points(ax, record, last)
    if _wants_log(curves):
        ax.set_yscale("log")
    ax.set_ylabel("training loss" + (f"\n(mean of the last {window} steps)" if window > 1 else ""))
    ax.set_title(f"{record['lab']}: {record['title']}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)
    return last


def _reference_points(ax: Any, record: LabRecord, last: int) -> None:
    """The course's printed losses up to this run's last step; the legend names those beyond it."""
    ref = record.get("reference", {}).get("loss")
    if not isinstance(ref, dict):
        return
    pts = sorted((int(k), float(v)) for k, v in ref.items())
    shown = [p for p in pts if p[0] <= last]
    beyond = [str(p[0]) for p in pts if p[0] > last]
    later = ", ".join(beyond) if len(beyond) <= 3 else f"{beyond[0]} and {len(beyond) - 1} more"
    label = "course notebook" + (f" (its steps {later}: beyond this run)" if beyond else "")
    ax.plot([p[0] for p in shown], [p[1] for p in shown], "x", color=REFERENCE_COLOR,
            ms=6 if len(shown) < 30 else 3, label=label)


def _noise_series(record: LabRecord) -> list[tuple[np.ndarray, str]]:
    """What the backends' difference is held against, where recorded: the one-ulp twin's own difference (a
    float64 job), else the statistical tier's band of one-ulp twins over its judged window."""
    parity = record.get("parity", {})
    noise = parity.get("noise_floor")
    if noise and "noise_rel_diff" in record.get("per_step", {}):
        return [(_array(record["per_step"]["noise_rel_diff"]),
                 f"noise floor: {backend.label(noise.get('framework', ''))} twin, initial weights nudged by 1 ulp")]
    tier = (parity.get("tiers") or {}).get("ensemble") or {}
    band = tier.get("per_step", {}).get("band")
    if band:
        return [(_array(band), f"statistical tier: band of {tier.get('members')} one-ulp twins a side, "
                               f"first {len(band)} steps (limit {tier.get('limit', 0):g}x)")]
    return []


def _parity_panel(ax: Any, record: LabRecord) -> None:
    """Per-step relative difference of the two backends' losses beside the one-ulp twins' and the threshold."""
    per_step = record["per_step"]
    names = _model_names(record)
    a, b = (backend.label(fw) for fw in list(record.get("runs", {}))[:2])
    rel = _array(per_step["rel_diff"])
    dots = dict(marker=".", ms=2) if np.count_nonzero(rel > 0) < 300 else {}
    colors = MODEL_COLORS if record.get("model_labels") else PARITY_COLORS
    series = [(_array(per_step[key]), f"|{a} − {b}| / loss{names[i]}", colors[i], (0.8, 0.6)[i])
              for i, key in enumerate(("rel_diff", "companion_rel_diff")) if key in per_step]
    series += [(values, label, NOISE_COLOR, 0.8) for values, label in _noise_series(record)]
    for values, label, col, lw in series:
        ax.plot(np.arange(len(values)), np.where(values > 0, values, np.nan), color=col, lw=lw, label=label, **dots)
    threshold = record.get("parity", {}).get("threshold")
    if threshold:
        ax.axhline(threshold, color="black", lw=0.6, ls="--", label=f"threshold {threshold:g}")
    zeros = int(np.sum(rel == 0))
    if zeros:
        ax.plot([], [], " ", label=f"({zeros} of {len(rel)} steps identical: not drawn)")
    if np.any(rel > 0):
        ax.set_yscale("log")
    ax.set_ylabel("relative difference of\nthe per-step losses")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9)


def lab_figure(record: LabRecord) -> bytes:
    """Loss of each backend overlaid (course reference and native-init run where present; smoothed when logged
    every step), and below, the per-step relative difference of two backends beside the one-ulp twins'."""
    two = "rel_diff" in record.get("per_step", {}) and len(record.get("runs", {})) >= 2
    fig, axes = _figure(8, 6.4 if two else 3.8, 2 if two else 1, 1, sharex=True)
    last = _loss_panel(axes[0][0], record)
    if two:
        _parity_panel(axes[1][0], record)
    batch, per_epoch = _batch(record)
    axes[-1][0].set_xlabel("training step" + (f" (batch of {batch} examples)" if batch else ""))
    axes[-1][0].set_xlim(-0.01 * last, last * 1.01 + 1)
    if per_epoch:
        top = axes[0][0].secondary_xaxis("top", functions=(lambda s: s / per_epoch, lambda e: e * per_epoch))
        top.set_xlabel("epoch", fontsize=10)
        top.tick_params(labelsize=7)
    return to_png(fig)


BN_PANELS = (("train_loss", "training set: loss"), ("valid_loss", "validation (test) set: loss"),
             ("train_acc", "training set: accuracy"), ("valid_acc", "validation (test) set: accuracy"))


def batchnorm_figure(lines: Sequence[tuple[str, str, dict[str, list[float]]]], title: str = "",
                     reference: dict[str, dict[str, float]] | None = None, reference_epoch: int = 10) -> bytes:
    """The course's four plots: train/validation loss and accuracy per epoch (eval mode), one line per model and
    backend. ``lines``: ``(model, backend, series)`` with the per-epoch lists of :data:`BN_PANELS`; colour tells the
    model, line style and marker the backend. ``reference``: the course's figures per model at
    ``reference_epoch``, drawn as stars when the run reached that epoch."""
    from matplotlib.ticker import MaxNLocator

    models = list(dict.fromkeys(m for m, _, _ in lines))
    fws = list(dict.fromkeys(fw for _, fw, _ in lines))
    epochs = max((len(s.get("train_loss", [])) for _, _, s in lines), default=0)
    last = max(epochs, 1)
    fig, axes = _figure(8, 6.4, 2, 2, sharex=True)
    for i, (key, label) in enumerate(BN_PANELS):
        ax = axes[i // 2][i % 2]
        for model, fw, s in lines:
            values = s.get(key)
            if values:
                k = fws.index(fw)
                ax.plot(range(1, len(values) + 1), values, LINESTYLES[k % 4], marker=MARKERS[k % 4], ms=3.5,
                        color=MODEL_COLORS[models.index(model) % 4], lw=1.6 if k == 0 else 1.1,
                        mfc="none" if k else None, label=f"{model}, {backend.label(fw)}")
        for model, figures in (reference or {}).items():
            if key in figures and epochs >= reference_epoch and model in models:
                ax.plot([reference_epoch], [figures[key]], "*", ms=9, color=MODEL_COLORS[models.index(model) % 4],
                        mec="black", mew=0.5, label=f"{model}, course")
        ax.set_title(label, fontsize=11)
        ax.set_ylabel("cross-entropy loss" if key.endswith("loss") else "accuracy", fontsize=10)
        if i >= 2:
            ax.set_xlabel("epoch")
        if last <= 15:
            ax.set_xticks(range(1, last + 1))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlim(0.6, last + 0.4)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return to_png(fig)


def init_figure(study: StudyRecord) -> bytes:
    """Training loss (smoothed) of the same network under each weight initialisation, and the test accuracy."""
    fig, axes = _figure(8, 3.8, 1, 2, width_ratios=[2.2, 1])
    ax, bar = axes[0]
    names, accs = [], []
    window = 1
    for name, run in study["runs"].items():
        if run["status"] != "ok":
            continue
        window = max(1, len(run["loss"]) // 25)
        ax.plot(run["steps"], smooth(run["loss"], window), lw=1.2, label=name)
        names.append(name)
        final = run.get("final", {})
        accs.append(final.get("test_accuracy", 0.0))
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss" + (f" (mean of {window} steps)" if window > 1 else ""))
    ax.set_title(f"{study['lab']}: weight initialisation ({backend.label(study['framework'])}, "
                 f"{study['steps']} steps)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=10)
    y = np.arange(len(names))
    bar.barh(y, accs, color="#4c9a6a")
    bar.set_yticks(y, names, fontsize=10)
    bar.invert_yaxis()
    bar.set_xlim(0, 1)
    bar.set_xlabel("test accuracy")
    bar.set_title("after training", fontsize=12)
    for yi, a in zip(y, accs):
        bar.text(min(a, 0.98), yi, f"{a:.3f}", va="center", ha="right", fontsize=9, color="white")
    return to_png(fig)


def throughput_figure(rows: list[dict], modes: dict[str, str], device: str = "cpu") -> bytes:
    """Training steps per second of every lab in each backend, as a share of the fastest backend on that lab
    (linear axis: bar lengths are speed ratios), labelled with the steps per second and % of the matmul peak.
    ``rows``: dicts with ``lab`` and per backend ``{fw: {"steps_per_s": x, "pct_peak": y}}``; ``modes``: each
    backend's execution mode as the legend should name it ("eager", "fused (lax.scan)")."""
    fws = list(modes)
    fig, axes = _figure(8, 0.32 * len(rows) * max(2, len(fws)) + 1.5)
    ax = axes[0][0]
    height = 0.8 / max(1, len(fws))
    y = np.arange(len(rows))
    for i, fw in enumerate(fws):
        pos = y + (i - (len(fws) - 1) / 2) * height
        ax.barh(pos, [0.0] * len(rows), height, color=color(fw), label=f"{backend.label(fw)}, {modes[fw]}")
        for p, r in zip(pos, rows):
            sps = r.get(fw, {}).get("steps_per_s")
            best = max((r.get(f, {}).get("steps_per_s") or 0.0) for f in fws)
            if not sps or not best:
                continue
            ax.barh(p, sps / best, height, color=color(fw))
            pct = r.get(fw, {}).get("pct_peak")
            ax.text(sps / best, p, f" {sps:,.0f}/s" + (f", {fmt_pct(pct)}% of peak" if pct is not None else ""),
                    va="center", fontsize=9)
    ax.set_yticks(y, [r["lab"] for r in rows], fontsize=10)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.5)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0", "¼", "½", "¾", "fastest"])
    ax.set_xlabel("training steps per second, as a share of the fastest backend on the lab (linear axis)",
                  fontsize=10)
    fig.suptitle(f"Training speed on the {device.upper()}, steady state: "  # over the figure, not the axes
                 + " vs ".join(f"{backend.label(fw)} {modes[fw]}" for fw in fws), fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    fig.legend(loc="outside lower center", ncols=len(fws), fontsize=10)
    return to_png(fig)
