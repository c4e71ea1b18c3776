"""The live progress line of ``compare``, ``reproduce`` and ``bench``: on stderr when it is a terminal, never when
it is a file or a pipe, nor under ``--quiet``; the results on stdout either way."""

from __future__ import annotations

import importlib
import io
import re
import sys
import time

import pytest

from harness.commands import reproduce as reproduce_mod
from harness.commands.cli import main
from harness.parity import api as parity_api

bench_measure = importlib.import_module("harness.bench.measure")  # the module (``harness.bench.measure``: a function)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# command line, the function slowed past the live line's one-second tick, what the line names, what stdout holds,
# the unit of the count
COMMANDS = {
    "compare": (["compare", "xor_mlp", "--steps", "20"], (parity_api, "statistical_tier"),
                "compare xor_mlp  statistical tier", "verdict:", "steps"),
    "reproduce": (["reproduce", "--labs", "xor_mlp", "--frameworks", "jax", "--steps", "20"],
                  (reproduce_mod, "run_lab"), "reproduce  xor_mlp [jax]", "total:", "runs"),
    "bench": (["bench", "xor_mlp", "--frameworks", "jax", "--modes", "fused", "--blocks", "1", "--block-steps",
               "10", "--warmup-blocks", "0", "--overhead-rounds", "0", "--peak-repeats", "1"],
              (bench_measure, "measure"), "bench  xor_mlp jax cpu fused", "steps/s", "workloads"),
}


@pytest.mark.parametrize("stream", ["terminal", "pipe", "quiet terminal"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_progress_line_only_on_a_terminal(command, stream, monkeypatch, capsys):
    argv, (module, name), live, result, unit = COMMANDS[command]
    real = getattr(module, name)

    def slow(*args, **kwargs):
        time.sleep(1.3)
        return real(*args, **kwargs)

    if stream == "terminal":  # (a live line, even one never drawn, is erased at the end: "\r\033[K")
        monkeypatch.setattr(module, name, slow)
    err = Terminal() if "terminal" in stream else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert main(argv + (["--quiet"] if stream == "quiet terminal" else [])) == 0
    assert result in capsys.readouterr().out
    if stream == "terminal":
        assert "\r\033[K" + live in err.getvalue() and re.search(rf"\d+/\d+ {unit}  elapsed 0:0", err.getvalue())
        assert err.getvalue().endswith("\r\033[K")  # erased at the end
    else:
        assert "\r" not in err.getvalue() and "elapsed" not in err.getvalue()
