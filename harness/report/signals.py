"""Interrupts in the job: SIGTERM stops it like Ctrl-C, and the report's writes are held whole (a signal that
comes in during one is acted on once the write has finished)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

HELD = (signal.SIGINT, signal.SIGTERM)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def term_as_interrupt() -> Iterator[None]:
    """SIGTERM (a CI cancel, ``timeout``) stops the job like Ctrl-C: the finished labs' report is written."""
    if not _main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


@contextlib.contextmanager
def held_signals(reraise: bool = True) -> Iterator[list[int]]:
    """Run the body with SIGINT and SIGTERM held: the signals that arrive are collected (in the list yielded)
    and, with ``reraise``, raised as one KeyboardInterrupt once the body has finished."""
    got: list[int] = []
    if not _main_thread():
        yield got
        return
    before = {s: signal.signal(s, lambda signum, frame: got.append(signum)) for s in HELD}
    try:
        yield got
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
    if got and reraise:
        raise KeyboardInterrupt
