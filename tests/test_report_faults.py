"""The main job under faults: unwritable output, a batch larger than the data, damaged lab files, interrupts
(twice, and over a complete report), temporary files a kill left, two jobs into one folder."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from harness.commands.cli import main
from harness.data import idx
from harness.report import compute as report_compute
from harness.report.lock import LOCK_NAME, OutputLock

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--labs", "xor_perceptron,xor_mlp", "--steps", "30", "--no-init-study", "--no-html", "--no-noise"]


def _one_error_line(err: str, fragment: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], lines


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if the job trains or measures anything."""
    def refuse(*args, **kwargs):
        raise AssertionError("the job started work")

    for name in ("compute_lab", "compute_init_study", "measure_peaks"):
        monkeypatch.setattr(report_compute, name, refuse)


def _writable(folder: Path) -> bool:
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return False
    return True


def _unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot write in: read-only by mode, or (for root, whom modes do not stop) /sys."""
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys")):
        if candidate.is_dir() and not _writable(candidate):
            return candidate
    pytest.skip("no unwritable folder on this machine")


def test_unwritable_out_stops_before_any_work(tmp_path, capsys, no_training):
    folder = _unwritable_folder(tmp_path)
    for out in (folder, folder / "new_report"):
        assert main(["report", "--out", str(out), *TINY]) == 2
        _one_error_line(capsys.readouterr().err, str(folder))


def test_out_whose_subfolder_is_a_file(tmp_path, capsys, no_training):
    out = tmp_path / "r"
    out.mkdir()
    (out / "labs").write_text("not a folder")
    assert main(["report", "--out", str(out), *TINY]) == 2
    _one_error_line(capsys.readouterr().err, "is a file, not a folder")


def _write_idx(folder: Path, n_train: int, n_test: int = 20) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for name, shape, magic in (("train-images-idx3-ubyte", (n_train, 28, 28), idx.IMAGES_MAGIC),
                               ("train-labels-idx1-ubyte", (n_train,), idx.LABELS_MAGIC),
                               ("t10k-images-idx3-ubyte", (n_test, 28, 28), idx.IMAGES_MAGIC),
                               ("t10k-labels-idx1-ubyte", (n_test,), idx.LABELS_MAGIC)):
        arr = rng.integers(0, 10 if len(shape) == 1 else 256, shape, dtype=np.uint8)
        raw = struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()
        (folder / f"{name}.gz").write_bytes(gzip.compress(raw))


def test_batch_larger_than_the_training_set(tmp_path, capsys):
    _write_idx(tmp_path / "tiny_mnist", n_train=50)
    out = tmp_path / "r"
    status = main(["report", "--out", str(out), "--labs", "xor_mlp,mnist_softmax", "--steps", "5", "--no-noise",
                   "--no-html", "--init-steps", "5", "--data", f"idx:{tmp_path / 'tiny_mnist'}"])
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err
    results = json.loads((out / "results.json").read_text())
    assert results["job"]["status"] == "errors"
    assert results["labs"]["xor_mlp"]["status"] == "ok"
    lab = results["labs"]["mnist_softmax"]
    assert lab["status"] == "error" and "batch size 100 is larger than the training set (50 examples" in lab["error"]
    study = results["init_study"]
    assert study["status"] == "error" and study["runs"] == {} and "batch size 100" in study["error"]
    assert results["job"]["errors"] == ["mnist_softmax", "init_study"]


def test_lab_file_that_is_not_an_object_is_recomputed(tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["report", "--out", str(out), *TINY]) == 0
    good = json.loads((out / "labs" / "xor_mlp.json").read_text())
    # a damaged lab file: its record in results.json still serves, and the file is written again
    (out / "labs" / "xor_mlp.json").write_text("[1]\n")
    assert main(["report", "--out", str(out), *TINY]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["job"]["computed"] == [] and results["job"]["reused"] == ["xor_perceptron", "xor_mlp"]
    assert json.loads((out / "labs" / "xor_mlp.json").read_text()) == good
    # both damaged (valid JSON, not objects): recomputed, no traceback
    (out / "labs" / "xor_mlp.json").write_text("[1]\n")
    (out / "results.json").write_text('"a string"\n')
    assert main(["report", "--out", str(out), *TINY]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["job"]["computed"] == ["xor_mlp"] and results["job"]["reused"] == ["xor_perceptron"]
    assert "Traceback" not in capsys.readouterr().err


def test_stale_temporary_files_are_removed(tmp_path):
    out = tmp_path / "r"
    stale = [out / ".results.json.k2j3.tmp", out / "labs" / ".xor_mlp.json.a1b2.tmp",
             out / "plots" / ".xor_mlp.png.x9y8.tmp"]
    for path in stale:  # left by a run killed an hour ago
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    keep = out / "labs" / "notes.txt"
    keep.write_text("mine")
    assert main(["report", "--out", str(out), *TINY]) == 0
    assert not list(out.rglob("*.tmp")) and keep.read_text() == "mine"


def test_other_options_never_replace_a_complete_report_with_less(tmp_path, interrupt_lab, monkeypatch, capsys):
    out = tmp_path / "r"
    assert main(["report", "--out", str(out), *TINY]) == 0
    before = {name: (out / name).read_bytes() for name in ("results.json", "report.md", "plots/xor_mlp.png")}
    interrupt_lab(2)
    other = [*TINY[:2], "--steps", "20", *TINY[4:]]
    assert main(["report", "--out", str(out), *other]) == 130
    captured = capsys.readouterr()
    assert "the complete report already in" in captured.err and "is kept as it was" in captured.err
    assert {name: (out / name).read_bytes() for name in before} == before
    assert json.loads((out / "labs" / "xor_perceptron.json").read_text())["key"]["steps"] == 20
    # the first command again: everything reused (xor_perceptron from the kept results.json)
    monkeypatch.undo()  # the lab computation as it was
    assert main(["report", "--out", str(out), *TINY]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["job"]["computed"] == [] and results["job"]["reused"] == ["xor_perceptron", "xor_mlp"]
    # the other options, run to the end, do replace it
    assert main(["report", "--out", str(out), *other]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["options"]["steps"] == 20 and results["job"]["status"] == "complete"


# ------------------------------------------------------------------------------------------ in a subprocess

TWICE = textwrap.dedent("""
    import os, signal, sys
    from harness.commands.cli import main
    from harness.report import render

    real_plots, real_write = render.lab_plots, render.write_report

    def lab_plots(out, rec, force=False):  # the first signal arrives while the first lab's plot is drawn
        os.kill(os.getpid(), signal.SIGTERM)
        return real_plots(out, rec, force)

    def write_report(out, results, html=True, final=False):  # the second during the final write
        if final:
            os.kill(os.getpid(), signal.SIGINT)
        return real_write(out, results, html=html, final=final)

    render.lab_plots, render.write_report = lab_plots, write_report
    sys.exit(main(sys.argv[1:]))
""")


def _python(code: str, *args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_second_signal_during_the_final_write(tmp_path):
    out = tmp_path / "r"  # SIGTERM (as from a CI cancel) while a plot is drawn, then Ctrl-C in the final write
    proc = _python(TWICE, "report", "--out", str(out), *TINY)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr  # stopped by SIGTERM first (128 + 15)
    assert "Traceback" not in stderr and "interrupted: 1 of 2 labs kept" in stderr
    results = json.loads((out / "results.json").read_text())
    assert results["job"]["status"] == "interrupted" and list(results["labs"]) == ["xor_perceptron"]
    assert "**interrupted**" in (out / "report.md").read_text()
    assert not list(out.rglob("*.tmp")) and not (out / LOCK_NAME).exists()


HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from harness.report.lock import OutputLock

    with OutputLock(Path(sys.argv[1])):
        print("locked", flush=True)
        time.sleep(120)
""")


def test_second_job_into_a_locked_folder_stops(tmp_path, capsys, no_training):
    out = tmp_path / "r"
    out.mkdir()
    holder = _python(HOLD, str(out))
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert (out / LOCK_NAME).read_text().strip() == str(holder.pid)
        assert main(["report", "--out", str(out), *TINY]) == 2
        _one_error_line(capsys.readouterr().err, f"is in use by another report (pid {holder.pid})")
    finally:
        holder.kill()
        holder.wait()
    with OutputLock(out):  # the holder died: the lock is free, its file (and dead pid) taken over
        assert (out / LOCK_NAME).read_text().strip() == str(os.getpid())
    assert not (out / LOCK_NAME).exists()


def test_stale_lock_is_taken_over(tmp_path):
    out = tmp_path / "r"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK_NAME).write_text(f"{dead.pid}\n")
    assert main(["report", "--out", str(out), *TINY]) == 0
    assert not (out / LOCK_NAME).exists()
