"""Data-parallel training (harness.run.parallel): in float64, N devices with synchronised batch norm equal one device on
the same global batch (every step's loss to 1e-12 relative), in torch (DDP over N gloo processes) and JAX (a mesh of
N host devices; and two processes joined by jax.distributed), and torch equals JAX; per-device batch norm differs
and the harness says by how much; summing the gradients instead of averaging them is caught.

All data-parallel runs start at once (JAX in worker processes, torch ranks forked from one server) while the
single-device references train here; 5 steps each on the bundled data.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json

import numpy as np
import pytest
import torch

from harness.errors import LabError
from harness.labs import get_lab
from harness.run import parallel
from harness.run.parallel import Parallel
from harness.run.runner import RunOptions, execute, prepare

LABS = ("mnist_relu_xavier", "mnist_dropout", "mnist_batchnorm")
DEVICES = (2, 4)
FRAMEWORKS = ("torch", "jax")
STEPS = 5
BUG = ("mnist_batchnorm", 2)  # where the planted bugs and per-device batch norm run
PARAMS_RTOL = 1e-10  # final weights (those the loss depends on), relative to each array's largest magnitude


@functools.cache
def prepared(lab: str):
    options = RunOptions(data="mnist-5k", dtype="float64", weights="shared", mask_mode="shared", steps=STEPS)
    return prepare(get_lab(lab), options)


def jobs() -> list[tuple[str, Parallel]]:
    out = [(lab, Parallel(n)) for lab in LABS for n in DEVICES]
    return out + [(BUG[0], Parallel(BUG[1], bn="local")), (BUG[0], Parallel(BUG[1], reduce="sum"))]


MULTIPROCESS = ("mnist_batchnorm", "mnist_dropout")  # JAX over 2 processes x 1 device


SCALING = (("mnist_batchnorm",), (1, 2))  # labs and device counts of the scaling figures


@pytest.fixture(scope="module")
def runs():
    """Every run: {"single": {(fw, lab): result}, (fw, lab, par): result, ("jax-2proc", lab): result,
    ("scaling", fw): (jobs, timings)}."""
    from harness.bench import scaling

    work = jobs()
    specs = [(prepared(lab).spec, par) for lab, par in work]
    pending = parallel.launch("jax", "train_many", specs, timeout_s=300)
    mp_specs = [(prepared(lab).spec, Parallel(2, processes=2)) for lab in MULTIPROCESS]
    multi = parallel.launch("jax", "train_many", mp_specs, processes=2, timeout_s=300)
    timed = scaling.plan(SCALING[0], "cpu", SCALING[1], scaling.Protocol(2, 3, 0), threads=1)
    bench = parallel.launch("jax", "bench_many", timed, timeout_s=300)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {("torch", *key): r for key, r in zip(work, parallel.train_many("torch", specs))}
        out[("scaling", "torch")] = (timed, parallel.bench_many("torch", timed))
        single = {(fw, lab): execute(prepared(lab), fw) for lab in LABS for fw in FRAMEWORKS}
    finally:
        torch.set_num_threads(before)
    out.update({("jax", *key): r for key, r in zip(work, pending.result())})
    out.update({("jax-2proc", lab): r for lab, r in zip(MULTIPROCESS, multi.result())})
    out[("scaling", "jax")] = (timed, bench.result())
    out["single"] = single
    return out


def check_same(p: dict, what: str) -> None:
    assert p["agree"], (what, p["first_step_over"], p["loss_max_rel"])
    assert p["steps"] == STEPS and p["loss_max_rel"] <= parallel.PARITY_RTOL, what
    assert p["params_max_rel"] <= PARAMS_RTOL, (what, p["params_max_rel"])
    # Running statistics hold the biases before batch norm, which the loss does not see (rounding-noise drift).
    assert p["state_max_rel"] is None or p["state_max_rel"] <= 1e-8, (what, p["state_max_rel"])
    assert p["outputs_max_rel"] <= 1e-9, (what, p["outputs_max_rel"])


@pytest.mark.parametrize("n", DEVICES)
@pytest.mark.parametrize("lab", LABS)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_synchronised_data_parallel_equals_one_device(runs, framework, lab, n):
    result = runs[(framework, lab, Parallel(n))]
    assert result.device == f"{n}x cpu"
    check_same(parallel.parity(runs["single"][(framework, lab)], result), f"{framework} {lab} x{n}")


@pytest.mark.parametrize("n", DEVICES)
@pytest.mark.parametrize("lab", LABS)
def test_torch_ddp_equals_jax_sharded(runs, lab, n):
    check_same(parallel.parity(runs[("torch", lab, Parallel(n))], runs[("jax", lab, Parallel(n))]), f"{lab} x{n}")


@pytest.mark.parametrize("lab", MULTIPROCESS)
def test_jax_over_two_processes_equals_one_device(runs, lab):
    result = runs[("jax-2proc", lab)]
    check_same(parallel.parity(runs["single"][("jax", lab)], result), f"{lab} 2 processes")
    check_same(parallel.parity(runs[("jax", lab, Parallel(2))], result), f"{lab} 2 processes vs 2 host devices")


def test_per_device_batch_norm_differs_by_a_reported_amount(runs):
    lab, n = BUG
    local = {fw: runs[(fw, lab, Parallel(n, bn="local"))] for fw in FRAMEWORKS}
    for fw in FRAMEWORKS:
        p = parallel.parity(runs["single"][(fw, lab)], local[fw])
        assert not p["agree"] and p["first_step_over"] == 0  # shard statistics from the first forward on
        assert p["loss_max_rel"] > 1e-3, p["loss_max_rel"]
        assert "local: differs: training loss at step 0 (rel " in parallel.parity_line("local", p)
        assert p["verdict_kind"] == "differs"
    # Both frameworks compute the same per-device statistics: they agree with each other.
    check_same(parallel.parity(local["torch"], local["jax"]), "local batch norm, torch vs jax")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_summed_gradients_are_caught(runs, framework):
    # Adam is nearly scale-invariant, so N-fold gradients move the weights only through its epsilon; still far
    # beyond the tolerance from the first update on (the same code averaging passes the other tests).
    lab, n = BUG
    p = parallel.parity(runs["single"][(framework, lab)], runs[(framework, lab, Parallel(n, reduce="sum"))])
    assert not p["agree"] and p["first_step_over"] == 1, p
    assert p["loss_max_rel"] > 1e3 * parallel.PARITY_RTOL


def test_shards_partition_the_global_batch_and_masks():
    spec = prepared("mnist_dropout").spec
    spec = parallel.with_shared_masks(dataclasses.replace(spec, masks=None))
    assert spec.masks is not None and len(spec.masks) == 4
    for n in (1, 2, 4):
        parts = [parallel.shard_spec(spec, n, k) for k in range(n)]
        assert all(p.batches.shape == (STEPS, 100 // n) for p in parts)
        np.testing.assert_array_equal(np.concatenate([p.batches for p in parts], axis=1), spec.batches)
        for i, mask in enumerate(spec.masks):
            np.testing.assert_array_equal(np.concatenate([p.masks[i] for p in parts], axis=1), mask)
    assert parallel.describe(spec, Parallel(4))["per_device_batch"] == 25


@pytest.mark.parametrize(("lab", "par", "message"), [
    ("mnist_relu_xavier", Parallel(3), "batch size 100 does not split over 3 devices"),
    ("mnist_backprop_manual", Parallel(2), "needs an autograd model"),
    ("xor_mlp", Parallel(2), "needs a minibatch lab"),
    ("mnist_batchnorm", Parallel(2, bn="global"), "unknown batch-norm mode 'global'"),
    ("mnist_batchnorm", Parallel(4, processes=3), "must be a positive multiple of processes"),
])
def test_layouts_that_cannot_split_are_refused(lab, par, message):
    spec = prepare(get_lab(lab), RunOptions(data="mnist-5k", steps=2)).spec
    with pytest.raises(LabError, match=message):
        parallel.check_spec(spec, par)


def test_parity_summary_on_planted_differences():
    from harness.backend import TrainResult

    losses = np.linspace(2.0, 1.0, 6)
    params = {"dense0/kernel": np.ones((3, 2)), "dense0/bias": np.zeros(2), "bn0/scale": np.ones(2)}
    a = TrainResult(losses, {6: {"test": np.ones((4, 2))}}, params, {}, {}, "cpu")
    same = parallel.parity(a, dataclasses.replace(a, losses=losses * (1 + 1e-15)))
    assert same["agree"] and same["first_step_over"] is None and same["loss_max_rel"] < 2e-15
    off = losses.copy()
    off[3:] *= 1 + 1e-9
    moved = {**params, "dense0/bias": np.full(2, 0.5)}  # a null direction (batch norm follows): reported apart
    p = parallel.parity(a, dataclasses.replace(a, losses=off, params=moved))
    assert not p["agree"] and p["first_step_over"] == 3 and p["loss_max_rel"] == pytest.approx(1e-9, rel=1e-3)
    assert p["params_max_rel"] == 0 and p["null_params_max_rel"] > 0
    assert not parallel.parity(a, dataclasses.replace(a, losses=losses[:4]))["agree"]  # a run cut short
    # the verdict vocabulary of every other comparison
    assert same["verdict_kind"] == "same math" and same["verdict"].startswith("same math (float64, 6 steps, max ")
    assert p["verdict_kind"] == "differs" and p["verdict"] == "differs: training loss at step 3 (rel 1e-09)"
    f32 = parallel.parity(a, dataclasses.replace(a, losses=off), dtype="float32")
    assert f32["verdict_kind"] == "not judged" and f32["verdict"].startswith("float32: not judged")
    assert parallel.parity_line("x2 vs one device", p).startswith("x2 vs one device: differs: training loss at step 3")


def test_compare_devices_says_how_much_per_device_batch_norm_differs(tmp_path, capsys):
    from harness.commands.cli import main

    out = tmp_path / "compare.json"
    assert main(["compare", "mnist_batchnorm", "--devices", "2", "--batch-norm", "local", "--dtype", "float64",
                 "--steps", "3", "--data", "mnist-5k", "--out", str(out)]) == 1  # differs: exit 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("mnist_batchnorm [float64, 2 x cpu, batch 32 = 2 x 16, batch norm local]")
    assert all("vs one device: differs: training loss at step 0 (rel " in line for line in lines[1:3]), lines
    assert lines[3].startswith("PyTorch vs JAX/Flax, x2: same math (float64, 3 steps, max "), lines
    record = json.loads(out.read_text())
    assert set(record["vs_one_device"]) == set(FRAMEWORKS) and record["parallel"]["per_device_batch"] == 16
    assert min(p["loss_max_rel"] for p in record["vs_one_device"].values()) > 1e-3
    assert {p["verdict_kind"] for p in record["vs_one_device"].values()} == {"differs"}
    assert record["across"]["torch-jax"]["verdict_kind"] == "same math"


def test_scaling_figures_per_device_count(runs, tmp_path):
    from harness import schemas
    from harness.bench import scaling

    labs, counts = SCALING
    entries = [e for fw in FRAMEWORKS for e in scaling.entries(labs, fw, *runs[("scaling", fw)])]
    scaling.add_efficiency(entries, weak=False)
    assert [(e["framework"], e["devices"]) for e in entries] == [(fw, n) for fw in FRAMEWORKS for n in counts]
    for e in entries:
        assert e["status"] == "ok" and len(e["block_s"]) == 3 and min(e["block_s"]) > 0
        assert e["global_batch"] == 32 and e["per_device_batch"] == 32 // e["devices"]
        assert e["samples_per_s"] == pytest.approx(32 * e["steps_per_s"])
        assert e["efficiency"] == pytest.approx(e["speedup"] / e["devices"])
    assert [e["speedup"] for e in entries if e["devices"] == 1] == [1.0, 1.0]
    assert [e["threads_per_device"] for e in entries] == [1, 1, None, None]  # JAX: its own pool
    record = {"machine": {"cpu_model": "x", "cpu_count": 2}, "loadavg_start": None, "loadavg_end": None,
              "created": "2026-01-01T00:00:00+00:00", "device": "cpu", "devices": list(counts), "scaling": "strong",
              "scaling_means": scaling.MODES["strong"], "batch_norm": "sync",
              "protocol": {"blocks": 3, "block_steps": 2, "warmup_blocks": 0}, "results": entries,
              "schema": scaling.SCHEMA}
    scaling.write(record, str(tmp_path / "s.json"), str(tmp_path / "s.md"))
    written = json.loads((tmp_path / "s.json").read_text())
    assert written["schema"] == scaling.SCHEMA
    schemas.validate("scaling", written)  # the real entries against the published schema
    rows = [line for line in (tmp_path / "s.md").read_text().splitlines() if line.startswith("| mnist_batchnorm")]
    assert len(rows) == 4


def test_scaling_efficiency_and_device_lists():
    from harness.bench import scaling

    entries = [{"lab": "l", "framework": "f", "devices": n, "steps_per_s": s, "samples_per_s": s * b}
               for n, s, b in ((1, 100.0, 32), (2, 150.0, 64), (4, 100.0, 128))]
    scaling.add_efficiency(entries, weak=False)
    assert [e["efficiency"] for e in entries] == pytest.approx([1.0, 0.75, 0.25])
    scaling.add_efficiency(entries, weak=True)  # samples/s against N x one device's
    assert [e["efficiency"] for e in entries] == pytest.approx([1.0, 1.5, 1.0])
    assert scaling.devices_arg("4,1,2,2") == (1, 2, 4)
    assert scaling.devices_arg("gpu,1,2") == ("gpu", 1, 2) and scaling.devices_arg("cpu") == ("cpu",)
    for bad in ("0", "1,x", ","):
        with pytest.raises(argparse.ArgumentTypeError):
            scaling.devices_arg(bad)


def test_worker_failures_and_timeouts_end_in_one_error():
    from harness.errors import BackendError

    spec = dataclasses.replace(prepared("mnist_relu_xavier").spec, device="gpu")
    with pytest.raises(BackendError, match="2 gpu devices asked, JAX sees 0"):
        parallel.launch("jax", "train_many", [(spec, Parallel(2))], timeout_s=120).result()
    with pytest.raises(BackendError, match="still running after 0 s; stopped"):
        parallel.launch("jax", "train_many", [(prepared("mnist_relu_xavier").spec, Parallel(2))],
                        timeout_s=0.01).result()


def test_cli_refuses_a_batch_that_does_not_split(capsys):
    from harness.commands.cli import main

    assert main(["run", "mnist_relu_xavier", "--framework", "torch", "--devices", "3", "--data", "mnist-5k",
                 "--steps", "2"]) == 2
    assert capsys.readouterr().err.strip() == ("error: mnist_relu_xavier: batch size 100 does not split over 3 "
                                               "devices")
