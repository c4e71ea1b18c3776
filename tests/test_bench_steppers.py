"""The benchmark steppers run the trainers' own step: the same losses as ``train`` on the same batches, whichever
mode and whether driven by the protocol or by the bare loop; the compiled step is torch's own optimizer
algorithm. Also the analytic FLOPs and the block statistics. No timing assertions."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
import torch

from harness import backend as backends
from harness import bench
from harness.bench import peak
from harness.errors import BackendError
from harness.labs import get_lab
from harness.run.runner import RunOptions, prepare
from torch_impl import learners
from torch_impl import train as torch_train

POOL = 4


def _spec(lab: str, **overrides):
    if get_lab(lab).task == "mnist":
        overrides = {"batch_size": 10, **overrides}  # small batches: these tests check steps, not speed
    opts = RunOptions(steps=POOL, data="mnist-5k", weights="shared", overrides=overrides)
    return prepare(get_lab(lab), opts).spec


@functools.cache
def _trained(lab: str, framework: str) -> np.ndarray:
    one_per_call = {"torch": "eager"}.get(framework, "per_step")  # one step per dispatch, as the steppers
    return backends.load(framework).train(dataclasses.replace(_spec(lab), execution=one_per_call)).losses


@pytest.mark.parametrize("framework,mode", [("torch", "eager"), ("jax", "per_step"), ("jax", "fused")])
@pytest.mark.parametrize("lab", ["mnist_dropout", "xor_wide_deep", "mnist_batchnorm", "mnist_backprop_manual"])
def test_a_stepper_follows_the_trainer(framework, mode, lab):
    stepper = backends.load(framework).make_stepper(_spec(lab), mode, fuse_steps=POOL)
    stepper.run(POOL)
    assert stepper.loss() == pytest.approx(_trained(lab, framework)[POOL - 1], rel=1e-6)


@pytest.mark.parametrize("framework,mode", [("torch", "eager"), ("jax", "per_step"), ("jax", "fused")])
def test_the_bare_loop_runs_the_same_steps(framework, mode):
    spec = _spec("xor_wide_deep")
    make = backends.load(framework).make_stepper
    a, b = make(spec, mode, POOL), make(spec, mode, POOL)
    a.run(2 * POOL)
    b.bare(2 * POOL // b.unit_steps)
    assert a.loss() == b.loss()


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop", "adadelta"])
def test_the_functional_step_is_torchs_own_optimizer(optimizer):
    spec = _spec("mnist_batchnorm", optimizer_name=optimizer, lr=0.01)
    x = torch.tensor(spec.train_x[spec.batches[0]])
    y = torch.tensor(spec.train_y[spec.batches[0]], dtype=torch.int64)
    eager = learners.ModuleLearner(spec, torch.float32, torch.device("cpu"))
    functional = learners.ModuleLearner(spec, torch.float32, torch.device("cpu"))
    step, state = learners.functional_step(functional)
    for _ in range(3):
        assert torch.equal(eager.step(x, y, None), step(x, y, None))
    for got, want in zip(functional.export(), eager.export()):
        for k in want:
            np.testing.assert_array_equal(got[k], want[k], err_msg=k)
    assert any(t.abs().sum() > 0 for t in state)


@pytest.mark.slow
@pytest.mark.parametrize("lab", ["xor_mlp", "mnist_backprop_manual"])
def test_compiled_training_follows_eager(lab):
    spec = _spec(lab)
    eager = torch_train.train(dataclasses.replace(spec, execution="eager"))
    compiled = torch_train.train(dataclasses.replace(spec, execution="compiled"))
    np.testing.assert_allclose(compiled.losses, eager.losses, rtol=1e-5)
    for k in eager.params:
        np.testing.assert_allclose(compiled.params[k], eager.params[k], rtol=1e-4, atol=1e-6, err_msg=k)


def test_modes_each_framework_offers():
    assert backends.load("torch").modes("cpu") == ("eager", "compiled")
    assert backends.load("torch").modes("gpu") == ("eager", "compiled", "cuda_graph")
    assert backends.load("jax").modes("cpu") == ("per_step", "fused")


def test_cuda_graph_training_needs_a_gpu():
    spec = _spec("xor_mlp")
    with pytest.raises(BackendError, match="needs a GPU"):
        torch_train.train(dataclasses.replace(spec, execution="cuda_graph"))
    with pytest.raises(BackendError, match="jax has no execution 'compiled'"):
        backends.load("jax").train(dataclasses.replace(spec, execution="compiled"))


def test_flops_per_step():
    model = get_lab("mnist_dropout").model
    f = peak.flops_per_step(model, 100)
    sizes = (784, 512, 512, 512, 512, 10)
    forward = 2 * 100 * sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    assert f == {"forward": forward, "backward": 2 * forward, "total": 3 * forward,
                 "matmul_flops_run": 3 * forward - 2 * 100 * 784 * 512}
    manual = peak.flops_per_step(get_lab("mnist_backprop_manual").model, 10, manual=True)
    assert manual["matmul_flops_run"] == manual["total"]


def test_block_statistics():
    stats = bench.ms_stats([0.5, 0.1, 0.2, 0.3, 0.4], block_steps=100)
    assert stats["median"] == pytest.approx(3.0)
    assert stats["min"] == pytest.approx(1.0) and stats["max"] == pytest.approx(5.0)
    assert stats["p5"] == pytest.approx(1.2) and stats["p95"] == pytest.approx(4.8)
    record = peak.peak_record([0.02, 0.01, 0.04, 0.01], n=1000)
    assert record["gflops"] == pytest.approx(200.0) and record["gflops_median"] == pytest.approx(2e9 / 0.015 / 1e9)


def test_plan_defaults():
    work = bench.plan(("xor_wide_deep", "mnist_dropout"), ("torch", "jax"), ("cpu",), None, bench.SUITES["full"])
    keys = {w.key: w for w in work}
    assert set(keys) == {f"{lab}/{fw}/cpu/{m}" for lab in ("xor_wide_deep", "mnist_dropout")
                         for fw, modes in (("torch", ("eager", "compiled")), ("jax", ("per_step", "fused")))
                         for m in modes}
    assert keys["xor_wide_deep/torch/cpu/eager"].threads == 1
    assert keys["mnist_dropout/jax/cpu/fused"].fuse_steps == bench.BLOCK_STEPS["mnist"]
    assert keys["xor_wide_deep/jax/cpu/fused"].block_steps == 10 * keys["xor_wide_deep/jax/cpu/per_step"].block_steps
    torch_fuse = backends.info("torch").bench_fuse_steps
    assert keys["mnist_dropout/torch/cpu/compiled"].fuse_steps == torch_fuse["mnist"] == 1
    assert keys["xor_wide_deep/torch/cpu/compiled"].fuse_steps == torch_fuse["xor"] == 10


def test_the_ci_suite_skips_compiled_modes_and_runs_per_task_pools_on_one_thread():
    work = bench.plan(bench.SUITES["ci"].labs, ("torch", "jax"), ("cpu",), None, bench.SUITES["ci"])
    assert {w.key.split("/", 1)[1] for w in work} == {"torch/cpu/eager", "jax/cpu/per_step", "jax/cpu/fused"}
    assert {w.threads for w in work if w.framework == "torch"} == {1}
    assert {w.threads for w in work if w.framework == "jax"} == {1}  # like for like: pinned as XLA starts
    only = bench.plan(("xor_mlp",), ("torch", "jax"), ("cpu",), ("fused",), bench.SUITES["ci"])
    assert [w.key for w in only] == ["xor_mlp/jax/cpu/fused"]  # --modes: wherever a backend offers them
