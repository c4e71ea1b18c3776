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

pytest.importorskip("torch")
pytest.importorskip("jax")

from harness.selfcheck import catalogue, tiers  # noqa: E402

MUTATIONS = tuple(m for m in catalogue(("torch", "jax")) if m.tier == "exact")  # the others: their own files

STEPS = tiers.EXACT_STEPS


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@functools.cache
def _control(lab: str, overrides: tuple, sides: tuple | None) -> tiers.Finding:
    return tiers.exact(lab, dict(overrides), sides)


@pytest.mark.parametrize("mutation", MUTATIONS, ids=lambda m: m.name)
def test_mutation_is_caught_and_localised(monkeypatch, mutation):
    if not {"torch", "jax"} <= set(registry.names()):
        pytest.skip("needs the torch and jax backends")
    control = _control(mutation.lab, tuple(sorted(mutation.overrides.items())), mutation.sides)
    assert not control.found, (mutation.name, "false alarm on correct code", control.text)
    mutation.patch(monkeypatch)
    found = tiers.exact(mutation.lab, mutation.overrides, mutation.sides)
    assert found.found and found.text.startswith("differs: "), (mutation.name, found.text)
    assert re.search(mutation.expect, found.where), (mutation.name, found.text)
    if found.off is not None:  # two against one: the referee names the mutated side
        assert found.off == mutation.backend, (mutation.name, found.text)
