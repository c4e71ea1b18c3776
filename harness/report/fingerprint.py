"""The training code's fingerprint: the source files a lab's numbers come from, found by walking the import
graph (``ast``, every ``import`` at any depth, function-level ones included) from the runner, the parity package
and every registered backend's package, keeping the modules of those packages. A rerun of the report after a
change in any of them trains again rather than reusing stale results; nothing is listed by hand.

A backend's package is taken whole (every module in it, then what they import): the harness reaches some of its
modules by name rather than by import (the statistical tier's ``<package>.ensemble``).
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

from harness import backend as backends

ROOT = Path(__file__).resolve().parents[2]  # the folder holding the harness package
# Where the training path starts, besides each backend's package: the runner (prepare, execute, summarize) and the
# comparison (both tiers, the native-init check) whose figures a lab record holds.
ROOTS = ("harness.run.runner", "harness.parity")


@functools.cache
def _package_dir(top: str) -> Path | None:
    """The folder of top-level package ``top``: beside ``harness``, else the registry's word for a backend's
    package installed elsewhere (found without importing it)."""
    if (ROOT / top / "__init__.py").is_file():
        return ROOT / top
    owners = [n for n in backends.names() if backends.info(n).module.partition(".")[0] == top]
    return backends.source_dir(owners[0]) if owners else None


def module_file(name: str, packages: frozenset[str]) -> Path | None:
    """The source file of module ``name`` (a package: its ``__init__.py``); None outside ``packages`` (top-level
    package names) or where there is no such module."""
    top, *rest = name.split(".")
    folder = _package_dir(top) if top in packages else None
    if folder is None:
        return None
    base = folder.joinpath(*rest)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(name: str, path: Path) -> set[str]:
    """The modules ``path`` (module ``name``) imports, anywhere in it: ``from a import b`` counts ``a`` and,
    where it is a module, ``a.b``; relative imports are resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _with_parents(name: str) -> list[str]:
    """``a.b.c`` and the packages Python runs first: ``a``, ``a.b``."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def training_modules(roots: tuple[str, ...]) -> dict[str, Path]:
    """Every module of the roots' top-level packages reachable by imports from ``roots`` (a root package: its
    ``__init__`` and every module in it), by name."""
    packages = frozenset(r.split(".")[0] for r in roots)  # the project's: those the roots are in
    todo = list(roots)
    for r in roots:  # a root package: all of its modules
        path = module_file(r, packages)
        if path is not None and path.name == "__init__.py":
            todo += [f"{r}.{p.stem}" for p in sorted(path.parent.glob("*.py")) if p.name != "__init__.py"]
    seen: dict[str, Path] = {}
    while todo:
        for name in _with_parents(todo.pop()):
            path = module_file(name, packages)
            if name in seen or path is None:
                continue
            seen[name] = path
            todo.extend(_imported(name, path))
    return dict(sorted(seen.items()))


def training_roots() -> tuple[str, ...]:
    """Where the walk starts: :data:`ROOTS` and every registered backend's package (its module's parent; a
    top-level module: itself)."""
    modules = (backends.info(n).module for n in backends.names())
    return ROOTS + tuple(dict.fromkeys(m.rpartition(".")[0] or m for m in modules))


def training_files() -> list[str]:
    """The training code's files, as paths relative to :data:`ROOT` where they are under it."""
    files = training_modules(training_roots()).values()
    return sorted(dict.fromkeys(f.relative_to(ROOT).as_posix() if f.is_relative_to(ROOT) else str(f) for f in files))


@functools.cache
def _digest(roots: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for name, path in training_modules(roots).items():
        h.update(name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def code_fingerprint() -> str:
    """A hash of the code a lab's numbers come from (every module the training path imports, every registered
    backend's included), so that a rerun after a change there trains again rather than reusing stale results."""
    return _digest(training_roots())
