"""Bad input and faults (issue 12): each gives one ``error:`` line and exit status 2 before any work, and
nothing written is lost; property-based checks over the IDX reader and the numeric options of ``run``."""

from __future__ import annotations

import gzip
import json
import os
import signal
import struct
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.backend import RunSpec
from harness.commands.cli import main
from harness.data import datasets as data
from harness.data import idx
from harness.data.datasets import DataError
from harness.errors import UsageError
from harness.labs import LabError, get_lab
from harness.run import results
from harness.run.runner import RunOptions, prepare


def _one_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    return err[0]


def _idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def _write_idx(folder: Path, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    for (images, labels), (img_name, lab_name) in zip((train, test), ((0, 1), (2, 3))):
        (folder / idx.IDX_FILES[img_name]).write_bytes(gzip.compress(_idx_bytes(images, idx.IMAGES_MAGIC)))
        (folder / idx.IDX_FILES[lab_name]).write_bytes(_idx_bytes(labels, idx.LABELS_MAGIC))
    return f"idx:{folder}"


def _digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


# ------------------------------------------------------------------------------ 1. output paths, up front


@pytest.mark.parametrize("command", [["run", "xor_mlp", "--framework", "torch"], ["compare", "xor_mlp"],
                                     ["reproduce", "--labs", "xor_mlp", "--frameworks", "torch"]])
def test_out_that_is_a_folder_fails_before_training(tmp_path, capsys, command):
    start = time.perf_counter()
    assert main([*command, "--out", str(tmp_path)]) == 2
    assert "is a folder; give a file name" in _one_error(capsys)
    assert time.perf_counter() - start < 5  # nothing trained (a full run takes longer)
    assert list(tmp_path.iterdir()) == []


def test_out_under_a_file_and_unwritable_folders(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("kept")
    assert main(["run", "xor_mlp", "--framework", "torch", "--out", str(blocker / "r.json")]) == 2
    assert "is a file, not a folder" in _one_error(capsys)
    assert blocker.read_text() == "kept"
    with pytest.raises(UsageError, match="is a file, not a folder"):
        results.check_output_dir(blocker)
    results.check_output_dir(tmp_path / "new" / "report")  # creatable: fine, and nothing created
    assert not (tmp_path / "new").exists()
    if os.geteuid() != 0:  # root writes into read-only folders anyway
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        with pytest.raises(UsageError, match="cannot write in"):
            results.check_output_file(ro / "r.json")


# ------------------------------------------------------------------------------ 2. batch vs training set


def test_batch_larger_than_the_training_set(capsys):
    argv = ["run", "mnist_softmax", "--framework", "torch", "--data", "mnist-5k", "--batch-size", "4001"]
    assert main(argv) == 2
    assert "batch size 4001 is larger than the training set (4000 examples" in _one_error(capsys)


# ------------------------------------------------------------------------------ 3. divergence in torch


@pytest.mark.parametrize("lr,fragment", [("nan", "positive and finite"), ("inf", "positive and finite"),
                                          ("1e300", "does not fit float32"), ("-1", "positive and finite")])
@pytest.mark.parametrize("framework", ["torch", "jax"])
def test_unusable_learning_rates(capsys, lr, fragment, framework):
    assert main(["run", "xor_mlp", "--framework", framework, "--lr", lr]) == 2
    assert fragment in _one_error(capsys)


def test_torch_step_that_raises_on_non_finite_weights_is_a_divergence():
    from torch_impl import train

    lab = get_lab("xor_mlp")
    spec = prepare(lab, RunOptions(weights="shared", steps=5)).spec
    nan = {k: np.full_like(v, np.nan) for k, v in spec.params.items()}
    result = train.train(RunSpec(**{**spec.__dict__, "params": nan}))  # torch's BCE refuses NaN inputs
    assert np.isnan(result.losses).all()
    # a raise with finite weights is a real error, not a divergence
    with pytest.raises(RuntimeError, match="planted"):
        train._diverging(lambda *a: (_ for _ in ()).throw(RuntimeError("planted")),
                         train._ManualLearner(spec, train.DTYPES["float32"], train.torch.device("cpu")),
                         train.DTYPES["float32"])()


# ------------------------------------------------------------------------------ 4. seeds


@pytest.mark.parametrize("seed", ["-1", str(2**32), str(2**70)])
@pytest.mark.parametrize("lab", ["xor_mlp", "mnist_softmax"])
def test_seeds_outside_the_generators_range(capsys, seed, lab):
    assert main(["run", lab, "--framework", "torch", "--data", "mnist-5k", "--seed", seed, "--weights", "shared"]) == 2
    assert "seed must be in 0..4294967295" in _one_error(capsys)


def test_largest_seed_runs_in_both_frameworks():
    from harness.run.runner import run

    for fw in ("torch", "jax"):
        assert run(get_lab("mnist_softmax"), fw, RunOptions(data="mnist-5k", steps=2, seed=2**32 - 1,
                                                           weights="shared"))["status"] == "ok"


# ------------------------------------------------------------------------------ 5. empty splits


@pytest.mark.parametrize("empty", ["train", "test"])
def test_idx_split_with_no_images(tmp_path, capsys, empty):
    sets = {"train": _digits(12), "test": _digits(6, 1)}
    sets[empty] = (np.zeros((0, 28, 28), np.uint8), np.zeros(0, np.uint8))
    source = _write_idx(tmp_path / empty, sets["train"], sets["test"])
    with pytest.raises(DataError, match=f"the {empty} split has no images"):
        data.load_mnist(source)
    data.clear_memo()
    assert main(["run", "mnist_softmax", "--framework", "torch", "--data", source]) == 2
    assert "has no images" in _one_error(capsys)


# ------------------------------------------------------------------------------ 8. lazy batch order


def test_huge_epochs_cut_short_use_little_memory_and_the_same_batches():
    lab = get_lab("mnist_softmax")
    tracemalloc.start()
    prepared = prepare(lab, RunOptions(data="mnist-5k", steps=3, overrides={"epochs": 100_000_000}))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert prepared.steps == 3 and peak < 64 * 2**20
    full = prepare(lab, RunOptions(data="mnist-5k", steps=100))  # the batches as drawn for the whole run
    reference = data.batch_order(4000, 100, lab.epochs, lab.seed)
    np.testing.assert_array_equal(full.spec.batches, reference[:100])
    np.testing.assert_array_equal(prepared.spec.batches, reference[:3])
    with pytest.raises(LabError, match="too long a run"):
        prepare(lab, RunOptions(data="mnist-5k", overrides={"epochs": 100_000_000}))


# ------------------------------------------------------------------------------ results: keys, data identity


def test_final_keys_have_one_meaning_and_runs_record_the_machine():
    from harness.run.runner import run

    xor = run(get_lab("xor_mlp"), "torch", RunOptions(steps=50))
    assert xor["final"]["train_loss"] == xor["loss"][-1]
    assert 0 <= xor["final"]["train_accuracy"] <= 1
    assert "test_loss" not in xor["final"] and not {"loss", "accuracy"} & set(xor["final"])  # no aliases
    mnist = run(get_lab("mnist_softmax"), "torch", RunOptions(data="mnist-5k", steps=30, log_every=1))
    final = mnist["final"]
    assert final["train_loss"] == mnist["loss"][-1] != final["test_loss"]
    assert not {"loss", "accuracy", "correct_of_first_1000", "test", "train"} & set(final)  # one name per figure
    machine = mnist["machine"]
    assert machine["cpu"] and machine["cpu_count"] >= 1 and machine["threads"]["torch"] >= 1


def test_fingerprint_ignores_row_order(tmp_path):
    train, test = _digits(30), _digits(10, 1)
    perm = np.random.default_rng(5).permutation(30)
    a = data.load_mnist(_write_idx(tmp_path / "a", train, test)).record
    b = data.load_mnist(_write_idx(tmp_path / "b", (train[0][perm], train[1][perm]), test)).record
    assert a["sha256"] != b["sha256"]  # the ordered checksum fixes the batch order
    assert a["fingerprint"] == b["fingerprint"]
    changed = (train[0].copy(), train[1])
    changed[0][0, 0, 0] ^= 1
    c = data.load_mnist(_write_idx(tmp_path / "c", changed, test)).record
    assert c["fingerprint"]["train"] != a["fingerprint"]["train"]
    assert c["fingerprint"]["test"] == a["fingerprint"]["test"]


# ------------------------------------------------------------------------------ atomic writes, stale temps


def test_a_signal_during_the_write_lands_after_the_rename(tmp_path):
    target = tmp_path / "r.json"
    results.write_json(target, {"old": True})
    with pytest.raises(KeyboardInterrupt):
        with results._signals_held():
            os.kill(os.getpid(), signal.SIGINT)  # held until the block ends
            results.write_json(target, {"new": True})
    assert json.loads(target.read_text()) == {"new": True}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_clean_stale_temps_removes_only_old_ones(tmp_path):
    (tmp_path / "labs").mkdir()
    old, fresh = tmp_path / "labs" / ".a.json.abc123.tmp", tmp_path / ".b.json.def456.tmp"
    for p in (old, fresh):
        p.write_text("partial")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    os.utime(fresh, (time.time() + 5, time.time() + 5))
    keep = tmp_path / "report.md"
    keep.write_text("kept")
    assert results.clean_stale_temps(tmp_path) == [old]
    assert fresh.exists() and keep.exists() and not old.exists()


# ------------------------------------------------------------------------------ property-based


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(magic=st.one_of(st.just(idx.IMAGES_MAGIC), st.integers(0, 2**32 - 1)),
       dims=st.lists(st.integers(0, 40), min_size=0, max_size=4),
       payload=st.binary(max_size=3000), cut=st.integers(0, 40), gz=st.booleans())
def test_idx_reader_never_raises_anything_but_a_data_error(magic, dims, payload, cut, gz):
    raw = struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + payload
    raw = raw[:len(raw) - cut] if cut else raw
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "f.gz"
        path.write_bytes(gzip.compress(raw)[:None if not cut % 3 else -cut] if gz else raw)
        try:
            out = idx.read_idx(path, idx.IMAGES_MAGIC)
        except DataError as exc:
            assert "\n" not in str(exc)
        else:
            assert out.dtype == np.uint8 and out.ndim == 3


_NUMBER = st.one_of(st.integers(-2**70, 2**70).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.sampled_from(["0", "1", "-0", "1e-320", "1e39", "nan", "", "x", "0x10"]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(option=st.sampled_from(["--lr", "--dropout", "--seed", "--steps", "--batch-size", "--epochs", "--log-every"]),
       value=_NUMBER, lab=st.sampled_from(["xor_mlp", "mnist_dropout"]))
def test_numeric_options_never_give_a_traceback(option, value, lab):
    argv = ["run", lab, "--framework", "torch", "--data", "mnist-5k", "--quiet", f"{option}={value}"]
    if option != "--steps":
        argv += ["--steps", "1"]
    if option == "--epochs":
        argv += ["--batch-size", "4000"]
    assert main(argv) in (0, 2)
