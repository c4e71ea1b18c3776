"""The main job's native run of a course lab is the compared run itself where the framework's own draw is bit for
bit the shared weights (torch's default init: the harness ports its generator); otherwise it trains."""

from __future__ import annotations

import numpy as np
import pytest

from harness.labs import get_lab
from harness.report.compute import same_start
from harness.run.runner import RunOptions, run

pytest.importorskip("torch")
pytest.importorskip("jax")


def test_torch_native_run_of_a_default_init_lab_is_the_shared_run():
    lab = get_lab("xor_mlp")
    shared = run(lab, "torch", RunOptions(weights="shared", steps=300, log_every=1))
    native = run(lab, "torch", RunOptions(weights="native", steps=300, log_every=1))
    assert same_start(lab, RunOptions(weights="shared", steps=300), "torch", shared)
    assert native["loss"] == shared["loss"]  # what the reuse stands on, checked by training both


def test_a_different_draw_is_not_reused():
    options = RunOptions(weights="shared", steps=2, data="mnist-5k")
    assert not same_start(get_lab("xor_mlp"), options, "jax", run(get_lab("xor_mlp"), "jax", options))
    softmax = get_lab("mnist_softmax")  # N(0, 1): numpy's normal for the shared weights, torch's own natively
    assert not same_start(softmax, options, "torch", run(softmax, "torch", options))
    shared = run(get_lab("xor_mlp"), "torch", options)
    assert not same_start(get_lab("xor_mlp"), options, "torch", {**shared, "status": "diverged"})
    assert not np.isnan(shared["loss"][0])
