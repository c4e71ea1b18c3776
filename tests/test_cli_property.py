"""The command line's contract, property-based (issue 24): every command's parser driven with generated option
values and output paths ends with exit status 0 or 2 (2: one ``error:`` line), never a traceback, and writes
nothing outside its output paths; an input that is refused leaves the current folder untouched.

The work itself (training, measuring) is stubbed: the contract is about what happens before it, and reaching
the stub means the command accepted its input. Each example runs in a fresh temporary current folder holding a
regular file, a FIFO and a symbolic link for the generated paths to hit.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from harness.commands.cli import main


class Reached(BaseException):
    """The stubbed work was reached: the command accepted its input (not an Exception: nothing swallows it)."""


_NUMBER = st.one_of(
    st.integers(-2**70, 2**70).map(str), st.integers(-3, 3000).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["0", "1", "-1", "1e23", "nan", "inf", "-inf", "", " ", "x", "0x10", "auto", "1_0",
                     "9" * 30, "1e-320"]),
)
_PATH = st.sampled_from(["", " ", "-", ".", "out", "new/deeper/r.json", "FILE", "FILE/x.json", "FIFO", "LINK",
                         "DANGLING", "a" * 300, "x/" + "b" * 256 + "/y.json", "/proc/dlzta.json", "ok.json",
                         "FIFO/x"])

_NUMERIC = {
    "run": ["--steps", "--epochs", "--log-every", "--seed", "--lr", "--dropout", "--batch-size", "--devices"],
    "compare": ["--threshold", "--exact-steps", "--trace-steps", "--steps", "--seed", "--devices"],
    "reproduce": ["--repeats", "--threads", "--steps", "--epochs"],
    "bench": ["--blocks", "--block-steps", "--warmup-blocks", "--fuse-steps", "--threads", "--overhead-rounds",
              "--batch-size", "--peak-repeats", "--threshold", "--retries"],
    "report": ["--threshold", "--steps", "--epochs", "--init-steps", "--threads"],
    "selfcheck": ["--threads"],
}
_PATHS = {"run": ["--out", "--config"], "compare": ["--out"], "reproduce": ["--out"],
          "bench": ["--out", "--markdown", "--github-action"], "report": ["--out"], "selfcheck": ["--out"]}
_FIXED = {"run": ["xor_mlp", "--framework", "torch"], "compare": ["xor_mlp"], "reproduce": ["--labs", "xor_mlp"],
          "bench": ["xor_mlp", "--frameworks", "torch"], "report": ["--labs", "xor_mlp"], "selfcheck": []}
_DEFAULT_OUT = {"report": "report"}


@st.composite
def command_lines(draw, command: str) -> tuple[str, list[str], list[str]]:
    """``command``, its argv and the output paths it names."""
    argv, outs = [command, *_FIXED[command]], []
    for option in draw(st.lists(st.sampled_from(_NUMERIC[command]), max_size=3, unique=True)):
        argv.append(f"{option}={draw(_NUMBER)}")
    for option in draw(st.lists(st.sampled_from(_PATHS[command]), max_size=2, unique=True)):
        path = draw(_PATH)
        argv.append(f"{option}={path}")
        if option != "--config":
            outs.append(path)
    if not any(a.startswith("--out=") for a in argv) and command in _DEFAULT_OUT:
        outs.append(_DEFAULT_OUT[command])
    return command, argv, outs


def _snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder`` (links not followed): its type, and a regular file's size and content."""
    seen = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root) / name
            st_ = os.lstat(path)
            content = path.read_bytes() if path.is_file() and not path.is_symlink() else None
            seen[str(path.relative_to(folder))] = (st_.st_mode >> 12, content)
    return seen


def _allowed(changed: str, outs: list[str]) -> bool:
    """Whether ``changed`` is one of the output paths (or under one, or a file written beside a prefix, or the
    target of the link the output names)."""
    for out in outs:
        if not out.strip():
            continue  # an empty path names nothing (it must be refused)
        out = os.path.normpath(out)
        if out == ".":
            return True  # the current folder itself is the output folder
        if out in ("LINK", "DANGLING"):
            out = {"LINK": "target.json", "DANGLING": "gone/made.json"}[out]
        if out and (changed == out or changed.startswith(out + "/") or changed.startswith(out + "-")
                    or out.startswith(changed + "/")):
            return True
    return False


@pytest.fixture
def stubbed(monkeypatch):
    """Every command's work raises Reached; the machine is never sampled (0.3 s a time)."""
    import harness.bench.command
    import harness.bench.scaling
    import harness.commands.parallel
    import harness.commands.reproduce
    import harness.parity.api
    import harness.report.compute
    import harness.report.job
    import harness.run.machine
    import harness.run.runner
    import harness.selfcheck.run

    def reached(*args, **kwargs):
        raise Reached

    for module, name in ((harness.run.runner, "run"), (harness.commands.parallel, "run_record"),
                         (harness.commands.parallel, "compare_record"), (harness.parity.api, "compare"),
                         (harness.commands.reproduce, "reproduce"), (harness.bench.command, "run"),
                         (harness.bench.scaling, "run"), (harness.selfcheck.run, "selfcheck"),
                         (harness.report.compute, "compute_lab"), (harness.report.compute, "compute_init_study"),
                         (harness.report.compute, "measure_peaks")):
        monkeypatch.setattr(module, name, reached)
    for module in (harness.run.machine, harness.report.job, harness.bench.scaling):
        monkeypatch.setattr(module, "machine_busy", lambda: (False, {}))
    monkeypatch.setenv("DLZTA_CACHE_DIR", tempfile.mkdtemp(prefix="dlzta-cache-"))


@pytest.mark.parametrize("command", sorted(_FIXED))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(data=st.data())
def test_every_command_line_exits_0_or_2_and_writes_only_its_outputs(stubbed, command, data):
    command, argv, outs = data.draw(command_lines(command))
    here = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        (cwd / "FILE").write_text("kept")
        (cwd / "target.json").write_text("{}")
        os.mkfifo(cwd / "FIFO")
        (cwd / "LINK").symlink_to("target.json")
        (cwd / "DANGLING").symlink_to("gone/made.json")
        before = _snapshot(cwd)
        err, out = io.StringIO(), io.StringIO()
        os.chdir(cwd)
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                status = main(argv)
        except Reached:
            status = None
        finally:
            os.chdir(here)
        after = _snapshot(cwd)
    text = err.getvalue()
    event(f"{command}: {'accepted' if status is None else f'exit {status}'}")
    assert "Traceback" not in text, (argv, text)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    if status is None:  # accepted: the work began; nothing but the outputs was touched
        assert all(_allowed(c, outs) for c in changed), (argv, changed)
        return
    assert status in (0, 2), (argv, status, text)
    if status == 2:
        lines = text.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, lines)
        assert changed == [], (argv, changed)  # refused: the current folder untouched
