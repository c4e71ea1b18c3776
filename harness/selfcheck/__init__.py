"""Planted porting bugs (mutations) and what the parity tiers must say of them: the detector's own test.

A :class:`Mutation` names the backend it breaks, the lab (and lab overrides) it shows on, a ``patch`` that
injects it into that backend's functions (``patch(patcher)``, through :class:`Patcher` or pytest's
``monkeypatch``: a test-only hook, never a user option) and what the exact tier must name (a regex on its
localisation). Each backend package keeps its own in ``<package>/mutations.py`` (``MUTATIONS``), so that the
harness imports no framework: :func:`catalogue` collects those of the registered backends.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from harness import backend as registry


class Patch(Protocol):
    """What a mutation's ``patch`` is handed: pytest's ``MonkeyPatch`` or a :class:`Patcher`."""

    def setattr(self, target: object, name: str, value: object) -> None: ...  # noqa: D102

    def setitem(self, mapping: MutableMapping, key: object, value: object) -> None: ...  # noqa: D102


class Patcher:
    """The two calls of pytest's ``MonkeyPatch`` that mutations use, undone by :meth:`undo` (newest first)."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def setattr(self, target: object, name: str, value: object) -> None:
        """Set ``target.name`` to ``value`` until :meth:`undo`."""
        missing = object()
        old = target.__dict__.get(name, missing) if isinstance(target, type) else getattr(target, name, missing)
        setattr(target, name, value)
        self._undo.append(lambda: delattr(target, name) if old is missing else setattr(target, name, old))

    def setitem(self, mapping: MutableMapping, key: object, value: object) -> None:
        """Set ``mapping[key]`` to ``value`` until :meth:`undo`."""
        missing = object()
        old = mapping.get(key, missing)
        mapping[key] = value
        self._undo.append(lambda: mapping.pop(key) if old is missing else mapping.__setitem__(key, old))

    def undo(self) -> None:
        """Restore everything patched, newest first."""
        while self._undo:
            self._undo.pop()()


@contextmanager
def patched(mutation: Mutation) -> Iterator[None]:
    """The body runs with ``mutation`` injected; everything is restored afterwards."""
    patcher = Patcher()
    try:
        mutation.patch(patcher)
        yield
    finally:
        patcher.undo()


@dataclass(frozen=True)
class Mutation:
    """A porting bug: ``patch`` injects it into ``backend``; the check ``tier`` must name something matching
    ``expect`` (a regex on its localisation, e.g. "dense\\d/kernel update at step 0", or "step \\d+" for the
    statistical tier), comparing ``sides``."""

    name: str
    backend: str
    lab: str
    patch: Callable[[Patch], None]
    expect: str
    overrides: dict = field(default_factory=dict)
    tier: str = "exact"  # the check that must catch it: "exact", "statistical" or "init" (harness.selfcheck.tiers)
    sides: tuple[str, str] | None = None  # the two run configurations compared (default: the first two backends)

    def __repr__(self) -> str:
        return self.name


def catalogue(backends: tuple[str, ...] | None = None) -> tuple[Mutation, ...]:
    """Every mutation of the named (default: registered) backends that offer the ``mutations`` capability."""
    out: list[Mutation] = []
    for name in backends or tuple(registry.names()):
        if registry.offers(name, "mutations"):
            out.extend(registry.capability(name, "mutations"))
    return tuple(out)


# Patch builders both backends' catalogues use.

def wrap_optimizer(module: object, change: Callable) -> Callable[[Patch], None]:
    """A patch of ``module.make_optimizer`` that builds the optimizer through ``change(original, opt, ...)``."""
    def patch(mp: Patch) -> None:
        original = module.make_optimizer
        mp.setattr(module, "make_optimizer", lambda opt, *a, **k: change(original, opt, *a, **k))
    return patch


def scaled_lr(factor: float) -> Callable:
    """For :func:`wrap_optimizer`: the declared optimizer with its learning rate times ``factor``."""
    return lambda original, opt, *a, **k: original(dataclasses.replace(opt, lr=opt.lr * factor), *a, **k)


def after_init(cls: type, change: Callable[[Any], None]) -> Callable[[Patch], None]:
    """A patch of ``cls.__init__`` that calls ``change(self)`` after the original."""
    def patch(mp: Patch) -> None:
        original = cls.__init__

        def init(self: object, *a: object, **k: object) -> None:
            original(self, *a, **k)
            change(self)
        mp.setattr(cls, "__init__", init)
    return patch


def activation(module: object, name: str, fn: Callable) -> Callable[[Patch], None]:
    """A patch of ``module.ACTIVATIONS[name]``."""
    return lambda mp: mp.setitem(module.ACTIVATIONS, name, fn)


def init_scheme(module: object, change: Callable) -> Callable[[Patch], None]:
    """A patch of the declared weight distribution as ``module`` (a backend's ``models``) reads it for its native
    init: ``change(original, scheme, fan_in, fan_out)`` in place of ``harness.weights.weight_distribution``."""
    def patch(mp: Patch) -> None:
        original = module.weight_distribution
        mp.setattr(module, "weight_distribution", lambda *a: change(original, *a))
    return patch


def he_truncated(original: Callable, scheme: str, fan_in: int, fan_out: int) -> tuple[str, float]:
    """For :func:`init_scheme`: He normal drawn truncated at two std and rescaled to the declared variance (Flax's
    ``he_normal``, torch's ``trunc_normal_``)."""
    kind, scale = original(scheme, fan_in, fan_out)
    return ("truncated_normal", scale / 0.87962566103423978) if scheme == "he_normal" else (kind, scale)
