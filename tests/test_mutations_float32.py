"""Float32-only and execution-only porting bugs (``tier="statistical"`` mutations of each backend's
``mutations.py``): the float64 exact tier cannot see them, so the statistical tier must catch each, naming the
step; the same settings unmutated (every execution mode they compare included) must pass. And ``dlzta
selfcheck``: its table, its closing line and its exit codes, on a small subset."""

from __future__ import annotations

import functools
import json
import re

import pytest

pytest.importorskip("torch")
pytest.importorskip("jax")

from harness import schemas  # noqa: E402
from harness.commands.cli import main  # noqa: E402
from harness.selfcheck import catalogue, tiers  # noqa: E402

FLOAT32 = tuple(m for m in catalogue(("torch", "jax")) if m.tier == "statistical")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@functools.cache
def _control(lab: str, overrides: tuple, sides: tuple | None) -> tiers.Finding:
    return tiers.statistical(lab, dict(overrides), sides)


def test_there_are_float32_and_execution_only_bugs_in_both_backends():
    assert len(FLOAT32) >= 4 and {m.backend for m in FLOAT32} == {"torch", "jax"}
    assert any(m.sides and m.sides[0].split(":")[0] == m.sides[1].split(":")[0] for m in FLOAT32)  # one mode only


@pytest.mark.parametrize("mutation", FLOAT32, ids=lambda m: m.name)
def test_float32_only_bug_is_caught_by_the_statistical_tier_alone(monkeypatch, mutation):
    control = _control(mutation.lab, tuple(sorted(mutation.overrides.items())), mutation.sides)
    assert not control.found, (mutation.name, "false alarm on correct code", control.text)
    mutation.patch(monkeypatch)
    found = tiers.statistical(mutation.lab, mutation.overrides, mutation.sides)
    assert found.found and "beyond rounding noise" in found.text, (mutation.name, found.text)
    assert re.search(mutation.expect, found.where), (mutation.name, found.where, found.text)
    exact = tiers.exact(mutation.lab, mutation.overrides, mutation.sides)  # float64: the bug is not there
    assert not exact.found, (mutation.name, "the exact tier sees it: not a float32-only bug", exact.text)


def test_selfcheck_prints_its_table_and_exits_0_when_all_is_caught(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DLZTA_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "selfcheck.json"
    assert main(["selfcheck", "--only", "lr x 0.99", "--threads", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"caught +exact +torch +lr x 0\.99 \[xor_mlp\]: dense\d/\w+ update at step 0", text), text
    assert "selfcheck (cpu, float32): 1 of 1 caught, 0 false alarms in 1 correct runs" in text
    record = json.loads(out.read_text())
    assert record["caught"] == record["judged"] == 1 and record["rows"][0]["control_ok"]
    schemas.validate("selfcheck", record)
    assert json.loads((tmp_path / "cache" / "selfcheck.json").read_text())["caught"] == 1  # what the report reads


def test_selfcheck_exits_1_on_a_miss_and_marks_float64_as_not_applicable(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DLZTA_CACHE_DIR", str(tmp_path))
    blind = tiers.Finding(False, "", "same math")
    monkeypatch.setitem(tiers.RUNNERS, "exact", lambda *a, **k: blind)  # a check that sees nothing
    assert main(["selfcheck", "--only", "lr x 0.99", "--threads", "1", "--quiet"]) == 1
    assert "0 of 1 caught" in capsys.readouterr().out
    assert main(["selfcheck", "--only", "bfloat16", "--dtype", "float64", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "not applicable (float64)" in text and "0 of 0 caught" in text


def test_selfcheck_bad_input_is_one_error_line(capsys):
    assert main(["selfcheck", "--only", "no such bug"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


def test_the_report_says_whether_a_selfcheck_ran(tmp_path, monkeypatch):
    from harness.report.job_sections import selfcheck_text
    from harness.selfcheck.run import latest, record_path

    monkeypatch.setenv("DLZTA_CACHE_DIR", str(tmp_path))
    assert latest() is None and selfcheck_text(latest()).startswith("parity self-test: not run on this machine")
    record_path().write_text(json.dumps({"device": "cpu", "dtype": "float32", "frameworks": ["torch", "jax"],
                                         "caught": 27, "judged": 27, "false_alarms": 0, "controls": 18,
                                         "when": "2026-12-02T13:00:00+00:00", "rows": []}))
    assert selfcheck_text(latest()) == ("parity self-test (`dlzta selfcheck`, cpu, float32, "
                                        "2026-12-02T13:00:00+00:00): 27 of 27 planted bugs caught, 0 false alarms "
                                        "in 18 correct runs; precision tier: not run (`dlzta selfcheck --tiers "
                                        "precision`)")
    record_path().write_text("{broken")
    assert latest() is None
