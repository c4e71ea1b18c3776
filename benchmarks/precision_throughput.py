"""Steps/s in every precision, the harness's precision learners against plain hand-written loops, side by side.

Per lab (default mnist_deep_xavier, mnist_dropout), framework and precision (float32, bfloat16, mixed_bfloat16,
mixed_float16): the harness's training step as ``run`` and ``bench`` drive it (the backend's ``make_stepper`` in
each execution it runs the precision in: torch ``eager``, JAX ``per_step`` and ``fused``; float32 is the plain
``ModuleLearner``, a reduced precision ``PrecisionLearner``) and a plain loop of the same lab written as a user
would: torch ``nn.Linear`` layers, ``torch.autocast`` and ``torch.amp.GradScaler`` (the module cast to bfloat16
for pure bfloat16), ``torch.optim.Adam``; JAX a jitted function of a dict of arrays, ``optax.adam``, Flax's
``DynamicScale``. Both on the same pooled batches and shared dropout masks, alternating ``--repeats`` times in
one process; torch and XLA on ``--threads`` threads each (XLA's CPU pool pinned as its backend starts:
``XLA_FLAGS`` does not pin this jaxlib). Prints the median steps/s of each, harness / plain, each precision's
speed-up over float32, each precision's own matmul peak and the share of it, the CPU, its bf16/AMX flags and the
load.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/precision_throughput.py --threads 1 --out /tmp/precision-throughput.json
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.bench.measure import precision_peaks  # noqa: E402
from harness.bench.peak import cpu_flags, flops_per_step, loadavg  # noqa: E402
from harness.labs import get_lab  # noqa: E402
from harness.precision import get_policy  # noqa: E402
from harness.run.machine import cpu_model  # noqa: E402
from harness.run.results import write_json  # noqa: E402
from harness.run.runner import RunOptions, prepare  # noqa: E402

PRECISIONS = ("float32", "bfloat16", "mixed_bfloat16", "mixed_float16")
POOL = 10  # pooled batches


def pooled(lab: str) -> tuple:
    """The lab's spec and its first ``POOL`` batches (inputs, labels, shared masks per batch)."""
    spec = prepare(get_lab(lab), RunOptions(weights="shared", mask_mode="shared", steps=POOL, data="mnist-5k")).spec
    xs = [spec.train_x[spec.batches[s]].astype(np.float32) for s in range(POOL)]
    ys = [spec.train_y[spec.batches[s]] for s in range(POOL)]
    ms = [None if spec.masks is None else [m[s].astype(np.float32) for m in spec.masks] for s in range(POOL)]
    return spec, xs, ys, ms


def timed(step: Callable[[int], Any], n: int) -> float:
    """Steps/s of ``n`` calls of ``step(i)`` (its last result synchronised)."""
    start = time.perf_counter()
    out = None
    for i in range(n):
        out = step(i)
    sync = getattr(out, "block_until_ready", None)
    float(out) if sync is None else sync()
    return n / (time.perf_counter() - start)


def harness_steps(spec: Any, framework: str, precision: str) -> dict:
    """The harness's step in each execution the backend runs ``precision`` in (its ``make_stepper``): a function
    of the step number dispatching one step (a fused stepper: ``fuse`` steps per call) and its unit."""
    from harness import backend as registry

    entry = registry.info(framework)
    modes = [m for m in registry.executions_on(framework, "cpu")
             if get_policy(precision).name in ("float32", "float64") or not entry.precision_executions
             or m in entry.precision_executions]
    spec = dataclasses.replace(spec, precision=precision if get_policy(precision).reduced else None)
    out = {}
    for mode in modes:
        stepper = registry.load(framework).make_stepper(spec, mode, fuse_steps=POOL)
        out[f"harness {mode}"] = (stepper, stepper.unit_steps)
    return out


def torch_steps(spec: Any, xs: list, ys: list, ms: list, precision: str) -> dict:
    """A plain torch loop's step function under ``precision``."""
    import torch
    import torch.nn.functional as F

    policy = get_policy(precision)
    tx = [torch.tensor(x) for x in xs]
    ty = [torch.tensor(y, dtype=torch.int64) for y in ys]
    tm = [None if m is None else [torch.tensor(a) for a in m] for m in ms]

    compute = {"bfloat16": torch.bfloat16, "float16": torch.float16}.get(policy.compute, torch.float32)
    layers = [torch.nn.Linear(a, b) for a, b in zip(spec.model.sizes[:-1], spec.model.sizes[1:])]
    with torch.no_grad():
        for i, layer in enumerate(layers):
            layer.weight.copy_(torch.tensor(spec.params[f"dense{i}/kernel"].T))
            layer.bias.copy_(torch.tensor(spec.params[f"dense{i}/bias"]))
    model = torch.nn.ModuleList(layers)
    if precision == "bfloat16":
        model.to(torch.bfloat16)
    opt = torch.optim.Adam(model.parameters(), lr=spec.lab.optimizer.lr)
    scaler = torch.amp.GradScaler("cpu") if policy.loss_scale else None
    p = spec.model.dropout

    def forward(x: Any, masks: Any) -> Any:
        for i, layer in enumerate(model):
            x = layer(x)
            if i < len(model) - 1:
                x = F.relu(x)
                if p > 0:
                    x = x * masks[i].to(x.dtype) / (1 - p)
        return x

    def plain(i: int):
        x, y, masks = tx[i % POOL], ty[i % POOL], tm[i % POOL]
        opt.zero_grad()
        if precision == "bfloat16":
            loss = F.cross_entropy(forward(x.to(torch.bfloat16), masks).float(), y)
        else:
            with torch.autocast("cpu", dtype=compute, enabled=policy.mixed):
                logits = forward(x, masks)
            loss = F.cross_entropy(logits.float(), y)
        if scaler is None:
            loss.backward()
            opt.step()
        else:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        return loss.detach()

    return {"plain": plain}


def jax_steps(spec: Any, xs: list, ys: list, ms: list, precision: str) -> dict:
    """A plain JAX loop's step function under ``precision``."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax.training.dynamic_scale import DynamicScale

    policy = get_policy(precision)
    jx = [jnp.asarray(x) for x in xs]
    jy = [jnp.asarray(y.astype(np.int32)) for y in ys]
    jm = [None if m is None else [jnp.asarray(a) for a in m] for m in ms]

    compute = {"bfloat16": jnp.bfloat16, "float16": jnp.float16}.get(policy.compute, jnp.float32)
    stored = jnp.bfloat16 if precision == "bfloat16" else jnp.float32
    params = {k: jnp.asarray(v, stored) for k, v in spec.params.items()}
    opt = optax.adam(spec.lab.optimizer.lr)
    depth, p = spec.model.depth, spec.model.dropout

    def loss_fn(params: Any, x: Any, y: Any, masks: Any) -> Any:
        h = x.astype(compute)
        for i in range(depth):
            h = h @ params[f"dense{i}/kernel"].astype(compute) + params[f"dense{i}/bias"].astype(compute)
            if i < depth - 1:
                h = jax.nn.relu(h)
                if p > 0:
                    h = h * masks[i].astype(compute) / (1 - p)
        return optax.softmax_cross_entropy_with_integer_labels(h.astype(jnp.float32), y).mean()

    @functools.partial(jax.jit, donate_argnums=0)
    def step(carry: Any, x: Any, y: Any, masks: Any) -> Any:
        params, opt_state, scale = carry
        if scale is None:
            loss, grads = jax.value_and_grad(loss_fn)(params, x, y, masks)
            finite = True
        else:
            scale, finite, loss, grads = scale.value_and_grad(loss_fn)(params, x, y, masks)
        updates, new_state = opt.update(grads, opt_state, params)
        new = optax.apply_updates(params, updates)
        if scale is not None:
            new = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, params)
            new_state = jax.tree.map(lambda a, b: jnp.where(finite, a, b), new_state, opt_state)
        return (new, new_state, scale), loss

    plain_state = {"carry": (params, opt.init(params), DynamicScale() if policy.loss_scale else None)}

    def plain(i: int):
        plain_state["carry"], loss = step(plain_state["carry"], jx[i % POOL], jy[i % POOL], jm[i % POOL])
        return loss

    return {"plain": plain}


def timed_stepper(stepper: Any, unit_steps: int, n: int) -> float:
    """Steps/s of ``n`` steps (rounded up to whole units) of a harness stepper, ended by its sync."""
    units = -(-n // unit_steps)
    start = time.perf_counter()
    stepper.run(units * unit_steps)
    stepper.sync()
    return units * unit_steps / (time.perf_counter() - start)


def measure(lab: str, framework: str, precision: str, steps: int, repeats: int) -> dict:
    """Median steps/s of the harness (each execution) and the plain loop, alternating; harness / plain."""
    spec, xs, ys, ms = pooled(lab)
    harness = harness_steps(spec, framework, precision)
    plain = (torch_steps if framework == "torch" else jax_steps)(spec, xs, ys, ms, precision)["plain"]
    runs: dict[str, Callable[[int], float]] = {
        **{name: functools.partial(timed_stepper, st, k) for name, (st, k) in harness.items()},
        "plain": functools.partial(timed, plain)}
    for run in runs.values():
        run(3)  # warm-up (compile)
    rates: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            rates[name].append(run(steps))
    med = {k: statistics.median(v) for k, v in rates.items()}
    flops = flops_per_step(spec.model, len(xs[0]))["total"]
    return {"lab": lab, "framework": framework, "precision": precision, "steps_per_s": med, "rates": rates,
            "ratio": {k: med[k] / med["plain"] for k in med if k != "plain"},
            "gflops": {k: flops * v / 1e9 for k, v in med.items()}, "loadavg": loadavg()}


def main() -> None:
    """Measure and print the side-by-side table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labs", default="mnist_deep_xavier,mnist_dropout")
    ap.add_argument("--frameworks", default="torch,jax")
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads of each framework")
    ap.add_argument("--out")
    a = ap.parse_args()
    from harness import backend as registry

    for fw in a.frameworks.split(","):  # the same threads for both: XLA's pool pinned as it starts (jax_impl.bench)
        registry.load(fw).configure_threads(a.threads)
    record = {"cpu_model": cpu_model(), "cpu_flags": cpu_flags(), "loadavg_start": loadavg(), "threads": a.threads,
              "peaks": {}, "results": []}
    for fw in a.frameworks.split(","):
        record["peaks"][fw] = {d: {k: v for k, v in r.items() if k != "seconds"}
                               for d, r in precision_peaks(fw, "cpu", 512, 10, a.threads).items()}
    print(f"# {record['cpu_model']}; flags {' '.join(f for f in record['cpu_flags'] if 'bf16' in f or 'amx' in f)}; "
          f"torch threads {a.threads}; load {record['loadavg_start']}")
    print("lab | framework | precision | harness execution | harness steps/s | plain steps/s | harness/plain | "
          "speed-up over float32 | % of own peak | load")
    for lab in a.labs.split(","):
        for fw in a.frameworks.split(","):
            base: dict[str, float] = {}
            for precision in a.precisions.split(","):
                r = measure(lab, fw, precision, a.steps, a.repeats)
                record["results"].append(r)
                low = get_policy(precision).compute
                peak = record["peaks"][fw].get(low, {}).get("gflops")
                rate = r["steps_per_s"]
                for mode, ratio in r["ratio"].items():
                    base.setdefault(mode, rate[mode])
                    share = f"{100 * r['gflops'][mode] / peak:.0f}%" if peak else "-"
                    print(f"{lab} | {fw} | {precision} | {mode.split()[1]} | {rate[mode]:.1f} | {rate['plain']:.1f} | "
                          f"{ratio:.2f}x | {rate[mode] / base[mode]:.2f}x | {share} | {r['loadavg']}", flush=True)
    record["loadavg_end"] = loadavg()
    if a.out:
        write_json(a.out, record)


if __name__ == "__main__":
    main()
