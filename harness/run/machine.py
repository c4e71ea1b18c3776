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
import time
from collections.abc import Iterator

from harness import backend as backends

SMALL_TASKS = ("xor", "gates")  # a handful of examples per step: one thread is fastest


def loadavg() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


BUSY_SHARE = 0.5  # other processes' CPU use, as a share of the cores, from which the machine counts as busy
SAMPLE_S = 0.3  # the contention sample


def _proc_stat() -> tuple[float, float] | None:
    """Seconds the whole machine has spent busy (user, nice, system, irq, softirq, steal) and in all, since boot,
    from ``/proc/stat`` (None where there is none)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    idle = sum(fields[3:5])  # idle, iowait
    busy = sum(fields[:3]) + sum(fields[5:8])  # (guest time is already counted in user)
    return busy / tick, (busy + idle) / tick


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def contention(sample_s: float = SAMPLE_S) -> float | None:
    """Cores' worth of CPU that *other* processes used over a ``sample_s`` sample: the machine's busy time (steal
    included) less this process's own, per second of the sample. None where ``/proc/stat`` cannot be read."""
    before, own = _proc_stat(), _own_cpu()
    if before is None:
        return None
    wall = time.perf_counter()
    time.sleep(sample_s)
    after, own_after, wall = _proc_stat(), _own_cpu(), time.perf_counter() - wall
    if after is None or wall <= 0:
        return None
    return max(0.0, (after[0] - before[0] - (own_after - own)) / wall)


def machine_busy(sample_s: float = SAMPLE_S) -> tuple[bool, dict]:
    """Whether other work occupies ``BUSY_SHARE`` of the cores or more *now*, and what was measured: the CPU time of
    other processes over a short sample (:func:`contention`), so that work which has just ended (the set-up's
    installs) raises no alarm, as a one-minute load average would; where that cannot be read, the 1-minute load
    average stands in (``method`` says which)."""
    cores = os.cpu_count() or 1
    load = loadavg()
    other = contention(sample_s)
    if other is not None:
        rec = {"method": "other processes' CPU time", "other_cores": round(other, 2), "sample_s": sample_s}
        busy = other >= BUSY_SHARE * cores
    else:
        rec = {"method": "1-minute load average", "other_cores": None if load is None else load[0]}
        busy = load is not None and load[0] >= BUSY_SHARE * cores
    return busy, {**rec, "cores": cores, "busy": busy, "loadavg": load}


def busy_text(measured: dict) -> str:
    """What :func:`machine_busy` measured, in words."""
    if measured.get("method") == "other processes' CPU time":
        return (f"other processes used {measured['other_cores']:.1f} of {measured['cores']} cores over "
                f"{measured['sample_s']:g} s")
    load = measured.get("loadavg")
    return f"load average {load[0]:.1f} on {measured['cores']} cores" if load else "load unknown"


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


def threads_note(frameworks: tuple[str, ...] | list[str], setting: str, device: str = "cpu") -> str | None:
    """A one-line note when a thread count was given (``--threads N``) but none of ``frameworks`` sets its
    threads per task on ``device`` (the option is then ignored, and said so); None otherwise."""
    if setting == "auto" or any(threads_for(fw, "mnist", False, setting, device) is not None for fw in frameworks):
        return None
    own = "sets its" if len(frameworks) == 1 else "set their"
    why = "threads are set on a CPU only" if device != "cpu" else f"{', '.join(frameworks)} {own} own threads"
    return f"--threads {setting} does not apply ({why}); ignored"


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
