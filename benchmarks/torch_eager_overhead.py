"""The harness's torch eager loop against a plain training loop, side by side, on the XOR labs.

The plain loop is the course's notebook code (``nn.Sequential`` of Linear + Sigmoid, ``nn.BCELoss``,
``torch.optim.SGD``; ``zero_grad``, forward, ``backward``, ``step``, the cost read every 100 steps as the notebooks
print it); the harness's is ``harness.run.runner.execute`` of the same lab in torch (eager, shared weights), timed by
its own steady-state clock. Both run the lab's 10,001 steps on one intra-op thread, in one process, alternating
``--repeats`` times; step 0 is left out of both (warm-up). Prints the median steps/s of each with the p10..p90
spread, their ratio and the load average; ``--out`` writes it all as JSON.

    .venv/bin/python benchmarks/torch_eager_overhead.py --out benchmarks/torch-eager-overhead.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from harness.bench.peak import loadavg  # noqa: E402
from harness.labs import get_lab  # noqa: E402
from harness.run.machine import cpu_model  # noqa: E402
from harness.run.results import write_json  # noqa: E402
from harness.run.runner import RunOptions, execute, prepare  # noqa: E402

LABS = ("gates", "xor_perceptron", "xor_mlp", "xor_wide_deep")


def plain_loop(name: str, steps: int) -> float:
    """Steps/s of the course's own loop for lab ``name`` (steps 1.. of ``steps``)."""
    lab = get_lab(name)
    prepared = prepare(lab, RunOptions(weights="shared"))
    torch.manual_seed(lab.seed)
    layers: list[nn.Module] = []
    for a, b in zip(lab.model.sizes[:-1], lab.model.sizes[1:]):
        layers += [nn.Linear(a, b), nn.Sigmoid()]
    model = nn.Sequential(*layers)
    x, y = torch.tensor(prepared.spec.train_x), torch.tensor(prepared.spec.train_y)
    if lab.model.sizes[-1] == 1:
        criterion: nn.Module = nn.BCELoss()
    else:  # gates: one perceptron per column, the per-column mean BCEs summed (as the lab declares)
        def criterion(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return nn.functional.binary_cross_entropy(out, target, reduction="none").mean(0).sum()
    optimizer = torch.optim.SGD(model.parameters(), lr=lab.optimizer.lr)
    start = 0.0
    for step in range(steps):
        if step == 1:
            start = time.perf_counter()
        optimizer.zero_grad()
        cost = criterion(model(x), y)
        cost.backward()
        optimizer.step()
        if step % 100 == 0:
            cost.item()
    return (steps - 1) / (time.perf_counter() - start)


def harness_loop(name: str) -> float:
    """Steps/s of the harness's torch eager run of lab ``name`` (its steady state: steps 1..)."""
    return execute(prepare(get_lab(name), RunOptions(weights="shared")), "torch").timing["steps_per_s"]


def spread(values: list[float]) -> dict[str, float]:
    """Median and the 10th..90th percentiles."""
    p10, p90 = np.percentile(values, [10, 90])
    return {"median": statistics.median(values), "p10": float(p10), "p90": float(p90)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labs", default=",".join(LABS))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", help="write the figures as JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows, load_start = [], loadavg()
    for name in args.labs.split(","):
        steps = get_lab(name).steps or 10001
        plain_loop(name, 200), harness_loop(name)  # warm both paths up
        plain, ours = [], []
        for _ in range(args.repeats):
            plain.append(plain_loop(name, steps))
            ours.append(harness_loop(name))
        p, h = spread(plain), spread(ours)
        ratio = h["median"] / p["median"]
        rows.append({"lab": name, "steps": steps, "plain": p, "harness": h, "ratio": ratio,
                     "plain_runs": plain, "harness_runs": ours})
        print(f"{name:<16} plain {p['median']:8.0f} steps/s ({p['p10']:.0f}..{p['p90']:.0f})   harness "
              f"{h['median']:8.0f} ({h['p10']:.0f}..{h['p90']:.0f})   harness/plain {ratio:.3f}", flush=True)
    load_end = loadavg()
    print(f"one torch thread, {args.repeats} alternating repeats, torch {torch.__version__}, {cpu_model()}; load "
          f"average {load_start} -> {load_end}")
    if args.out:
        write_json(args.out, {"rows": rows, "threads": 1, "repeats": args.repeats, "torch": torch.__version__,
                              "cpu": cpu_model(), "loadavg_start": load_start, "loadavg_end": load_end})


if __name__ == "__main__":
    main()
