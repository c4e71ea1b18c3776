"""``dlzta selfcheck``'s precision part (harness/selfcheck/precision.py): a planted precision-placement bug on one
side is reported caught with that side named, correct code raises no alarm, a mutation a backend does not declare
is a one-line error, and the record validates against selfcheck.schema.json. A handful of cheap tier runs (the
precision tier of xor_mlp takes ~1 s); the whole part is `dlzta selfcheck --tiers precision`."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("jax")

from harness import schemas  # noqa: E402
from harness.commands.cli import main  # noqa: E402
from harness.errors import UsageError  # noqa: E402
from harness.selfcheck import precision as part  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIDES = ["torch", "jax"]


@pytest.mark.parametrize(("mutation", "policy", "side"), [
    ("no_master", "mixed_bfloat16", "jax"),
    ("no_skip", "mixed_float16", "torch"),
])
def test_a_planted_precision_bug_is_caught_with_its_side_named(mutation: str, policy: str, side: str) -> None:
    row = part.planted(part.prepared("xor_mlp").spec, policy, SIDES, mutation, side)
    assert row["caught"] and row["side_named"], row["verdict"]
    assert row["verdict"].startswith(f"differs: {side}: ") and row["mutation"] == mutation


def test_correct_code_raises_no_alarm_on_any_side() -> None:
    row = part.control(part.prepared("xor_mlp").spec, "mixed_float16", SIDES)
    assert row["verdict_kind"] == "follows policy" and row["follows"] == {"torch": True, "jax": True}, row["verdict"]
    sec = part.section([], [row], SIDES, 0.0)
    assert sec["correct_sides"] == 2 and sec["false_alarms"] == 0 and part.ok(sec)


def test_a_missed_or_unnamed_bug_or_an_alarm_fails_the_part() -> None:
    """The counts the exit status reads: a bug caught on the wrong side is not a pass, nor a control that differs."""
    caught = {"caught": True, "side_named": True}
    assert part.ok(part.section([caught], [], SIDES, 0.0))
    assert not part.ok(part.section([{"caught": True, "side_named": False}], [], SIDES, 0.0))
    assert not part.ok(part.section([{"caught": False, "side_named": False}], [], SIDES, 0.0))
    alarm = {"follows": {"torch": True, "jax": False}}
    assert not part.ok(part.section([caught], [alarm], SIDES, 0.0))


def test_each_mutation_runs_on_a_lab_where_it_can_act() -> None:
    """Batch-norm statistics need batch norm, optimizer state an optimizer that keeps some, an input rounded to
    bfloat16 inputs that bfloat16 changes (not XOR's 0/1); the others take the cheapest lab."""
    assert part.lab_for("bn_state_low") == "mnist_batchnorm"
    assert part.lab_for("opt_state_low") == "mnist_softmax"
    assert part.lab_for("input_bf16") == "mnist_softmax"
    assert part.lab_for("loss_low") == part.LABS[0] == "xor_mlp"
    planned = part.plan(("torch", "jax"))
    assert {(m, s) for m, s, _, _ in planned} >= {("loss_low", "torch"), ("loss_low", "jax")}
    assert all(lab is not None for *_, lab in planned)


def test_a_mutation_the_backend_does_not_declare_is_a_one_line_error(capsys) -> None:
    with pytest.raises(UsageError, match="torch has no precision mutation 'no_such_bug'; choose from loss_low"):
        part.planted(part.prepared("xor_mlp").spec, "bfloat16", SIDES, "no_such_bug", "torch")
    assert main(["selfcheck", "--tiers", "precision", "--only", "no_such_bug"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--tiers precision" in err[0]
    assert main(["selfcheck", "--tiers", "precision,nonsense"]) == 2
    assert "unknown tier" in capsys.readouterr().err


def test_selfcheck_precision_prints_its_rows_and_writes_a_valid_record(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("DLZTA_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "selfcheck.json"
    assert main(["selfcheck", "--tiers", "precision", "--only", "growth", "--threads", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for side in SIDES:
        assert f"caught   precision   {side:<6} growth_schedule (mixed_float16) [xor_mlp]: differs: {side}: " in text
    assert "precision: 2 of 2 planted bugs caught, 2 with the side named; 6 correct-code controls, 0 false alarms" \
        in text and "selfcheck (cpu" not in text  # the catalogue's checks were not chosen
    record = json.loads(out.read_text())
    assert next(iter(record)) == "$schema" and record["$schema"] == schemas.schema_id("selfcheck")
    schemas.validate("selfcheck", record)
    assert record["tiers"] == ["precision"] and record["judged"] == 0
    sec = record["precision"]
    assert (sec["judged"], sec["caught"], sec["side_named"], sec["correct_sides"]) == (2, 2, 2, 6)
    assert {c["policy"] for c in sec["controls"]} == {"bfloat16", "mixed_bfloat16", "mixed_float16"}
    cached = json.loads((tmp_path / "cache" / "selfcheck.json").read_text())
    schemas.validate("selfcheck", cached)
    from harness.report.job_sections import selfcheck_text
    from harness.selfcheck.run import latest

    assert selfcheck_text(latest()).endswith("precision tier: 2 of 2 planted precision bugs caught, 2 with the side "
                                             "named, 0 false alarms in 6 correct-code controls")
    bad = {**record, "precision": {**sec, "caught": "2"}}
    with pytest.raises(schemas.SchemaError, match="precision.caught"):
        schemas.validate("selfcheck", bad)


def test_off_the_cpu_the_precision_part_is_not_applicable_rather_than_judged() -> None:
    """The emulation runs on the cpu: elsewhere each row says so and nothing is counted as caught or missed."""
    sec = part.selfcheck(("torch", "jax"), only="no_skip", device="gpu")
    assert [r["side"] for r in sec["rows"]] == ["torch", "jax"]
    assert all(r["status"].startswith("not applicable (gpu") and "caught" not in r for r in sec["rows"])
    assert (sec["judged"], sec["correct_sides"]) == (0, 0) and part.ok(sec)
