"""Bad input and faults, round three (issue 24): output paths checked up front and never anything but a regular
file replaced, bounded numeric options, reused records checked by type, a larger report kept, bench of nothing,
one signal policy, and run records that say everything they ran with."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.commands import interrupts
from harness.commands.cli import main
from harness.errors import UsageError
from harness.labs import get_lab
from harness.report.options import JobOptions
from harness.report.plan import make_plan
from harness.report.records import LAB, problem
from harness.run import results

ROOT = Path(__file__).resolve().parent.parent


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


@pytest.fixture
def no_work(monkeypatch):
    """Fail the test if a command starts training or measuring."""
    def refuse(*args, **kwargs):
        raise AssertionError("the command started work")

    import harness.bench.command
    import harness.commands.reproduce
    import harness.parity.api
    import harness.run.runner

    for module, name in ((harness.run.runner, "run"), (harness.parity.api, "compare"),
                         (harness.commands.reproduce, "reproduce"), (harness.bench.command, "run")):
        monkeypatch.setattr(module, name, refuse)


def _fifo(folder: Path) -> Path:
    path = folder / "fifo"
    os.mkfifo(path)
    return path


def _char_device(folder: Path) -> Path:
    """A character device node (1, 3: what /dev/null is) made in the test's own folder; skipped where the
    process may not make one."""
    path = folder / "null"
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot make a device node here: {exc}")
    return path


# ------------------------------------------------------------------------------------------- output paths


@pytest.mark.parametrize("make", [_fifo, _char_device])
def test_device_files_and_fifos_are_refused_and_left_alone(tmp_path, capsys, no_work, make):
    node = make(tmp_path)
    mode = os.stat(node).st_mode
    assert main(["run", "xor_mlp", "--framework", "torch", "--out", str(node)]) == 2
    assert "not a regular file" in _one_error(capsys)
    with pytest.raises(UsageError, match="not a regular file: not replaced"):
        results.write_json(node, {"x": 1})  # the atomic write itself refuses too
    assert os.stat(node).st_mode == mode and sorted(p.name for p in tmp_path.iterdir()) == [node.name]


def test_symlinks_are_followed(tmp_path):
    target, link = tmp_path / "target.json", tmp_path / "link.json"
    target.write_text("{}\n")
    link.symlink_to(target)
    results.check_output_file(link)
    results.write_json(link, {"new": 1})
    assert link.is_symlink() and json.loads(target.read_text()) == {"new": 1}
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "sub" / "made.json")
    results.check_output_file(dangling)
    results.write_json(dangling, [1])
    assert dangling.is_symlink() and json.loads((tmp_path / "sub" / "made.json").read_text()) == [1]


@pytest.mark.parametrize("out, fragment", [
    ("", "is empty"), ("  ", "is empty"), ("-", "standard output is taken by run and compare"),
    ("x/" + "a" * 256 + "/y.json", "is 256 bytes long (at most 255"), ("a" * 300 + ".json", "305 bytes long"),
    ("/proc/dlzta.json", "cannot write in /proc"),
])
def test_bad_output_names(tmp_path, monkeypatch, out, fragment):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=fragment.replace("(", r"\(")):
        results.check_output_file(out, "--markdown" if out == "-" else "--out")
    assert list(tmp_path.iterdir()) == []


def test_a_name_near_the_limit_is_written(tmp_path):
    path = tmp_path / ("n" * 250 + ".json")  # 255 bytes: the temporary file's name is cut to fit
    results.check_output_file(path)
    results.write_json(path, {"ok": True})
    assert json.loads(path.read_text()) == {"ok": True} and len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("argv, fragment", [
    (["compare", "xor_mlp", "--out", "x/" + "b" * 300 + "/y.json"], "300 bytes long"),
    (["reproduce", "--labs", "xor_mlp", "--out", ""], "--out is empty"),
    (["bench", "xor_mlp", "--markdown", "/proc/dlzta.md"], "--markdown /proc/dlzta.md: cannot write in /proc"),
    (["bench", "xor_mlp", "--github-action", "FILE/ga"], "--github-action FILE/ga-smaller-is-better.json"),
    (["bench", "xor_mlp", "--out", "."], "is a folder"),
    (["bench", "xor_mlp", "--out", "r.json", "--markdown", "r.json"], "--markdown and --out name the same file"),
    (["report", "--out", ""], "--out is empty; give a folder name"),
    (["report", "--out", "FILE"], "--out FILE is a file, not a folder"),
    (["report", "--out", "-"], "standard output is taken by run and compare"),
    (["selfcheck", "--out", "FILE/x.json"], "FILE is a file, not a folder"),
])
def test_every_command_checks_its_outputs_before_any_work(tmp_path, monkeypatch, capsys, no_work, argv, fragment):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("kept")
    assert main(argv) == 2
    assert fragment in _one_error(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE"] and (tmp_path / "FILE").read_text() == "kept"


def test_run_out_dash_writes_the_json_alone_to_stdout(capsys):
    assert main(["run", "xor_mlp", "--framework", "torch", "--steps", "20", "--out", "-"]) == 0
    captured = capsys.readouterr()
    record = json.loads(captured.out)
    assert record["lab"] == "xor_mlp" and record["config"]["steps"] == 20
    assert "final:" in captured.err  # the printed lines went to stderr


# ---------------------------------------------------------------------------------------- numeric options


@pytest.mark.parametrize("argv, fragment", [
    (["reproduce", "--threads", "9" * 23], "--threads: must be auto or a positive count (at most"),
    (["report", "--threads", "1025"], "at most 1024"),
    (["selfcheck", "--threads", "0"], "must be auto or a positive count"),
    (["bench", "--threads", "99999999999999999999999"], "--threads: must be at least 1 (at most 1024)"),
    (["reproduce", "--repeats", "1" + "0" * 23], "--repeats: must be at least 1 (at most 100)"),
    (["reproduce", "--repeats", "1e23"], "--repeats: must be an integer"),
    (["bench", "--warmup-blocks", "-1"], "--warmup-blocks: must be in 0..1000000"),
    (["bench", "--retries", "-1"], "--retries: must be in 0..100"),
    (["bench", "--overhead-rounds", "-1"], "--overhead-rounds: must be in 0..1000"),
    (["bench", "--threshold", "1"], "--threshold: must be between 0 and 1"),
    (["compare", "xor_mlp", "--threshold", "nan"], "--threshold: must be finite and above 0"),
    (["report", "--threshold", "-1"], "--threshold: must be finite and above 0"),
    (["report", "--threshold", "inf"], "--threshold: must be finite and above 0"),
    (["run", "xor_mlp", "--framework", "torch", "--steps", "100000001"], "--steps: must be at least 1 (at most"),
    (["compare", "xor_mlp", "--trace-steps", "1001"], "--trace-steps: must be at least 1 (at most 1000)"),
    (["bench", "--devices", "1,4096"], "at most 1024"),
])
def test_numeric_options_are_bounded(capsys, no_work, argv, fragment):
    assert main(argv) == 2
    assert fragment in _one_error(capsys)


# ---------------------------------------------------------------------------------------------- bench


def test_bench_of_nothing_that_could_run_exits_2(monkeypatch, capsys):
    def unavailable(work, *args, **kwargs):
        return {"results": [{"key": w.key, "status": "unavailable", "reason": "no such device here"} for w in work]}

    import harness.bench.command

    monkeypatch.setattr(harness.bench.command, "run", unavailable)
    assert main(["bench", "xor_mlp", "--frameworks", "torch", "--quiet"]) == 2
    assert "no workload could run (1 unavailable: no such device here)" in _one_error(capsys)


# ------------------------------------------------------------------------------------------- resume


def _saved_lab(out: Path, opts: JobOptions, name: str, **changes) -> dict:
    from harness.report.compute import lab_header

    # the record as the job writes it (valid against its schema), with ``changes``
    rec = {**lab_header(get_lab(name), opts), "status": "ok", "reference": {}, "masks": "own", "flops_per_step": 0,
           "threads": {}, "runs": {}, "wall_s": 0.0, **changes}
    (out / "labs").mkdir(parents=True, exist_ok=True)
    (out / "labs" / f"{name}.json").write_text(json.dumps(rec))
    return rec


@pytest.mark.parametrize("changes, why", [
    ({"parity": "x"}, "parity: expected an object, got str"),
    ({"runs": {"torch": {"steps": [0, 1], "loss": ["a", 0.5]}}}, "runs.torch.loss[0]: expected int or float"),
    ({"runs": {"torch": {"steps": [True], "loss": [0.5]}}}, "runs.torch.steps[0]: expected int, got bool"),
    ({"peak": {"torch": {"gflops": "fast"}}}, "peak.torch.gflops"),
])
def test_a_record_with_the_wrong_types_is_recomputed_not_trusted(tmp_path, changes, why):
    opts = JobOptions(out=tmp_path, labs=("xor_mlp", "gates"), init_study=False)
    good = _saved_lab(tmp_path, opts, "gates")
    _saved_lab(tmp_path, opts, "xor_mlp", **changes)
    plan = make_plan(opts)
    assert plan.saved["gates"] == good and plan.saved["xor_mlp"] is None
    assert why in plan.rejected["xor_mlp"]
    assert problem(good, LAB) is None


# ------------------------------------------------------------------------------------------ signals


def test_the_policy_gives_130_and_143_and_ignores_later_signals():
    for sig, status in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        caught = 0
        with interrupts.policy():
            try:
                os.kill(os.getpid(), sig)
                time.sleep(5)  # the signal interrupts the sleep
            except KeyboardInterrupt:
                caught += 1
                os.kill(os.getpid(), signal.SIGINT)  # later ones: ignored while the command saves its work
                os.kill(os.getpid(), signal.SIGTERM)
            assert (caught, interrupts.exit_status()) == (1, status)
        assert signal.getsignal(signal.SIGINT) is not interrupts._stop  # the handlers before come back


def _started(proc: subprocess.Popen, marker: str) -> None:
    for line in proc.stdout:
        if marker in line:
            return
    pytest.fail("the command ended before it started its work")


def _command(tmp_path: Path, *argv: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "harness", *argv], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def test_reproduce_stops_on_sigterm_with_143(tmp_path):
    proc = _command(tmp_path, "reproduce", "--labs", "xor_mlp,xor_wide_deep", "--steps", "2000", "--frameworks",
                    "torch", "--out", str(tmp_path / "r.json"))
    _started(proc, "xor_mlp")  # the first run's line: training
    for _ in range(3):
        proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 143, rest
    assert "Traceback" not in rest and "error: terminated (SIGTERM)" in rest


def test_three_quick_ctrl_c_leave_a_finished_report_and_no_traceback(tmp_path):
    out = tmp_path / "r"  # both frameworks: JAX's exit handler runs at the end
    proc = _command(tmp_path, "report", "--labs", "xor_perceptron,xor_mlp", "--steps", "2000", "--no-init-study",
                    "--no-html", "--no-noise", "--out", str(out))
    _started(proc, "[ 1/2]")
    for _ in range(3):
        proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, rest
    assert "Traceback" not in rest and "KeyboardInterrupt" not in rest and "interrupted:" in rest
    report = (out / "report.md").read_text()
    assert "**interrupted**" in report and "in progress" not in report
    assert json.loads((out / "results.json").read_text())["job"]["status"] == "interrupted"


# ---------------------------------------------------------------------------------------- run records


def test_run_records_say_everything_and_rerun_from_their_file(tmp_path, capsys):
    first = tmp_path / "a.json"
    assert main(["run", "xor_mlp", "--framework", "torch", "--steps", "60", "--lr", "0.5", "--optimizer", "adam",
                 "--epochs", "3", "--log-every", "7", "--quiet", "--out", str(first)]) == 0
    err = capsys.readouterr().err
    assert "note: --epochs does not apply to xor_mlp" in err
    rec = json.loads(first.read_text())
    config = rec["config"]
    assert config["overrides"] == {"lr": 0.5, "optimizer": "adam", "epochs": 3}
    assert (config["effective"]["lr"], config["effective"]["optimizer"], config["log_every"]) == (0.5, "adam", 7)
    assert rec["notes"] == ["--epochs does not apply to xor_mlp (a full-batch lab: --steps sets its length); ignored"]
    again = tmp_path / "b.json"
    assert main(["run", "--config", str(first), "--quiet", "--out", str(again)]) == 0
    rerun = json.loads(again.read_text())
    assert rerun["loss"] == rec["loss"] and rerun["config"] == config
    capsys.readouterr()
    # a config object, and the command line wins over the file
    (tmp_path / "c.json").write_text(json.dumps({"lab": "xor_mlp", "framework": "torch", "steps": 30,
                                                 "overrides": {"lr": 0.5}}))
    assert main(["run", "--config", str(tmp_path / "c.json"), "--steps", "20", "--quiet", "--out", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["steps"] == 20


@pytest.mark.parametrize("content, fragment", [
    ("[1]", "not a run record or a config object"), ("{", "cannot be read as JSON"),
    ('{"lab": "xor_mlp", "framework": "torch", "colour": "red"}', "unknown key colour"),
    ('{"lab": "xor_mlp", "framework": "torch", "steps": -3}', "--steps: must be at least 1"),
    ('{"lab": "xor_mlp", "framework": "torch", "lr": [1]}', "lr must be a number or a name"),
])
def test_bad_config_files(tmp_path, capsys, no_work, content, fragment):
    path = tmp_path / "c.json"
    path.write_text(content)
    assert main(["run", "--config", str(path)]) == 2
    assert fragment in _one_error(capsys)


# ------------------------------------------------------------------------------- report: the larger one stays


def test_a_smaller_report_is_written_beside_a_complete_larger_one(tmp_path, capsys):
    out = tmp_path / "r"
    tiny = ["--steps", "30", "--no-init-study", "--no-html", "--no-noise", "--frameworks", "torch", "--out", str(out)]
    assert main(["report", "--labs", "xor_perceptron,xor_mlp", *tiny]) == 0
    before = {name: (out / name).read_bytes() for name in ("results.json", "report.md", "plots/xor_mlp.png")}
    capsys.readouterr()
    assert main(["report", "--labs", "xor_perceptron", *tiny[:1], "20", *tiny[2:]]) == 0
    said = capsys.readouterr().out
    assert {name: (out / name).read_bytes() for name in before} == before  # the larger report stays whole
    beside = [p.parent for p in (out / "runs").glob("*/results.json")]
    assert len(beside) == 1 and f"{beside[0]}/ when it completes" in said and str(beside[0] / "report.md") in said
    results = json.loads((beside[0] / "results.json").read_text())
    assert list(results["labs"]) == ["xor_perceptron"] and results["job"]["written_beside"] == str(beside[0])
    assert (beside[0] / "report.md").exists() and (beside[0] / "plots" / "xor_perceptron.png").exists()


def test_threads_that_no_chosen_backend_sets_are_a_note():
    from harness.run.machine import threads_note

    assert threads_note(("torch", "jax"), "auto") is None and threads_note(("torch", "jax"), "4") is None
    assert threads_note(("jax",), "4") == "--threads 4 does not apply (jax sets its own threads); ignored"
    assert "on a CPU only" in threads_note(("torch",), "4", "gpu")


def test_a_data_folder_name_over_255_bytes_is_one_line(tmp_path, capsys):
    assert main(["run", "mnist_softmax", "--framework", "torch", "--data", f"idx:{tmp_path / ('a' * 300)}"]) == 2
    assert "cannot be read" in _one_error(capsys)
