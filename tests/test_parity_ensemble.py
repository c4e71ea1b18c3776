"""The statistical parity tier: one-ulp twin ensembles in both backends, the band, the judged ratio."""

from __future__ import annotations

import dataclasses
import functools
import sys
import types

import numpy as np
import pytest

from harness import backend as registry
from harness.labs import get_lab
from harness.parity import ensemble as tier
from harness.parity.configs import RunConfig, as_config, retarget
from harness.run.runner import RunOptions, prepare

EPS32 = float(np.finfo(np.float32).eps)


@functools.cache
def prepared(lab: str, steps: int = 40, **overrides: object) -> object:
    masks = "shared" if get_lab(lab).model.dropout and not overrides.pop("own", False) else "own"
    return prepare(get_lab(lab), RunOptions(weights="shared", steps=steps, mask_mode=masks, overrides=dict(overrides)))


# ------------------------------------------------------------------------------------ the judged figures


def ensemble(base: np.ndarray, twin_offsets: list[np.ndarray]) -> np.ndarray:
    return np.stack([base, *[base * (1 + o) for o in twin_offsets]])


def test_judge_correct_and_planted_fault_on_synthetic_trajectories():
    steps = np.arange(40)
    base = 2.0 * np.exp(-steps / 20)
    noise = 1e-7 * 1.3**steps  # twins and cross both grow like rounding noise in a chaotic run
    twins = [noise * s for s in (0.5, -1.0, 0.8, -0.3)]
    a, b = ensemble(base, twins), ensemble(base * (1 + 0.7 * noise), twins)
    ok = tier.judge(a, b, EPS32, window=30)
    assert ok["ok"] and ok["ratio"] < 2 and ok["window"] == 30
    bug = ensemble(base * (1 + 1e-3 * (steps > 0)), twins)  # a 1e-3 step from step 1 on: far above the band
    bad = tier.judge(a, bug, EPS32, window=30)
    assert not bad["ok"] and bad["ratio"] > 1e3 and bad["at_step"] == 1


def test_window_ends_where_the_band_saturates_and_the_floor_skips_silent_steps():
    base = np.ones(50)
    twin = np.where(np.arange(50) >= 20, 1.0 + 2e-2, 1.0)  # the twins part at step 20, then saturated
    a = np.stack([base, twin])
    fig = tier.judge(a, a.copy(), EPS32, window=45, lag=0)
    assert fig["window"] == 20 and fig["saturated_at"] == 20
    assert fig["ratio"] == 0 and fig["band"]["max"] == 0  # every step equal: judged against the floor
    own = tier.judge(a, a.copy(), EPS32, window=45, own_masks=True)
    assert own["window"] == 45 and own["saturated_at"] is None


def test_a_jump_of_the_twins_a_few_steps_later_covers_the_cross_difference():
    base = np.ones(30)
    cross = base * (1 + 1e-4 * (np.arange(30) >= 8))  # the cross difference jumps at step 8 ...
    twin = base * (1 + 1e-4 * (np.arange(30) >= 11))  # ... a twin at step 11
    a, b = np.stack([base, twin]), np.stack([cross, cross])
    assert tier.judge(a, b, EPS32, window=30, lag=5)["ok"]
    assert not tier.judge(a, b, EPS32, window=30, lag=0)["ok"]


def test_text():
    fig = {"ok": False, "ratio": 340.2, "at_step": 3, "limit": 100.0}
    text, summary = tier.describe(fig, "float32", "PyTorch", "JAX/Flax", False)
    assert text == "float32 beyond rounding noise (340x band at step 3, limit 100x)"
    assert summary == "PyTorch-vs-JAX/Flax at 340x the twin band, limit 100x"
    assert tier.describe({**fig, "ok": True, "ratio": 1.84}, "float32", "a", "b", False)[0] == \
        "float32 within rounding noise (1.8x band)"


# ------------------------------------------------------------------------------------------ the members


def test_members_are_distinct_one_ulp_twins():
    params = prepared("xor_mlp").spec.params
    members, seeds = tier.members_of(params, 4, 0, 0, own_masks=False, base_seed=777)
    assert members[0] is params and seeds == [777] * 5
    flat = [np.concatenate([m[k].ravel() for k in sorted(params)]) for m in members]
    for twin in flat[1:]:
        assert (twin != flat[0]).all() and np.all(np.nextafter(flat[0], twin) == twin)  # exactly one ulp
        assert (twin > flat[0]).any() and (twin < flat[0]).any()  # both signs
    assert all(not np.array_equal(flat[i], flat[j]) for i in range(1, 5) for j in range(1, i))
    _, own = tier.members_of(params, 4, 0, 1, own_masks=True, base_seed=777)
    assert own[0] == 777 and len(set(own)) == 5


def test_jax_vmap_ensemble_equals_training_each_member():
    from jax_impl import ensemble, train

    for lab, sizes in (("xor_mlp", None), ("mnist_relu_xavier", (784, 32, 32, 10))):
        spec = (prepared(lab, sizes=sizes) if sizes else prepared(lab)).spec
        members, seeds = tier.members_of(spec.params, 2, 1, 0, False, spec.seed)
        together = ensemble.train_ensemble(spec, members, 12, seeds)
        alone = np.stack([train.train(tier.window_spec(spec, 12, p, s)).losses for p, s in zip(members, seeds)])
        assert together.shape == (3, 12)
        np.testing.assert_allclose(together, alone, rtol=4 * EPS32, atol=0)
        assert len({row.tobytes() for row in together}) == 3  # the members differ from each other


def test_jax_ensemble_with_own_dropout_masks_reseeds_each_member():
    from jax_impl import ensemble, train

    spec = prepared("mnist_dropout", sizes=(784, 16, 16, 10), own=True).spec
    assert spec.masks is None
    members = [spec.params] * 3
    together = ensemble.train_ensemble(spec, members, 6, [1, 2, 1])
    alone = train.train(tier.window_spec(spec, 6, spec.params, 2)).losses
    np.testing.assert_allclose(together[1], alone, rtol=4 * EPS32)
    np.testing.assert_array_equal(together[0], together[2])
    assert not np.array_equal(together[0], together[1])  # other masks, from step 0


# -------------------------------------------------------------------------------------------- the tier


@pytest.mark.parametrize("lab", ["xor_mlp", "mnist_softmax", "mnist_relu_xavier"])
def test_correct_code_is_within_rounding_noise(lab):
    result = tier.ensemble_tier(prepared(lab), "torch", "jax")
    assert result["tier"] == "ensemble" and result["members"] == tier.MEMBERS
    assert result["ok"], result["text"]
    assert result["text"].startswith("float32 within rounding noise (")
    assert result["summary"].startswith("PyTorch-vs-JAX/Flax at ")
    assert len(result["per_step"]["band"]) == result["window"] <= tier.WINDOW
    assert max(result["per_step"]["band"]) > 0  # the twins do move


def test_learning_rate_bug_is_flagged(monkeypatch):
    from jax_impl import models

    original = models.make_optimizer
    monkeypatch.setattr(models, "make_optimizer",
                        lambda opt: original(dataclasses.replace(opt, lr=opt.lr * 0.9)))
    result = tier.ensemble_tier(prepared("mnist_relu_xavier", sizes=(784, 32, 32, 10)), "torch", "jax")
    assert not result["ok"]
    assert result["ratio"] > 10 * result["limit"]
    assert "beyond rounding noise" in result["text"]


def test_a_backend_without_train_ensemble_is_looped_through_train(monkeypatch):
    from torch_impl import train

    module = types.ModuleType("loop_only_backend")
    module.train, module.available_devices = train.train, train.available_devices
    monkeypatch.setitem(sys.modules, "loop_only_backend", module)
    monkeypatch.setitem(registry.REGISTRY, "loop", registry.BackendInfo("loop", "Loop", "#000", "loop_only_backend",
                                                                        ("eager",)))
    result = tier.ensemble_tier(prepared("xor_mlp"), "torch", "loop", members=2, window=10)
    assert result["ok"] and result["ratio"] == 0  # the same arithmetic: identical runs
    assert result["sides"] == ["torch", "loop"]


def test_final_accuracies_are_reported_with_their_spread():
    result = tier.ensemble_tier(prepared("mnist_softmax", steps=20), "torch", "jax", members=2, window=10,
                                finals=True)
    for side in ("torch", "jax"):
        acc = result["final_accuracy"][side]
        assert acc["n"] == 3 and acc["min"] - 1e-12 <= acc["mean"] <= acc["max"] + 1e-12 and acc["spread"] >= 0
    assert tier.ensemble_tier(prepared("xor_mlp"), "torch", "jax", members=1, window=5)["final_accuracy"] is None


def test_shared_weights_are_required():
    native = prepare(get_lab("xor_mlp"), RunOptions(steps=5))
    with pytest.raises(ValueError, match="shared initial weights"):
        tier.ensemble_tier(native, "torch", "jax")


def test_own_dropout_masks_are_judged_against_the_mask_spread():
    result = tier.ensemble_tier(prepared("mnist_dropout", sizes=(784, 16, 16, 10), own=True), "torch", "jax",
                                members=2, window=8)
    assert result["masks"] == "own" and result["window"] == 8 and result["saturated_at"] is None
    assert result["band"]["first"] > 1e-3  # the members differ by their masks from step 0
    assert result["ok"] and "own dropout masks" in result["text"]


def test_sides_from_run_configurations():
    base = prepared("xor_mlp").spec
    side = as_config(RunConfig("jax", base.device, "per_step", "float64"), base)
    assert side == RunConfig("jax", "cpu", "per_step", "float64") and side.name_beside(base) == "jax/per_step/float64"
    assert as_config("torch", base).name_beside(base) == "torch"
    spec = retarget(base, side)
    assert spec.dtype == "float64" and spec.params["dense0/kernel"].dtype == np.float64
    assert spec.execution == "per_step" and spec.train_x.dtype == np.float64
    with pytest.raises(TypeError):
        as_config(3, base)


def test_a_diverged_side_is_beyond_any_band():
    base = np.linspace(2, 1, 10)
    a = np.stack([base, base * (1 + 1e-7)])
    b = a.copy()
    b[:, 4:] = np.nan
    fig = tier.judge(a, b, EPS32, window=10)
    assert not fig["ok"] and fig["ratio"] == np.inf and fig["at_step"] == 4
