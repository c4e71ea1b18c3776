"""float64, shared initial weights, shared batches, shared dropout masks: on every MNIST lab torch and JAX agree
step by step (losses to 1e-8 relative for 200 steps), and so do the final weights and the batch-norm running
statistics; the batch-norm lab's companion (no batch norm) too. Bundled data (mnist-5k).

The five-layer 512-wide labs take tens of seconds each for 200 float64 steps in both frameworks on a 2-core
machine: their 200-step checks are marked slow, and a 30-step check of each runs by default.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from harness.backend import TrainResult
from harness.labs import LABS, get_lab
from harness.run.runner import RunOptions, prepare, run_prepared

MNIST_LABS = tuple(n for n, lab in LABS.items() if lab.task == "mnist")
BIG = ("mnist_deep_xavier", "mnist_deep_xavier_published", "mnist_dropout", "mnist_selu")
SMALL = tuple(n for n in MNIST_LABS if n not in BIG)
RTOL = 1e-8


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@functools.cache
def pair(lab: str, steps: int, masks: str = "shared") -> dict:
    """Both frameworks' records and raw results (main model first, then the companion) for one prepared run."""
    options = RunOptions(data="mnist-5k", dtype="float64", weights="shared", mask_mode=masks, steps=steps, log_every=1)
    prepared = prepare(get_lab(lab), options)
    out = {fw: run_prepared(prepared, fw) for fw in ("torch", "jax")}
    return {"prepared": prepared, "records": {fw: r[0] for fw, r in out.items()},
            "results": {fw: r[1] for fw, r in out.items()}}


def rel_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-300)


def null_directions(t: TrainResult) -> set[str]:
    """Weights the loss does not depend on: the biases of Linear layers followed by batch norm, which subtracts
    the batch mean. Their exact gradient is zero; what each framework computes is rounding noise, which Adam
    normalises into steps of ~lr, so they drift apart at the 1e-10 level without touching the trajectory."""
    return {k for k in t.params if k.endswith("/bias") and k.startswith("dense")
            and f"bn{k[len('dense'):].split('/')[0]}/scale" in t.params}


def check_agreement(t: TrainResult, j: TrainResult, steps: int, what: str) -> None:
    assert len(t.losses) == len(j.losses) == steps, what
    rel = rel_diff(t.losses, j.losses)
    assert rel.max() < RTOL, (what, int(rel.argmax()), float(rel.max()))
    null = null_directions(t)
    for kind, a, b in (("params", t.params, j.params), ("state", t.state, j.state)):
        assert a.keys() == b.keys(), (what, kind)
        for key in a:
            diff, scale = np.abs(a[key] - b[key]).max(), np.abs(a[key]).max()
            assert diff <= (1e-6 if key in null else RTOL * scale), (what, key, diff, scale)


def check_lab(lab: str, steps: int) -> None:
    got = pair(lab, steps)
    t, j = got["results"]["torch"], got["results"]["jax"]
    assert len(t) == len(j) == (2 if get_lab(lab).companion is not None else 1)
    for i, (tr, jr) in enumerate(zip(t, j)):
        check_agreement(tr, jr, steps, f"{lab} model {i}")
    tf, jf = got["records"]["torch"]["final"], got["records"]["jax"]["final"]
    assert abs(tf["test_correct"] - jf["test_correct"]) <= 1  # only a near-tie of two logits could flip


@pytest.mark.parametrize("lab", SMALL)
def test_float64_mnist_parity_200_steps(lab):
    check_lab(lab, 200)


@pytest.mark.parametrize("lab", BIG)
def test_float64_mnist_parity_short(lab):
    check_lab(lab, 30)


@pytest.mark.slow
@pytest.mark.parametrize("lab", BIG)
def test_float64_mnist_parity_200_steps_big(lab):
    check_lab(lab, 200)


def test_batchnorm_running_statistics_moved_and_agree():
    got = pair("mnist_batchnorm", 200)
    t, j = got["results"]["torch"][0].state, got["results"]["jax"][0].state
    assert set(t) == {"bn0/mean", "bn0/var", "bn1/mean", "bn1/var"}
    for key in t:  # 200 steps of momentum 0.1 leave nothing of the initial 0 / 1
        assert np.abs(t[key] - (0.0 if key.endswith("mean") else 1.0)).max() > 1e-2, key
        assert np.abs(j[key] - t[key]).max() <= RTOL * np.abs(t[key]).max(), key  # relative to the vector's scale
    # the companion has no batch norm and no state
    assert got["results"]["torch"][1].state == {} and got["results"]["jax"][1].state == {}


def test_batchnorm_companion_trains_on_the_same_batches():
    prepared = pair("mnist_batchnorm", 200)["prepared"]
    main, other = prepared.spec, prepared.companion
    assert main.model.batchnorm and not other.model.batchnorm
    assert other.batches is main.batches and other.eval_steps == main.eval_steps
    for key in ("dense0/kernel", "dense1/kernel", "dense2/kernel"):  # the same initial Linear weights
        np.testing.assert_array_equal(main.params[key], other.params[key])
    record = pair("mnist_batchnorm", 200)["records"]["torch"]
    assert record["companion"]["model"] == "plain"
    assert [e["epoch"] for e in record["epochs"]] == [1]  # 125 steps an epoch on mnist-5k, batch 32
    for label in ("bn", "plain"):
        row = record["epochs"][0][label]
        assert set(row) == {"train_loss", "train_acc", "valid_loss", "valid_acc"}
        assert 0.5 < row["valid_acc"] <= 1 and row["train_loss"] > 0


def test_shared_masks_are_what_makes_dropout_runs_equal():
    own = pair("mnist_dropout", 30, masks="own")
    rel = rel_diff(own["results"]["torch"][0].losses, own["results"]["jax"][0].losses)
    assert rel[0] > 1e-4  # each framework drew its own masks from step 0


ABLATIONS = [  # every activation, optimizer and init scheme at least once, as the lectures vary them
    {"activation": "sigmoid", "optimizer_name": "sgd", "lr": 0.5, "init": "xavier_normal"},
    {"activation": "tanh", "optimizer_name": "rmsprop", "lr": 0.001, "init": "he_normal"},
    {"activation": "leaky_relu", "optimizer_name": "adadelta", "lr": 1.0, "init": "flax_default"},
    {"activation": "selu", "optimizer_name": "adam", "lr": 0.001, "init": "he_uniform"},
    {"activation": "relu", "optimizer_name": "adam", "lr": 0.001, "init": "torch_default"},
    {"activation": "relu", "optimizer_name": "rmsprop", "lr": 0.001, "init": "normal", "dropout": 0.2},
]


@pytest.mark.parametrize("overrides", ABLATIONS, ids=lambda o: "-".join(str(v) for v in o.values()))
def test_float64_parity_of_the_lectures_ablations(overrides):
    options = RunOptions(data="mnist-5k", dtype="float64", weights="shared", mask_mode="shared", steps=60,
                         overrides=overrides)
    prepared = prepare(get_lab("mnist_relu_xavier"), options)
    t, j = (run_prepared(prepared, fw)[1][0] for fw in ("torch", "jax"))
    check_agreement(t, j, 60, str(overrides))
