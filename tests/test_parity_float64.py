"""float64, shared weights: torch and JAX trajectories agree step by step on every XOR lab."""

from __future__ import annotations

import numpy as np
import pytest

from harness.parity.divergence import divergence, growth_rate

EXACT_LABS = ("gates", "xor_perceptron", "xor_mlp", "xor_backprop_manual")


@pytest.mark.parametrize("lab", EXACT_LABS)
def test_float64_trajectories_agree_at_every_step(compare_lab, lab):
    result = compare_lab(lab)
    rel = np.asarray(result["per_step"]["rel_diff"])
    assert len(rel) == 10001
    assert rel.max() < 1e-9, (int(rel.argmax()), rel.max())
    assert result["first_divergence_step"] is None


def test_wide_deep_agrees_until_breakout_then_settles_close():
    from tests.conftest import cached_compare

    result = cached_compare("xor_wide_deep", noise=True)
    torch_loss = np.asarray(result["runs"]["torch"]["loss"])
    rel = np.asarray(result["per_step"]["rel_diff"])
    # Onset of the break-out: the first step (after the start) whose loss falls by more than 1% in one step.
    drop = -np.diff(torch_loss) / torch_loss[:-1]
    onset = 100 + int(np.argmax(drop[100:] > 0.01))
    assert 4000 < onset < 7000, onset
    assert rel[:onset].max() < 1e-9
    jax_final = result["runs"]["jax"]["final"]["train_loss"]
    assert jax_final == pytest.approx(result["runs"]["torch"]["final"]["train_loss"], rel=0.01)
    # The chaos is rounding noise: the float64 one-ulp twin turns chaotic at the break-out too, and grows as fast;
    # the exact tier judges the trajectory up to there and finds the same math.
    assert result["verdict"].startswith("same math (float64, ")
    exact = result["tiers"]["exact"]
    assert exact["ok"] and exact["chaos_step"] is not None and onset - 200 < exact["chaos_step"] < onset + 400
    floor = result["noise_floor"]
    assert floor["first_divergence_step"] is not None
    assert floor["growth_per_step"] > 1.5


def test_divergence_figures():
    a = np.ones(100)
    b = a.copy()
    b[50:] += 1e-13 * 3.0 ** np.arange(50)
    d = divergence(a, b, threshold=1e-4)
    assert d["first_divergence_step"] == 50 + int(np.ceil(np.log(1e-4 / 1e-13) / np.log(3)))
    assert d["max_abs_diff"] == pytest.approx(1e-13 * 3.0**49)
    assert growth_rate(np.abs(b - a)) == pytest.approx(3.0, rel=1e-6)
    same = divergence(a, a)
    assert same["max_rel_diff"] == 0 and same["first_divergence_step"] is None
