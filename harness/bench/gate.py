"""The regression gate (``bench --compare BASELINE.json``).

Two figures per entry:

- **normalised** (``pct_paired``): each timed block's GFLOP/s as a percentage of a matmul timed right after it,
  the median over blocks. It carries between machines (a machine twice as fast in every respect leaves it where
  it was) and keeps a shared machine's bursts of other work out of the ratio.
- **raw**: the median ms/step, as throughput now over throughput then.

An entry whose baseline runs at :data:`MATMUL_BOUND_PCT` % of the paired matmul or more is judged on the
normalised figure, unless the raw figure contradicts it (a "regression" whose steps got faster beyond the raw
figure's own noise is not one). One far from matmul-bound (the four-example XOR nets run below 1%) is not: its step
costs dispatch and latency, not FLOPs, so its normalised figure follows the matmul's share of a loaded machine
more than the step. There a regression needs both figures to fall beyond their limits (the raw one beyond its own
spread), and the report names the figure that decided. Each limit is ``max(threshold, 2 x the combined relative
spread of both runs' blocks)``, capped at 40%. Suspects are measured again before failing.

The baseline is checked before anything is measured: a malformed one, or one that shares no workload with the
run, is a :class:`GateError` (one ``error:`` line, exit 2) - a gate that compared nothing must not pass.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from typing import Any

from harness.bench.measure import SCHEMA
from harness.run.results import read_input

EXIT_REGRESSION = 1
MIN_THRESHOLD = 0.25  # never flag less than a 25% drop: this 2-core machine is shared and noisy
MAX_THRESHOLD = 0.4  # always flag a drop of 40% or more, however noisy the runs were
NOISE_FACTOR = 2.0  # limit = NOISE_FACTOR x the combined relative noise of both runs, within those bounds
MATMUL_BOUND_PCT = 5.0  # below this % of the paired matmul, the raw figure must confirm a regression
REQUIRED = (("pct_paired", "median"), ("pct_paired", "p25"), ("ms_per_step", "median"), ("ms_per_step", "p25"))


class GateError(ValueError):
    """A baseline that cannot be gated against, or a comparison of nothing; the message is one line."""


# --- the baseline ----------------------------------------------------------------------------------------------

def _number(entry: dict, path: tuple[str, ...]) -> float | None:
    value: Any = entry
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def check_baseline(record: Any, path: str) -> dict:
    """``record`` if it is a results file the gate can read (schema, a results list, every measured entry with
    the figures the gate compares); a GateError naming the first fault otherwise."""
    if not isinstance(record, dict) or record.get("schema") != SCHEMA:
        raise GateError(f"baseline {path} is not a bench results file (schema {SCHEMA})")
    results = record.get("results")
    if not isinstance(results, list):
        raise GateError(f"baseline {path} has no list of results")
    for i, e in enumerate(results):
        if not isinstance(e, dict) or not isinstance(e.get("key"), str):
            raise GateError(f"baseline {path}: result {i} is not an entry with a key")
        if e.get("status") != "ok":
            continue
        missing = [".".join(p) for p in REQUIRED if _number(e, p) is None]
        if not missing and min(_number(e, ("pct_paired", "median")), _number(e, ("ms_per_step", "median"))) <= 0:
            missing = ["a positive median"]
        if missing:
            raise GateError(f"baseline {path}: entry {e['key']} lacks {', '.join(missing)} (re-record it: "
                            "make bench-baseline)")
    if not any(e.get("status") == "ok" for e in results):
        raise GateError(f"baseline {path} has no measured entry")
    return record


def load_baseline(path: str) -> dict:
    """A checked baseline read from ``path``; a GateError naming the problem otherwise."""
    try:
        record = json.loads(read_input(path, "baseline"))
    except OSError as exc:
        raise GateError(f"cannot read baseline {path}: {exc.strerror or exc}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GateError(f"baseline {path} is not JSON: {getattr(exc, 'msg', exc)}") from None
    return check_baseline(record, path)


def check_overlap(keys: Iterable[str], baseline: dict, path: str) -> None:
    """A GateError unless one of ``keys`` (the planned workloads) is measured in ``baseline``."""
    keys = list(keys)
    measured = [e["key"] for e in baseline["results"] if e.get("status") == "ok"]
    if not set(keys) & set(measured):
        raise GateError(f"nothing to compare: none of the {len(keys)} workloads of this run is in baseline {path} "
                        f"(it has {', '.join(measured)})")


# --- comparing -------------------------------------------------------------------------------------------------

def _spread(stats: dict) -> float:
    """Relative spread of a figure over blocks: (median - p25) / median."""
    return max(0.0, (stats["median"] - stats["p25"]) / stats["median"])


def limit(noise_a: float, noise_b: float, min_threshold: float = MIN_THRESHOLD,
          noise_factor: float = NOISE_FACTOR) -> float:
    """The relative drop beyond which a figure has regressed, given both runs' relative spreads."""
    return min(max(min_threshold, noise_factor * math.hypot(noise_a, noise_b)), max(min_threshold, MAX_THRESHOLD))


def _verdict(ratio: float, lim: float) -> str:
    return "regression" if ratio < 1 - lim else "improved" if ratio > 1 + lim else "ok"


def compare_entry(b: dict, c: dict, min_threshold: float = MIN_THRESHOLD,
                  noise_factor: float = NOISE_FACTOR) -> dict[str, Any]:
    """Both figures of one measured entry against its baseline, the status and the figure that decided it."""
    ratio = c["pct_paired"]["median"] / b["pct_paired"]["median"]
    threshold = limit(_spread(b["pct_paired"]), _spread(c["pct_paired"]), min_threshold, noise_factor)
    raw_ratio = b["ms_per_step"]["median"] / c["ms_per_step"]["median"]
    raw_threshold = limit(_spread(b["ms_per_step"]), _spread(c["ms_per_step"]), min_threshold, noise_factor)
    normalised, raw = _verdict(ratio, threshold), _verdict(raw_ratio, raw_threshold)
    bound = b["pct_paired"]["median"] >= MATMUL_BOUND_PCT
    if bound and (normalised, raw) == ("regression", "improved"):
        # Faster in wall-clock beyond the noise, on the run's own machine: the paired matmul sped up more than the
        # step (measured on this machine: identical code read 0.72 normalised at 1.98x the raw steps/s).
        status, decided = "ok", "raw"
    elif bound or normalised == raw:
        status, decided = normalised, "normalised" if bound else "normalised+raw"
    else:  # far from matmul-bound and the two disagree: the one that says "no change" decides
        status, decided = "ok", "raw" if normalised != "ok" else "normalised"
    return {"status": status, "decided_by": decided, "matmul_bound": bound, "ratio": ratio,
            "threshold": threshold, "raw_ratio": raw_ratio, "raw_threshold": raw_threshold,
            "baseline_pct_peak": b["pct_paired"]["median"], "pct_peak": c["pct_paired"]["median"],
            "baseline_ms_per_step": b["ms_per_step"]["median"], "ms_per_step": c["ms_per_step"]["median"],
            "baseline_steps_per_s": b.get("steps_per_s"), "steps_per_s": c.get("steps_per_s"),
            "baseline_peak_gflops": b.get("peak_gflops"), "peak_gflops": c.get("peak_gflops")}


def gate(current: dict, baseline: dict, min_threshold: float = MIN_THRESHOLD,
         noise_factor: float = NOISE_FACTOR) -> list[dict]:
    """One row per entry of either run: both figures, their ratios and limits, and a status: ok, regression,
    improved, new, missing or unavailable."""
    base = {e["key"]: e for e in baseline.get("results", [])}
    cur = {e["key"]: e for e in current.get("results", [])}
    rows = []
    for key in list(base) + [k for k in cur if k not in base]:
        b, c = base.get(key), cur.get(key)
        if c is None:
            rows.append({"key": key, "status": "missing"})
        elif b is None or b.get("status") != "ok":
            rows.append({"key": key, "status": "new"})
        elif c.get("status") != "ok":
            rows.append({"key": key, "status": "unavailable", "reason": c.get("reason", c.get("status"))})
        else:
            rows.append({"key": key, **compare_entry(b, c, min_threshold, noise_factor)})
    return rows


def regressions(rows: list[dict]) -> list[str]:
    """Keys of the rows that regressed."""
    return [r["key"] for r in rows if r["status"] == "regression"]


def compared(rows: list[dict]) -> list[str]:
    """Keys of the rows where both runs had figures to compare."""
    return [r["key"] for r in rows if "ratio" in r]


def _margin(row: dict) -> float:
    """How far a row is from failing (higher: farther); a regression needs every deciding figure below 1."""
    norm = row["ratio"] / (1 - row["threshold"])
    return norm if row["matmul_bound"] else max(norm, row["raw_ratio"] / (1 - row["raw_threshold"]))


def better_for(baseline: dict, min_threshold: float = MIN_THRESHOLD) -> Callable[[dict, dict], bool]:
    """Of two measurements of one entry, whether the first is farther from a regression against ``baseline``."""
    base = {e["key"]: e for e in baseline["results"]}

    def better(new: dict, old: dict) -> bool:
        b = base.get(new["key"])
        if b is None or b.get("status") != "ok":
            return new["pct_paired"]["median"] > old["pct_paired"]["median"]
        return _margin(compare_entry(b, new, min_threshold)) > _margin(compare_entry(b, old, min_threshold))

    return better


def run_gate(record: dict, baseline: dict, min_threshold: float, retries: int,
             remeasure: Callable[[set[str]], None], echo: Callable[[str], None] = print) -> list[dict]:
    """Gate ``record``; measure suspected regressions again (``remeasure(keys)`` updates ``record``) up to
    ``retries`` times; the final rows."""
    rows = gate(record, baseline, min_threshold)
    for attempt in range(retries):
        suspects = set(regressions(rows))
        if not suspects:
            break
        echo(f"gate: {len(suspects)} suspected regression(s); measuring again ({attempt + 1}/{retries})")
        remeasure(suspects)
        rows = gate(record, baseline, min_threshold)
    return rows


# --- the report ------------------------------------------------------------------------------------------------

def format_gate(rows: list[dict]) -> str:
    """The gate as a table: both figures, their ratios against their limits, and which decided."""
    lines = [f"gate: normalised = each block's GFLOP/s as % of a matmul timed right after it (median over blocks); "
             f"raw = median ms/step. Below {MATMUL_BOUND_PCT:g}% of the matmul a regression needs both.",
             f"{'workload':<42} {'% base':>9} {'% now':>9} {'ratio':>6} {'limit':>6}  {'ms base':>9} {'ms now':>9} "
             f"{'ratio':>6} {'limit':>6}  {'decided by':<14} status"]
    for r in rows:
        if "ratio" not in r:
            lines.append(f"{r['key']:<42} {'':>9} {'':>9} {'':>6} {'':>6}  {'':>9} {'':>9} {'':>6} {'':>6}  "
                         f"{'':<14} {r['status']}{': ' + r['reason'] if r.get('reason') else ''}")
            continue
        lines.append(f"{r['key']:<42} {r['baseline_pct_peak']:>9.4g} {r['pct_peak']:>9.4g} {r['ratio']:>6.2f} "
                     f"{1 - r['threshold']:>6.2f}  {r['baseline_ms_per_step']:>9.4g} {r['ms_per_step']:>9.4g} "
                     f"{r['raw_ratio']:>6.2f} {1 - r['raw_threshold']:>6.2f}  {r['decided_by']:<14} {r['status']}")
    return "\n".join(lines)


def busy_notes(record: dict, baseline: dict) -> list[str]:
    """A note for each run that started on a machine busier than its core count."""
    notes = []
    for name, rec in (("this run", record), ("the baseline", baseline)):
        load, cores = (rec.get("loadavg_start") or [0])[0], rec.get("machine", {}).get("cpu_count") or 1
        if load > cores:
            notes.append(f"gate: note: {name} ran on a busy machine (load average {load} on {cores} cores); its "
                         "figures are noisier than usual")
    return notes
