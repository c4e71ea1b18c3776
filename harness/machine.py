"""Where a run ran, and the thread policy: the CPU/GPU model and the thread counts every result records, and the
intra-op threads each backend gets per task (set and restored through the backend, never by importing it here).

A backend's ``thread_policy`` (``harness.backend.BackendInfo``) says whether its threads can be set per task
("per_task": one thread for the 4-example XOR nets, where more only add synchronisation, every core for MNIST)
or are sized once at start-up ("fixed": recorded only).
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
from collections.abc import Iterator

from harness import backend as backends

SMALL_TASKS = ("xor", "gates")  # a handful of examples per step: one thread is fastest


def loadavg() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_busy() -> tuple[bool, list[float] | None]:
    """Whether other work already occupies half the cores or more (1-minute load average), and the averages."""
    load = loadavg()
    return (load is not None and load[0] >= (os.cpu_count() or 1) / 2), load


def default_threads(backend: str, task: str) -> int | None:
    """The intra-op threads of ``backend`` for a ``task`` on an idle CPU (None: not settable, leave them)."""
    if backends.info(backend).thread_policy != "per_task":
        return None
    return 1 if task in SMALL_TASKS else os.cpu_count()


def threads_for(backend: str, task: str, busy: bool, setting: str | int = "auto", device: str = "cpu") -> int | None:
    """The intra-op threads ``backend`` should run ``task`` with (None: leave them): ``setting`` a count, or
    "auto": :func:`default_threads`, but one on a machine already ``busy`` (a thread pool sharing its cores
    with other work waits at every parallel region, and runs ten times slower or worse). Only on a CPU, and
    only for backends whose threads can be set per task."""
    if device != "cpu" or backends.info(backend).thread_policy != "per_task":
        return None
    if setting != "auto":
        return int(setting)
    return 1 if busy else default_threads(backend, task)


@contextlib.contextmanager
def threads_set(backend: str, count: int | None) -> Iterator[None]:
    """Run the body with ``count`` intra-op threads in ``backend`` (None: as they are), restored afterwards."""
    if count is None:
        yield
        return
    module = backends.load(backend)
    before = module.thread_count()
    module.configure_threads(count)
    try:
        yield
    finally:
        if before is not None:
            module.configure_threads(before)


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else ``platform.processor()``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def thread_settings(backend: str | None = None) -> dict:
    """The thread counts in effect now: every loaded backend's intra-op count (``backend`` loaded if named) and
    the environment that sizes thread pools at start-up (XLA_FLAGS, OMP_NUM_THREADS, ...)."""
    out: dict = {}
    for name in backends.names():
        if name == backend or backends.is_loaded(name):
            out[name] = backends.load(name).thread_count()
    env = ("XLA_FLAGS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    out.update({k: os.environ[k] for k in env if k in os.environ})
    return out


def machine_record(backend: str | None = None, device: str = "cpu") -> dict:
    """What a result says about the machine: CPU model and count, platform, thread counts, load average, and for
    a GPU the backend's own description of it."""
    rec = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
           "python": platform.python_version(), "threads": thread_settings(backend), "loadavg": loadavg()}
    if backend is not None and device != "cpu":
        rec["device"] = backends.load(backend).device_info(device)
    return rec
