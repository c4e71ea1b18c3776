"""The report folder before any work: writable (:func:`harness.run.results.check_output_dir`, tried by writing),
cleared of temporary files that a killed run left, and held by one job at a time (a lock file holding the
holder's pid).

The lock is an advisory ``flock`` on ``OUT/.report.lock``: the kernel drops it when its holder dies, however it
dies, so a lock left by a killed run (a dead pid) is taken over; a live holder stops a second job with one line.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType

from harness.errors import UsageError
from harness.run.results import check_output_dir

LOCK_NAME = ".report.lock"
SUBFOLDERS = ("labs", "plots", "runs")

try:
    import fcntl
except ImportError:  # not POSIX: no lock
    fcntl = None  # type: ignore[assignment]


def check_output(out: Path) -> None:
    """Make ``out`` a folder this process can write, with no file where its ``labs/`` or ``plots/`` folder goes;
    UsageError otherwise. Before any work."""
    check_output_dir(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--out {out} cannot be created: {exc.strerror or exc}") from None
    for folder in (out / sub for sub in SUBFOLDERS):
        if folder.exists() and not folder.is_dir():
            raise UsageError(f"--out {out}: {folder} is a file, not a folder")
        if folder.is_dir():
            check_output_dir(folder)


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        return "another process"
    return f"pid {text}" if text.isdigit() else "another process"


class OutputLock:
    """Hold ``OUT/.report.lock`` for the life of a job (context manager); UsageError when a live process holds
    it."""

    def __init__(self, out: Path) -> None:
        self.path = out / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise UsageError naming its holder."""
        if fcntl is None:
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise UsageError(f"{self.path.parent} is in use by another report ({_holder(self.path)}); wait for "
                                 f"it to finish, or choose another --out") from None
            try:  # the holder before us may have removed the file between our open and our lock: retry
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd

    def release(self) -> None:
        """Remove the lock file and drop the lock."""
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def __enter__(self) -> OutputLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
