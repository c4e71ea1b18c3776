"""Measure the parity tiers on deliberate porting bugs and on correct code: the detection table of
``docs/parity.md``.

Every mutation of ``harness.selfcheck.catalogue()`` (a patch of one backend) runs the exact tier over its default
window (what ``compare`` and the main job run: the whole run for XOR labs, up to 200 float64 steps for MNIST),
from the float32 run's shared weights, and with ``--ensemble`` the statistical tier on the float32 run too; each
records whether it was caught, where (step, tensor or quantity), how far apart, and which side the referee
named. Correct code runs the exact tier on every lab with float32 and float64 requested, and on each mutation's
lab settings unmutated: every failure there is a false alarm.

    .venv/bin/python benchmarks/parity_mutations.py --ensemble --out benchmarks/parity-mutations.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from harness.bench.peak import loadavg  # noqa: E402
from harness.labs import LABS, get_lab  # noqa: E402
from harness.parity.api import statistical_tier  # noqa: E402
from harness.parity.configs import default_configs, run_keys  # noqa: E402
from harness.parity.exact import exact_tier  # noqa: E402
from harness.run.results import write_json  # noqa: E402
from harness.run.runner import RunOptions, prepare  # noqa: E402
from harness.selfcheck import Mutation, catalogue, patched  # noqa: E402


def _prepared(lab: str, dtype: str, overrides: dict, steps: int | None = None, seed: int | None = None) -> tuple:
    options = RunOptions(data="mnist-5k", dtype=dtype, weights="shared", mask_mode="shared", steps=steps,
                         overrides=overrides, seed=seed)
    prepared = prepare(get_lab(lab), options)
    return prepared, default_configs(options)


def _where(tier: dict) -> dict:
    if tier["localised"] is not None:
        loc = tier["localised"]
        return {"step": loc["step"], "what": loc["what"], "rel": loc["rel"], "by": "trace"}
    failed = sorted((f["first_step_over"], name) for name, f in tier["quantities"].items() if not f["ok"])
    if not failed:
        return {"step": None, "what": None, "rel": None, "by": None}
    step, name = failed[0]
    return {"step": step, "what": f"{name} at step {step}", "rel": tier["quantities"][name]["rel_at_first"],
            "by": "window"}


def measure_mutation(m: Mutation, ensemble: bool) -> dict:
    """The tiers' findings on ``m`` (patched for the duration)."""
    with patched(m):
        prepared, (a, b) = _prepared(m.lab, "float32", m.overrides)
        start = time.perf_counter()
        tier = exact_tier(prepared, a, b, run_keys(a, b))
        row = {"mutation": m.name, "backend": m.backend, "lab": m.lab, "overrides": m.overrides,
               "exact": {"caught": not tier["ok"], "window": tier["steps"], **_where(tier), "text": tier["text"],
                         "referee_off": (tier["referee"] or {}).get("off"), "seconds": time.perf_counter() - start}}
        if ensemble:
            stats = statistical_tier(prepared, a, b)
            row["ensemble"] = None if stats is None else {
                "caught": not stats["ok"], "ratio": stats["ratio"], "at_step": stats.get("at_step"),
                "window": stats["window"], "text": stats["text"]}
    return row


def measure_correct(labs: list[str], dtypes: list[str], seeds: list[int | None] | None = None,
                    settings: bool = True) -> list[dict]:
    """The exact tier on correct code: every lab in each dtype and seed (None: the lab's own), and (``settings``)
    every mutation's lab settings."""
    cases = [(lab, dtype, {}, seed) for seed in seeds or [None] for lab in labs for dtype in dtypes]
    cases += [(m.lab, "float32", m.overrides, None) for m in catalogue() if m.overrides and settings]
    rows = []
    for lab, dtype, overrides, seed in dict.fromkeys((c[0], c[1], tuple(sorted(c[2].items())), c[3]) for c in cases):
        prepared, (a, b) = _prepared(lab, dtype, dict(overrides), seed=seed)
        start, cpu, load = time.perf_counter(), time.process_time(), loadavg()
        tier = exact_tier(prepared, a, b, run_keys(a, b))
        margin = max((f["max_rel_judged"] / f["tolerance"], name) for name, f in tier["quantities"].items()
                     if f["tolerance"] and f["max_rel_judged"] == f["max_rel_judged"])
        rows.append({"lab": lab, "dtype": dtype, "seed": seed, "overrides": dict(overrides), "ok": tier["ok"],
                     "text": tier["text"], "window": tier["steps"], "judged": tier["judged_steps"],
                     "closest": {"quantity": margin[1], "share_of_tolerance": margin[0]},
                     "internals_closest": tier["internals"].get("closest"),
                     "wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu,
                     "loadavg": load})
        print(f"correct {lab:<28} {dtype} {dict(overrides) or ''}{'' if seed is None else f'seed {seed}'}: "
              f"{tier['text']} "
              f"[{rows[-1]['wall_s']:.1f} s wall, {rows[-1]['cpu_s']:.1f} s cpu; closest: {margin[1]} at "
              f"{margin[0]:.1e} of its tolerance]", flush=True)
    return rows


def _rel(x: float | None) -> str:
    return "not finite" if x is None or x != x else f"{x:.1e}"


def table(rows: list[dict]) -> str:
    """The markdown detection table."""
    lines = ["| mutation (side) | lab | exact tier: caught, where | rel | referee: off | statistical tier |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        e, s = r["exact"], r.get("ensemble")
        lab = r["lab"] + (" " + ", ".join(f"{k}={v}" for k, v in r["overrides"].items()) if r["overrides"] else "")
        stat = "not run" if s is None else f"{'caught' if s['caught'] else 'missed'} ({s['ratio']:.3g}x band)"
        where = f"yes: {e['what']}" if e["caught"] else "NO"
        lines.append(f"| {r['mutation']} ({r['backend']}) | {lab} | {where} | {_rel(e['rel'])} | "
                     f"{e['referee_off'] or '-'} | {stat} |")
    return "\n".join(lines)


def correct_table(rows: list[dict]) -> str:
    """The markdown table of the runs on correct code (the mutations' lab settings in one line after it)."""
    lines = ["| lab | requested | window (judged) | largest training-loss rel diff | closest quantity (share of its "
             "tolerance) | wall / CPU s | load |", "|---|---|---|---|---|---|---|"]
    for c in (c for c in rows if not c["overrides"]):
        top = c["text"].rsplit("max ", 1)[-1].rstrip(")") if c["ok"] else "FALSE ALARM: " + c["text"]
        seed = "" if c.get("seed") is None else f" (seed {c['seed']})"
        lines.append(f"| {c['lab']}{seed} | {c['dtype']} | {c['window']} ({c['judged']}) | {top} | "
                     f"{c['closest']['quantity']} ({c['closest']['share_of_tolerance']:.1e}) | "
                     f"{c['wall_s']:.1f} / {c['cpu_s']:.1f} | {c['loadavg'][0]:.1f} |")
    settings = [f"{c['lab']} {', '.join(f'{k}={v}' for k, v in c['overrides'].items())}: "
                f"{'ok' if c['ok'] else 'FALSE ALARM'} (closest {c['closest']['quantity']} at "
                f"{c['closest']['share_of_tolerance']:.1e})" for c in rows if c["overrides"]]
    return "\n".join(lines) + ("\n\nThe mutations' lab settings, unmutated: " + "; ".join(settings) + "."
                                if settings else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ensemble", action="store_true", help="also the statistical tier on each mutation")
    parser.add_argument("--no-correct", action="store_true", help="skip the false-alarm runs on correct code")
    parser.add_argument("--no-mutations", action="store_true", help="skip the mutations")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--labs", default=",".join(LABS), help="correct code: these labs (default: all)")
    parser.add_argument("--seeds", help="correct code: these seeds (comma-separated; default: each lab's own); "
                        "the mutations' lab settings are then left out")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", help="write every figure as JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = []
    for m in () if args.no_mutations else catalogue():
        if m.tier != "exact":  # native-init bugs (parity_ablation.py --native-init) and float32-only ones, judged
            continue           # between their own sides' runs (dlzta selfcheck, tests/test_mutations_float32.py)
        rows.append(measure_mutation(m, args.ensemble))
        print(f"mutation {m.name}: {rows[-1]['exact']['text']}"
              + (f" | statistical: {rows[-1]['ensemble']['text']}" if rows[-1].get("ensemble") else ""), flush=True)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None
    correct = [] if args.no_correct else measure_correct(args.labs.split(","), args.dtypes.split(","), seeds,
                                                         settings=seeds is None)
    print(table(rows))
    if correct:
        print(correct_table(correct))
    alarms = [c for c in correct if not c["ok"]]
    print(f"false alarms on correct code: {len(alarms)} of {len(correct)} runs; caught: "
          f"{sum(r['exact']['caught'] for r in rows)} of {len(rows)} mutations")
    if args.out:
        write_json(args.out, {"mutations": rows, "correct": correct, "false_alarms": len(alarms),
                              "loadavg_end": loadavg(), "wall_s": time.perf_counter() - start})


if __name__ == "__main__":
    main()
