"""Interrupts in the job: SIGTERM stops it like Ctrl-C (the policy of :mod:`harness.commands.interrupts`), and the
report's writes are held whole (a signal that comes in during one is acted on once the write has finished)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

from harness.commands import interrupts

HELD = (signal.SIGINT, signal.SIGTERM)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def term_as_interrupt() -> contextlib.AbstractContextManager:
    """SIGTERM (a CI cancel, ``timeout``) stops the job like Ctrl-C: the finished labs' report is written. The
    policy of every command (:mod:`harness.commands.interrupts`), for callers that do not come through ``main``."""
    return interrupts.policy()


@contextlib.contextmanager
def held_signals(reraise: bool = True) -> Iterator[list[int]]:
    """Run the body with SIGINT and SIGTERM held: the signals that arrive are collected (in the list yielded)
    and, with ``reraise``, the first is delivered again once the body has finished (to the handler in place:
    the policy raises KeyboardInterrupt for a first signal), or raised as KeyboardInterrupt where no Python
    handler is in place."""
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
    if got and reraise:  # handed on to the handler in place (the policy: 130 or 143), else raised here
        if not callable(signal.getsignal(got[0])):
            raise KeyboardInterrupt
        os.kill(os.getpid(), got[0])
