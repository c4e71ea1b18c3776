"""harness.selfcheck's Patcher undoes what a mutation patches, and the catalogue holds every backend's bugs."""

from __future__ import annotations

import types

import pytest

from harness.selfcheck import Mutation, Patcher, catalogue, patched


def test_patcher_restores_attributes_and_items():
    mod = types.SimpleNamespace(f=1)
    table = {"a": 1}

    class C:
        pass

    p = Patcher()
    p.setattr(mod, "f", 2)
    p.setattr(mod, "g", 3)
    p.setattr(C, "__init__", lambda self: None)
    p.setitem(table, "a", 5)
    p.setitem(table, "b", 6)
    assert (mod.f, mod.g, table) == (2, 3, {"a": 5, "b": 6}) and "__init__" in C.__dict__
    p.undo()
    assert mod.f == 1 and not hasattr(mod, "g") and table == {"a": 1} and "__init__" not in C.__dict__


def test_patched_undoes_on_error():
    table = {"k": 0}
    m = Mutation("m", "torch", "xor_mlp", lambda mp: mp.setitem(table, "k", 1), "")
    with pytest.raises(RuntimeError), patched(m):
        assert table["k"] == 1
        raise RuntimeError
    assert table == {"k": 0}


def test_catalogue_collects_both_backends():
    pytest.importorskip("torch")
    pytest.importorskip("jax")
    found = catalogue(("torch", "jax"))
    assert {m.backend for m in found} == {"torch", "jax"} and len(found) >= 16
    assert len({m.name for m in found}) == len(found)
