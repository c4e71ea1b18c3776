"""Where a job's time goes: named phases, each timed in wall-clock and process CPU seconds.

    with recording() as costs:          # the job, around one lab
        with phase("train/torch"):      # anywhere below, without passing the recorder around
            ...
    costs.table()  # {"train/torch": {"wall_s": ..., "cpu_s": ..., "calls": 1}, ...}

Phases nest: a phase opened inside another is recorded under ``outer/inner`` and counts in the outer one as
well. Outside :func:`recording`, :func:`phase` costs nothing and records nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator


class Costs:
    """Wall and CPU seconds and call counts per phase name."""

    def __init__(self) -> None:
        self.phases: dict[str, dict[str, float]] = {}
        self.stack: list[str] = []

    def add(self, name: str, wall: float, cpu: float) -> None:
        """Count ``wall`` and ``cpu`` seconds (and one call) to ``name``."""
        entry = self.phases.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0, "calls": 0})
        entry["wall_s"] += wall
        entry["cpu_s"] += cpu
        entry["calls"] += 1

    def table(self, digits: int = 4) -> dict[str, dict[str, float]]:
        """Every phase, in the order first opened, its seconds rounded to ``digits`` significant digits."""
        return {name: {k: (float(f"{v:.{digits}g}") if k != "calls" else int(v)) for k, v in e.items()}
                for name, e in self.phases.items()}


_CURRENT: contextvars.ContextVar[Costs | None] = contextvars.ContextVar("costs", default=None)


@contextlib.contextmanager
def recording(costs: Costs | None = None) -> Iterator[Costs]:
    """Record the phases opened in the body into ``costs`` (a new one by default), which it yields."""
    costs = costs or Costs()
    token = _CURRENT.set(costs)
    try:
        yield costs
    finally:
        _CURRENT.reset(token)


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Time the body as phase ``name`` (under the enclosing phase) of the current recording, if any."""
    costs = _CURRENT.get()
    if costs is None:
        yield
        return
    full = "/".join([*costs.stack, name])
    costs.stack.append(name)
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        costs.stack.pop()
        costs.add(full, time.perf_counter() - wall, time.process_time() - cpu)
