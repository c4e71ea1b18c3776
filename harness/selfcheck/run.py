"""``dlzta selfcheck``: the mutation suite where the user runs, so that a user on another device or dtype learns
whether the parity checks still find porting bugs there, and whether correct code passes them.

Every planted bug of the chosen backends (``harness.selfcheck.catalogue``) is injected, one at a time, and judged
by the check it belongs to (``harness.selfcheck.tiers``: exact, statistical, init) on ``--device`` in ``--dtype``
(a statistical mutation needs float32: in float64 it is not applicable); the same settings unmutated are the
false-alarm controls. The precision part (``harness.selfcheck.precision``) plants each backend's precision-placement
bugs under each reduced policy where each is a bug and judges them by the precision tier, correct code under every
reduced policy as its controls. The table, and one line per part: "N of M caught, K false alarms in J correct
runs", "precision: N of M planted bugs caught, K with the side named; J correct-code controls, 0 false alarms".
The record (``selfcheck.schema.json``) goes to ``--out`` and to ``$DLZTA_CACHE_DIR/selfcheck.json``, where the
report finds the latest one.
"""

from __future__ import annotations

import argparse
import datetime
import re
import time
from pathlib import Path
from typing import Any

from harness.selfcheck import Mutation, catalogue, patched, tiers
from harness.selfcheck import precision as precision_part

TIERS = (*tiers.RUNNERS, "precision")  # what --tiers chooses from: the checks of the catalogue, the precision tier


def record_path() -> Path:
    """Where the latest selfcheck's record is kept (the report reads it)."""
    from harness.data.tfds import cache_dir

    return Path(cache_dir()) / "selfcheck.json"


def latest() -> dict | None:
    """The counts of the latest selfcheck run on this machine (None: none, or an unreadable record)."""
    import json

    try:
        rec = json.loads(record_path().read_text())
        keys = ("device", "dtype", "frameworks", "caught", "judged", "false_alarms", "controls", "when")
        out = {k: rec[k] for k in keys}
        if isinstance(rec.get("precision"), dict):
            p = rec["precision"]
            out["precision"] = {k: p[k] for k in ("caught", "judged", "side_named", "correct_sides", "false_alarms")}
        return out
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _kw(m: Mutation) -> dict[str, Any]:
    return {"backends": (m.backend,)} if m.tier == "init" else {}


def chosen_mutations(frameworks: tuple[str, ...], only: str | None, chosen_tiers: tuple[str, ...] | None) -> list:
    """The catalogue's mutations of ``frameworks`` whose name contains ``only`` and whose check is chosen."""
    return [m for m in catalogue(frameworks) if (only is None or only.lower() in m.name.lower())
            and (chosen_tiers is None or m.tier in chosen_tiers)]


def selfcheck(frameworks: tuple[str, ...], device: str = "cpu", dtype: str = "float32", only: str | None = None,
              echo: Any = None, chosen_tiers: tuple[str, ...] | None = None) -> dict:
    """Every applicable mutation of ``frameworks`` (of ``chosen_tiers``' checks; None: all, the precision tier
    included), mutated and as a control; the record (rows, counts; the precision part under ``precision``)."""
    chosen = chosen_mutations(frameworks, only, chosen_tiers)
    rows, controls = [], {}
    start = time.perf_counter()
    for m in chosen:
        sides = m.sides or frameworks[:2]
        row: dict[str, Any] = {"mutation": m.name, "backend": m.backend, "lab": m.lab, "overrides": m.overrides,
                               "tier": m.tier, "sides": list(sides)}
        if not tiers.applies(m.tier, dtype) or len(frameworks) < 2 and m.tier != "init":
            row["status"] = f"not applicable ({dtype})" if m.tier in tiers.RUNNERS else f"no runner for {m.tier}"
            rows.append(row)
            continue
        key = (m.tier, m.lab, tuple(sorted(m.overrides.items())), tuple(sides), m.backend if m.tier == "init" else "")
        if key not in controls:
            controls[key] = tiers.run(m.tier, m.lab, m.overrides, tuple(sides), device, dtype, **_kw(m))
        with patched(m):
            found = tiers.run(m.tier, m.lab, m.overrides, tuple(sides), device, dtype, **_kw(m))
        caught = found.found and bool(re.search(m.expect, found.where))
        row.update(status="caught" if caught else "MISSED", where=found.where, text=found.text,
                   control_ok=not controls[key].found)
        rows.append(row)
        if echo:
            echo(line(row))
    judged = [r for r in rows if r["status"] in ("caught", "MISSED")]
    alarms = [k for k, f in controls.items() if f.found]
    rec = {"command": "selfcheck", "device": device, "dtype": dtype, "frameworks": list(frameworks),
           "tiers": list(chosen_tiers or TIERS), "rows": rows, "caught": sum(r["status"] == "caught" for r in judged),
           "judged": len(judged),
           "controls": len(controls), "false_alarms": len(alarms),
           "false_alarm_settings": [{"tier": k[0], "lab": k[1], "overrides": dict(k[2])} for k in alarms]}
    if (chosen_tiers is None or "precision" in chosen_tiers) and precision_part.bugs(frameworks, only):
        rec["precision"] = precision_part.selfcheck(frameworks, only, device, echo)
    rec["wall_s"] = time.perf_counter() - start
    rec["when"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return rec


def line(row: dict) -> str:
    """One row of the table."""
    lab = row["lab"] + ("".join(f" {k}={v}" for k, v in row["overrides"].items()))
    where = f": {row['where']}" if row.get("where") else ""
    return f"{row['status']:<8} {row['tier']:<11} {row['backend']:<6} {row['mutation']} [{lab}]{where}"


def summary(rec: dict) -> str:
    """The closing line (and the precision part's, where it ran)."""
    text = (f"selfcheck ({rec['device']}, {rec['dtype']}): {rec['caught']} of {rec['judged']} caught, "
            f"{rec['false_alarms']} false alarms in {rec['controls']} correct runs")
    if rec.get("precision") is None:
        return text
    part = precision_part.summary(rec["precision"])
    return part if set(rec.get("tiers", TIERS)) <= {"precision"} else f"{text}\n{part}"


def passed(rec: dict) -> bool:
    """Every planted bug caught (a precision bug with its side named) and no false alarm."""
    return (rec["caught"] == rec["judged"] and not rec["false_alarms"]
            and (rec.get("precision") is None or precision_part.ok(rec["precision"])))


def cmd_selfcheck(args: argparse.Namespace) -> int:
    """Run the suite, print the table and the counts; exit 0 when every bug is caught and nothing else."""
    from harness.backend import check_device
    from harness.errors import UsageError
    from harness.run.results import check_output_file, write_json

    if args.out is not None:
        check_output_file(args.out)
    for fw in args.frameworks:
        check_device(fw, args.device)
    chosen_tiers = args.tiers
    frameworks = tuple(args.frameworks)
    precision_bugs = precision_part.bugs(frameworks, args.only) if "precision" in chosen_tiers else []
    if not chosen_mutations(frameworks, args.only, chosen_tiers) and not precision_bugs:
        what = f" matches --only {args.only!r}" if args.only is not None else ""
        raise UsageError(f"no planted bug of {', '.join(frameworks)} for --tiers {','.join(chosen_tiers)}{what}")
    from harness.report.compute import backend_threads
    from harness.run.machine import machine_busy, threads_for

    busy = machine_busy()[0]
    counts = {fw: n for fw in args.frameworks
              if (n := threads_for(fw, "mnist", busy, args.threads, args.device)) is not None}
    with backend_threads(counts):
        rec = selfcheck(frameworks, args.device, args.dtype, args.only, echo=None if args.quiet else print,
                        chosen_tiers=chosen_tiers)
    skipped = [r for r in (*rec["rows"], *(rec.get("precision") or {}).get("rows", ()))
               if r["status"] not in ("caught", "MISSED") and "caught" not in r]
    if skipped and not args.quiet:
        print(f"{len(skipped)} not judged here: " + "; ".join(f"{r['mutation']} ({r['status']})" for r in skipped))
    print(summary(rec))
    if args.out is not None:
        write_json(args.out, rec, kind="selfcheck")
    try:  # the latest selfcheck of this machine, for the report
        write_json(record_path(), rec, kind="selfcheck")
    except (OSError, UsageError):  # the cache cannot be written (or is not a regular file): the report lacks it
        pass
    return 0 if passed(rec) else 1
