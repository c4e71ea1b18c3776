"""``dlzta reproduce`` and the MNIST labs' course-shaped outputs: the batch-norm lab's per-epoch table of both
models, the hand-written backprop lab's correct-of-first-1000 series, the raw-pixel evaluation."""

from __future__ import annotations

import json

import pytest

from harness.commands.cli import main
from harness.commands.reproduce import accuracy_spread, render, reproduce
from harness.labs import GROUPS, LABS, LabError, get_lab, lab_names
from harness.run.runner import RunOptions, run


def test_lab_names_and_groups():
    assert lab_names("mnist") == GROUPS["mnist"] == tuple(n for n, lab in LABS.items() if lab.task == "mnist")
    assert "mnist_deep_xavier_published" in GROUPS["mnist"] and "mnist_batchnorm" in GROUPS["mnist"]
    assert lab_names("xor_mlp, mnist_softmax,xor_mlp") == ("xor_mlp", "mnist_softmax")
    assert lab_names("all") == tuple(LABS)
    with pytest.raises(LabError, match="mnist_sofmax"):
        lab_names("mnist_sofmax")


@pytest.fixture(scope="module")
def short(tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "reproduce.json"
    options = RunOptions(data="mnist-5k", steps=130, weights="shared")
    return reproduce(("mnist_softmax", "mnist_batchnorm"), options, out=str(out)), out


def test_reproduce_puts_the_course_next_to_both_frameworks(short):
    results, out = short
    assert json.loads(out.read_text())["labs"].keys() == {"mnist_softmax", "mnist_batchnorm"}
    assert results["data"]["mnist-5k"]["train_size"] == 4000 and results["weights"] == "shared"
    soft = results["labs"]["mnist_softmax"]
    assert soft["reference_raw_pixels"] and soft["steps"] == 130
    for fw in ("torch", "jax"):
        run_ = soft["runs"][fw]
        assert run_["status"] == "ok" and run_["data"]["source"] == "mnist-5k" and run_["wall_s"] > 0
        assert 0 <= run_["raw_pixels"]["final"]["accuracy"] <= 1  # the course's way, beside the correct one
        assert len(run_["epoch_cost"]) == 3  # 40 steps an epoch on mnist-5k
    rows = {r[0]: r for r in soft["rows"]}
    assert rows["cost, epoch 1"][1] == "4.84818"  # the course's number in its column
    assert rows["test accuracy (pixels in [0, 1])"][1] == "0.8944*"
    # same initial weights and batches: the first epoch's cost agrees to float32 rounding
    torch_cost, jax_cost = (soft["runs"][fw]["epoch_cost"][0] for fw in ("torch", "jax"))
    assert jax_cost == pytest.approx(torch_cost, rel=1e-4)
    assert soft["accuracy_gap_pp"] is not None
    text = "\n".join(render(results))
    assert "mnist-5k" in text and "raw 0..255" in text and "mnist_batchnorm" in text


def test_reproduce_batchnorm_shows_both_models_per_epoch(short):
    bn = short[0]["labs"]["mnist_batchnorm"]
    assert not bn["reference_raw_pixels"]
    for fw in ("torch", "jax"):
        run_ = bn["runs"][fw]
        assert "raw_pixels" not in run_
        assert [e["epoch"] for e in run_["epochs"]] == [1]  # 125 steps an epoch
        assert set(run_["epochs"][0]) == {"epoch", "bn", "plain"}
        assert run_["companion"]["model"] == "plain" and run_["companion"]["status"] == "ok"
    rows = {r[0]: r for r in bn["rows"]}
    assert rows["bn valid loss (acc), epoch 1"][1] == "–"  # the course printed epoch 10
    assert "bn ahead of plain (valid loss) every epoch" in rows


def test_manual_backprop_series_beside_the_course():
    record = run(get_lab("mnist_backprop_manual"), "jax", RunOptions(data="mnist-5k", steps=2000))
    series = record["correct_of_first_1000"]
    assert [(s["step"], s["course"]) for s in series] == [(1000, 736), (2000, 862)]
    assert all(600 < s["correct"] <= 1000 for s in series)
    assert series[-1]["correct"] == record["final"]["test_correct_of_first_1000"]


def test_reproduce_command(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["reproduce", "--labs", "mnist_softmax", "--data", "mnist-5k", "--steps", "20",
                 "--frameworks", "jax", "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mnist_softmax" in printed and "course" in printed and "jax" in printed
    assert json.loads(out.read_text())["labs"]["mnist_softmax"]["runs"]["jax"]["status"] == "ok"
    assert main(["reproduce", "--labs", "nope"]) == 2
    assert main(["reproduce", "--frameworks", "mxnet"]) == 2
    assert main(["reproduce", "--threads", "zero"]) == 2
    assert main(["reproduce", "--repeats", "2", "--weights", "native"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 4 and "nope" in err and "mxnet" in err and "--weights shared" in err


def test_repeats_draw_the_rounding_noise_spread():
    options = RunOptions(data="mnist-5k", steps=40, weights="shared")
    results = reproduce(("mnist_softmax",), options, frameworks=("jax",), repeats=3)
    run_ = results["labs"]["mnist_softmax"]["runs"]["jax"]
    assert [r["nudge_ulps"] for r in run_["repeats"]] == [1, 2]
    assert all(0 <= r["accuracy"] <= 1 and r["cost_last_epoch"] > 0 for r in run_["repeats"])
    spread = accuracy_spread(run_)
    assert spread["n"] == 3 and spread["min"] <= spread["mean"] <= spread["max"]
    assert any(r[0].startswith("test accuracy, mean ± sd of 3 runs") for r in results["labs"]["mnist_softmax"]["rows"])
