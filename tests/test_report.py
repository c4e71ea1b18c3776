"""The main job (``dlzta report``): files, their contents, resume, interruption, crashes and bad input."""

from __future__ import annotations

import json
import os
import re
import shutil

import numpy as np
import pytest

from harness import report
from harness.commands.cli import main
from harness.parity.verdict import brief
from harness.report import compute as report_compute
from harness.report.doc import Doc

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SMALL = ["--labs", "xor_mlp,mnist_batchnorm", "--steps", "300", "--epochs", "2", "--data", "mnist-5k",
         "--init-steps", "20"]
TINY = ["--labs", "xor_perceptron,xor_mlp", "--steps", "50", "--no-init-study", "--no-html", "--no-noise"]


@pytest.fixture(scope="module")
def small_report(tmp_path_factory):
    """One small job (an XOR lab, the batch-norm lab for two epochs, a short init study), run once."""
    out = tmp_path_factory.mktemp("report") / "report"
    capture = tmp_path_factory.mktemp("log") / "stdout"
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        status = main(["report", "--out", str(out), "--quiet", *SMALL])
    capture.write_text(buf.getvalue())
    return out, status, buf.getvalue()


def _row(markdown: str, lab: str, table: int = 0, below: int = 0) -> list[str]:
    """The cells of ``lab``'s first row in summary table ``table`` (0: beside the course, 1: parity and speed),
    or of the row ``below`` rows under it (a lab's next figure)."""
    lines = markdown.split("## xor_mlp")[0].splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(f"| [{lab}](#{lab})")]
    if len(starts) <= table:
        raise AssertionError(f"no summary row for {lab} in table {table}")
    return [c.strip() for c in lines[starts[table] + below].strip("|").split("|")]


def _close(cell: str, value: float) -> bool:
    """A printed number (4 significant digits) matches the measured one."""
    printed = float(cell.split()[0].replace(",", ""))
    return abs(printed - value) <= 5e-4 * abs(value) + 1e-12


def test_job_writes_every_file(small_report):
    out, status, log = small_report
    assert status == 0
    for name in ("report.md", "report.html", "results.json", "labs/xor_mlp.json", "labs/mnist_batchnorm.json",
                 "labs/init_study.json"):
        assert (out / name).is_file(), name
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert pngs == ["init_study.png", "mnist_batchnorm.png", "mnist_batchnorm_epochs.png", "precision.png",
                    "throughput.png", "xor_mlp.png"]  # precision: the section's default lab is mnist_batchnorm
    assert not list(out.rglob("*.tmp")), "a temporary file was left behind"
    umask = os.umask(0o022)
    os.umask(umask)
    assert (out / "report.html").stat().st_mode & 0o777 == 0o666 & ~umask  # not the temporary file's 0600
    # --quiet: nothing but the final summary line
    assert log.strip().count("\n") == 0 and log.startswith("report: complete")
    assert ": 2 labs: 2 within rounding noise; " in log  # the verdicts counted by kind, not by their figures


def test_every_json_file_validates_against_its_schema(small_report):
    from harness import schemas

    out = small_report[0]
    for path, kind in [("results.json", "results"), ("labs/xor_mlp.json", "lab"), ("labs/mnist_batchnorm.json", "lab"),
                       ("labs/init_study.json", "init-study"), ("labs/precision.json", "precision")]:
        record = json.loads((out / path).read_text())
        assert record["$schema"] == schemas.schema_id(kind), path
        schemas.validate(kind, record)
    native = json.loads((out / "labs" / "xor_mlp.json").read_text())["native"]["torch"]
    schemas.validate("run", native)


def test_images_are_valid_pngs(small_report):
    import matplotlib.image

    out = small_report[0]
    for path in (out / "plots").glob("*.png"):
        assert path.read_bytes()[:8] == PNG_MAGIC, path
        image = matplotlib.image.imread(path)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 400, path
        assert float(np.std(image)) > 0.01, f"{path} is blank"


def test_tables_hold_the_measured_numbers(small_report):
    out = small_report[0]
    results = json.loads((out / "results.json").read_text())
    md = (out / "report.md").read_text()
    assert results["job"]["status"] == "complete"
    assert list(results["labs"]) == ["xor_mlp", "mnist_batchnorm"]
    for lab in ("xor_mlp", "mnist_batchnorm"):
        rec = results["labs"][lab]
        assert rec == json.loads((out / "labs" / f"{lab}.json").read_text())
        assert rec["status"] == "ok"
        torch_run, jax_run = rec["runs"]["torch"], rec["runs"]["jax"]
        assert torch_run["steps"][-1] + 1 == (300 if lab == "xor_mlp" else 250)
        # beside the course, like with like: the course's step-10000 training loss beside our last step's (the
        # run is shortened); its epoch-10 validation loss beside our last epoch's, not a training loss
        cells = _row(md, lab)
        second = _row(md, lab, below=1)
        if lab == "xor_mlp":
            assert cells[1:3] == ["training loss at step 10000 (ours: step 299)", "0.001235"]
            assert _close(cells[3], torch_run["loss"][-1]) and _close(cells[4], jax_run["loss"][-1])
            assert second[1:3] == ["training-set accuracy after step 10000 (ours: after step 299)", "1"]
            assert _close(second[3], torch_run["final"]["train_accuracy"])
        else:
            assert cells[1:3] == ["BN: validation loss, epoch 10 (ours: epoch 2)", "0.09259"]
            assert second[1:3] == ["no BN: validation loss, epoch 10 (ours: epoch 2)", "0.1675"]
            for i, run in ((3, torch_run), (4, jax_run)):
                assert _close(cells[i], run["epochs"][1]["bn"]["valid_loss"])
                assert _close(second[i], run["epochs"][1]["plain"]["valid_loss"])
        # lab, max rel diff, first step, verdict, speeds
        cells = _row(md, lab, 1)
        assert _close(cells[1], rec["parity"]["max_rel_diff"])
        # correct code, float32: same math, and within the one-ulp twins' band; the cell gives the key figure
        assert rec["parity"]["verdict_kind"] == "within rounding noise", rec["parity"]["verdict"]
        assert rec["parity"]["tiers"]["exact"]["ok"] and rec["parity"]["verdict"].startswith("same math (float64")
        assert cells[3] == rec["parity"]["tiers"]["ensemble"]["text"] == brief(rec["parity"])
        for cell, run in ((cells[4], torch_run), (cells[5], jax_run)):  # steps/s: whole numbers from 100 up
            printed, value = float(cell.split()[0].replace(",", "")), run["timing"]["steps_per_s"]
            assert abs(printed - value) <= max(0.5, 5e-3 * value), (cell, value)
        pct = re.search(r"\(([\d.e+-]+)%\)", cells[5]).group(1)
        gflops = rec["peak"]["jax"]["gflops"]
        assert rec["peak"] == results["peak"]
        want = 100 * rec["flops_per_step"] * jax_run["timing"]["steps_per_s"] / (gflops * 1e9)
        assert abs(float(pct) - want) <= 0.05 * want  # printed to two significant digits
        assert len(rec["per_step"]["rel_diff"]) == torch_run["steps"][-1] + 1
    # machine-readable summary agrees with the runs
    summary = {row["lab"]: row for row in results["summary"]}
    torch_final = results["labs"]["xor_mlp"]["runs"]["torch"]["final"]
    assert summary["xor_mlp"]["torch"]["train_loss"] == torch_final["train_loss"]


def test_course_reference_and_native_run(small_report):
    out = small_report[0]
    rec = json.loads((out / "labs" / "xor_mlp.json").read_text())
    native = rec["native"]["torch"]
    assert native["weights"] == "native"
    # torch's native init draws the same weights as the shared init: the same trajectory, bit for bit
    assert native["loss"] == rec["runs"]["torch"]["loss"]
    assert native["loss"][0] == pytest.approx(rec["reference"]["loss"]["0"], rel=1e-6)
    md = (out / "report.md").read_text()
    section = md.split('<a id="xor_mlp"></a>')[1].split("<a id=")[0]
    assert "| 0 | 0.74340731 |" in section  # the course's step-0 loss, next to ours
    assert "![xor_mlp loss and parity](plots/xor_mlp.png)" in section


def test_batchnorm_section_has_per_epoch_records(small_report):
    out = small_report[0]
    rec = json.loads((out / "labs" / "mnist_batchnorm.json").read_text())
    md = (out / "report.md").read_text()
    section = md.split('<a id="mnist_batchnorm"></a>')[1].split("<a id=")[0]
    header = ("| epoch | BN train loss | BN train acc | BN valid loss | BN valid acc | no BN train loss | "
              "no BN train acc | no BN valid loss | no BN valid acc |")
    tables = section.split(header)
    assert len(tables) == 3, "one per-epoch table per framework"
    for fw, table in zip(("torch", "jax"), tables[1:]):
        epochs = rec["runs"][fw]["epochs"]
        assert [row["epoch"] for row in epochs] == [1, 2]
        evals = rec["runs"][fw]["evals"]
        assert epochs[1]["bn"]["valid_acc"] == evals["250"]["test"]["accuracy"]
        for row in epochs:
            line = next(r for r in table.splitlines() if r.startswith(f"| {row['epoch']} |"))
            cells = [c.strip() for c in line.strip("|").split("|")][1:]
            values = [row[m][k] for m in ("bn", "plain") for k in ("train_loss", "train_acc", "valid_loss",
                                                                   "valid_acc")]
            assert len(cells) == 8 and all(_close(c, v) for c, v in zip(cells, values)), (cells, values)
    assert "plots/mnist_batchnorm_epochs.png" in section
    assert rec["companion_parity"]["model"] == "plain"
    assert len(rec["per_step"]["companion_rel_diff"]) == 250


def test_init_study(small_report):
    out = small_report[0]
    study = json.loads((out / "results.json").read_text())["init_study"]
    assert study["steps"] == 20
    assert set(study["runs"]) == set(report.INIT_STUDY_SCHEMES)
    # N(0, 1) weights start the 784-256-256-10 net at a far higher loss than any scaled init
    first = {k: r["loss"][0] for k, r in study["runs"].items()}
    assert first["normal"] > 10 * max(v for k, v in first.items() if k != "normal")
    native = study["native_init"]  # every framework's own draw of every study scheme, tested (initcheck)
    from harness.report.options import INIT_STUDY_LABS

    schemes = [s for s in report.INIT_STUDY_SCHEMES if s not in INIT_STUDY_LABS]  # (RBM pre-training: its own lab)
    assert native["ok"] and list(native["text"]) == schemes and "rbm_pretrained" in study["runs"], native
    assert f"draw {', '.join(f'`{s}`' for s in schemes)} as declared" in (out / "report.md").read_text()


def test_html_is_self_contained(small_report):
    out = small_report[0]
    page = (out / "report.html").read_text()
    images = re.findall(r'<img src="([^"]*)"', page)
    assert len(images) == 6 and all(src.startswith("data:image/png;base64,") for src in images)  # + precision
    assert "<table>" in page and "xor_mlp" in page


def test_rerun_reuses_finished_labs(small_report, tmp_path, monkeypatch, capsys):
    out = tmp_path / "report"
    shutil.copytree(small_report[0], out)
    before = json.loads((out / "labs" / "xor_mlp.json").read_text())

    def no_training(*args, **kwargs):
        raise AssertionError("a finished lab was trained again")

    monkeypatch.setattr(report_compute, "compute_lab", no_training)
    monkeypatch.setattr(report_compute, "compute_init_study", no_training)
    assert main(["report", "--out", str(out), *SMALL]) == 0
    log = capsys.readouterr().out
    assert log.count("reused") >= 3
    results = json.loads((out / "results.json").read_text())
    assert results["job"]["reused"] == ["xor_mlp", "mnist_batchnorm"] and results["job"]["computed"] == []
    assert results["labs"]["xor_mlp"] == before


def test_interrupted_job_keeps_finished_labs_and_resumes(tmp_path, interrupt_lab, monkeypatch, capsys):
    out = tmp_path / "report"
    interrupt_lab(2)
    assert main(["report", "--out", str(out), *TINY]) == 130
    assert "interrupted: 1 of 2 labs kept" in capsys.readouterr().err
    assert (out / "labs" / "xor_perceptron.json").is_file()
    assert not (out / "labs" / "xor_mlp.json").exists()
    assert not list(out.rglob("*.tmp"))
    results = json.loads((out / "results.json").read_text())
    assert results["job"]["status"] == "interrupted" and results["pending"] == ["xor_mlp"]
    assert "**interrupted**" in (out / "report.md").read_text()
    # the rerun trains only what is missing
    monkeypatch.undo()  # the lab computation as it was
    assert main(["report", "--out", str(out), *TINY]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["job"] == {**results["job"], "status": "complete", "computed": ["xor_mlp"],
                              "reused": ["xor_perceptron"]}
    # other options: nothing reused
    assert main(["report", "--out", str(out), *TINY[:2], "--steps", "40", "--no-init-study"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["job"]["reused"] == [] and results["labs"]["xor_mlp"]["runs"]["jax"]["steps"][-1] == 39


def test_crashing_lab_is_reported_and_retried(tmp_path, monkeypatch, capsys):
    out = tmp_path / "report"
    real = report.compute_lab

    def crash_perceptron(lab, opts):
        if lab.name == "xor_perceptron":
            raise RuntimeError("boom")
        return real(lab, opts)

    monkeypatch.setattr(report_compute, "compute_lab", crash_perceptron)
    assert main(["report", "--out", str(out), *TINY]) == 1
    results = json.loads((out / "results.json").read_text())
    assert results["labs"]["xor_perceptron"]["status"] == "error"
    assert results["labs"]["xor_mlp"]["status"] == "ok"
    assert "**error**: RuntimeError: boom" in (out / "report.md").read_text()
    monkeypatch.undo()  # the lab computation as it was
    assert main(["report", "--out", str(out), *TINY]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["job"]["computed"] == ["xor_perceptron"] and results["job"]["reused"] == ["xor_mlp"]


@pytest.mark.parametrize("argv,fragment", [
    (["--labs", "xor_mlq"], "unknown lab 'xor_mlq' (did you mean xor_mlp?)"),
    (["--frameworks", "torch,mxnet"], "unknown framework 'mxnet'"),
    (["--device", "tpu"], "device 'tpu' is not present"),
    (["--labs", "mnist_softmax", "--data", "idx:/nonexistent"], "/nonexistent"),
    (["--threads", "0"], "must be auto or a positive count"),
])
def test_bad_input_gives_one_line_and_exit_2(tmp_path, capsys, argv, fragment):
    assert main(["report", "--out", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
    assert not (tmp_path / "r" / "results.json").exists()


def test_out_must_be_a_folder(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert main(["report", "--out", str(target), *TINY]) == 2
    assert "is a file" in capsys.readouterr().err


def test_flops_per_step():
    from harness.labs import get_lab

    assert report.flops_per_step(get_lab("mnist_softmax")) == 6 * 100 * 784 * 10
    assert report.flops_per_step(get_lab("mnist_batchnorm")) == 6 * 32 * (784 * 32 + 32 * 32 + 32 * 10)
    assert report.flops_per_step(get_lab("xor_mlp")) == 6 * 4 * (2 * 2 + 2 * 1)


def test_doc_renders_markdown_and_escaped_html():
    doc = Doc("T")
    doc.heading(2, "A & B")
    doc.para("x < y, `a|b`, **bold**, [link](#a-b)")
    doc.table(["name", "value"], [["a|b", "1.5"]], right=[1])
    md = doc.markdown()
    assert "| a\\|b | 1.5 |" in md and "|---|---:|" in md
    page = doc.html(lambda p: None)
    assert "x &lt; y" in page and "<code>a|b</code>" in page and "<strong>bold</strong>" in page
    assert '<a href="#a-b">link</a>' in page and '<td class="r">1.5</td>' in page
