"""The backend contract: optional capabilities asked of the registry (never looked up in a backend's modules),
the one execution resolver, the typed timing and trace records, and the backend packages' own structure (no
import circle, no module reaching for another's underscore names)."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

from harness import backend as backends
from harness.backend import BackendError, Capabilities, Timing, TraceStep, trace_step

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch_impl", "jax_impl")


@pytest.fixture
def bare_backend():
    """A backend registered by the test with no optional capability (the referee's module under another name)."""
    info = backends.register(backends.BackendInfo("bare", "Bare", "#000000", "harness.referee.backend", ("loop",)))
    yield info.name
    backends.unregister(info.name)


def test_the_registry_answers_capability_queries():
    for name in ("torch", "jax"):
        assert all(backends.offers(name, c) for c in backends.CAPABILITIES if c != "warm_up")
    assert backends.offers("torch", "warm_up") and not backends.offers("jax", "warm_up")
    assert backends.offers("numpy", "trace") and not backends.offers("numpy", "native_params")
    trace = backends.capability("numpy", "trace")
    assert callable(trace) and trace.__module__ == "harness.referee.train"
    assert backends.capability("numpy", "pretrain_trace").__module__ == "harness.referee.rbm"


def test_a_missing_capability_is_a_clear_one_line_error(bare_backend):
    assert not any(backends.offers(bare_backend, c) for c in backends.CAPABILITIES)
    with pytest.raises(BackendError, match=r"^backend 'bare' does not offer 'trace' \(it offers: none\)$"):
        backends.capability(bare_backend, "trace")
    with pytest.raises(BackendError, match="unknown capability 'tracing'; choose from trace, "):
        backends.offers("torch", "tracing")


def test_a_capability_declared_where_nothing_is_names_the_declaration(bare_backend):
    entry = backends.info(bare_backend)
    backends.register(backends.BackendInfo(**{**entry.__dict__, "capabilities": Capabilities(
        trace="harness.referee.train:no_such_trace")}))
    with pytest.raises(BackendError, match="declares 'trace' as harness.referee.train:no_such_trace"):
        backends.capability(bare_backend, "trace")


def test_a_backend_without_capabilities_still_trains(bare_backend):
    """The harness's own callers fall back where a capability is absent: the statistical tier loops ``train``."""
    from harness.parity.ensemble import ensemble_fn

    assert ensemble_fn(bare_backend).__name__ == "loop"
    assert ensemble_fn("jax").__module__ == "jax_impl.ensemble"


def test_the_one_execution_resolver():
    assert backends.resolve_execution("torch", None) == "eager"
    assert backends.resolve_execution("torch", "fused", fallback=True) == "eager"  # a side without that mode
    assert backends.resolve_execution("jax", "fused", fallback=True) == "fused"
    assert backends.executions_on("torch", "cpu") == ("eager", "compiled")
    assert backends.executions_on("torch", "gpu") == ("eager", "compiled", "cuda_graph")
    assert backends.resolve_execution("torch", "cuda_graph", "gpu") == "cuda_graph"
    with pytest.raises(BackendError, match=r"execution 'cuda_graph' needs a GPU \(--device gpu\)"):
        backends.resolve_execution("torch", "cuda_graph", "cpu")
    assert set(backends.all_executions()) == {"eager", "compiled", "cuda_graph", "fused", "per_step", "loop"}
    assert backends.execution_text("jax", None) == "fused (lax.scan)"
    assert backends.execution_text("unregistered", "x") == "x"


def test_timing_is_filled_the_same_way_and_written_with_the_old_keys():
    t = Timing.measured(0.5, 2.0, 100)
    assert (t.total_s, t.steps_per_s, t.pretrain_s) == (2.5, 50.0, None)
    assert list(t.as_dict()) == ["warmup_s", "run_s", "total_s", "steps_per_s"]  # no pretrain_s without one
    assert Timing.measured(0.5, 2.0, 100, pretrain_s=1.0).as_dict()["pretrain_s"] == 1.0
    assert math.isnan(Timing.measured(0.1, 0.0, 0).steps_per_s)  # a one-step run has no steady state


def test_trace_steps_are_float64_with_the_update_computed_in_float64():
    before = {"w": np.array([1.0, 2.0], np.float32)}
    after = {"w": np.array([1.5, 2.25], np.float32)}
    rec = trace_step(np.float32(0.25), {"w": np.ones(2, np.float32)}, before, after, {"bn0/mean": np.zeros(1)})
    assert isinstance(rec, TraceStep) and rec.loss == 0.25 and isinstance(rec.loss, float)
    assert all(v.dtype == np.float64 for d in (rec.grads, rec.updates, rec.params, rec.state) for v in d.values())
    np.testing.assert_array_equal(rec.updates["w"], [0.5, 0.25])
    assert list(rec.as_dict()) == ["loss", "grads", "updates", "params", "state"]  # what localise reads


# ----------------------------------------------------------------------------------------------- source scans


def _modules(*folders: str) -> list[Path]:
    return sorted(p for f in folders for p in (ROOT / f).rglob("*.py"))


def _dynamic_lookups(tree: ast.AST) -> list[str]:
    """``getattr(<loaded backend>, ...)``, ``importlib.import_module(...)`` and ``find_spec(...)`` calls."""
    loaded = {"load", "import_module", "backend_module", "capability"}
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        fn = node.func
        name = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else ""
        if name in ("import_module", "find_spec"):
            out.append(f"{name} at line {node.lineno}")
        elif name in ("getattr", "hasattr") and node.args and isinstance(node.args[0], ast.Call):
            inner = node.args[0].func
            inner_name = inner.attr if isinstance(inner, ast.Attribute) else getattr(inner, "id", "")
            if inner_name in loaded:
                out.append(f"{name}({inner_name}(...)) at line {node.lineno}")
    return out


def test_no_module_outside_the_registry_looks_into_a_backend():
    """Only ``harness/backend.py`` imports backend modules by name or looks attributes up on them; the
    ``find_spec`` calls left probe optional dataset packages (TensorFlow), not backends."""
    allowed = {"harness/backend.py": None, "harness/data/tfds.py": {"find_spec"}}
    found = {}
    for path in _modules("harness", *PACKAGES):
        rel = path.relative_to(ROOT).as_posix()
        hits = _dynamic_lookups(ast.parse(path.read_text()))
        if rel in allowed:
            hits = [h for h in hits if allowed[rel] is not None and h.split()[0] not in allowed[rel]]
        if hits:
            found[rel] = hits
    assert not found, found
    # the scan finds what it looks for
    planted = "import importlib\ngetattr(registry.load('torch'), 'trace')\nimportlib.util.find_spec('torch_impl.x')\n"
    assert len(_dynamic_lookups(ast.parse(planted))) == 2


def _imports(path: Path, package: str) -> tuple[set[str], list[str]]:
    """Sibling modules ``path`` imports (function-level imports too) and the underscore names it takes from them."""
    siblings, private = set(), []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == package:
            siblings.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(package + "."):
            siblings.add(node.module.split(".")[1])
            private += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__") \
                and isinstance(node.value, ast.Name) and (ROOT / package / f"{node.value.id}.py").exists():
            private.append(f"{node.value.id}.{node.attr}")
    return siblings, private


@pytest.mark.parametrize("package", PACKAGES)
def test_backend_packages_have_no_import_circle_and_no_private_reach(package):
    graph, private = {}, {}
    for path in _modules(package):
        siblings, taken = _imports(path, package)
        graph[path.stem] = siblings - {path.stem}
        if taken:
            private[path.stem] = taken
    assert not private, private
    assert {"runtime", "learners", "train", "rbm", "probe", "bench"} <= set(graph)

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        return any(n == goal or (n not in seen and reaches(n, goal, seen | {n})) for n in graph.get(start, ()))

    circles = sorted(m for m in graph if reaches(m, m, {m}))
    assert not circles, {m: graph[m] for m in circles}
    assert "train" not in graph["rbm"] and "train" not in graph["learners"]
