"""One signal policy for every command (``run``, ``compare``, ``report``, ``reproduce``, ``bench``,
``selfcheck``), installed by :func:`harness.commands.cli.main`:

- the first Ctrl-C (SIGINT) or SIGTERM stops the work as ``KeyboardInterrupt``: the command keeps and writes
  what it has finished, prints one ``error:`` line (or the report's note) and exits 130 for SIGINT, 143 for
  SIGTERM (128 + the signal's number, as a shell reports a process the signal killed);
- later SIGINTs and SIGTERMs are noted and ignored while the command saves its work, so a repeated Ctrl-C never
  leaves a half-written report or a traceback;
- while the interpreter shuts down (after :func:`harness.commands.cli.main_exit` has its status: JAX's and other exit
  handlers run then), SIGINT is ignored and SIGTERM ends the process at once with status 143.

Writes that must land whole hold signals themselves (:func:`harness.run.results.atomic_write`,
:func:`harness.report.signals.held_signals`) and hand them on to this policy when done.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

EXIT_SIGINT, EXIT_SIGTERM = 130, 143
SIGNALS = (signal.SIGINT, signal.SIGTERM)
_first: list[int] = []  # the signal that stopped the current command (at most one)


def _stop(signum: int, frame: Any) -> None:
    """The policy's handler: the first signal raises KeyboardInterrupt; later ones are ignored."""
    if _first:
        return
    _first.append(signum)
    raise KeyboardInterrupt


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def installed() -> bool:
    """Whether the policy's handler takes SIGINT and SIGTERM now."""
    return all(signal.getsignal(s) is _stop for s in SIGNALS)


@contextlib.contextmanager
def policy() -> Iterator[None]:
    """Run the body under the policy (the previous handlers come back after it); in the main thread only, and
    not twice (a nested use keeps the outer one's record of the first signal)."""
    if not _main_thread() or installed():
        yield
        return
    _first.clear()
    before = {s: signal.signal(s, _stop) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def stopped_by() -> int | None:
    """The signal that stopped the command (None: none did, or a KeyboardInterrupt that came from elsewhere)."""
    return _first[0] if _first else None


def exit_status() -> int:
    """The exit status of an interrupted command: 143 after SIGTERM, 130 after SIGINT (or a bare
    KeyboardInterrupt)."""
    return EXIT_SIGTERM if stopped_by() == signal.SIGTERM else EXIT_SIGINT


def message() -> str:
    """The ``error:`` line's text for an interrupted command."""
    return "terminated (SIGTERM)" if stopped_by() == signal.SIGTERM else "interrupted"


def _exit_now(signum: int, frame: Any) -> None:
    os._exit(EXIT_SIGTERM)


def shutting_down() -> None:
    """For interpreter shutdown, after the command's status is known: SIGINT ignored (no traceback from an exit
    handler), SIGTERM ends the process at once (status 143)."""
    if _main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, _exit_now)
