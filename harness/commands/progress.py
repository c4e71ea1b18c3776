"""A small progress display for long commands: a live line on stderr (what runs now, elapsed time, ETA) while
stderr is a terminal, nothing at all when quiet or when stderr is a file or a pipe (CI logs stay clean).

    with Progress(total=len(items), label="compare") as progress:
        for item in items:
            progress.begin(item)          # shown on the live line while it runs
            ...
            progress.advance(1)           # one unit done
            progress.print(f"{item}: ok")  # a permanent line (on stdout), the live line kept below it

``total`` counts units of work: items (the ETA then comes from the pace so far) or, with ``seconds=True``,
estimated seconds (the ETA is the estimate left, corrected by the measured pace).
"""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import TextIO

PACE_BOUNDS = (0.25, 4.0)  # a seconds estimate is trusted to be off by at most this factor either way


def clock(seconds: float) -> str:
    """``m:ss`` (``h:mm:ss`` from an hour)."""
    seconds = max(0, int(round(seconds)))
    minutes, s = divmod(seconds, 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{s:02d}" if minutes >= 60 else f"{minutes}:{s:02d}"


def is_terminal(stream: TextIO) -> bool:
    """Whether ``stream`` is an interactive terminal."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class Progress:
    """Progress of ``total`` units of work, shown live on ``stream`` (default stderr) when it is a terminal and
    ``quiet`` is false. Safe to use when not shown: every method is then cheap and silent (but :meth:`print`,
    which prints unless quiet). ``unit``: what the counted units are ("steps", "runs"), shown after the count."""

    def __init__(self, total: float, label: str = "", quiet: bool = False, stream: TextIO | None = None,
                 seconds: bool = False, interval: float = 1.0, unit: str = "") -> None:
        self.total, self.label, self.quiet, self.seconds = float(total), label, quiet, seconds
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.live = not quiet and is_terminal(self.stream)
        self.done = self.work = 0.0  # units done, and the seconds they took
        self.start = self._mark = time.perf_counter()
        self.task: tuple[str, float, float] | None = None  # (note, size, started)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        if self.live:
            self._thread = threading.Thread(target=self._tick, args=(interval,), daemon=True)
            self._thread.start()

    # ------------------------------------------------------------------------------------------- progress

    def begin(self, note: str, size: float = 1.0) -> None:
        """A piece of ``size`` units starts; the live line names it (time between pieces is not counted)."""
        with self._lock:
            self._mark = time.perf_counter()
            self.task = (note, size, self._mark)

    def advance(self, n: float = 1.0, note: str | None = None) -> None:
        """``n`` units are done (0: done without work, e.g. reused); ``note`` replaces the live line's note."""
        with self._lock:
            now = time.perf_counter()
            if n > 0:
                self.done += n
                self.work += now - self._mark
            self._mark = now
            self.task = (note, 0.0, now) if note else None

    def pace(self) -> float | None:
        """Seconds per unit so far (a ratio to the estimate with ``seconds``); None before any."""
        if self.seconds:
            if self.done <= 1.0:
                return 1.0
            return min(PACE_BOUNDS[1], max(PACE_BOUNDS[0], self.work / self.done))
        return self.work / self.done if self.done > 0 else None

    def eta(self) -> float | None:
        """Seconds left (None: no pace yet)."""
        pace = self.pace()
        if pace is None:
            return None
        left = max(0.0, self.total - self.done)
        if self.task is not None and pace > 0:
            _, size, started = self.task
            left -= min((time.perf_counter() - started) / pace, size)
        return max(0.0, left * pace)

    def line(self) -> str:
        """The live line's text."""
        now = time.perf_counter()
        parts = [self.label] if self.label else []
        if self.task is not None and self.task[0]:
            note, size, started = self.task
            about = f" (about {clock(size * (self.pace() or 1.0))})" if self.seconds and size else ""
            parts.append(f"{note} {clock(now - started)}{about}")
        if self.seconds:
            parts.append(f"{100 * min(1.0, self.done / self.total) if self.total else 100:.0f}%")
        else:
            parts.append(f"{self.done:g}/{self.total:g}" + (f" {self.unit}" if self.unit else ""))
        eta = self.eta()
        parts.append(f"elapsed {clock(now - self.start)}, ETA {clock(eta) if eta is not None else '?'}")
        return "  ".join(parts)

    # ------------------------------------------------------------------------------------------- output

    def print(self, text: str, file: TextIO | None = None) -> None:
        """A permanent line on ``file`` (default stdout), unless quiet; the live line is redrawn below it."""
        if self.quiet:
            return
        with self._lock:
            self._clear()
            print(text, file=file if file is not None else sys.stdout, flush=True)

    def close(self) -> None:
        """Stop and erase the live line."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            with self._lock:
                self._clear()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _clear(self) -> None:
        if self.live:
            self.stream.write("\r\033[K")
            self.stream.flush()

    def _tick(self, interval: float) -> None:
        while not self._stop.wait(interval):
            with self._lock:
                try:
                    self.stream.write("\r\033[K" + self.line())
                    self.stream.flush()
                except (OSError, ValueError):  # the terminal went away
                    return
