"""Resume checks a saved record as strictly as a fresh one (issue 24): a lab record whose JSON parses but holds
the wrong types is not reused (it would crash the report) but computed again, with a one-line note; and the
report's code fingerprint comes from the training code's imports."""

from __future__ import annotations

import json
import shutil

import pytest

from harness import schemas
from harness.commands.cli import main
from harness.report import compute as report_compute

TINY = ["--labs", "xor_perceptron,xor_mlp", "--steps", "20", "--no-init-study", "--no-html", "--no-noise"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished two-lab job's folder, run once."""
    out = tmp_path_factory.mktemp("reuse") / "report"
    assert main(["report", "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture
def tiny_report(finished, tmp_path):
    """A copy of the finished job's folder, and its lab records as written."""
    out = tmp_path / "report"
    shutil.copytree(finished, out)
    return out, {p.stem: json.loads(p.read_text()) for p in (out / "labs").glob("*.json")}


def _corrupt(path, **changes) -> dict:
    """Change keys of the record at ``path`` (JSON that parses, with the wrong types); the record before."""
    before = json.loads(path.read_text())
    path.write_text(json.dumps({**before, **changes}))
    return before


def _rerun(out, originals, monkeypatch, capsys) -> tuple[int, list[str], str]:
    """The same job again, computing only what it cannot reuse (a computed lab: its record as first written):
    exit status, labs computed, the log."""
    computed = []

    def compute_lab(lab, opts):
        computed.append(lab.name)
        return {k: v for k, v in originals[lab.name].items() if k != "$schema"}

    monkeypatch.setattr(report_compute, "compute_lab", compute_lab)
    capsys.readouterr()
    status = main(["report", "--out", str(out), *TINY])
    return status, computed, capsys.readouterr().out


def _without_tolerance(rec: dict) -> dict:
    rec = json.loads(json.dumps(rec))
    del rec["parity"]["tiers"]["exact"]["tolerance"]
    return rec


def test_a_record_that_fails_its_schema_is_computed_again_with_a_note(tiny_report, monkeypatch, capsys):
    """Right types everywhere the shape check looks, but not what the schema requires (the report writes the
    exact tier's tolerance from it): recomputed, said in one line."""
    out, originals = tiny_report
    bad = _without_tolerance(originals["xor_mlp"])
    (out / "labs" / "xor_mlp.json").write_text(json.dumps(bad))
    _corrupt(out / "results.json", labs={**originals, "xor_mlp": bad})
    status, computed, log = _rerun(out, originals, monkeypatch, capsys)
    assert status == 0 and computed == ["xor_mlp"]
    notes = [line for line in log.splitlines() if "the saved record is not reused" in line]
    assert notes == ["xor_mlp: the saved record is not reused (labs/xor_mlp.json: not a valid lab record: at "
                     "$.parity.tiers.exact: 'tolerance' is a required property); computed again"], log
    results = json.loads((out / "results.json").read_text())
    assert results["job"]["computed"] == ["xor_mlp"] and results["job"]["reused"] == ["xor_perceptron"]
    schemas.validate("results", results)
    schemas.validate("lab", json.loads((out / "labs" / "xor_mlp.json").read_text()))


def test_a_bad_lab_file_is_restored_from_a_valid_results_json(tiny_report, monkeypatch, capsys):
    out, originals = tiny_report
    good = _corrupt(out / "labs" / "xor_mlp.json", parity=_without_tolerance(originals["xor_mlp"])["parity"])
    status, computed, log = _rerun(out, originals, monkeypatch, capsys)
    assert status == 0 and computed == []  # results.json's copy of the record is valid: reused
    assert "not reused" not in log
    assert json.loads((out / "labs" / "xor_mlp.json").read_text()) == good  # the lab file written again


def test_valid_records_are_reused_silently(tiny_report, monkeypatch, capsys):
    out, originals = tiny_report
    status, computed, log = _rerun(out, originals, monkeypatch, capsys)
    assert status == 0 and computed == [] and "not reused" not in log and log.count("reused") >= 2


def test_the_fingerprint_covers_what_the_training_code_imports():
    from harness.report.fingerprint import training_files, training_roots

    files = training_files()
    # imported by the runner (references.py was missing from the hand-kept list), by a backend at function level
    # (models), reached through a package's __init__ (parity), and a backend package's module the harness finds by
    # name (ensemble)
    for path in ("harness/run/runner.py", "harness/references.py", "harness/run/metrics.py",
                 "harness/data/idx.py", "harness/parity/exact.py", "torch_impl/models.py", "jax_impl/models.py",
                 "torch_impl/ensemble.py", "harness/referee/train.py"):
        assert path in files, path
    # the report's own rendering is not training code: changing it must not retrain every lab
    assert not any(f.startswith(("harness/report/", "harness/bench/")) or f == "harness/commands/cli.py" for f in files)
    assert {"harness.run.runner", "torch_impl", "jax_impl"} <= set(training_roots())


def test_the_fingerprint_follows_a_newly_registered_backend(tmp_path, monkeypatch):
    from harness import backend as backends
    from harness.report.fingerprint import code_fingerprint, training_files

    pkg = tmp_path / "third_impl"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "backend.py").write_text("from third_impl import helper\nfrom harness import labs\n")
    (pkg / "helper.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = code_fingerprint()
    info = backends.register(backends.BackendInfo("third", "Third", "#000000", "third_impl.backend", ("eager",)))
    try:
        assert {str(pkg / "helper.py"), str(pkg / "backend.py")} <= set(training_files())
        registered = code_fingerprint()
        assert registered != before
        (pkg / "helper.py").write_text("X = 2\n")  # a change in a module the backend imports: a new fingerprint
        from harness.report import fingerprint

        fingerprint._digest.cache_clear()
        assert code_fingerprint() != registered
    finally:
        backends.unregister(info.name)


@pytest.mark.parametrize("path,value", [
    (("parity", "tiers", "exact", "tolerance"), None),  # the report writes max(floor, factor x twin) from these
    (("parity", "tiers", "exact", "internals"), "x"),
    (("parity", "tiers", "exact", "max_rel_diff"), "x"),
    (("reference", "loss", "0"), None),  # the course's loss beside ours
    (("reference", "rtol"), "x"),
    (("costs", "compute", "wall_s"), None),  # summed in "where the time went"
    (("runs", "torch", "final", "train_loss"), "x"),
])
def test_what_the_report_reads_is_in_the_schema(finished, path, value):
    """Values that crashed the report's rendering when found in a saved record (a mutation sweep over real
    records) fail the lab schema, so a rerun computes the lab again instead."""
    rec = json.loads((finished / "labs" / "xor_mlp.json").read_text())
    schemas.validate("lab", rec)
    node = rec
    for key in path[:-1]:
        node = node[key]
    if value is None and path[-1] == "tolerance":
        del node[path[-1]]
    else:
        node[path[-1]] = value
    assert not schemas.is_valid("lab", rec)
