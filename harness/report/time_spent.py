"""The report's account of where the job's time went: each lab's phases (``rec["costs"]``, recorded by
:mod:`harness.run.costs` around the lab's computation) and the job's own (start-up, matmul peak, the study, the
writes), in wall-clock seconds, so that the next regression shows in the phase that caused it."""

from __future__ import annotations

from harness.report.doc import Doc

TOP = "compute"  # the phase around each lab's computation


def columns(labs: dict) -> list[str]:
    """The phases below :data:`TOP` that any lab recorded, in the order first seen, each phase before the phases
    nested in it (a phase is recorded when it ends, after them)."""
    seen: dict[str, None] = {}
    for rec in labs.values():
        for name in rec.get("costs") or {}:
            if name.startswith(f"{TOP}/"):
                seen[name.removeprefix(f"{TOP}/")] = None
    groups: dict[str, list[str]] = {}
    for name in seen:
        groups.setdefault(name.split("/")[0], []).append(name)
    return [name for group, names in groups.items() for name in sorted(names, key=lambda n: n != group)]


def seconds(value: float | None) -> str:
    """Seconds to the hundredth ("–": not recorded)."""
    return "–" if value is None else f"{value:.2f}"


def _heading(phase: str) -> str:
    return phase.replace("exact tier/", "exact: ").replace(" tier", "")


def costs(doc: Doc, results: dict) -> None:
    """The phase table (one row per lab computed in this job or an earlier one) and the job's phases."""
    labs = {name: rec for name, rec in results.get("labs", {}).items() if rec.get("costs")}
    job = (results.get("job") or {}).get("costs") or {}
    if not labs and not job:
        return
    doc.heading(2, "Where the time went", anchor="costs")
    cols = columns(labs)
    if labs:
        doc.para("Wall-clock seconds of each lab's phases (a nested phase, `exact: ...`, counts in its tier too; "
                 "`results.json` has CPU seconds and calls beside them). The exact tier's float64 runs reuse the "
                 "user's runs where those are float64 already.")
        rows = []
        for name, rec in labs.items():
            c = rec["costs"]
            rows.append([f"`{name}`", seconds((c.get(TOP) or {}).get("wall_s"))]
                        + [seconds((c.get(f"{TOP}/{p}") or {}).get("wall_s")) for p in cols])
        rows.append(["all labs"] + [seconds(sum((r["costs"].get(f"{TOP}/{p}" if p else TOP) or {}).get("wall_s", 0.0)
                                                for r in labs.values())) for p in ["", *cols]])
        doc.table(["lab", "total"] + [_heading(p) for p in cols], rows, right=range(1, len(cols) + 2))
    if job:
        doc.para("The job's own phases (summed over the labs where each lab has one): "
                 + "; ".join(f"{name} {seconds(v['wall_s'])} s" for name, v in job.items()) + ".")
