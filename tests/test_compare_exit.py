"""``compare``'s exit status, as scripts and CI read it (``diff``'s convention): 0 when no check finds the sides
to differ, 1 when one does (a planted porting bug from a backend's ``mutations.py``; with ``--weights native`` a
framework whose own draw has the wrong distribution), 2 on bad input. Every check feeds the one ``verdict`` and
``verdict_kind``."""

from __future__ import annotations

import json
import math

import pytest

from harness.commands.cli import main
from harness.parity import verdict

pytest.importorskip("torch")
pytest.importorskip("jax")

from harness.selfcheck import catalogue  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
XOR = ["--steps", "30", "--dtype", "float64", "--no-noise", "--quiet"]
NATIVE = ["mnist_relu_xavier", "--weights", "native", "--steps", "2", "--dtype", "float64", "--data", "mnist-5k",
          "--no-noise", "--quiet"]


def _mutation(name: str):
    return next(m for m in catalogue(("torch", "jax")) if m.name == name)


def _compare(args: list[str], tmp_path, capsys) -> tuple[int, dict, list[str]]:
    out = tmp_path / "compare.json"
    status = main(["compare", *args, "--out", str(out)])
    return status, json.loads(out.read_text()), capsys.readouterr().out.splitlines()


def test_correct_code_exits_0_and_a_planted_porting_bug_exits_1(monkeypatch, tmp_path, capsys):
    status, same, _ = _compare(["xor_mlp", *XOR], tmp_path, capsys)
    assert status == 0 and same["verdict_kind"] == "same math", same["verdict"]
    bug = _mutation("lr x 0.99")  # torch's optimiser at 0.99 of the declared learning rate
    bug.patch(monkeypatch)
    status, differs, lines = _compare([bug.lab, *XOR], tmp_path, capsys)
    assert status == 1 and differs["verdict_kind"] == "differs", differs["verdict"]
    assert lines[-1] == f"  verdict: {differs['verdict']}" and "update at step 0" in differs["verdict"]


def test_a_wrong_native_init_distribution_makes_the_verdict_differ(monkeypatch, tmp_path, capsys):
    """Glorot normal (the declared variance) where the lab declares Glorot uniform: the trained tiers see shared
    weights and pass; the native-init check fails, and so does the verdict."""
    status, same, lines = _compare(NATIVE, tmp_path, capsys)
    assert status == 0 and same["verdict_kind"] == "same math" and same["native_init"]["ok"], same["verdict"]
    assert same["verdict"].endswith("; native init as declared") and lines[-1].startswith("  verdict: same math")
    from torch_impl import models

    original = models.weight_distribution

    def glorot_normal(scheme: str, fan_in: int, fan_out: int) -> tuple[str, float]:
        kind, scale = original(scheme, fan_in, fan_out)
        return ("normal", scale / math.sqrt(3.0)) if kind == "uniform" else (kind, scale)

    monkeypatch.setattr(models, "weight_distribution", glorot_normal)
    status, result, lines = _compare(NATIVE, tmp_path, capsys)
    assert status == 1 and result["verdict_kind"] == "differs", result["verdict"]
    assert result["tiers"]["exact"]["ok"]  # the trained tier alone would have said "same math"
    assert result["verdict"].startswith("native init differs: torch dense") and "same math" in result["verdict"]
    assert verdict.brief(result).startswith("native init differs: torch dense")
    assert lines[-2].startswith("  native init differs: ") and lines[-1] == f"  verdict: {result['verdict']}"


def test_bad_input_exits_2(capsys):
    assert main(["compare", "no_such_lab"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


@pytest.mark.parametrize("kinds,status", [
    ("same math", 0), ("within rounding noise", 0), ("not judged", 0), ("differs", 1),
    ("beyond rounding noise", 1), (["same math", "within rounding noise"], 0), (["same math", "differs"], 1)])
def test_exit_status_of_each_verdict_kind(kinds, status):
    assert verdict.exit_status(kinds) == status


def test_the_help_documents_the_exit_status(capsys):
    for command in ("compare", "report", "selfcheck"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "exit status: 0 " in text and " 1 " in text and "2 bad input" in text, command
