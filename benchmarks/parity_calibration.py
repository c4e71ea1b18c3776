"""Calibrate and prove the statistical parity tier (``harness.parity.ensemble``).

Every chosen lab runs in both backends from its shared weights, each time nudged afresh (every weight one unit in
the last place, up or down at random; ``--nudges`` draws), so ``labs x nudges`` comparisons of correct code; each
is judged by the tier and every false alarm counted. ``--bug lr=0.99`` runs each lab once more with the second
backend's learning rate scaled (a porting bug injected by monkeypatching, not a user option) and reports whether
the tier flags it. The losses are saved (``--raw``), so ``--rejudge RAW`` re-judges them under other settings
(``--window``, ``--lag``, ``--limit``) without training again.

    .venv/bin/python benchmarks/parity_calibration.py --nudges 5 --bug lr=0.99 --bug lr=0.9 \
        --out benchmarks/parity-calibration.json --raw /tmp/parity-calibration.npz
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import backend as registry  # noqa: E402
from harness.backend import RunSpec  # noqa: E402
from harness.labs import LABS, get_lab  # noqa: E402
from harness.parity import ensemble as tier  # noqa: E402
from harness.parity.configs import RunConfig, config_of  # noqa: E402
from harness.run.runner import Prepared, RunOptions, prepare  # noqa: E402

SEED = 20240  # base of the weight-nudge draws (variant k draws from [SEED, k])


def prepared_variant(name: str, variant: int, data: str) -> Prepared:
    """The lab prepared as the main job prepares it (shared weights, shared masks where it has dropout), its
    shared weights nudged by draw ``variant`` (0: as drawn)."""
    lab = get_lab(name)
    prepared = prepare(lab, RunOptions(weights="shared", data=data, mask_mode="shared" if lab.model.dropout else "own"))
    if variant:
        params = tier.signed_nudge(prepared.spec.params, np.random.default_rng([SEED, variant]))
        prepared = dataclasses.replace(prepared, spec=dataclasses.replace(prepared.spec, params=params))
    return prepared


@contextlib.contextmanager
def with_bug(backend: str, factor: float) -> Iterator[None]:
    """Within the block, ``backend``'s learning rate is scaled by ``factor`` inside the tier (monkeypatch)."""
    original = tier.retarget

    def buggy(spec: RunSpec, side: RunConfig) -> RunSpec:
        spec = original(spec, side)
        if side.backend != backend:
            return spec
        return dataclasses.replace(spec, lab=spec.lab.with_options(lr=spec.lab.optimizer.lr * factor))

    tier.retarget = buggy
    try:
        yield
    finally:
        tier.retarget = original


def run_one(prepared: Prepared, sides: list[str], members: int, seed: int, steps: int) -> tuple[list[np.ndarray], dict]:
    """Both sides' ensembles (losses ``[1 + members, steps]``), and wall and CPU seconds."""
    wall, cpu = time.perf_counter(), time.process_time()
    losses = [tier.run_side(prepared, config_of(prepared.spec, s), i, members, seed, steps, False)[0]
              for i, s in enumerate(sides)]
    return losses, {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


def collect(args: argparse.Namespace) -> dict[str, np.ndarray]:
    """Train every case; the raw losses keyed ``lab|case|side``, with timings under ``lab|case|time``."""
    raw: dict[str, np.ndarray] = {}
    cases = [(f"nudge{k}", k, None) for k in range(1, args.nudges + 1)]
    cases += [(f"bug:{b}", 1, float(b.split("=")[1])) for b in args.bug]
    steps = args.window + args.lag
    for name in args.labs:
        for case, variant, factor in cases:
            prepared = prepared_variant(name, variant, args.data)
            run = min(steps, prepared.steps)
            if factor is None:
                losses, timing = run_one(prepared, args.sides, args.members, variant, run)
            else:
                with with_bug(args.sides[1], factor):
                    losses, timing = run_one(prepared, args.sides, args.members, variant, run)
            for side, value in zip(args.sides, losses):
                raw[f"{name}|{case}|{side}"] = value
            raw[f"{name}|{case}|time"] = np.array([timing["wall_s"], timing["cpu_s"]])
            print(f"{name:<28} {case:<12} {timing['wall_s']:6.1f} s wall {timing['cpu_s']:6.1f} s cpu "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    return raw


def judge_all(raw: dict[str, np.ndarray], args: argparse.Namespace) -> dict:
    """Every stored case judged with the chosen settings: per lab, the ratio of each case, the maximum over the
    nudges, false alarms and which bugs were flagged."""
    labs: dict[str, dict] = {}
    for key in raw:
        name, case, side = key.split("|")
        if side != args.sides[0]:
            continue
        a, b = raw[key], raw[f"{name}|{case}|{args.sides[1]}"]
        fig = tier.judge(a, b, float(np.finfo(np.float32).eps), args.limit, args.window,
                         own_masks=False, lag=args.lag)
        wall, cpu = raw[f"{name}|{case}|time"]
        labs.setdefault(name, {})[case] = {"ratio": fig["ratio"], "at_step": fig["at_step"],
                                           "window": fig["window"], "ok": fig["ok"],
                                           "wall_s": float(wall), "cpu_s": float(cpu)}
    for cases in labs.values():
        correct = [c for k, c in cases.items() if k.startswith("nudge")]
        cases["max_correct_ratio"] = max(c["ratio"] for c in correct) if correct else None
        cases["false_alarms"] = sum(not c["ok"] for c in correct)
    return labs


def table(labs: dict, args: argparse.Namespace) -> list[str]:
    """The calibration table as markdown lines."""
    bugs = [f"bug:{b}" for b in args.bug]
    head = ["lab", f"max ratio, {args.nudges} nudges", "false alarms", *[f"{b} ratio" for b in bugs],
            "wall s / run", "cpu s / run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, cases in labs.items():
        runs = [c for k, c in cases.items() if isinstance(c, dict)]
        cells = [name, f"{cases['max_correct_ratio']:.3g}", str(cases["false_alarms"])]
        cells += [f"{cases[b]['ratio']:.3g} ({'flagged' if not cases[b]['ok'] else 'missed'})" if b in cases
                  else "–" for b in bugs]
        cells += [f"{np.mean([r['wall_s'] for r in runs]):.1f}", f"{np.mean([r['cpu_s'] for r in runs]):.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    total = sum(c["false_alarms"] for c in labs.values())
    runs = sum(1 for c in labs.values() for k in c if k.startswith("nudge"))
    lines.append(f"\nfalse alarms: {total} of {runs} runs of correct code; limit {args.limit:g}x, window "
                 f"{args.window}, lag {args.lag}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--labs", default=",".join(LABS), help="comma-separated labs (default: all)")
    p.add_argument("--sides", default=",".join(registry.names(include_referees=False)[:2]))
    p.add_argument("--nudges", type=int, default=5)
    p.add_argument("--members", type=int, default=tier.MEMBERS)
    p.add_argument("--window", type=int, default=tier.WINDOW)
    p.add_argument("--lag", type=int, default=tier.LAG)
    p.add_argument("--limit", type=float, default=tier.LIMIT)
    p.add_argument("--bug", action="append", default=[], help="lr=FACTOR on the second side (repeatable)")
    p.add_argument("--data", default="auto")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per backend (default 1)")
    p.add_argument("--raw", help="save the losses here (.npz)")
    p.add_argument("--rejudge", help="judge the losses saved in this .npz instead of training")
    p.add_argument("--out", help="write the judged figures here (JSON)")
    args = p.parse_args(argv)
    args.labs, args.sides = args.labs.split(","), args.sides.split(",")
    if args.rejudge:
        raw = dict(np.load(args.rejudge))
    else:
        for side in args.sides:
            registry.load(side).configure_threads(args.threads)
        raw = collect(args)
        if args.raw:
            np.savez_compressed(args.raw, **raw)
    labs = judge_all(raw, args)
    print("\n".join(table(labs, args)))
    if args.out:
        Path(args.out).write_text(json.dumps({"settings": {k: v for k, v in vars(args).items() if k != "rejudge"},
                                              "loadavg_at_end": os.getloadavg(), "labs": labs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
