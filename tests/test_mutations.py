"""The mutation suite: deliberate porting bugs (each backend's ``mutations.py``, collected by
``harness.selfcheck``), injected into one backend through
monkeypatching (a test-only hook, not a user option), must each be caught by the exact tier with the tensor (or
quantity) that parts named, and the numpy referee must name the mutated side; the same settings unmutated must
pass (no false alarm).

Each runs the exact tier over a short float64 window (``STEPS``) of a small lab, from the float32 run's shared
weights, as ``compare`` does. ``docs/parity.md`` tabulates what each is caught by, where and how far apart, over
the default windows (``benchmarks/parity_mutations.py``).
"""

from __future__ import annotations

import functools
import re

import pytest

from harness import backend as registry
from harness.labs import get_lab
from harness.parity.configs import default_configs, run_keys
from harness.parity.exact import exact_tier
from harness.runner import RunOptions, prepare

pytest.importorskip("torch")
pytest.importorskip("jax")

from harness.selfcheck import catalogue  # noqa: E402

MUTATIONS = catalogue(("torch", "jax"))

STEPS = 6


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One torch thread: float64 results do not depend on it, and a pool sharing two busy cores crawls."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _exact(lab: str, overrides: dict) -> dict:
    options = RunOptions(data="mnist-5k", dtype="float32", weights="shared", mask_mode="shared", steps=STEPS,
                         overrides=overrides)
    prepared = prepare(get_lab(lab), options)
    a, b = default_configs(options)
    return exact_tier(prepared, a, b, run_keys(a, b))


@functools.cache
def _control(lab: str, overrides: tuple) -> dict:
    return _exact(lab, dict(overrides))


def _where(tier: dict) -> str:
    """What the tier named: its localisation, else the first quantity over tolerance."""
    if tier["localised"] is not None:
        return tier["localised"]["what"]
    failed = [(f["first_step_over"], name) for name, f in tier["quantities"].items() if not f["ok"]]
    return min(failed)[1] if failed else ""


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.name)
def test_mutation_is_caught_and_localised(monkeypatch, mutation):
    if not {"torch", "jax"} <= set(registry.names()):
        pytest.skip("needs the torch and jax backends")
    if mutation.tier != "exact":
        pytest.skip(f"caught by the {mutation.tier} check, not the exact tier (tests/test_initcheck.py for init)")
    control = _control(mutation.lab, tuple(sorted(mutation.overrides.items())))
    assert control["ok"], (mutation.name, "false alarm on correct code", control["text"])
    mutation.patch(monkeypatch)
    tier = _exact(mutation.lab, mutation.overrides)
    assert not tier["ok"] and tier["text"].startswith("differs: "), (mutation.name, tier["text"])
    assert re.search(mutation.expect, _where(tier)), (mutation.name, tier["text"])
    if tier["referee"] is not None:  # two against one: the referee names the mutated side
        assert tier["referee"]["off"] == mutation.backend, (mutation.name, tier["referee"])
