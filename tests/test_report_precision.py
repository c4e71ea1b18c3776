"""The report's precision section (harness.report.precision): the chosen lab trained again in each reduced
precision beside its own float32 run, the tier's verdict, the plot, the schema, the option and its errors, reuse."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from harness import schemas
from harness.commands.cli import main
from harness.report.precision import PRECISIONS

ONE = ["--labs", "mnist_batchnorm", "--steps", "30", "--data", "mnist-5k", "--no-init-study", "--no-html",
       "--no-noise", "--quiet"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The batch-norm lab for 30 steps, with the section by default (its default lab), run once."""
    out = tmp_path_factory.mktemp("precision") / "report"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        status = main(["report", "--out", str(out), *ONE])
    return out, status


def test_the_section_holds_every_framework_and_precision(report):
    out, status = report
    assert status == 0
    results = json.loads((out / "results.json").read_text())
    rec, lab = results["precision"], results["labs"]["mnist_batchnorm"]
    rows = rec["labs"]["mnist_batchnorm"]["rows"]
    fws = results["options"]["frameworks"]
    assert {(r["framework"], r["precision"]) for r in rows} == {(fw, p) for fw in fws
                                                               for p in ("float32", *PRECISIONS)}
    for row in rows:
        own = lab["runs"][row["framework"]]
        assert row["status"] == "ok" and 0.0 <= row["test_accuracy"] <= 1.0 and row["steps_per_s"] > 0
        assert row["speedup"] == pytest.approx(row["steps_per_s"] / own["timing"]["steps_per_s"])
        assert row["accuracy_cost"] == pytest.approx(own["final"]["test_accuracy"] - row["test_accuracy"])
        if row["precision"] == "float32":  # the lab's own run, not trained again
            assert row["test_accuracy"] == own["final"]["test_accuracy"]
            assert row["final_loss"] == own["final"]["train_loss"]  # under an epoch: the last step's loss
    tiers = rec["labs"]["mnist_batchnorm"]["tiers"]
    assert set(tiers) == set(PRECISIONS)
    assert all(t["verdict_kind"] == "follows policy" and t["verdict"].startswith(f"follows {p}")
               for p, t in tiers.items())
    assert rec["labs"]["mnist_batchnorm"]["steps"] == 30
    assert "precision section" in results["job"]["costs"]


def test_the_section_is_rendered_with_its_columns_and_plot(report):
    out = report[0]
    md = (out / "report.md").read_text()
    part = md.split("## Precision", 1)[1].split("\n## ", 1)[0]
    assert "| framework | precision | accuracy | final loss | steps/s | speed-up | verdict |" in part
    for p in PRECISIONS:
        assert f"`{p}`" in part and f"follows {p}" in part
    assert "(plots/precision.png)" in part
    assert (out / "plots" / "precision.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_block_validates_against_its_schemas(report):
    out = report[0]
    rec = json.loads((out / "labs" / "precision.json").read_text())
    assert rec["$schema"] == schemas.schema_id("precision")
    schemas.validate("precision", rec)
    results = json.loads((out / "results.json").read_text())
    schemas.validate("results", results)
    broken = {**rec, "labs": {"mnist_batchnorm": {**rec["labs"]["mnist_batchnorm"], "rows": [{"precision": "x"}]}}}
    assert schemas.errors("precision", broken)


def test_a_rerun_reuses_the_section_and_a_new_lab_key_recomputes_it(report, tmp_path):
    import shutil

    out = tmp_path / "report"
    shutil.copytree(report[0], out)
    before = json.loads((out / "labs" / "precision.json").read_text())
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["report", "--out", str(out), *ONE[:-1]]) == 0
    line = next(x for x in buf.getvalue().splitlines() if "precision section" in x)
    assert "reused" in line
    assert json.loads((out / "results.json").read_text())["precision"]["key"] == before["key"]
    from harness.report.options import JobOptions
    from harness.report.precision import key

    a = JobOptions(labs=("mnist_batchnorm",), steps=30)
    assert key(a) != key(JobOptions(labs=("mnist_batchnorm",), steps=31))  # the lab's key is in it


def test_none_turns_the_section_off(tmp_path):
    out = tmp_path / "r"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["report", "--out", str(out), *ONE[:3], "10", *ONE[4:], "--precision-labs", "none"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["precision"] is None and results["options"]["precision_labs"] == []
    assert "## Precision" not in (out / "report.md").read_text()
    assert not (out / "plots" / "precision.png").exists() and not (out / "labs" / "precision.json").exists()


@pytest.mark.parametrize("value,fragment", [
    ("mnist_batchnorn", "unknown lab 'mnist_batchnorn'"),
    ("mnist_softmax", "--precision-labs mnist_softmax: not among the job's labs"),
])
def test_a_bad_precision_lab_is_a_one_line_error(tmp_path, capsys, value, fragment):
    assert main(["report", "--out", str(tmp_path / "r"), *ONE, "--precision-labs", value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
    assert not (tmp_path / "r" / "results.json").exists()


def test_a_lab_that_evaluates_every_epoch_is_cut_at_the_sections_epoch(tmp_path):
    """mnist_batchnorm for 4 epochs: the section trains 3 (EPOCHS) and takes the float32 column from the lab's
    own run after epoch 3, which is what a float32 run of 3 epochs gives (not retrained in the job)."""
    import dataclasses

    from harness.labs import get_lab
    from harness.report.options import JobOptions
    from harness.report.plan import run_options
    from harness.report.precision import EPOCHS
    from harness.run.machine import threads_set
    from harness.run.runner import run

    out = tmp_path / "r"
    argv = ["report", "--out", str(out), "--labs", "mnist_batchnorm", "--epochs", str(EPOCHS + 1), "--data",
            "mnist-5k", "--no-init-study", "--no-html", "--no-noise", "--quiet", "--frameworks", "torch"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    section = results["precision"]["labs"]["mnist_batchnorm"]
    assert section["epochs"] == EPOCHS and section["steps"] == EPOCHS * 125
    own = results["labs"]["mnist_batchnorm"]["runs"]["torch"]
    f32 = next(r for r in section["rows"] if r["precision"] == "float32")
    assert f32["test_accuracy"] == own["evals"][str(EPOCHS * 125)]["test"]["accuracy"]
    assert f32["final_loss"] == own["epoch_cost"][EPOCHS - 1] and len(own["epoch_cost"]) == EPOCHS + 1
    lab = get_lab("mnist_batchnorm")
    opts = JobOptions(labs=("mnist_batchnorm",), frameworks=("torch",), epochs=EPOCHS, data="mnist-5k")
    with threads_set("torch", results["labs"]["mnist_batchnorm"]["threads"]["torch"]):  # the job's count: torch's
        short = run(lab, "torch", dataclasses.replace(run_options(lab, opts)))  # batch-norm sums depend on it
    assert short["final"]["test_accuracy"] == f32["test_accuracy"] and short["epoch_cost"][-1] == f32["final_loss"]
