"""The published JSON Schemas (harness/schemas/): valid draft 2020-12 schemas, shipped with the package, naming
themselves in every file the project writes; the real output of `run --out`, `compare --out` and `bench --out`
(and its github-action-benchmark files) validates, and a record with a wrong type does not. The report's files
are validated on the job of tests/test_report.py (small_report), the reuse rule there too."""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from harness import schemas
from harness.bench.formats import github_action_paths
from harness.commands.cli import main
from harness.labs import LABS

ROOT = Path(__file__).resolve().parents[1]
BENCH = ["bench", "xor_mlp", "--frameworks", "torch,jax", "--modes", "eager,per_step", "--block-steps", "200",
         "--blocks", "3", "--warmup-blocks", "1", "--overhead-rounds", "1", "--peak-repeats", "3", "--quiet"]


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize("kind", sorted(schemas.KINDS))
def test_each_schema_is_a_valid_draft_2020_12_schema(kind):
    schema = schemas.load(kind)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == schemas.schema_id(kind) and schema["$id"].endswith(schemas.path(kind).name)
    assert schema.get("description") and schema.get("title")


def test_every_schema_file_is_a_kind_and_shipped_as_package_data():
    files = {p.name for p in schemas.FOLDER.glob("*.json")}
    assert files == {schemas.path(k).name for k in schemas.KINDS}
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "schemas/*.schema.json" in package_data["harness"]


def test_every_reference_resolves_without_the_network():
    """Every $ref names a schema of the folder (relative) or a $defs entry that exists."""
    def refs(node):
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for v in node.values():
                yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    for kind in schemas.KINDS:
        for ref in refs(schemas.load(kind)):
            target, _, pointer = ref.partition("#")
            assert "://" not in target, ref
            doc = schemas.load(target.removesuffix(".schema.json")) if target else schemas.load(kind)
            for part in filter(None, pointer.split("/")):
                doc = doc[part]


def test_run_out_validates_and_names_its_schema(tmp_path):
    out = tmp_path / "run.json"
    assert main(["run", "xor_mlp", "--framework", "torch", "--steps", "50", "--quiet", "--out", str(out)]) == 0
    record = _load(out)
    assert next(iter(record)) == "$schema" and record["$schema"] == schemas.schema_id("run")
    schemas.validate("run", record)
    assert "init" not in record and not {"loss", "accuracy", "predictions"} & set(record["final"])


def test_a_diverged_run_out_validates(tmp_path):
    out = tmp_path / "diverged.json"
    argv = ["run", "mnist_relu_normal", "--framework", "torch", "--data", "mnist-5k", "--steps", "30", "--lr", "1e12",
            "--optimizer", "sgd", "--out", str(out)]
    assert main(argv) == 2
    record = _load(out)
    assert record["status"] == "diverged"
    schemas.validate("run", record)


def test_compare_out_validates(tmp_path):
    out = tmp_path / "cmp.json"
    assert main(["compare", "xor_mlp", "--steps", "50", "--quiet", "--out", str(out)]) == 0
    record = _load(out)
    assert record["$schema"] == schemas.schema_id("compare")
    schemas.validate("compare", record)
    for run in record["runs"].values():
        schemas.validate("run", run)


def test_selfcheck_out_validates_and_names_its_schema(tmp_path, monkeypatch):
    """`selfcheck --out` (one cheap planted bug of the precision part; a catalogue row is validated in
    tests/test_mutations_float32.py) and the copy the report reads; a row of the wrong shape fails."""
    pytest.importorskip("jax")
    monkeypatch.setenv("DLZTA_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "selfcheck.json"
    assert main(["selfcheck", "--only", "no_skip", "--threads", "1", "--quiet", "--out", str(out)]) == 0
    record = _load(out)
    assert next(iter(record)) == "$schema" and record["$schema"] == schemas.schema_id("selfcheck")
    schemas.validate("selfcheck", record)
    schemas.validate("selfcheck", _load(tmp_path / "cache" / "selfcheck.json"))
    assert record["precision"]["judged"] == 2
    with pytest.raises(schemas.SchemaError, match="precision.rows"):
        schemas.validate("selfcheck", {**record, "precision": {**record["precision"], "rows": [{"kind": "x"}]}})


def test_a_diverged_compare_out_validates(tmp_path):
    out = tmp_path / "cmp.json"
    argv = ["compare", "mnist_relu_normal", "--data", "mnist-5k", "--steps", "30", "--lr", "1e12", "--optimizer", "sgd",
            "--no-noise", "--out", str(out)]
    assert main(argv) == 2
    record = _load(out)
    assert record["$schema"] == schemas.schema_id("compare") and "verdict" not in record
    assert "diverged" in {run["status"] for run in record["runs"].values()}
    schemas.validate("compare", record)


def test_bench_out_and_github_action_files_validate(tmp_path):
    out, prefix = tmp_path / "bench.json", str(tmp_path / "ga")
    assert main([*BENCH, "--targets", "--out", str(out), "--github-action", prefix]) == 0
    record = _load(out)
    assert record["$schema"] == schemas.schema_id("bench")
    schemas.validate("bench", record)
    assert {e["status"] for e in record["results"]} == {"ok"} and record["targets"]
    for path in github_action_paths(prefix):
        schemas.validate("github-action", _load(Path(path)))
    # the gate's rows too, against that run as the baseline
    gated = tmp_path / "gated.json"
    main([*BENCH[:3], "jax", *BENCH[4:], "--compare", str(out), "--out", str(gated)])  # 0 or 1: load decides
    record = _load(gated)
    assert record["gate"]["compared"]
    schemas.validate("bench", record)


def test_the_committed_benchmark_files_validate():
    for name in ("baseline-ci", "cpu-full", "cpu-targets", "cpu-precision"):
        schemas.validate("bench", _load(ROOT / "benchmarks" / f"{name}.json"))


@pytest.fixture(scope="module")
def run_record():
    from harness.labs import get_lab
    from harness.run.results import to_jsonable
    from harness.run.runner import RunOptions, run

    return json.loads(json.dumps(to_jsonable(run(get_lab("xor_mlp"), "torch", RunOptions(steps=20)))))


@pytest.mark.parametrize("path,value,where", [
    (("seed",), "777", "$.seed"),
    (("loss",), "x", "$.loss"),
    (("loss", 0), "0.69", "$.loss[0]"),
    (("weights",), "torch", "$.weights"),
    (("final", "train_loss"), [1.0], "$.final.train_loss"),
    (("final", "loss"), 0.5, "$.final"),  # the old alias: not a key of the format
    (("init",), "shared", "$"),  # the old name of weights
    (("timing",), None, "$.timing"),
])
def test_a_run_record_with_a_wrong_type_or_key_fails(run_record, path, value, where):
    schemas.validate("run", run_record)
    bad = copy.deepcopy(run_record)
    node = bad
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(schemas.SchemaError, match=r"not a valid run record: at " + where.replace("$", r"\$")
                       .replace("[", r"\[").replace("]", r"\]")):
        schemas.validate("run", bad)
    assert not schemas.is_valid("run", bad)


def test_a_missing_required_key_fails(run_record):
    bad = {k: v for k, v in run_record.items() if k != "status"}
    assert any("'status' is a required property" in e for e in schemas.errors("run", bad))


def test_unknown_kind_is_named():
    with pytest.raises(KeyError, match="unknown schema kind 'nope'"):
        schemas.schema_id("nope")


def test_check_jsonschema_validates_offline_as_documented(tmp_path):
    """docs/schemas.md's command: check-jsonschema with --base-uri at the schema folder resolves every $ref there."""
    import shutil
    import subprocess
    import sys

    exe = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) or shutil.which("check-jsonschema")
    if exe is None:
        pytest.skip("check-jsonschema is not installed (the [test] extra)")
    out = tmp_path / "run.json"
    assert main(["run", "gates", "--framework", "torch", "--steps", "20", "--quiet", "--out", str(out)]) == 0
    folder = schemas.FOLDER
    argv = [exe, "--base-uri", f"{folder.as_uri()}/", "--schemafile", str(schemas.path("run")), str(out)]
    ok = subprocess.run(argv, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    out.write_text(json.dumps({**_load(out), "seed": "777"}))
    bad = subprocess.run(argv, capture_output=True, text=True)
    assert bad.returncode == 1 and "$.seed" in bad.stdout


@pytest.mark.parametrize("typed,kind,pointer,unset", [
    ("RunRecord", "run", "", ()),
    ("LabRecord", "lab", "", ()),
    ("StudyRecord", "init-study", "", ()),
    ("PrecisionRecord", "precision", "", ()),
    ("Results", "results", "", ("generated", "summary")),  # set when results.json is written
    ("JobStatus", "results", "/$defs/job", ()),
    ("Parity", "compare", "/$defs/parity", ()),
    ("LabKey", "lab", "/$defs/key", ()),
    ("Timing", "common", "/$defs/timing", ()),
])
def test_the_typed_records_agree_with_the_schemas(typed, kind, pointer, unset):
    """harness.report.typed's TypedDicts name the schema's keys, required where the schema requires them (so
    code may index those keys of a computed or validated record)."""
    from harness.report import typed as records

    td = getattr(records, typed)
    schema = schemas.load(kind)
    for part in filter(None, pointer.split("/")):
        schema = schema[part]
    assert td.__required_keys__ == set(schema["required"]) - set(unset)
    assert td.__required_keys__ | td.__optional_keys__ == set(schema["properties"]) - {"$schema"}


@pytest.mark.slow
def test_every_labs_report_record_validates(tmp_path):
    """`make run`'s files, every lab (shortened): each lab record, the study and results.json validate."""
    out = tmp_path / "report"
    assert main(["report", "--out", str(out), "--steps", "20", "--epochs", "1", "--data", "mnist-5k",
                 "--init-steps", "10", "--quiet", "--no-html"]) == 0
    results = _load(out / "results.json")
    schemas.validate("results", results)
    assert list(results["labs"]) == list(LABS)
    for path in (out / "labs").glob("*.json"):
        kind = {"init_study": "init-study", "precision": "precision"}.get(path.stem, "lab")
        schemas.validate(kind, _load(path))
