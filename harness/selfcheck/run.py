"""``dlzta selfcheck``: the mutation suite where the user runs, so that a user on another device or dtype learns
whether the parity checks still find porting bugs there, and whether correct code passes them.

Every planted bug of the chosen backends (``harness.selfcheck.catalogue``) is injected, one at a time, and judged
by the check it belongs to (``harness.selfcheck.tiers``: exact, statistical, init) on ``--device`` in ``--dtype``
(a statistical mutation needs float32: in float64 it is not applicable); the same settings unmutated are the
false-alarm controls. The table, and one line: "N of M caught, K false alarms in J correct runs". The record goes
to ``--out`` and to ``$DLZTA_CACHE_DIR/selfcheck.json``, where the report finds the latest one.
"""

from __future__ import annotations

import argparse
import datetime
import re
import time
from pathlib import Path
from typing import Any

from harness.selfcheck import Mutation, catalogue, patched, tiers


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
        return {k: rec[k] for k in keys}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _kw(m: Mutation) -> dict[str, Any]:
    return {"backends": (m.backend,)} if m.tier == "init" else {}


def selfcheck(frameworks: tuple[str, ...], device: str = "cpu", dtype: str = "float32", only: str | None = None,
              echo: Any = None) -> dict:
    """Every applicable mutation of ``frameworks``, mutated and as a control; the record (rows, counts)."""
    chosen = [m for m in catalogue(frameworks) if only is None or only.lower() in m.name.lower()]
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
    return {"command": "selfcheck", "device": device, "dtype": dtype, "frameworks": list(frameworks),
            "rows": rows, "caught": sum(r["status"] == "caught" for r in judged), "judged": len(judged),
            "controls": len(controls), "false_alarms": len(alarms),
            "false_alarm_settings": [{"tier": k[0], "lab": k[1], "overrides": dict(k[2])} for k in alarms],
            "wall_s": time.perf_counter() - start,
            "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}


def line(row: dict) -> str:
    """One row of the table."""
    lab = row["lab"] + ("".join(f" {k}={v}" for k, v in row["overrides"].items()))
    where = f": {row['where']}" if row.get("where") else ""
    return f"{row['status']:<8} {row['tier']:<11} {row['backend']:<6} {row['mutation']} [{lab}]{where}"


def summary(rec: dict) -> str:
    """The closing line."""
    return (f"selfcheck ({rec['device']}, {rec['dtype']}): {rec['caught']} of {rec['judged']} caught, "
            f"{rec['false_alarms']} false alarms in {rec['controls']} correct runs")


def cmd_selfcheck(args: argparse.Namespace) -> int:
    """Run the suite, print the table and the counts; exit 0 when every bug is caught and nothing else."""
    from harness.backend import check_device
    from harness.errors import UsageError
    from harness.run.results import check_output_file, write_json

    if args.out is not None:
        check_output_file(args.out)
    for fw in args.frameworks:
        check_device(fw, args.device)
    if not [m for m in catalogue(tuple(args.frameworks)) if args.only is None or args.only.lower() in m.name.lower()]:
        raise UsageError(f"no planted bug of {', '.join(args.frameworks)} matches --only {args.only!r}")
    from harness.report.compute import backend_threads
    from harness.run.machine import machine_busy, threads_for

    busy = machine_busy()[0]
    counts = {fw: n for fw in args.frameworks
              if (n := threads_for(fw, "mnist", busy, args.threads, args.device)) is not None}
    with backend_threads(counts):
        rec = selfcheck(tuple(args.frameworks), args.device, args.dtype, args.only,
                        echo=None if args.quiet else print)
    skipped = [r for r in rec["rows"] if r["status"] not in ("caught", "MISSED")]
    if skipped and not args.quiet:
        print(f"{len(skipped)} not judged here: " + "; ".join(f"{r['mutation']} ({r['status']})" for r in skipped))
    print(summary(rec))
    if args.out is not None:
        write_json(args.out, rec)
    try:  # the latest selfcheck of this machine, for the report
        write_json(record_path(), rec)
    except (OSError, UsageError):  # the cache cannot be written (or is not a regular file): the report lacks it
        pass
    return 0 if rec["caught"] == rec["judged"] and not rec["false_alarms"] else 1
