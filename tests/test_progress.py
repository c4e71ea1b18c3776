"""The progress display: live only on a terminal and when not quiet; ETA from the pace; permanent lines."""

from __future__ import annotations

import io
import time

import pytest

from harness.commands import progress as progress_mod
from harness.commands.progress import Progress, clock


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    """A perf_counter the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake_time(monkeypatch):
    t = Clock()
    monkeypatch.setattr(progress_mod.time, "perf_counter", t)
    return t


def test_clock():
    assert [clock(s) for s in (0, 59.4, 61, 3599, 3600, 7322, -3)] == [
        "0:00", "0:59", "1:01", "59:59", "1:00:00", "2:02:02", "0:00"]


def test_silent_when_quiet_or_not_a_terminal(capsys):
    for stream, quiet in ((io.StringIO(), False), (Terminal(), True)):
        with Progress(3, "job", quiet=quiet, stream=stream, interval=0.01) as p:
            p.begin("a")
            time.sleep(0.05)
            p.advance()
            p.print("a done")
        assert not p.live and stream.getvalue() == ""
    assert capsys.readouterr().out == "a done\n"  # printed once: not when quiet


def test_live_line_on_a_terminal(capsys):
    term = Terminal()
    with Progress(2, "compare", stream=term, interval=0.01) as p:
        p.begin("xor_mlp")
        deadline = time.monotonic() + 5
        while "xor_mlp" not in term.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        p.print("xor_mlp: agree")
    shown = term.getvalue()
    assert "compare  xor_mlp 0:0" in shown and "0/2" in shown and "ETA ?" in shown
    assert shown.endswith("\r\033[K")  # erased at the end
    assert capsys.readouterr().out == "xor_mlp: agree\n"


def test_eta_from_counted_items(fake_time):
    p = Progress(4, stream=io.StringIO())
    assert p.eta() is None
    p.begin("a")
    fake_time.now += 10
    p.advance()
    assert p.eta() == pytest.approx(30)  # 10 s per item, 3 left
    p.begin("b")
    fake_time.now += 4
    assert p.eta() == pytest.approx(26)  # 0.4 of b done
    fake_time.now += 50  # b takes longer than the pace says: it counts as at most one item
    assert p.eta() == pytest.approx(20)


def test_eta_from_estimated_seconds(fake_time):
    p = Progress(100, stream=io.StringIO(), seconds=True)
    assert p.eta() == pytest.approx(100)  # the estimate, before any pace
    p.advance(0)  # done without work (reused): no pace
    p.begin("a", 20)
    fake_time.now += 40
    p.advance(20)
    assert p.pace() == pytest.approx(2.0) and p.eta() == pytest.approx(160)
    fake_time.now += 30  # time between pieces does not count
    p.begin("b", 80)
    fake_time.now += 1000
    assert p.pace() == pytest.approx(2.0)
    assert p.eta() == pytest.approx(0)
    p.advance(10)
    assert p.pace() == pytest.approx(4.0)  # an estimate is trusted to within a factor of four
    assert "about" not in p.line() and "30%" in p.line()
