"""The benchmark regression gate: identical figures pass, a slowdown fails, noise widens the threshold, figures are
normalised by the peak measured in the same run; a tiny step far from matmul-bound needs a raw slowdown too (a 2x
slower XOR step fails, a loaded machine with the step unchanged passes); a malformed baseline or one sharing no
workload stops before measuring (exit 2, one line); and on real short runs, the same code passes while an injected
slowdown (a device sync after every step) fails. No absolute time limits here."""

from __future__ import annotations

import json
import os
import re

import pytest

from harness import bench
from harness.bench.gate import compared
from harness.commands.cli import main


def _entry(key: str, ms: float, peak: float, flops: float = 1e6, spread: float = 0.02, matmul: float = 1.0) -> dict:
    """A results entry as ``bench.measure`` + ``add_peak_figures`` leave it: every block at ``ms`` ms/step (blocks
    spread by ``spread``), each paired matmul running at ``matmul`` x the machine's ``peak`` GFLOP/s."""
    lab, framework, device, mode = key.split("/")
    p5 = ms * (1 - spread)
    entry = {"key": key, "lab": lab, "framework": framework, "device": device, "mode": mode, "status": "ok",
             "batch_size": 100, "threads": 1, "blocks": 9, "block_steps": 20,
             "ms_per_step": {"median": ms, "p5": p5, "p25": ms * (1 - spread / 2), "p75": ms * (1 + spread / 2),
                             "p95": ms * (1 + spread), "min": p5, "max": ms * 1.1},
             "steps_per_s": 1e3 / ms, "steps_per_s_best": 1e3 / p5, "samples_per_s": 1e5 / ms,
             "flops_per_step": flops, "gflops": flops / ms / 1e6, "gflops_best": flops / p5 / 1e6}
    pct = 100 * entry["gflops"] / (peak * matmul)  # every block at the median, against its paired matmul
    entry["pct_paired"] = {"median": pct, "p25": pct * (1 - spread), "p75": pct * (1 + spread), "n": 1024}
    bench.add_peak_figures(entry, {"gflops": peak, "spread": 0.01})
    return entry


def _record(entries: list[dict]) -> dict:
    return {"schema": bench.SCHEMA, "results": entries}


KEYS = ("xor_wide_deep/jax/cpu/fused", "xor_wide_deep/torch/cpu/eager", "mnist_dropout/jax/cpu/per_step")
MS = (0.01, 0.2, 0.2)  # against a 50 GFLOP/s peak: 200%, 10% and 10% of the matmul, all matmul-bound


def _baseline() -> dict:
    return _record([_entry(k, ms, 50.0) for k, ms in zip(KEYS, MS)])


def test_identical_results_pass():
    rows = bench.gate(_baseline(), _baseline())
    assert [r["status"] for r in rows] == ["ok"] * 3
    assert all(r["ratio"] == pytest.approx(1.0) for r in rows)
    assert bench.regressions(rows) == []


def test_a_slowdown_beyond_the_threshold_fails_and_names_the_workload():
    current = _baseline()
    slow = current["results"][1]
    current["results"][1] = _entry(slow["key"], slow["ms_per_step"]["median"] * 2, 50.0)
    rows = bench.gate(current, _baseline())
    assert bench.regressions(rows) == [KEYS[1]]
    row = rows[1]
    assert row["ratio"] == pytest.approx(0.5)
    assert row["ms_per_step"] == pytest.approx(2 * row["baseline_ms_per_step"])  # raw figures shown beside
    assert KEYS[1] in bench.format_gate(rows) and "regression" in bench.format_gate(rows)


def test_a_drop_within_the_threshold_passes_and_a_speed_up_is_not_a_failure():
    current = _baseline()
    current["results"][0] = _entry(KEYS[0], 0.01 * 1.15, 50.0)  # 13% slower: inside the 25% floor
    current["results"][2] = _entry(KEYS[2], 0.1, 50.0)  # twice as fast
    rows = bench.gate(current, _baseline())
    assert [r["status"] for r in rows] == ["ok", "ok", "improved"]


def test_noise_widens_the_threshold():
    # Both baselines have the same median; the noisy one's blocks are spread wide.
    quiet_base = _record([_entry(KEYS[0], 1.0, 50.0, spread=0.01)])
    noisy_base = _record([_entry(KEYS[0], 1.0, 50.0, spread=0.2)])
    slower = _record([_entry(KEYS[0], 1.4, 50.0, spread=0.01)])  # 29% fewer steps/s
    assert bench.gate(slower, quiet_base)[0]["status"] == "regression"
    noisy = bench.gate(slower, noisy_base)[0]
    assert noisy["threshold"] > 0.34 and noisy["status"] == "ok"
    halved = _record([_entry(KEYS[0], 2.0, 50.0, spread=0.01)])
    assert bench.gate(halved, noisy_base)[0]["status"] == "regression"  # however noisy


def test_the_gate_compares_throughput_normalised_by_the_peak_of_the_same_run():
    # A machine twice as fast in every respect: raw figures double, the normalised one does not move.
    fast = _record([_entry(k, ms / 2, 100.0) for k, ms in zip(KEYS, MS)])
    assert [r["status"] for r in bench.gate(fast, _baseline())] == ["ok"] * 3
    # Same machine peak, half the throughput: a regression even though the raw ms/step of a faster machine
    # would have hidden it.
    slow_code_fast_machine = _record([_entry(k, ms, 100.0) for k, ms in zip(KEYS, MS)])
    rows = bench.gate(slow_code_fast_machine, _baseline())
    assert len(bench.regressions(rows)) == 3
    assert {r["decided_by"] for r in rows} == {"normalised"} and all(r["matmul_bound"] for r in rows)


def test_a_matmul_bound_drop_contradicted_by_faster_steps_is_not_a_regression():
    # Seen in CI on this machine: identical code, the paired matmul 2.8x faster than at the baseline and the step
    # 2x faster: normalised 0.72, raw 1.98. Faster steps on the run's own machine are no regression.
    base = _record([_entry(KEYS[2], 0.2, 50.0)])
    quick_matmul = _record([_entry(KEYS[2], 0.1, 50.0, matmul=2.8)])
    (row,) = bench.gate(quick_matmul, base)
    assert row["ratio"] < 1 - row["threshold"] and row["raw_ratio"] > 1 + row["raw_threshold"]
    assert row["status"] == "ok" and row["decided_by"] == "raw" and row["matmul_bound"]
    # the same normalised drop with the steps unchanged or slower still fails
    for ms in (0.2, 0.3):
        (row,) = bench.gate(_record([_entry(KEYS[2], ms, 50.0, matmul=1.4 * ms / 0.2)]), base)
        assert row["status"] == "regression" and row["decided_by"] == "normalised"


def test_missing_new_and_unavailable_entries_are_reported_not_failed():
    current = _baseline()
    del current["results"][0]
    current["results"].append(_entry("mnist_dropout/torch/cpu/compiled", 30.0, 50.0))
    current["results"][0] = {**current["results"][0], "status": "unavailable", "reason": "no compiler"}
    statuses = {r["key"]: r["status"] for r in bench.gate(current, _baseline())}
    assert statuses == {KEYS[0]: "missing", KEYS[1]: "unavailable", KEYS[2]: "ok",
                        "mnist_dropout/torch/cpu/compiled": "new"}


# --- a tiny step, far from matmul-bound: the four-example XOR nets run below 1% of the matmul ------------------

TINY = "xor_wide_deep/jax/cpu/per_step"
TINY_FLOPS = 6 * 4 * (2 * 10 + 10 * 10 + 10 * 10 + 10 * 1)  # 5520 per step: 0.5% of a 100 GFLOP/s matmul at 10 us


def _tiny(ms: float = 0.01, peak: float = 100.0, spread: float = 0.05, matmul: float = 1.0) -> dict:
    return _record([_entry(TINY, ms, peak, flops=TINY_FLOPS, spread=spread, matmul=matmul)])


def test_a_2x_slowdown_of_a_tiny_step_fails_on_both_figures():
    (row,) = bench.gate(_tiny(ms=0.02), _tiny())
    assert not row["matmul_bound"] and row["baseline_pct_peak"] < bench.MATMUL_BOUND_PCT
    assert row["ratio"] == pytest.approx(0.5) and row["raw_ratio"] == pytest.approx(0.5)
    assert row["status"] == "regression" and row["decided_by"] == "normalised+raw"
    assert bench.regressions([row]) == [TINY]


def test_a_loaded_machine_with_the_tiny_step_unchanged_passes():
    # The baseline was recorded under load (its paired matmuls ran at half the quiet rate, so its normalised
    # figure is twice the quiet one); the run is quiet and the step is unchanged. The normalised figure alone
    # would call it a 0.5x regression; the raw figure shows no slowdown, and decides.
    (row,) = bench.gate(_tiny(), _tiny(matmul=0.5, spread=0.15))
    assert row["ratio"] < 1 - row["threshold"]  # the normalised figure alone would have failed it
    assert row["raw_ratio"] == pytest.approx(1.0)
    assert row["status"] == "ok" and row["decided_by"] == "raw"
    # This run under load: blocks 15% slower and noisier, paired matmuls at half rate.
    (row,) = bench.gate(_tiny(ms=0.0115, spread=0.15, matmul=0.5), _tiny())
    assert row["status"] == "ok" and row["raw_ratio"] > 1 - row["raw_threshold"]
    # The same baseline-under-load for a matmul-bound entry is judged on the normalised figure alone.
    bound = bench.gate(_record([_entry(KEYS[2], 0.2, 50.0)]), _record([_entry(KEYS[2], 0.2, 50.0, matmul=0.5)]))
    assert bound[0]["status"] == "regression" and bound[0]["decided_by"] == "normalised"


def test_a_tiny_step_keeps_the_cross_machine_property():
    # A machine twice as fast in every respect: raw twice as fast, normalised unchanged: not a regression, and
    # not an improvement either (the normalised figure, the one that carries between machines, did not move).
    (row,) = bench.gate(_tiny(ms=0.005, peak=200.0), _tiny())
    assert row["ratio"] == pytest.approx(1.0) and row["raw_ratio"] == pytest.approx(2.0)
    assert row["status"] == "ok" and row["decided_by"] == "normalised"
    # A slower machine (half the speed in every respect) with the step unchanged: raw halves, normalised holds.
    (row,) = bench.gate(_tiny(ms=0.02, peak=50.0), _tiny())
    assert row["status"] == "ok" and row["raw_ratio"] == pytest.approx(0.5)


def test_the_gate_report_names_the_deciding_figure():
    rows = bench.gate(_tiny(), _tiny(matmul=0.5)) + bench.gate(_baseline(), _baseline())
    table = bench.format_gate(rows)
    assert "decided by" in table
    assert [line.split()[-2] for line in table.splitlines()[2:]] == ["raw", "normalised", "normalised",
                                                                      "normalised"]


def test_github_action_formats():
    smaller, bigger = bench.github_action(_baseline())
    assert {d["unit"] for d in smaller} == {"ms/step"}
    assert {d["unit"] for d in bigger} == {"steps/s", "% of peak"}
    for item in smaller + bigger:
        assert set(item) <= {"name", "unit", "value", "range", "extra"}
        assert isinstance(item["value"], float) and item["name"].startswith(KEYS)
        assert re.fullmatch(r"± \d+(\.\d+)?(e[-+]\d+)?", item["range"]), item["range"]
        assert "p5 " in item["extra"] and "p95 " in item["extra"]
    # ms/step: median 0.2, p5 0.196, p95 0.204 -> half the p5..p95 width is 0.004
    assert smaller[1]["value"] == pytest.approx(0.2) and smaller[1]["range"] == "± 0.004"


@pytest.mark.parametrize("content,fragment", [
    (None, "cannot read baseline"), ("{", "is not JSON"), ('{"results": []}', "is not a bench results file"),
    ('[1]', "is not a bench results file"),
    ('{"schema": "dlzta-bench/1", "results": {}}', "has no list of results"),
    ('{"schema": "dlzta-bench/1", "results": [{"status": "ok"}]}', "is not an entry with a key"),
    ('{"schema": "dlzta-bench/1", "results": []}', "has no measured entry"),
    ('{"schema": "dlzta-bench/1", "results": [{"key": "xor_mlp/jax/cpu/fused", "status": "ok", '
     '"ms_per_step": {"median": 0.1, "p25": 0.09}}]}', "lacks pct_paired.median, pct_paired.p25"),
    ('{"schema": "dlzta-bench/1", "results": [{"key": "xor_mlp/jax/cpu/fused", "status": "ok", '
     '"ms_per_step": {"median": 0.1}, "pct_paired": {"median": "1", "p25": 0.5}}]}',
     "lacks pct_paired.median, ms_per_step.p25"),
])
def test_a_bad_baseline_is_a_one_line_usage_error_before_measuring(tmp_path, capsys, content, fragment):
    path = tmp_path / "baseline.json"
    if content is not None:
        path.write_text(content)
    assert main(["bench", "xor_mlp", "--frameworks", "jax", "--modes", "fused", "--compare", str(path)]) == 2
    out, err = capsys.readouterr()
    err = err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err
    assert out == ""  # nothing was measured


def test_a_baseline_sharing_no_workload_exits_2_before_measuring(tmp_path, capsys):
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(_baseline()))
    assert main(["bench", "xor_mlp", "--frameworks", "jax", "--modes", "fused", "--compare", str(path)]) == 2
    out, err = capsys.readouterr()
    err = err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: nothing to compare") and "xor_wide_deep/jax" in err[0]
    assert out == ""


def test_nothing_compared_is_not_a_pass():
    unavailable = _record([{**e, "status": "unavailable", "reason": "no compiler"} for e in _baseline()["results"]])
    rows = bench.gate(unavailable, _baseline())
    assert bench.regressions(rows) == [] and compared(rows) == []


# --- real runs: a short JAX per-step XOR workload, where a sync after every step costs the most --------------
# The step runs far below 5% of the matmul, so the gate needs both figures to fall: load on this shared machine
# moves one or the other (raw ms/step up to 2x, the paired matmul's share the other way), rarely both.

SHORT = ["bench", "xor_wide_deep", "--frameworks", "jax", "--modes", "per_step", "--block-steps", "2000",
         "--blocks", "15", "--overhead-rounds", "0", "--peak-repeats", "10"]  # a few seconds a run


@pytest.fixture(scope="module")
def real_baseline(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "baseline.json"
    assert main([*SHORT, "--out", str(path)]) == 0
    return path


def _skip_if_busy(*paths) -> None:
    """Wall-clock timing means nothing on a machine already running more jobs than it has cores (a load average
    of 8 on this 2-core machine put a baseline's p5..p95 at 0.02..0.22 ms/step): these tests then skip, saying
    so, when the machine is busy now or was when a run started; the synthetic tests above check the gate's logic
    whatever the load."""
    cores = os.cpu_count() or 1
    loads = [os.getloadavg()[0]] + [(json.loads(p.read_text()).get("loadavg_start") or [0])[0] for p in paths]
    if max(loads) > cores:
        pytest.skip(f"machine busy (load average {max(loads):.1f} on {cores} cores): wall-clock timing not meaningful")


def _gated(extra: list[str], out, baseline) -> tuple[int, dict]:
    """The short workload gated against ``baseline`` (skipped on a busy machine); exit status and record."""
    _skip_if_busy(baseline)
    status = main([*SHORT, *extra, "--compare", str(baseline), "--out", str(out)])
    _skip_if_busy(baseline, out)
    return status, json.loads(out.read_text())


# The two real-timing gate tests run on demand (-m slow): on this shared 2-core machine, even at a load average
# near 1, the injected sync (about 1.4x on this step) went unflagged in 1 of 7 batch runs, and a flaky test would
# fail CI for no code change. The synthetic tests above check the gate's logic (2x slowdown, load, no common
# workload, malformed baselines) whatever the load.
@pytest.mark.slow
def test_identical_code_passes_the_gate(real_baseline, tmp_path, capsys):
    status, record = _gated([], tmp_path / "same.json", real_baseline)
    assert status == 0 and record["gate"]["regressions"] == []
    assert record["gate"]["compared"] == ["xor_wide_deep/jax/cpu/per_step"]
    assert "gate: passed" in capsys.readouterr().out


@pytest.mark.slow
def test_identical_code_passes_the_gate_repeatedly(real_baseline, tmp_path):
    for attempt in range(3):
        status, record = _gated([], tmp_path / f"run{attempt}.json", real_baseline)
        assert status == 0 and record["gate"]["regressions"] == []


@pytest.mark.slow
def test_an_injected_sync_per_step_fails_the_gate(real_baseline, tmp_path, capsys):
    status, record = _gated(["--inject", "sync"], tmp_path / "slow.json", real_baseline)
    assert status == 1
    assert record["gate"]["regressions"] == ["xor_wide_deep/jax/cpu/per_step"]
    assert record["results"][0]["injected"] == "sync"
    (row,) = record["gate"]["rows"]
    assert row["decided_by"] == "normalised+raw" and not row["matmul_bound"]
    assert "gate: FAILED" in capsys.readouterr().out


def test_results_file_has_every_figure(real_baseline):
    record = json.loads(real_baseline.read_text())
    assert record["schema"] == bench.SCHEMA
    assert record["machine"]["cpu_model"] and record["machine"]["cpu_count"] >= 1
    jax_info = record["frameworks"]["jax"]
    assert jax_info["versions"]["jax"] and jax_info["devices"]["cpu"]["peak"]["gflops"] > 0
    assert jax_info["devices"]["cpu"]["settings"]["jax_default_matmul_precision"] == "highest"
    (entry,) = record["results"]
    for field in ("compile_s", "warmup_s", "block_s", "ms_per_step", "steps_per_s", "samples_per_s",
                  "flops_per_step", "gflops", "pct_peak", "pct_peak_best", "pct_paired", "paired_matmul_s",
                  "threads", "final_loss", "loadavg"):
        assert field in entry, field
    assert len(entry["block_s"]) == len(entry["paired_matmul_s"]) == 15
    ms = entry["ms_per_step"]
    assert ms["min"] <= ms["p5"] <= ms["median"] <= ms["p95"] <= ms["max"]
    assert entry["flops_per_step"] == 6 * 4 * (2 * 10 + 10 * 10 + 10 * 10 + 10 * 1)
    assert entry["status"] == "ok"
