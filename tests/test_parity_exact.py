"""The exact tier and the verdict: tolerance, chaos window, localisation, vocabulary and run configurations on
planted differences; and on correct code every lab passes (no false alarm), float32 and float64 requested.
(Porting bugs injected into a real backend: tests/test_mutations.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness import backend as registry
from harness.commands.cli import main
from harness.errors import UsageError
from harness.labs import LABS, get_lab
from harness.parity import localise as loc
from harness.parity.api import compare
from harness.parity.configs import RunConfig, default_configs, parse_config, run_keys
from harness.parity.divergence import tensor_diff
from harness.parity.exact import CHAOS, exact_spec, exact_tier, judge
from harness.parity.quantities import Quantity
from harness.parity.verdict import combine
from harness.run.runner import RunOptions, prepare

FAST_STEPS = {"xor": 100, "gates": 100, "mnist": 4}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------ planted differences


def _record(scale: float = 1.0, var: float = 1.0, loss: float = 0.5) -> dict:
    w = np.linspace(-1, 1, 12).reshape(3, 4)
    return {"loss": loss, "grads": {"dense0/kernel": w * 0.1, "dense0/bias": np.full(4, 1e-17)},
            "updates": {"dense0/kernel": w * 1e-3 * scale, "dense0/bias": np.full(4, 1e-3)},
            "params": {"dense0/kernel": w, "dense0/bias": np.zeros(4)}, "state": {"bn0/var": np.full(4, var)}}


def test_an_update_one_part_in_a_million_off_is_named_with_its_step():
    base = [_record(), _record()]
    twin = [_record(scale=1 + 1e-16), _record(scale=1 + 2e-16)]
    off = [_record(), _record(scale=1 - 1e-6)]
    found = loc.localise(base, off, base, twin)
    assert found["step"] == 1 and found["kind"] == "updates" and found["tensor"] == "dense0/kernel"
    assert found["what"] == "dense0/kernel update at step 1" and found["rel"] == pytest.approx(1e-6, rel=1e-3)
    assert loc.localise(base, [_record(), _record()], base, twin) is None


def test_a_running_statistic_and_the_loss_are_localised_in_step_order():
    base, twin = [_record()], [_record(var=1 + 1e-16)]
    assert loc.localise(base, [_record(var=1.003)], base, twin)["what"] == "bn0/var running statistic, after step 0"
    assert loc.localise(base, [_record(var=1.003, loss=0.51)], base, twin)["what"] == "training loss at step 0"


def test_tensors_that_rounding_alone_moves_far_get_the_twins_tolerance():
    noisy = [{**_record(), "grads": {"dense0/kernel": _record()["grads"]["dense0/kernel"], "dense0/bias": g}}
             for g in (np.array([1e-17, -2e-17, 0, 1e-17]), np.array([-1e-17, 1e-17, 1e-17, 0]))]
    # the twin's own bias gradient is pure rounding noise (rel ~1): so may the other side's be
    assert loc.localise(noisy[:1], noisy[1:], noisy[:1], noisy[1:]) is None
    assert loc.tolerance(1e-17) == loc.FLOOR and loc.tolerance(1e-9) == pytest.approx(1e-5)
    assert loc.tolerance(float("nan")) == np.inf


def test_tensor_difference_is_relative_to_the_norm():
    a = np.ones(1000)
    b = a.copy()
    b[0] += 1.0  # one entry far off: ||a - b|| / max(||a||, ||b||) = 1 / sqrt(999 + 4)
    assert tensor_diff(a, b) == (1.0, pytest.approx(1 / np.sqrt(1003)))
    assert tensor_diff(a, a * (1 + 1e-6))[1] == pytest.approx(1e-6, rel=1e-5)
    assert np.isnan(tensor_diff(a, np.full(1000, np.nan))[1]) and np.isnan(tensor_diff(a, a[:10])[1])


def _series(rel: np.ndarray) -> Quantity:
    return Quantity(np.arange(len(rel)), rel, rel)


def test_the_window_ends_where_the_float64_twin_turns_chaotic():
    steps = np.arange(100)
    cross = 1e-15 * 2.0 ** np.maximum(steps - 40, 0)  # parts at 1e-3 by step ~80
    for chaos_at, ok in ((50, True), (90, False)):
        twin_rel = np.where(steps >= chaos_at, 1e-3, 1e-16)
        limit = int(np.flatnonzero(twin_rel > CHAOS)[0])
        fig = judge({"loss": _series(cross)}, {"loss": _series(twin_rel)}, limit)["loss"]
        assert fig["ok"] is ok and fig["judged_points"] == chaos_at, (chaos_at, fig)
        if not ok:
            assert fig["first_step_over"] == int(np.flatnonzero(cross > 1e-10)[0])


def test_a_quantity_without_a_twin_point_is_never_passed_silently():
    cross = _series(np.array([1e-3]))
    assert not judge({"params/x": cross}, {"params/x": _series(np.array([0.0]))}, None)["params/x"]["ok"]
    assert not judge({"params/x": cross}, {}, None)["params/x"]["ok"]  # no twin point: the floor holds
    assert judge({"params/x": cross}, {"params/x": _series(np.array([np.nan]))}, None)["params/x"]["ok"]  # diverged


def test_verdict_vocabulary():
    same = {"ok": True, "text": "same math (float64, 200 steps, max 3e-15)"}
    diff = {"ok": False, "text": "differs: dense2/kernel update at step 0 (rel 1e-06)"}
    within = {"ok": True, "text": "float32 within rounding noise (1.8x band)"}
    beyond = {"ok": False, "text": "float32 beyond rounding noise (150x band at step 3, limit 100x)"}
    assert combine(same, None, None) == (same["text"], "same math")
    assert combine(diff, within, "float32") == (diff["text"], "differs")
    assert combine(same, within, "float32") == (f"{same['text']}; {within['text']}", "within rounding noise")
    assert combine(same, beyond, "float32")[1] == "beyond rounding noise"
    assert combine(same, None, "own dropout masks", "statistical tier off") == (
        f"{same['text']}; own dropout masks: not judged (statistical tier off)", "not judged")


def test_run_configuration_syntax():
    options = RunOptions(dtype="float32")
    assert parse_config("torch:compiled", options) == RunConfig("torch", "cpu", "compiled", "float32")
    assert parse_config("jax:float64:gpu", options) == RunConfig("jax", "gpu", "fused", "float64")
    assert parse_config("torch:per_step", options).execution == "eager"  # the old spelling
    for bad, says in (("nope", "unknown backend"), ("jax:compiled", "unknown field 'compiled'"),
                      ("jax:cpu:gpu", "two devices")):
        with pytest.raises(UsageError, match=says):
            parse_config(bad, options)
    a, b = default_configs(options)
    assert (a.backend, b.backend) == tuple(registry.names(include_referees=False)[:2])
    assert run_keys(a, b) == (a.backend, b.backend)
    assert run_keys(RunConfig("torch", execution="eager"), RunConfig("torch", execution="compiled")) == (
        "torch:eager", "torch:compiled")


def test_the_exact_tier_widens_the_float32_draw_and_shares_masks():
    lab = get_lab("mnist_dropout")
    options = RunOptions(data="mnist-5k", weights="shared", mask_mode="own", steps=30)
    p32 = prepare(lab, options)
    spec = exact_spec(p32, p32.spec, 10)
    assert spec.dtype == "float64" and spec.steps == 10 and spec.eval_steps == (10,)
    for key, value in p32.spec.params.items():
        assert spec.params[key].dtype == np.float64
        np.testing.assert_array_equal(spec.params[key], value.astype(np.float64))
    p64 = prepare(lab, RunOptions(data="mnist-5k", weights="shared", dtype="float64", steps=30))
    assert any(not np.array_equal(spec.params[k], p64.spec.params[k]) for k in spec.params)  # not a new draw
    assert spec.masks is not None and [m.shape[0] for m in spec.masks] == [10] * 4


# --------------------------------------------------------------------------------- correct code, every lab


def _exact(lab: str, dtype: str, steps: int | None) -> dict:
    options = RunOptions(data="mnist-5k", dtype=dtype, weights="shared", mask_mode="shared", steps=steps)
    prepared = prepare(get_lab(lab), options)
    a, b = default_configs(options)
    return exact_tier(prepared, a, b, run_keys(a, b))


@pytest.mark.parametrize("lab", list(LABS))
def test_correct_code_passes_the_exact_tier_on_every_lab(lab):
    tier = _exact(lab, "float32", FAST_STEPS[get_lab(lab).task])
    assert tier["ok"], (lab, tier["text"])
    assert tier["text"].startswith("same math (float64, ") and tier["internals"]["ok"]
    assert all(tier["internals"].get("referee_agrees", {}).values())  # the numpy referee, where registered


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("lab", list(LABS))
def test_correct_code_passes_the_full_exact_tier(lab, dtype):
    tier = _exact(lab, dtype, None)  # the whole run (XOR), 200 steps or the work cap (MNIST)
    assert tier["ok"], (lab, dtype, tier["text"])


# -------------------------------------------------------------------------------------------- compare


def test_compare_keeps_the_training_loss_figures_and_adds_tiers_and_quantities():
    result = compare(get_lab("xor_mlp"), RunOptions(steps=300), threshold=1e-4)
    assert set(result["runs"]) == {"torch", "jax"} and len(result["per_step"]["rel_diff"]) == 300
    for key in ("max_abs_diff", "max_rel_diff", "first_divergence_step", "growth_per_step", "quantities", "tiers",
                "verdict", "verdict_kind", "sides"):
        assert key in result, key
    assert {"loss", "eval/train/accuracy", "eval/train/outputs", "params/dense0/kernel"} <= set(result["quantities"])
    exact = result["tiers"]["exact"]
    assert exact["ok"] and exact["steps"] == 300 and exact["quantities"]["loss"]["max_rel_judged"] < 1e-13
    assert result["verdict"].startswith(exact["text"])
    assert result["verdict_kind"] in ("within rounding noise", "not judged")
    json.dumps(result, default=lambda o: None)  # nothing unserialisable beyond numpy arrays


def test_own_masks_are_judged_statistically_and_the_exact_tier_shares_them():
    result = compare(get_lab("mnist_dropout"), RunOptions(data="mnist-5k", steps=8, mask_mode="own",
                                                           dtype="float64"), exact_steps=4)
    assert result["masks"] == "own" and result["first_divergence_step"] == 0  # each draws its own masks
    assert result["tiers"]["exact"]["ok"]
    assert "own" in result["verdict"] and result["verdict_kind"] != "same math"


def test_two_configurations_of_one_backend():
    result = compare(get_lab("xor_mlp"), RunOptions(steps=60), a="jax:fused", b="jax:per_step:float64")
    assert set(result["runs"]) == {"jax:fused:float32", "jax:per_step:float64"}
    assert result["dtype"] == "float32/float64" and result["tiers"]["exact"]["ok"]


def test_compare_command_sides_and_bad_sides(tmp_path, capsys):
    out = tmp_path / "c.json"
    assert main(["compare", "xor_mlp", "--steps", "50", "--a", "torch", "--b", "jax:per_step", "--no-noise",
                 "--out", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "exact tier (float64, 50 steps" in shown and "verdict: same math" in shown
    record = json.loads(out.read_text())
    assert record["sides"]["jax"]["execution"] == "per_step" and record["tiers"]["exact"]["ok"]
    assert main(["compare", "xor_mlp", "--a", "torch:warp"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown field 'warp'" in err[0]
