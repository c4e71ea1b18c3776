"""``bench --precision``: each precision timed beside float32, its speed-up over float32 and its % of its own
dtype's matmul peak measured in the same run on the same threads; the files validate and float32's names (the
baseline's) do not change; a bad precision is one line and exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import schemas
from harness.bench import SUITES, plan
from harness.bench.formats import github_action_paths
from harness.bench.workloads import BENCH_PRECISIONS, precision_list
from harness.commands.cli import main
from harness.errors import UsageError

ROOT = Path(__file__).resolve().parents[1]
BENCH = ["bench", "xor_mlp", "--frameworks", "torch,jax", "--modes", "eager,per_step", "--block-steps", "100",
         "--blocks", "3", "--warmup-blocks", "0", "--overhead-rounds", "0", "--peak-repeats", "3", "--quiet",
         "--threads", "1", "--precision", "bfloat16,mixed_float16"]
OWN_PEAK = {"float32": "float32", "bfloat16": "bfloat16", "mixed_float16": "float16"}


def test_bench_times_each_precision_against_float32_and_its_own_peak(tmp_path):
    out, md, prefix = tmp_path / "bench.json", tmp_path / "bench.md", str(tmp_path / "ga")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}  # a fresh process: XLA pinned as it starts
    done = subprocess.run([sys.executable, "-m", "harness", *BENCH, "--out", str(out), "--markdown", str(md),
                           "--github-action", prefix], capture_output=True, text=True, env=env, cwd=ROOT,
                          check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(out.read_text())
    schemas.validate("bench", record)
    entries = {e["key"]: e for e in record["results"]}
    bases = {"torch": "xor_mlp/torch/cpu/eager", "jax": "xor_mlp/jax/cpu/per_step"}
    assert set(entries) == {b + s for b in bases.values() for s in ("", "/bfloat16", "/mixed_float16")}
    assert record["threads"]["like_for_like"] and record["threads"]["per_framework"] == {"torch": [1], "jax": [1]}
    for e in entries.values():
        assert e["status"] == "ok" and e["threads"] == e["peak_threads"] == 1
        assert e["peak_dtype"] == OWN_PEAK[e["precision"]]
        peaks = record["frameworks"][e["framework"]]["devices"]["cpu"]["peaks"]
        own = [p for p in peaks if p["threads"] == 1 and p["dtype"] == e["peak_dtype"]]
        assert len(own) == 1 and e["pct_peak"] == pytest.approx(100 * e["gflops"] / own[0]["gflops"])
        base = entries[bases[e["framework"]]]
        assert e["speedup_vs_float32"] == pytest.approx(e["steps_per_s"] / base["steps_per_s"])
    table = md.read_text()
    assert "| xor_mlp | jax | cpu | per_step | mixed_float16 | 1 |" in table and "float16 matmul peak" in table
    smaller, bigger = (json.loads(Path(p).read_text()) for p in github_action_paths(prefix))
    for items in (smaller, bigger):
        schemas.validate("github-action", items)
    names = {i["name"] for i in bigger}
    assert {"xor_mlp/torch/cpu/eager steps/s", "xor_mlp/jax/cpu/per_step % of matmul peak"} <= names  # float32's
    assert {"xor_mlp/torch/cpu/eager/bfloat16 speed-up over float32",
            "xor_mlp/jax/cpu/per_step/mixed_float16 % of matmul peak"} <= names
    assert not any(n.endswith("/float32 steps/s") or "/float32 " in n for n in names | {i["name"] for i in smaller})


def test_float32_names_are_the_baselines():
    baseline = json.loads((ROOT / "benchmarks" / "baseline-ci.json").read_text())
    work = plan(SUITES["ci"].labs, ("torch", "jax"), ("cpu",), None, SUITES["ci"], precisions=BENCH_PRECISIONS)
    float32 = {w.key for w in work if w.precision == "float32"}
    assert float32 == {e["key"] for e in baseline["results"]}
    assert {w.key for w in work} - float32 == {f"{k}/{p}" for k in float32 for p in BENCH_PRECISIONS[1:]}


def test_precision_list():
    assert precision_list("all") == BENCH_PRECISIONS
    assert precision_list("mixed_float16,bfloat16") == ("float32", "mixed_float16", "bfloat16")
    for bad in ("float8", "float64", "", "bfloat16,fp16"):
        with pytest.raises(UsageError):
            precision_list(bad)


@pytest.mark.parametrize("argv, said", [
    (["bench", "xor_mlp", "--precision", "float8"], "unknown float8"),
    (["bench", "xor_backprop_manual", "--precision", "bfloat16"], "hand-written backprop"),
])
def test_a_bad_precision_is_one_line_and_exit_2(argv, said, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert said in err and len(err.splitlines()) == 1


def test_a_mode_that_cannot_train_a_precision_is_an_unavailable_entry_with_its_reason():
    from harness.bench import Workload, format_entry, measure

    w = Workload("xor_mlp", "torch", "cpu", "compiled", 10, 2, 0, 10, 1, 0, "bfloat16")
    entry = measure(w)  # torch trains a reduced precision eagerly only (its registry entry): nothing compiles
    assert entry["key"] == "xor_mlp/torch/cpu/compiled/bfloat16" and entry["status"] == "unavailable"
    assert "eager" in entry["reason"] and "bfloat16" in format_entry(entry)
    record = {"$schema": schemas.schema_id("bench"), "schema": "dlzta-bench/1", "created": "2026-12-03T00:00:00Z",
              "machine": {"cpu_model": "x", "cpu_count": 2}, "loadavg_start": None, "loadavg_end": None,
              "frameworks": {}, "results": [entry]}
    schemas.validate("bench", record)
