"""The busy-machine rule measures other processes' CPU use now (not a load average that work which has just ended
has raised): an idle machine is not busy, a machine whose cores another process keeps spinning is, and the report
says what was measured."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import pytest

from harness.run import machine


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.mark.skipif(machine.contention(0.01) is None, reason="no /proc/stat here")
def test_other_processes_spinning_make_the_machine_busy():
    cores = os.cpu_count() or 1
    procs = [mp.get_context("spawn").Process(target=_spin, args=(3.0,)) for _ in range(cores)]
    for p in procs:
        p.start()
    try:
        time.sleep(1.0)  # the children started (spawn imports Python) and are spinning
        busy, measured = machine.machine_busy(0.5)
    finally:
        for p in procs:
            p.terminate()
            p.join()
    assert busy and measured["method"] == "other processes' CPU time"
    assert measured["other_cores"] >= machine.BUSY_SHARE * cores
    assert "other processes used" in machine.busy_text(measured)


def test_own_work_does_not_count_as_contention(monkeypatch):
    """All the machine's busy time in the sample was this process's own: no contention."""
    clock = iter([(100.0, 1000.0), (101.5, 1002.0)])
    own = iter([5.0, 6.5])
    monkeypatch.setattr(machine, "_proc_stat", lambda: next(clock))
    monkeypatch.setattr(machine, "_own_cpu", lambda: next(own))
    assert machine.contention(0.01) == 0.0


def test_falls_back_to_the_load_average_and_says_so(monkeypatch):
    monkeypatch.setattr(machine, "_proc_stat", lambda: None)
    monkeypatch.setattr(machine, "loadavg", lambda: [99.0, 1.0, 1.0])
    busy, measured = machine.machine_busy(0.01)
    assert busy and measured["method"] == "1-minute load average" and "load average 99.0" in machine.busy_text(measured)
