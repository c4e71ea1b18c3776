"""Calibrate and prove the precision tier (``harness.parity.precision``).

Correct code: every lab with a module network (the hand-written backprop labs run float32/float64 only) x every
reduced precision x ``--seeds`` seeds (each seed its own weights and batch order), torch and JAX against the
referee's emulation of the policy; every false alarm counted and the closest share of a tolerance recorded.
Planted bugs (``--mutations``): each precision-placement mutation of each backend's ``precision_mutations``, on each
side in turn, under each policy where it is a bug, on ``--mutation-labs``; caught or missed, and whether the
verdict names the planted side. One JSON line per tier run is appended to ``--out`` as it finishes.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/precision_calibration.py --seeds 5 --mutations \
        --out benchmarks/precision-calibration.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness import backend as registry  # noqa: E402
from harness.labs import LABS, get_lab  # noqa: E402
from harness.precision import REDUCED  # noqa: E402
from harness.selfcheck.precision import applies, control, planted, prepared  # noqa: E402

MUTATION_LABS = ("mnist_batchnorm", "mnist_relu_xavier")  # Adam + batch norm; Adam on plain MNIST inputs


def module_labs() -> list[str]:
    """The labs the precision tier judges: every one but the hand-written backprop labs."""
    return [name for name, lab in LABS.items() if not lab.manual]


def correct(labs: list[str], seeds: int, policies: tuple[str, ...], out: Path, sides: list[str]) -> list[dict]:
    """Every lab x policy x seed on correct code (``harness.selfcheck.precision.control``)."""
    rows = []
    for lab in labs:
        base = get_lab(lab).seed
        for k in range(seeds):
            p = prepared(lab, base + k)
            for name in policies:
                row = control(p.spec, name, sides)
                write(out, row)
                rows.append(row)
    return rows


def plant(labs: list[str], out: Path, sides: list[str]) -> list[dict]:
    """Every precision mutation, on each side, under each policy where it is a bug, on each lab where it can act
    (``harness.selfcheck.precision.planted``)."""
    rows = []
    for lab in labs:
        p = prepared(lab, None)
        for side in sides:
            for mutation, policies in registry.capability(side, "precision_mutations").items():
                if not applies(mutation, p.spec):
                    continue
                for name in policies:
                    row = planted(p.spec, name, sides, mutation, side)
                    write(out, row)
                    rows.append(row)
    return rows


def write(out: Path, row: dict) -> None:
    """Append one JSON line and echo it."""
    with out.open("a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def summarise(rows: list[dict]) -> str:
    """The markdown tables of docs/parity.md: false alarms per lab and precision, the detection table."""
    ok = [r for r in rows if r["kind"] == "correct"]
    out = ["| lab | precision | seeds | false alarms | closest share of a tolerance (where) |", "|---|---|---|---|---|"]
    for lab in dict.fromkeys(r["lab"] for r in ok):
        for name in dict.fromkeys(r["policy"] for r in ok if r["lab"] == lab):
            group = [r for r in ok if r["lab"] == lab and r["policy"] == name]
            worst = max(((s["share"], s["what"], side) for r in group for side, s in r["closest"].items()),
                        key=lambda w: w[0])
            alarms = sum(r["verdict_kind"] != "follows policy" for r in group)
            out.append(f"| {lab} | {name} | {len(group)} | {alarms} | {worst[0]:.2g} ({worst[2]}: {worst[1]}) |")
    bugs = [r for r in rows if r["kind"] == "mutation"]
    if bugs:
        out += ["", "| mutation | lab | precision | planted in | caught | side named | verdict |",
                "|---|---|---|---|---|---|---|"]
        out += [f"| {r['mutation']} | {r['lab']} | {r['policy']} | {r['side']} | {'yes' if r['caught'] else '**no**'}"
                f" | {'yes' if r['side_named'] else 'no'} | {r['verdict']} |" for r in bugs]
    return "\n".join(out)


def main() -> None:
    """Run the calibration (and the planted bugs) and print the summary."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labs", default=",".join(module_labs()))
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--policies", default=",".join(REDUCED))
    ap.add_argument("--sides", default="torch,jax")
    ap.add_argument("--mutations", action="store_true", help="also plant every precision mutation")
    ap.add_argument("--mutation-labs", default=",".join(MUTATION_LABS))
    ap.add_argument("--no-correct", action="store_true", help="only the planted bugs")
    ap.add_argument("--out", type=Path, default=Path("precision-calibration.jsonl"))
    ap.add_argument("--threads", type=int, help="each framework's intra-op threads (default: its own; the "
                    "summation order of a batch's sums changes with it)")
    ap.add_argument("--summarise", nargs="+", type=Path, help="print the markdown tables of these JSON-line files")
    a = ap.parse_args()
    if a.summarise:
        print(summarise([json.loads(line) for f in a.summarise for line in f.read_text().splitlines()]))
        return
    sides = a.sides.split(",")
    threads = {side: registry.load(side).configure_threads(a.threads).get("threads") for side in sides}
    print(f"threads: {threads}", flush=True)
    rows = [] if a.no_correct else correct(a.labs.split(","), a.seeds, tuple(a.policies.split(",")), a.out, sides)
    if a.mutations:
        rows += plant(a.mutation_labs.split(","), a.out, sides)
    ok = [r for r in rows if r["kind"] == "correct"]
    alarms = [r for r in ok if r["verdict_kind"] != "follows policy"]
    print(f"correct code: {len(ok)} tiers, {len(alarms)} false alarms; closest share "
          f"{max((s['share'] for r in ok for s in r['closest'].values()), default=0):.2g}")
    bugs = [r for r in rows if r["kind"] == "mutation"]
    print(f"planted: {sum(r['caught'] for r in bugs)}/{len(bugs)} caught, "
          f"{sum(r['side_named'] for r in bugs)} with the side named")


if __name__ == "__main__":
    main()
