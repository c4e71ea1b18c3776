"""Writing results: JSON that numpy values survive, written atomically (never half-written, even by a second
Ctrl-C), output paths checked before any work, temporary files of killed runs cleaned up."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import UsageError


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types for numpy scalars/arrays, tuples and int dict keys; NaN/inf become None."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


_UMASK = os.umask(0o022)
os.umask(_UMASK)


_SIGNALS = {getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)}
_STARTED = time.time()  # about when this process started: older temporary files are left over from another


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold Ctrl-C, SIGTERM and SIGHUP until the body is done (then they take effect, as they would have), so that
    a second interrupt cannot land between writing a file and renaming it into place. Python handles signals in
    its main thread only; elsewhere the body just runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    before = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in _SIGNALS}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
        for s in dict.fromkeys(caught):
            os.kill(os.getpid(), s)


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``, with signals
    held (a file is either the old one or the new one, and no temporary file is left but by SIGKILL: see
    :func:`clean_stale_temps`); the file gets the usual permissions (0666 less the umask), not 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _signals_held():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, 0o666 & ~_UMASK)
            with os.fdopen(fd, "wb") as f:
                f.write(data.encode() if isinstance(data, str) else data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def clean_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of :func:`atomic_write` (``.NAME.XXXXXXXX.tmp``) under ``folder`` that are older
    than this process: left by a run killed mid-write. Returns what it removed."""
    removed = []
    for tmp in Path(folder).rglob(".*.tmp") if Path(folder).is_dir() else ():
        with contextlib.suppress(OSError):
            if tmp.is_file() and tmp.stat().st_mtime < _STARTED:
                tmp.unlink()
                removed.append(tmp)
    return removed


def _writable_ancestor(folder: Path, shown: Path, what: str) -> None:
    """UsageError (naming ``shown``) unless the nearest existing folder at or above ``folder`` is a folder this
    process can create files in (tried, not guessed from permission bits: root, read-only mounts)."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{what} {shown}: {probe} is a file, not a folder")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".dlzta-write-test.", suffix=".tmp")
    except OSError as exc:
        raise UsageError(f"{what} {shown}: cannot write in {probe} ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(tmp)


def check_output_file(path: str | os.PathLike, what: str = "--out") -> None:
    """UsageError (one line) unless a results file can be written at ``path``: not a folder, in a folder that can
    be created and written. Call it before any work."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what} {path} is a folder; give a file name (e.g. {path / 'result.json'})")
    _writable_ancestor(path.parent, path, what)


def check_output_dir(path: str | os.PathLike, what: str = "--out") -> None:
    """UsageError (one line) unless ``path`` is (or can be created as) a folder this process can write in."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path} is a file, not a folder")
    _writable_ancestor(path, path, what)


def write_json(path: str | os.PathLike, obj: Any, kind: str | None = None) -> None:
    """``obj`` as indented JSON, atomically; with ``kind`` (a schema of :mod:`harness.schemas`), a record that
    names its schema in a first ``"$schema"`` key."""
    if kind is not None:
        from harness.schemas import stamped

        obj = stamped(kind, obj)
    atomic_write(path, json.dumps(to_jsonable(obj), indent=1) + "\n")
