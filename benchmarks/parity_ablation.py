"""The parity verdict off its calibrated path: both tiers over the lectures' ablations and other seeds.

``compare`` (both tiers, float32, shared weights, shared dropout masks, bundled mnist-5k, CPU) runs on a grid of
correct-code settings: on ``mnist_relu_xavier`` every optimizer x activation, every init scheme, batch sizes
from 1 to the whole training set, learning rates over four decades, dropout rates; and every lab of
``labs.LABS`` at its declared settings under ``--seeds`` other seeds. MNIST runs are cut at ``--steps`` (default
21: the statistical tier's 20-step window and its lag of one; the exact tier's float64 window is then those 21
steps instead of its default 200); the XOR labs run whole (10001 steps, the exact tier's default window). Every
run records both tiers' verdicts, the statistical ratio (limit 100x) and the exact tier's closest quantity as a
share of its tolerance; a failure of either tier on this correct code is a false alarm. Then every mutation of
``harness.selfcheck.catalogue()`` judged by these tiers is injected at three points of the grid where it applies
(three seeds; on MNIST the third also at batch size 10) and the tier that catches it is recorded.
``--native-init`` runs the native-initialisation check instead (no training): every lab's model under
``--seeds`` seeds and every init scheme on every distinct lab layer shape, in both frameworks, and each
``tier="init"`` mutation under three seeds.

    .venv/bin/python benchmarks/parity_ablation.py --out benchmarks/parity-ablation.json
    .venv/bin/python benchmarks/parity_ablation.py --native-init --out benchmarks/parity-initcheck.json
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from harness.bench.peak import loadavg  # noqa: E402
from harness.errors import RunDiverged  # noqa: E402
from harness.labs import ACTIVATIONS, INITS, LABS, OPTIMIZERS, Model, get_lab  # noqa: E402
from harness.parity import initcheck  # noqa: E402
from harness.parity.api import compare, statistical_tier  # noqa: E402
from harness.parity.configs import default_configs, run_keys  # noqa: E402
from harness.parity.exact import exact_tier  # noqa: E402
from harness.run.results import write_json  # noqa: E402
from harness.run.runner import RunOptions, prepare  # noqa: E402
from harness.selfcheck import Mutation, catalogue, patched  # noqa: E402

GRID_LAB = "mnist_relu_xavier"
LR = {"sgd": 0.1, "adadelta": 1.0, "rmsprop": 0.001, "adam": 0.001}  # a sensible lr per optimizer
BATCHES = (1, 10, 100, 1000, 4000)  # 4000: the whole bundled training set
LRS = (1e-4, 1e-3, 1e-2, 1e-1)
DROPOUTS = (0.1, 0.3, 0.5)


def grid(seeds: int) -> list[tuple[str, str, dict, int | None]]:
    """``(group, lab, overrides, seed)`` of every correct-code run (seed None: the lab's own)."""
    points = [("optimizer x activation", GRID_LAB, {"optimizer_name": o, "lr": LR[o], "activation": a}, None)
              for o in OPTIMIZERS for a in ACTIVATIONS]
    points += [("init", GRID_LAB, {"init": i}, None) for i in INITS]
    points += [("batch size", GRID_LAB, {"batch_size": b}, None) for b in BATCHES]
    points += [("learning rate", GRID_LAB, {"lr": lr}, None) for lr in LRS]
    points += [("dropout", GRID_LAB, {"dropout": p}, None) for p in DROPOUTS]
    points += [("seeds", lab, {}, s) for lab in LABS for s in range(seeds)]
    return points


def _options(lab: str, overrides: dict, seed: int | None, steps: int) -> RunOptions:
    capped = None if get_lab(lab).task in ("xor", "gates") else steps
    return RunOptions(data="mnist-5k", dtype="float32", weights="shared", mask_mode="shared", steps=capped,
                      seed=seed, overrides=overrides)


def _closest(exact: dict) -> dict:
    share = max(((f["max_rel_judged"] / f["tolerance"], name) for name, f in exact["quantities"].items()
                 if f["tolerance"] and f["max_rel_judged"] == f["max_rel_judged"]), default=(0.0, None))
    return {"quantity": share[1], "share_of_tolerance": share[0]}


def judge(lab: str, overrides: dict, seed: int | None, steps: int) -> dict:
    """One ``compare`` with both tiers: each tier's verdict and margin."""
    start, load = time.perf_counter(), loadavg()
    options = _options(lab, overrides, seed, steps)
    try:
        result = compare(get_lab(lab), options)
        exact, stats = result["tiers"]["exact"], result["tiers"].get("ensemble")
        verdict, kind = result["verdict"], result["verdict_kind"]
    except RunDiverged as exc:  # compare stops (exit 2) naming the step; the tiers' own view, run directly
        prepared, (a, b) = prepare(get_lab(lab), options), default_configs(options)
        exact, stats = exact_tier(prepared, a, b, run_keys(a, b)), statistical_tier(prepared, a, b)
        verdict, kind = f"compare stops: {exc}; exact tier: {exact['text']}", "diverged"
    return {"lab": lab, "overrides": overrides, "seed": seed, "verdict": verdict, "verdict_kind": kind,
            "exact": {"ok": exact["ok"], "window": exact["steps"], "judged": exact["judged_steps"],
                      "text": exact["text"], "closest": _closest(exact),
                      "where": (exact["localised"] or {}).get("what")},
            "statistical": None if stats is None else {"ok": stats["ok"], "ratio": stats["ratio"],
                                                       "limit": stats["limit"], "window": stats["window"],
                                                       "at_step": stats.get("at_step"), "text": stats["text"]},
            "wall_s": time.perf_counter() - start, "loadavg": load}


def mutation_points(m: Mutation) -> list[tuple[dict, int]]:
    """Three grid points where ``m`` applies: its own settings under three seeds, the third at batch 10 on
    MNIST (the full-batch XOR labs have no batch size)."""
    mnist = get_lab(m.lab).task == "mnist"
    return [(dict(m.overrides), 1), (dict(m.overrides), 2),
            ({**m.overrides, "batch_size": 10} if mnist else dict(m.overrides), 3)]


def native_init(seeds: int) -> dict:
    """The native-initialisation check (``harness.parity.initcheck``) on correct code (every lab's model under
    ``seeds`` seeds; every init scheme on every distinct lab layer shape as a one-layer net) and on each
    ``tier="init"`` mutation under three seeds: the checks, their false alarms and the catches."""
    shapes = sorted({(a, b) for lab in LABS.values() for m in (lab.model, lab.companion) if m is not None
                     for a, b in zip(m.sizes[:-1], m.sizes[1:])})
    cases = [(name, lab.model, s) for name, lab in LABS.items() for s in range(seeds)]
    cases += [(f"{i} {a}x{b}", Model((a, b), init=i), a * 1000 + b) for i in INITS for a, b in shapes]
    correct = []
    for name, model, seed in cases:
        r = initcheck.check(model, ("torch", "jax"), seed)
        low = min((min(t["p"].values()), fw, k) for fw, per in r["tensors"].items() for k, t in per.items())
        correct.append({"case": name, "seed": seed, "ok": r["ok"], "tests": r["tests"], "seeds": r["seeds"],
                        "level": r["level"], "lowest_p": low[0], "lowest": f"{low[1]} {low[2]}", "text": r["text"]})
        print(f"native init {name} seed {seed}: {r['text']} (lowest p {low[0]:.1e}, level {r['level']:.1e})",
              flush=True)
    caught = []
    for m in (m for m in catalogue() if m.tier == "init"):
        model = get_lab(m.lab).with_options(**m.overrides).model
        for seed in (1, 2, 3):
            with patched(m):
                r = initcheck.check(model, (m.backend,), seed)
            first = r["failures"][0] if r["failures"] else {}
            caught.append({"mutation": m.name, "backend": m.backend, "lab": m.lab, "overrides": m.overrides,
                           "seed": seed, "caught": not r["ok"], "named": first.get("tensor"),
                           "named_ok": bool(first) and re.search(m.expect, first["tensor"]) is not None,
                           "failing_tensors": len(r["failures"]), "text": r["text"]})
            print(f"init mutation {m.name} seed {seed}: {r['text']}", flush=True)
    return {"correct": correct, "false_alarms": sum(not c["ok"] for c in correct), "mutations": caught,
            "alpha": initcheck.ALPHA}


def label(row: dict) -> str:
    """The run's settings in one phrase."""
    parts = [f"{k}={v}" for k, v in row["overrides"].items()] + ([f"seed={row['seed']}"] if row["seed"] is not
                                                                  None else [])
    return f"{row['lab']} " + ", ".join(parts)


def tables(data: dict) -> str:
    """The markdown tables of docs/parity.md from a ``--out`` file: per group of the grid, its runs, false
    alarms, largest statistical ratio and closest exact share; the mutation sample by catching tier."""
    lines = ["| group | runs | false alarms | largest statistical ratio (at) | closest exact quantity, share of "
             "tolerance (at) |", "|---|---|---|---|---|"]
    for group in dict.fromkeys(r["group"] for r in data["runs"]):
        rows = [r for r in data["runs"] if r["group"] == group]
        alarms = sum(r["verdict_kind"] not in ("same math", "within rounding noise") for r in rows)
        ratio = max((r["statistical"]["ratio"], label(r)) for r in rows if r["statistical"])
        share = max((r["exact"]["closest"]["share_of_tolerance"], label(r)) for r in rows)
        lines.append(f"| {group} | {len(rows)} | {alarms} | {ratio[0]:.3g} ({ratio[1]}) | {share[0]:.1e} "
                     f"({share[1]}) |")
    lines += ["", "| mutation (side) | tier that should catch it | points | caught by exact | caught by statistical "
              "| smallest statistical ratio |", "|---|---|---|---|---|---|"]
    for name in dict.fromkeys(m["mutation"] for m in data["mutations"]):
        rows = [m for m in data["mutations"] if m["mutation"] == name]
        ratios = [math.inf if m["statistical"]["ratio"] is None else m["statistical"]["ratio"]  # JSON: inf -> None
                  for m in rows if m["statistical"]]
        low = f"{min(ratios):.3g}" if ratios else "-"
        lines.append(f"| {name} ({rows[0]['backend']}) | {rows[0]['tier']} | {len(rows)} | "
                     f"{sum('exact' in m['caught_by'] for m in rows)} | "
                     f"{sum('statistical' in m['caught_by'] for m in rows)} | {low} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds per lab (0..N-1)")
    parser.add_argument("--steps", type=int, default=21, help="MNIST run length (the XOR labs run whole)")
    parser.add_argument("--groups", help="comma-separated groups of the grid to run (default: all)")
    parser.add_argument("--no-mutations", action="store_true", help="skip the mutation sample")
    parser.add_argument("--mutations", metavar="TEXT", help="only the mutations whose name contains TEXT")
    parser.add_argument("--merge", action="store_true", help="add the runs to those of an existing --out file")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--native-init", action="store_true", help="only the native-initialisation check "
                        "(correct code and the init mutations; no training)")
    parser.add_argument("--tables", metavar="JSON", help="only print the markdown tables of a --out file")
    parser.add_argument("--out", help="write every figure as JSON (rewritten after each run)")
    args = parser.parse_args()
    if args.tables:
        print(tables(json.loads(Path(args.tables).read_text())))
        return
    torch.set_num_threads(args.threads)
    if args.native_init:
        found = native_init(args.seeds)
        print(f"native init: {found['false_alarms']} false alarms in {len(found['correct'])} checks of correct "
              f"code; {sum(m['caught'] and m['named_ok'] for m in found['mutations'])} of "
              f"{len(found['mutations'])} init-mutation runs caught naming the tensor")
        if args.out:
            write_json(args.out, {"seeds": args.seeds, "native_init": found, "loadavg_end": loadavg()})
        return
    start = time.perf_counter()
    wanted = set(args.groups.split(",")) if args.groups else None
    rows: list[dict] = []
    mutations: list[dict] = []
    if args.merge and args.out and Path(args.out).exists():
        old = json.loads(Path(args.out).read_text())
        rows, mutations = old["runs"], old["mutations"]

    def save() -> None:
        alarms = [r for r in rows if r["verdict_kind"] not in ("same math", "within rounding noise")]
        if args.out:
            write_json(args.out, {"steps": args.steps, "seeds": args.seeds, "runs": rows,
                                  "false_alarms": len(alarms), "mutations": mutations,
                                  "wall_s": time.perf_counter() - start, "loadavg_end": loadavg()})
        return alarms

    for group, lab, overrides, seed in grid(args.seeds):
        if wanted and group not in wanted:
            continue
        rows.append({"group": group, **judge(lab, overrides, seed, args.steps)})
        r = rows[-1]
        stat = r["statistical"]
        print(f"[{group}] {label(r)}: {r['verdict']} | exact closest {r['exact']['closest']['quantity']} at "
              f"{r['exact']['closest']['share_of_tolerance']:.1e} | ratio "
              f"{'-' if stat is None else format(stat['ratio'], '.3g')} [{r['wall_s']:.1f} s]", flush=True)
        save()
    for m in () if args.no_mutations else catalogue():
        if getattr(m, "tier", "exact") not in ("exact", "statistical") or (args.mutations and args.mutations
                                                                             not in m.name):
            continue
        for overrides, seed in mutation_points(m):
            with patched(m):
                row = judge(m.lab, overrides, seed, args.steps)
            row.update(mutation=m.name, backend=m.backend, tier=getattr(m, "tier", "exact"),
                       caught_by=[t for t in ("exact", "statistical") if row[t] is not None and not row[t]["ok"]])
            mutations.append(row)
            print(f"mutation {m.name} ({m.backend}) at {label(row)}: caught by {row['caught_by'] or 'NONE'} | "
                  f"{row['verdict']} [{row['wall_s']:.1f} s]", flush=True)
            save()
    alarms = save()
    print(f"false alarms: {len(alarms)} of {len(rows)} correct-code runs; mutations caught by the tier that "
          f"should: {sum(m['tier'] in m['caught_by'] for m in mutations)} of {len(mutations)}")


if __name__ == "__main__":
    main()
