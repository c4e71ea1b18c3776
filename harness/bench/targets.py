"""The project's own development targets (docs/benchmarks.md, "The targets"), checked against a run's figures
only when asked (``bench --targets``): reported, never pass/fail. Each target names the backend it was set for;
one that is not registered or not in the run is simply not reported."""

from __future__ import annotations

from harness.labs import get_lab

TARGETS = (
    # (description, labs (a task or lab names), backend, modes (None: the best mode per lab), figure, bound)
    ("JAX fused execution on the XOR labs: at least 100k steps/s", "xor", "jax", ("fused",), "steps_per_s", 1e5),
    ("PyTorch's best mode on the XOR labs: at least 10k steps/s", "xor", "torch", None, "steps_per_s", 1e4),
    ("JAX at batch 100: at least 70% of the measured sgemm peak", ("mnist_dropout", "mnist_deep_xavier"), "jax",
     None, "pct_peak", 70.0),
    ("PyTorch at batch 100: at least 50% of the measured sgemm peak", ("mnist_dropout", "mnist_deep_xavier"),
     "torch", None, "pct_peak", 50.0),
)
OVERHEAD_TARGET_PCT = 2.0


def _best_per_lab(ok: list[dict], labs: str | tuple[str, ...], fw: str, modes: tuple[str, ...] | None,
                  figure: str) -> dict[tuple[str, str], dict]:
    """The entry with the best ``figure`` per (lab, device) among those a target speaks of."""
    chosen: dict[tuple[str, str], dict] = {}
    for e in ok:
        in_labs = get_lab(e["lab"]).task == labs if isinstance(labs, str) else e["lab"] in labs
        if not in_labs or e["framework"] != fw or (modes and e["mode"] not in modes):
            continue
        if e.get("batch_size") != 100 and figure == "pct_peak":
            continue
        k = (e["lab"], e["device"])
        if k not in chosen or e[figure] > chosen[k][figure]:
            chosen[k] = e
    return chosen


def check_targets(results: list[dict]) -> list[dict]:
    """Each target against the float32 figures of this run (best mode per lab where the target says so): the
    targets are float32's."""
    out = []
    ok = [e for e in results if e.get("status") == "ok" and e.get("precision", "float32") == "float32"]
    for text, labs, fw, modes, figure, bound in TARGETS:
        for (lab, device), e in sorted(_best_per_lab(ok, labs, fw, modes, figure).items()):
            out.append({"target": text, "lab": lab, "device": device, "mode": e["mode"], "figure": figure,
                        "value": e[figure], "bound": bound, "met": e[figure] >= bound})
    for e in ok:
        if "overhead" in e:
            out.append({"target": f"harness overhead at most {OVERHEAD_TARGET_PCT:g}% against a bare loop",
                        "lab": e["lab"], "device": e["device"], "mode": f"{e['framework']} {e['mode']}",
                        "figure": "overhead_pct", "value": e["overhead"]["pct"], "bound": OVERHEAD_TARGET_PCT,
                        "met": e["overhead"]["pct"] <= OVERHEAD_TARGET_PCT})
    return out


def target_value(t: dict) -> str:
    """A target's figure in this run, with its unit."""
    if t["figure"] == "steps_per_s":
        return f"{t['value']:,.0f} steps/s"
    return f"{t['value']:.1f}% of peak" if t["figure"] == "pct_peak" else f"{t['value']:+.1f}%"


def format_targets(targets: list[dict]) -> str:
    """The targets with this run's figures, one line each."""
    return "\n".join(f"  [{'met' if t['met'] else 'MISSED'}] {t['target']}: {t['lab']} ({t['device']}, "
                     f"{t['mode']}) {target_value(t)}" for t in targets)
