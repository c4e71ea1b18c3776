"""RBM pre-training (``mnist_rbm_pretrain``): the CD-k step of each implementation against the formulas written
out element by element, the three implementations in float64 over a few CD steps, the pre-trained weights
reaching the network, the pre-training learning, the run records, and bad declarations."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest

from harness import backend as backends
from harness.commands.cli import main
from harness.labs import LabError, Pretrain, get_lab
from harness.referee import losses, model
from harness.referee import rbm as referee_rbm
from harness.run import pretrain
from harness.run.runner import RunOptions, execute, prepare, run

torch = pytest.importorskip("torch")
jax = pytest.importorskip("jax")

LAB = "mnist_rbm_pretrain"
STEPS = 4  # CD steps of each RBM and training steps (a run cut short cuts its pre-training too)
TOL = 1e-12


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _loops(w, b, c, v0, u, k):
    """CD-k by explicit sums over units (the formulas of harness.labs.Pretrain), for a tiny RBM."""
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))
    n, nv, nh = len(v0), len(b), len(c)
    p0 = np.array([[sig(c[j] + sum(v0[e, i] * w[i, j] for i in range(nv))) for j in range(nh)] for e in range(n)])
    h, first = (u[0] < p0).astype(float), None
    for step in range(k):
        v = np.array([[sig(b[i] + sum(h[e, j] * w[i, j] for j in range(nh))) for i in range(nv)] for e in range(n)])
        p = np.array([[sig(c[j] + sum(v[e, i] * w[i, j] for i in range(nv))) for j in range(nh)] for e in range(n)])
        first = v if first is None else first
        if step + 1 < k:
            h = (u[step + 1] < p).astype(float)
    dw = np.array([[sum(v0[e, i] * p0[e, j] - v[e, i] * p[e, j] for e in range(n)) / n for j in range(nh)]
                   for i in range(nv)])
    return {"kernel": dw, "visible_bias": (v0 - v).sum(0) / n, "hidden_bias": (p0 - p).sum(0) / n}, \
        float(((v0 - first) ** 2).sum() / first.size)


def _cd_steps(params, v0, u, k):
    """Each implementation's cd_step on the same float64 inputs."""
    from jax_impl import rbm as jax_rbm
    from jax_impl.train import x64
    from torch_impl import rbm as torch_rbm

    out = {"numpy": referee_rbm.cd_step(params, v0, u, k)}
    t = torch_rbm.cd_step({k_: torch.tensor(v) for k_, v in params.items()}, torch.tensor(v0), torch.tensor(u), k)
    out["torch"] = ({k_: v.numpy() for k_, v in t[0].items()}, float(t[1]))
    with x64(True):
        j = jax_rbm.cd_step({k_: jax.numpy.asarray(v) for k_, v in params.items()}, jax.numpy.asarray(v0),
                            jax.numpy.asarray(u), k)
        out["jax"] = ({k_: np.asarray(v) for k_, v in j[0].items()}, float(j[1]))
    return out


@pytest.mark.parametrize("k", [1, 2])
def test_cd_step_of_every_implementation_is_the_formula(k):
    rng = np.random.default_rng(k)
    params = {"kernel": rng.normal(size=(5, 3)), "visible_bias": rng.normal(size=5), "hidden_bias": rng.normal(size=3)}
    v0, u = rng.random((4, 5)), rng.random((k, 4, 3))
    want, recon = _loops(params["kernel"], params["visible_bias"], params["hidden_bias"], v0, u, k)
    for name, (stats, got) in _cd_steps(params, v0, u, k).items():
        assert got == pytest.approx(recon, rel=TOL), name
        for key, value in want.items():
            np.testing.assert_allclose(stats[key], value, rtol=TOL, atol=TOL, err_msg=f"{name} {key}")


@functools.cache
def _prepared(weights: str = "shared"):
    return prepare(get_lab(LAB), RunOptions(data="mnist-5k", dtype="float64", weights=weights, mask_mode="shared",
                                            steps=STEPS))


@functools.cache
def _result(framework: str):
    return execute(_prepared(), framework)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_pretraining_is_the_same_math_in_float64(framework):
    ref, got = _result("numpy"), _result(framework)
    assert len(got.pretrain_recon) == 2 and all(len(r) == STEPS for r in got.pretrain_recon)
    for a, b in zip(got.pretrain_recon, ref.pretrain_recon):
        assert _rel(a, b) < TOL
    assert set(got.pretrain_params) == {f"rbm{i}/{n}" for i in range(2) for n in pretrain.NAMES}
    for key, value in ref.pretrain_params.items():
        assert _rel(got.pretrain_params[key], value) < TOL, key
    assert _rel(got.losses, ref.losses) < TOL
    assert got.timing["pretrain_s"] > 0


def test_pretrained_rbms_initialise_the_hidden_layers():
    spec, ref = _prepared().spec, _result("numpy")
    net, rbms = pretrain.split(spec.params)
    assert set(rbms) == set(ref.pretrain_params) and not np.allclose(rbms["rbm0/kernel"], ref.pretrain_params[
        "rbm0/kernel"])  # the RBMs trained
    x, y = spec.train_x[spec.batches[0]].astype(np.float64), spec.train_y[spec.batches[0]]

    def first_loss(params):
        return losses.loss_and_direction("cross_entropy", model.forward(spec.model, params, x)[0], y)[0]

    pretrained = pretrain.network_params(net, ref.pretrain_params, 2)
    assert ref.losses[0] == pytest.approx(first_loss(pretrained), rel=1e-13)
    assert _result("torch").losses[0] == pytest.approx(first_loss(pretrained), rel=1e-13)
    assert abs(first_loss(net) - ref.losses[0]) > 1e-3 * ref.losses[0]  # the declared init alone is another net


def test_pretraining_lowers_the_reconstruction_error():
    first = _result("numpy").pretrain_recon[0]
    assert np.all(np.isfinite(first)) and first[-1] < 0.5 * first[0]


@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_native_run_records_the_pretraining(framework):
    record = run(get_lab(LAB), framework, RunOptions(data="mnist-5k", weights="native", steps=3))
    pre = record["pretrain"]
    assert [r["steps"] for r in pre["rbms"]] == [3, 3] and pre["k"] == 1
    assert all(len(r["recon_epoch"]) == 1 and 0 < r["recon_last"] < r["recon_first"] for r in pre["rbms"][:1])
    assert record["timing"]["pretrain_s"] > 0 and record["status"] == "ok"


def test_run_prints_the_reconstruction_error(capsys):
    assert main(["run", LAB, "--framework", "torch", "--data", "mnist-5k", "--steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "[pre-training rbm1, CD-1, 2 steps] reconstruction error per epoch: " in out
    assert "RBM pre-training before it" in out


def test_data_parallel_refuses_pretraining_in_one_line(capsys):
    assert main(["run", LAB, "--framework", "jax", "--devices", "2", "--steps", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: mnist_rbm_pretrain: data-parallel training does not run RBM pre-training (run it on one "
                   "device)"]


def test_referee_needs_shared_weights():
    with pytest.raises(backends.BackendError, match="shared weights"):
        execute(_prepared("native"), "numpy")


@pytest.mark.parametrize("change,fragment", [
    ({"k": 0}, "pre-training k must be at least 1"),
    ({"lr": 0.0}, "pre-training lr must be positive"),
    ({"epochs": 0}, "pre-training epochs must be at least 1"),
])
def test_bad_pretraining_declarations_are_refused(change, fragment):
    lab = get_lab(LAB)
    with pytest.raises(LabError, match=fragment):
        lab.with_options(pretrain=dataclasses.replace(lab.pretrain, **change))
    with pytest.raises(LabError, match="needs an MNIST network"):
        get_lab("xor_mlp").with_options(pretrain=Pretrain())


@pytest.mark.slow  # 11 s here: the vmap-ed ensemble's compilation and two float64 runs
def test_jax_ensemble_members_pretrain_each_from_their_own_weights():
    from harness.parity.ensemble import window_spec
    from harness.weights import nudge
    from jax_impl import ensemble
    from jax_impl import train as jax_train

    spec = _prepared().spec
    members = [spec.params, nudge(spec.params, 1000)]  # the second's RBMs start elsewhere too
    losses = ensemble.train_ensemble(spec, members, STEPS)
    for params, row in zip(members, losses):
        alone = jax_train.train(window_spec(spec, STEPS, params)).losses
        np.testing.assert_allclose(row, alone, rtol=TOL)
    assert losses[0, 0] != losses[1, 0]
