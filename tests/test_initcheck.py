"""The native-initialisation check (``harness.parity.initcheck``): its statistics hold their stated false-alarm
rate on draws from the declared distributions and reject wrong ones; every backend's own draw passes for every
init scheme on every distinct layer shape of the labs; the planted init bugs (``tier="init"`` mutations of each
backend's ``mutations.py``) are caught, naming the tensor; ``compare --weights native`` prints the verdict."""

from __future__ import annotations

import importlib.util
import json
import math
import re

import numpy as np
import pytest

from harness.commands.cli import main
from harness.labs import INITS, LABS, Model, get_lab
from harness.parity import initcheck
from harness.selfcheck import catalogue
from harness.weights import _truncated_normal, weight_distribution


def _sample(rng: np.random.Generator, kind: str, scale: float, n: int) -> np.ndarray:
    if kind == "uniform":
        return rng.uniform(-scale, scale, n)
    if kind == "normal":
        return scale * rng.standard_normal(n)
    return _truncated_normal(rng, (n,), scale).astype(np.float64)


def test_kolmogorov_p_matches_the_tabulated_critical_values():
    n = 10**6  # Stephens' correction vanishes: the Kolmogorov distribution's 5% and 1% points
    assert initcheck.kolmogorov_p(1.3581 / math.sqrt(n), n) == pytest.approx(0.05, abs=5e-4)
    assert initcheck.kolmogorov_p(1.6276 / math.sqrt(n), n) == pytest.approx(0.01, abs=2e-4)
    assert initcheck.kolmogorov_p(0.0, n) == 1.0


@pytest.mark.parametrize("kind", ["uniform", "normal", "truncated_normal"])
def test_declared_moments_are_the_distributions(kind):
    x = _sample(np.random.default_rng(0), kind, 0.3, 2_000_000)
    for k in (2, 4):
        assert np.mean(x**k) == pytest.approx(initcheck.even_moment(kind, 0.3, k), rel=1e-2)
    if kind == "truncated_normal":  # Flax's lecun_normal: rescaled so that the variance is 1/fan_in
        assert initcheck.even_moment(kind, weight_distribution("flax_default", 784, 10)[1], 2) == pytest.approx(
            1 / 784, rel=1e-9)


@pytest.mark.parametrize("kind", ["uniform", "normal", "truncated_normal"])
def test_tests_hold_their_level_on_correct_draws(kind):
    """p-values of correct draws are uniform: about 5% of them under 0.05 (400 samples of 1000)."""
    rng = np.random.default_rng(1)
    ps = np.array([list(initcheck.tensor_tests(_sample(rng, kind, 0.1, 1000), kind, 0.1)["p"].values())
                   for _ in range(400)])
    assert ps.shape[1] == 3  # ks, mean, variance
    share = (ps < 0.05).mean(axis=0)
    assert np.all((share > 0.02) & (share < 0.09)), share


@pytest.mark.parametrize("kind,wrong", [("normal", ("truncated_normal", 0.1 / 0.87962566103423978)),
                                        ("uniform", ("uniform", 0.1 * 1.15)), ("normal", ("normal", 0.1 * 1.02))])
def test_tests_reject_a_wrong_distribution(kind, wrong):
    x = _sample(np.random.default_rng(2), wrong[0], wrong[1], 200_000)
    assert min(initcheck.tensor_tests(x, kind, 0.1)["p"].values()) < 1e-9


SHAPES = sorted({(a, b) for lab in LABS.values() for m in (lab.model, lab.companion) if m is not None
                 for a, b in zip(m.sizes[:-1], m.sizes[1:])})


@pytest.fixture(scope="module")
def backends():
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    return ("torch", "jax")


FAST_SHAPES = ((2, 2), (256, 10))  # the smallest (KS only), an output layer (pooled seeds, moment tests too)


def _passes(backends: tuple[str, ...], scheme: str, shapes: tuple) -> None:
    """Each shape as a one-layer net (its kernel and bias), one check per shape (false-alarm rate 1e-6 each)."""
    for fan_in, fan_out in shapes:
        result = initcheck.check(Model((fan_in, fan_out), init=scheme), backends, seed=fan_in * 1000 + fan_out)
        assert result["ok"], (scheme, fan_in, fan_out, result["text"])
        assert set(result["tensors"]["jax"]) == {"dense0/kernel", "dense0/bias"}


@pytest.mark.parametrize("scheme", INITS)
def test_correct_code_passes_every_scheme(backends, scheme):
    _passes(backends, scheme, FAST_SHAPES)


@pytest.mark.slow
@pytest.mark.parametrize("scheme", INITS)
def test_correct_code_passes_every_scheme_on_every_lab_shape(backends, scheme):
    """The 18 distinct (fan_in, fan_out) of the labs (a JAX compile of each draw's shape: about a minute)."""
    _passes(backends, scheme, tuple(SHAPES))


def test_correct_code_passes_other_bias_inits(backends):
    for bias in ("zeros", "normal"):
        result = initcheck.check(Model((784, 30, 10), init="normal", bias_init=bias), backends, 7)
        assert result["ok"], result["text"]
        assert result["tensors"]["torch"]["dense1/bias"]["kind"] == bias


@pytest.mark.slow
def test_correct_code_passes_every_lab(backends):
    for lab in LABS.values():
        assert initcheck.check(lab.model, backends, lab.seed)["ok"], lab.name


HAVE_BOTH = all(importlib.util.find_spec(m) for m in ("torch", "jax"))
INIT_MUTATIONS = tuple(m for m in catalogue(("torch", "jax")) if m.tier == "init") if HAVE_BOTH else ()


def test_every_backend_has_a_planted_init_bug(backends):
    assert {m.backend for m in INIT_MUTATIONS} == {"torch", "jax"}


@pytest.mark.parametrize("mutation", INIT_MUTATIONS, ids=lambda m: m.name)
def test_init_mutation_is_caught_naming_the_tensor(monkeypatch, mutation):
    model = get_lab(mutation.lab).with_options(**mutation.overrides).model
    control = initcheck.check(model, (mutation.backend,), seed=11)
    assert control["ok"], (mutation.name, "false alarm on correct code", control["text"])
    mutation.patch(monkeypatch)
    result = initcheck.check(model, (mutation.backend,), seed=11)
    assert not result["ok"] and result["text"].startswith("native init differs: "), (mutation.name, result["text"])
    first = result["failures"][0]
    assert first["backend"] == mutation.backend and re.search(mutation.expect, first["tensor"]), result["text"]
    assert f"{mutation.backend} {first['tensor']} std" in result["text"]


def test_compare_weights_native_prints_the_check(backends, capsys, tmp_path):
    out = tmp_path / "c.json"
    assert main(["compare", "xor_mlp", "--weights", "native", "--steps", "10", "--no-exact", "--no-noise",
                 "--quiet", "--out", str(out)]) == 0
    native, last = capsys.readouterr().out.strip().splitlines()[-2:]
    assert native.strip().startswith("native init: PyTorch and JAX/Flax draw the declared distributions"), native
    result = json.loads(out.read_text())
    assert result["native_init"]["ok"] is True
    assert last == f"  verdict: {result['verdict']}" and result["verdict"].endswith("; native init as declared")
