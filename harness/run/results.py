"""Writing results: JSON that numpy values survive, written atomically (never half-written, even by a second
Ctrl-C), output paths checked before any work, temporary files of killed runs cleaned up."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import stat
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from harness.errors import UsageError

_PLAIN = frozenset({str, int, bool, type(None)})


def to_jsonable(obj: Any) -> Any:
    """Plain JSON types for numpy scalars/arrays, tuples and int dict keys; NaN/inf become None."""
    kind = type(obj)  # the plain types first, by exact type (a report's records are ~10^5 of them)
    if kind is float:
        return obj if math.isfinite(obj) else None
    if kind in _PLAIN:
        return obj
    if kind is dict:
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if kind is list:
        return [to_jsonable(v) for v in obj]
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


NAME_MAX = 255  # bytes in one path component (Linux, macOS and most file systems)
PATH_MAX = 4096  # bytes in a whole path (Linux)
STDOUT = "-"  # ``--out -``: the JSON goes to standard output (run, compare)


def _kind(mode: int) -> str | None:
    """What a non-regular, non-folder file is (None: a regular file or a folder)."""
    for test, name in ((stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISFIFO, "FIFO (named pipe)"), (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return None


def _temp_prefix(name: str) -> str:
    """``.NAME.`` for a temporary file beside ``name``, NAME cut so that the temporary name (8 random characters
    and ``.tmp`` added) stays within NAME_MAX bytes."""
    return "." + os.fsdecode(os.fsencode(name)[: NAME_MAX - 16]) + "."


def atomic_write(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``, with signals
    held (a file is either the old one or the new one, and no temporary file is left but by SIGKILL: see
    :func:`clean_stale_temps`); the file gets the usual permissions (0666 less the umask), not 0600.

    A symbolic link is followed (its target is written; the link stays). Only a regular file (or nothing) is ever
    replaced: a folder, a device, a FIFO or a socket at ``path`` is a UsageError and is left alone."""
    path = Path(os.path.realpath(path))
    with contextlib.suppress(FileNotFoundError):
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise UsageError(f"{path} is a {_kind(mode) or 'folder'}, not a regular file: not replaced")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _signals_held():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path.name), suffix=".tmp")
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


def _check_name(raw: str | os.PathLike, what: str, folder: bool) -> Path:
    """The path of an output option after the checks that need no file system: not empty, not ``-`` (standard
    output is the caller's to allow), no component longer than NAME_MAX bytes, not longer than PATH_MAX."""
    text = os.fspath(raw)
    kind = "folder" if folder else "file"
    if text == "" or (isinstance(text, str) and not text.strip()):
        raise UsageError(f"{what} is empty; give a {kind} name")
    if text == STDOUT:
        raise UsageError(f"{what} -: standard output is taken by run and compare's --out only; give a {kind} name")
    encoded = os.fsencode(text)
    if b"\0" in encoded:
        raise UsageError(f"{what}: a path cannot hold a NUL character")
    if len(encoded) >= PATH_MAX:
        raise UsageError(f"{what}: the path is {len(encoded)} bytes long (at most {PATH_MAX - 1})")
    long = next((part for part in encoded.split(b"/") if len(part) > NAME_MAX), None)
    if long is not None:
        raise UsageError(f"{what}: the name {os.fsdecode(long[:40])}... is {len(long)} bytes long (at most "
                         f"{NAME_MAX} in one path component)")
    return Path(text)


def _writable_ancestor(folder: Path, shown: Path, what: str) -> None:
    """UsageError (naming ``shown``) unless the nearest existing folder at or above ``folder`` is a folder this
    process can create files in (tried, not guessed from permission bits: root, read-only mounts, /proc)."""
    probe = folder
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        kind = _kind(os.stat(probe).st_mode) if probe.exists() else None
        raise UsageError(f"{what} {shown}: {probe} is a {kind or 'file' if probe.exists() else 'broken link'}, "
                         "not a folder")
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".dlzta-write-test.", suffix=".tmp")
    except OSError as exc:
        raise UsageError(f"{what} {shown}: cannot write in {probe} ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(tmp)


def check_output_file(path: str | os.PathLike, what: str = "--out") -> None:
    """UsageError (one line) unless a results file can be written at ``path``, before any work: a name (not
    empty, each component at most NAME_MAX bytes), nothing there or a regular file (never a folder, a device, a
    FIFO or a socket: :func:`atomic_write` replaces regular files only), in a folder that can be created and
    written. A symbolic link is followed: its target is checked and written (``-``, standard output, is the
    caller's to allow before calling this)."""
    shown = _check_name(path, what, folder=False)
    real = Path(os.path.realpath(shown))
    if real.is_dir():
        raise UsageError(f"{what} {shown} is a folder; give a file name (e.g. {shown / 'result.json'})")
    if real.exists() and (kind := _kind(os.stat(real).st_mode)) is not None:
        raise UsageError(f"{what} {shown} is a {kind}, not a regular file; give a file name"
                         f"{' (or - for standard output)' if what == '--out' else ''}")
    _writable_ancestor(real.parent, shown, what)


def check_output_files(paths: Mapping[str, str | os.PathLike | None]) -> None:
    """:func:`check_output_file` for every given path (``{option: path}``; None: not given), and no two the same
    file."""
    seen: dict[str, str] = {}
    for what, path in paths.items():
        if path is None:
            continue
        check_output_file(path, what)
        real = os.path.realpath(path)
        if real in seen:
            raise UsageError(f"{what} and {seen[real]} name the same file {path}")
        seen[real] = what


def check_output_dir(path: str | os.PathLike, what: str = "--out") -> None:
    """UsageError (one line) unless ``path`` is (or can be created as) a folder this process can write in."""
    path = _check_name(path, what, folder=True)
    if path.exists() and not path.is_dir():
        kind = _kind(os.stat(path).st_mode) or "file"
        raise UsageError(f"{what} {path} is a {kind}, not a folder")
    _writable_ancestor(path, path, what)


def read_input(path: str | os.PathLike, what: str) -> str:
    """The text of an input file (``--config``, ``--compare``): a regular file (a FIFO or a device would block or
    never end), read as UTF-8; OSError (with a one-line reason) otherwise."""
    with open(path, "rb", opener=lambda p, flags: os.open(p, flags | os.O_NONBLOCK)) as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(f"{what} {os.fspath(path)} is a {_kind(mode) or 'folder'}, not a regular file")
        return f.read().decode("utf-8")


def check_result_out(path: str | None) -> None:
    """``run``/``compare --out``: a results file (:func:`check_output_file`), or ``-`` for standard output."""
    if path is not None and path != STDOUT:
        check_output_file(path)


def write_result(path: str | None, obj: Any, stdout: TextIO | None = None, kind: str | None = None) -> None:
    """``obj`` as JSON to ``path`` (atomically), to ``stdout`` (default: ``sys.stdout``) when it is ``-``; nothing
    when None. ``kind``: its schema (:mod:`harness.schemas`), named in a first ``"$schema"`` key."""
    if kind is not None:
        from harness.schemas import stamped

        obj = stamped(kind, obj)
    if path == STDOUT:
        out = stdout or sys.stdout
        out.write(json.dumps(to_jsonable(obj), indent=1) + "\n")
        out.flush()
    elif path is not None:
        write_json(path, obj)


def write_json(path: str | os.PathLike, obj: Any, kind: str | None = None) -> None:
    """``obj`` as indented JSON, atomically; with ``kind`` (a schema of :mod:`harness.schemas`), a record that
    names its schema in a first ``"$schema"`` key."""
    if kind is not None:
        from harness.schemas import stamped

        obj = stamped(kind, obj)
    atomic_write(path, json.dumps(to_jsonable(obj), indent=1) + "\n")
