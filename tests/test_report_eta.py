"""The main job's ETA learns from what tasks took here before (``harness.report.history``): a task timed before is
estimated at its recorded seconds; the previous results.json's ``costs`` serve where the history has nothing;
anything else falls back to the cost model, and a changed option is a new task."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json

import pytest

from harness.commands.cli import main
from harness.labs import get_lab
from harness.report import history
from harness.report.options import JobOptions
from harness.report.plan import estimate_seconds, make_plan


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DLZTA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _opts(tmp_path, **kw) -> JobOptions:
    return JobOptions(out=tmp_path / "out", labs=("xor_mlp", "gates"), frameworks=("torch", "jax"), steps=50,
                      init_study=False, **kw)


def test_the_plan_takes_recorded_seconds_and_models_the_rest(cache, tmp_path):
    opts = _opts(tmp_path)
    first = make_plan(opts)
    assert not first.timed and first.estimates["xor_mlp"] == estimate_seconds(get_lab("xor_mlp"), opts)
    history.record({first.keys["xor_mlp"]: 1.25})
    second = make_plan(opts)
    assert second.timed == {"xor_mlp"} and second.estimates["xor_mlp"] == 1.25
    assert second.estimates["gates"] == first.estimates["gates"]
    other = make_plan(_opts(tmp_path, threshold=1e-3))  # the threshold does not change what a run costs
    assert other.estimates["xor_mlp"] == 1.25
    longer = make_plan(dataclasses.replace(opts, steps=60))  # more steps: another task, not timed yet
    assert not longer.timed


def test_the_previous_results_costs_serve_where_the_history_has_nothing(cache, tmp_path):
    opts = _opts(tmp_path)
    key = opts.lab_key(get_lab("xor_mlp"))
    old = {"labs": {"xor_mlp": {"key": {**key, "code": "an older version"}, "status": "ok",
                                "costs": {"compute": {"wall_s": 3.5, "cpu_s": 3.0, "calls": 1},
                                          "compute/train/torch": {"wall_s": 1.0, "cpu_s": 1.0, "calls": 1}}}}}
    opts.out.mkdir(parents=True)
    (opts.out / "results.json").write_text(json.dumps(old))
    plan = make_plan(opts)
    assert plan.saved["xor_mlp"] is None  # other code: not reused ...
    assert plan.timed == {"xor_mlp"} and plan.estimates["xor_mlp"] == 3.5  # ... but it says what the lab costs
    old["labs"]["xor_mlp"]["key"]["steps"] = 500
    (opts.out / "results.json").write_text(json.dumps(old))
    assert not make_plan(opts).timed


def test_a_job_records_its_tasks_and_the_next_one_says_so(cache, tmp_path):
    args = ["report", "--labs", "xor_mlp", "--steps", "20", "--no-noise", "--no-init-study", "--no-resume",
            "--no-html", "--out", str(tmp_path / "r")]
    for expect in ("0 of 1 timed here before", "1 of 1 timed here before"):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert main(args) == 0
        assert expect in out.getvalue().splitlines()[0], out.getvalue()
    recorded = json.loads((cache / history.FILE).read_text())
    assert len(recorded) == 1 and 0 < next(iter(recorded.values())) < 600


def test_an_unreadable_history_is_an_empty_one(cache):
    cache.mkdir()
    (cache / history.FILE).write_text("{not json")
    assert history.load() == {}
    history.record({"k": 2.0})
    assert history.load() == {"k": 2.0}
