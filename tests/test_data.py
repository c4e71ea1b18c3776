"""Tests for harness.data.datasets: MNIST sources (bundled, TFDS, IDX), disk cache, auto, XOR data, batch order."""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.data import datasets as data
from harness.data import idx
from harness.data import tfds as mnist_sources
from harness.data.datasets import DataError, batch_order, gates_data, load_mnist, xor_data

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "tfds_mnist_tiny"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Fresh memo, a private cache dir and an empty default TFDS data dir for every test."""
    monkeypatch.setenv("DLZTA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "no_tfds_here"))
    data.clear_memo()
    yield
    data.clear_memo()


@pytest.fixture
def tfds():
    return pytest.importorskip("tensorflow_datasets")


def _one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg
    return msg


# ---------------------------------------------------------------- bundled subset


def test_mnist_5k_shapes_balance_and_record():
    ds = load_mnist("mnist-5k")
    assert ds.train_x.shape == (4000, 784) and ds.test_x.shape == (1000, 784)
    assert ds.train_x.dtype == np.float32 and ds.test_x.dtype == np.float32
    assert ds.train_y.dtype == np.int32 and ds.test_y.dtype == np.int32
    assert ds.train_x.min() == 0.0 and ds.train_x.max() == 1.0
    assert np.bincount(ds.train_y, minlength=10).tolist() == [400] * 10
    assert np.bincount(ds.test_y, minlength=10).tolist() == [100] * 10
    r = ds.record
    assert (r["source"], r["name"], r["train_size"], r["test_size"]) == ("mnist-5k", "mnist", 4000, 1000)
    assert Path(r["path"]) == data.ASSET_PATH and data.ASSET_PATH.is_file()
    assert r["sha256"] == data._checksum(ds.train_x, ds.train_y, ds.test_x, ds.test_y)
    assert len(r["sha256"]) == 64
    # the pixels are the asset's uint8 values / 255
    with np.load(data.ASSET_PATH) as z:
        np.testing.assert_array_equal(
            np.rint(ds.train_x * 255).astype(np.uint8), z["train_images"].reshape(-1, 784)
        )
        np.testing.assert_array_equal(ds.test_y, z["test_labels"])


def test_loaded_once_and_read_only():
    a, b = load_mnist("mnist-5k"), load_mnist("mnist-5k")
    assert a.train_x is b.train_x and a.record == b.record
    assert a.record is not b.record  # each caller gets its own record dict
    with pytest.raises(ValueError):
        a.train_x[0, 0] = 0.5


def test_unknown_source():
    for bad in ("mnist", "tfds:", "idx:", "cifar"):
        with pytest.raises(DataError) as e:
            load_mnist(bad)
        _one_line_error(e)


# ---------------------------------------------------------------- TFDS


def test_tfds_reads_fixture(tfds):
    ds = load_mnist("tfds", data_dir=str(FIXTURE))
    assert ds.train_x.shape == (64, 784) and ds.test_x.shape == (32, 784)
    assert ds.train_x.dtype == np.float32 and ds.train_y.dtype == np.int32
    assert ds.train_x.min() >= 0.0 and ds.train_x.max() <= 1.0
    r = ds.record
    assert (r["source"], r["name"], r["version"], r["train_size"], r["test_size"]) == (
        "tfds",
        "mnist",
        "3.0.1",
        64,
        32,
    )
    assert r["data_dir"] == str(FIXTURE) and r["path"] == str(FIXTURE / "mnist" / "3.0.1")
    # same values as reading the data source directly
    src = tfds.data_source("mnist", data_dir=str(FIXTURE), download=False)
    for i in (0, 63):
        item = src["train"][i]
        assert ds.train_y[i] == item["label"]
        np.testing.assert_array_equal(ds.train_x[i], item["image"].reshape(784) / np.float32(255))
    assert load_mnist("tfds:mnist", data_dir=str(FIXTURE)).record["sha256"] == r["sha256"]


def _copy_fixture(tmp_path: Path) -> Path:
    dst = tmp_path / "tfds_data"
    shutil.copytree(FIXTURE, dst)
    for p in dst.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return dst


def _count_decodes(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = mnist_sources._decode_split

    def counting(builder, split):
        calls.append(split)
        return real(builder, split)

    monkeypatch.setattr(mnist_sources, "_decode_split", counting)
    return calls


def test_tfds_disk_cache_written_reused_and_invalidated(tfds, tmp_path, monkeypatch):
    data_dir = _copy_fixture(tmp_path)
    cache = tmp_path / "cache"
    calls = _count_decodes(monkeypatch)

    first = load_mnist("tfds", data_dir=str(data_dir))
    assert calls == ["train", "test"]
    files = sorted(cache.iterdir())
    assert [f.name for f in files] == [Path(first.record["cache"]).name]
    assert files[0].name.startswith("tfds-mnist-3.0.1-") and files[0].suffix == ".npz"

    # memo: no reload at all in the same process
    assert load_mnist("tfds", data_dir=str(data_dir)).train_x is first.train_x
    # fresh process state: served from the disk cache, no decoding
    data.clear_memo()
    again = load_mnist("tfds", data_dir=str(data_dir))
    assert calls == ["train", "test"]
    assert again.record["sha256"] == first.record["sha256"]

    # a changed source file (new mtime) is a new key: decoded again, even without clearing the memo
    shard = data_dir / "mnist" / "3.0.1" / "mnist-train.array_record-00000-of-00001"
    st = shard.stat()
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    changed = load_mnist("tfds", data_dir=str(data_dir))
    assert calls == ["train", "test"] * 2
    assert changed.record["cache"] != first.record["cache"]
    assert len(list(cache.glob("*.npz"))) == 2
    assert not [f for f in cache.iterdir() if not f.name.endswith(".npz")]  # no temp files left behind


def test_tfds_cache_key_includes_data_dir(tfds, tmp_path, monkeypatch):
    a, b = _copy_fixture(tmp_path / "a"), _copy_fixture(tmp_path / "b")
    calls = _count_decodes(monkeypatch)
    ra, rb = load_mnist("tfds", data_dir=str(a)).record, load_mnist("tfds", data_dir=str(b)).record
    assert ra["cache"] != rb["cache"] and len(calls) == 4
    assert ra["sha256"] == rb["sha256"]


def test_tfds_corrupt_cache_is_rebuilt(tfds, tmp_path, monkeypatch):
    data_dir = _copy_fixture(tmp_path)
    good = load_mnist("tfds", data_dir=str(data_dir))
    cache_file = Path(good.record["cache"])
    calls = _count_decodes(monkeypatch)
    for junk in (b"not an npz file", cache_file.read_bytes()[:500]):
        cache_file.write_bytes(junk)
        data.clear_memo()
        rebuilt = load_mnist("tfds", data_dir=str(data_dir))
        assert rebuilt.record["sha256"] == good.record["sha256"]
        with np.load(cache_file) as z:  # rewritten, valid again
            assert z["train_images"].shape == (64, 28, 28)
    assert calls == ["train", "test"] * 2


def test_tfds_missing_dataset_names_ways_forward(tfds, tmp_path, monkeypatch):
    monkeypatch.setattr(mnist_sources, "tensorflow_available", lambda: False)
    prepared: list = []
    monkeypatch.setattr(mnist_sources, "_prepare", prepared.append)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError) as e:
        load_mnist("tfds", data_dir=str(empty))
    msg = _one_line_error(e)
    assert str(empty) in msg and "not prepared" in msg and "TensorFlow is not installed" in msg
    for way in ("install TensorFlow", "online", "--data-dir", "idx:DIR", "mnist-5k"):
        assert way in msg
    # other datasets by name get the same treatment
    with pytest.raises(DataError, match="fashion_mnist is not prepared"):
        load_mnist("tfds:fashion_mnist", data_dir=str(FIXTURE))
    assert prepared == []
    assert not list(empty.iterdir())  # nothing written into the data dir


def test_tfds_prepares_only_with_tensorflow_and_network(tfds, tmp_path, monkeypatch):
    prepared: list = []

    def fake_prepare(builder):
        prepared.append(builder.name)
        raise DataError("stub prepare")

    monkeypatch.setattr(mnist_sources, "_prepare", fake_prepare)
    monkeypatch.setattr(mnist_sources, "tensorflow_available", lambda: True)
    monkeypatch.setattr(mnist_sources, "online", lambda timeout=2.0: False)
    with pytest.raises(DataError, match="no network") as e:
        load_mnist("tfds:kmnist", data_dir=str(tmp_path))
    assert "install TensorFlow" in _one_line_error(e) and prepared == []
    monkeypatch.setattr(mnist_sources, "online", lambda timeout=2.0: True)
    with pytest.raises(DataError, match="stub prepare"):
        load_mnist("tfds:kmnist", data_dir=str(tmp_path))
    assert prepared == ["kmnist"]


def test_tfds_rejects_other_shapes_and_unknown_names(tfds, tmp_path):
    with pytest.raises(DataError, match="not an MNIST-shaped dataset") as e:
        load_mnist("tfds:cifar10", data_dir=str(tmp_path))
    _one_line_error(e)
    with pytest.raises(DataError, match="tfds:no_such_dataset") as e:
        load_mnist("tfds:no_such_dataset", data_dir=str(tmp_path))
    _one_line_error(e)


def test_tfds_not_installed(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import now raises ImportError
    with pytest.raises(DataError, match="tensorflow-datasets is not installed") as e:
        load_mnist("tfds", data_dir=str(FIXTURE))
    assert "mnist-5k" in _one_line_error(e)


# ---------------------------------------------------------------- auto


def test_auto_picks_prepared_tfds(tfds):
    ds = load_mnist(data_dir=str(FIXTURE))
    assert (
        ds.record["source"] == "tfds" and ds.record["requested"] == "auto" and ds.record["train_size"] == 64
    )


def test_auto_falls_back_to_bundled(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = load_mnist("auto", data_dir=str(empty)).record
    assert (r["source"], r["requested"], r["train_size"], r["test_size"]) == ("mnist-5k", "auto", 4000, 1000)
    assert load_mnist().record["source"] == "mnist-5k"  # default TFDS dir (empty here)
    # without tensorflow_datasets, even a prepared dir falls back
    data.clear_memo()
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # as if not installed
    assert load_mnist("auto", data_dir=str(FIXTURE)).record["source"] == "mnist-5k"


def test_bundled_path_never_imports_tfds(tmp_path):
    code = (
        "import sys; from harness.data.datasets import load_mnist; "
        f"assert load_mnist('auto', data_dir={str(tmp_path)!r}).record['source'] == 'mnist-5k'; "
        "assert load_mnist('mnist-5k').train_x.shape == (4000, 784); "
        "assert 'tensorflow_datasets' not in sys.modules and 'tensorflow' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


# ---------------------------------------------------------------- IDX


def _idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    return (
        struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()
    )


def _write_idx_dir(folder: Path, gz: bool, n_train: int = 12, n_test: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, arr in arrays.items():
        raw = _idx_bytes(arr, idx.IMAGES_MAGIC if arr.ndim == 3 else idx.LABELS_MAGIC)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return arrays


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "raw"])
def test_idx_reads_files(tmp_path, gz):
    arrays = _write_idx_dir(tmp_path / "mnist_files", gz)
    ds = load_mnist(f"idx:{tmp_path / 'mnist_files'}")
    assert ds.train_x.shape == (12, 784) and ds.test_x.shape == (6, 784)
    assert ds.train_x.dtype == np.float32 and ds.test_y.dtype == np.int32
    np.testing.assert_array_equal(
        ds.train_x, arrays["train-images-idx3-ubyte"].reshape(12, 784) / np.float32(255)
    )
    np.testing.assert_array_equal(ds.test_y, arrays["t10k-labels-idx1-ubyte"])
    r = ds.record
    assert (r["source"], r["name"], r["path"]) == ("idx", "mnist_files", str(tmp_path / "mnist_files"))
    assert (r["train_size"], r["test_size"]) == (12, 6)
    assert r["sha256"] == data._checksum(ds.train_x, ds.train_y, ds.test_x, ds.test_y)


def test_idx_memo_notices_changed_files(tmp_path):
    folder = tmp_path / "d"
    _write_idx_dir(folder, gz=False, n_train=12)
    assert load_mnist(f"idx:{folder}").record["train_size"] == 12
    _write_idx_dir(folder, gz=False, n_train=20)
    assert load_mnist(f"idx:{folder}").record["train_size"] == 20


def _corrupt(folder: Path, gz: bool, fault: str) -> str:
    """Damage one file of a written IDX dir; returns the damaged file's name."""
    suffix = ".gz" if gz else ""
    images, labels = "train-images-idx3-ubyte" + suffix, "train-labels-idx1-ubyte" + suffix

    def rewrite(name: str, fn) -> None:
        p = folder / name
        raw = gzip.decompress(p.read_bytes()) if gz else p.read_bytes()
        raw = fn(raw)
        p.write_bytes(gzip.compress(raw) if gz else raw)

    if fault == "magic":
        rewrite(images, lambda r: struct.pack(">I", 0x00000801) + r[4:])
        return images
    if fault == "dims":  # header says 13 images, payload holds 12
        rewrite(images, lambda r: r[:4] + struct.pack(">I", 13) + r[8:])
        return images
    if fault == "extra":  # payload longer than the header says
        rewrite(images, lambda r: r + b"\0" * 784)
        return images
    if fault == "truncated":
        rewrite(images, lambda r: r[:-100])
        return images
    if fault == "short_header":
        rewrite(labels, lambda r: r[:6])
        return labels
    if fault == "count":  # 12 images, 11 labels (consistent header)
        rewrite(labels, lambda r: struct.pack(">II", 0x00000801, 11) + r[8:-1])
        return labels
    if fault == "label_range":
        rewrite(labels, lambda r: r[:-1] + bytes([10]))
        return labels
    if fault == "size":  # 14x56 images
        rewrite(images, lambda r: r[:8] + struct.pack(">II", 14, 56) + r[16:])
        return images
    if fault == "missing":
        (folder / labels).unlink()
        return labels.removesuffix(".gz")
    raise AssertionError(fault)


FAULTS = {
    "magic": "wrong magic number",
    "dims": "truncated",
    "extra": "header dimensions",
    "truncated": "truncated",
    "short_header": "truncated",
    "count": "11 labels but",
    "label_range": "label 10 outside 0..9",
    "size": "expected 28x28",
    "missing": "missing file",
}


@pytest.mark.parametrize("gz", [True, False], ids=["gzipped", "raw"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_idx_corrupt_files_raise(tmp_path, gz, fault):
    folder = tmp_path / "idx"
    _write_idx_dir(folder, gz)
    name = _corrupt(folder, gz, fault)
    with pytest.raises(DataError) as e:
        load_mnist(f"idx:{folder}")
    msg = _one_line_error(e)
    assert name in msg and FAULTS[fault] in msg


@pytest.mark.parametrize("damage", ["garbage", "cut"])
def test_idx_corrupt_gzip(tmp_path, damage):
    folder = tmp_path / "idx"
    _write_idx_dir(folder, gz=True)
    p = folder / "t10k-images-idx3-ubyte.gz"
    raw = p.read_bytes()
    p.write_bytes(raw[:10] + b"\xff" * 50 if damage == "garbage" else raw[: len(raw) // 2])
    with pytest.raises(DataError) as e:
        load_mnist(f"idx:{folder}")
    msg = _one_line_error(e)
    assert "t10k-images-idx3-ubyte.gz" in msg and "corrupt gzip" in msg


def test_idx_not_gzip_despite_name_and_missing_dir(tmp_path):
    folder = tmp_path / "idx"
    _write_idx_dir(folder, gz=True)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"plain text")
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz: corrupt gzip"):
        load_mnist(f"idx:{folder}")
    with pytest.raises(DataError, match="missing directory") as e:
        load_mnist(f"idx:{tmp_path / 'nope'}")
    assert "nope" in _one_line_error(e)


# ---------------------------------------------------------------- XOR / gates


def test_xor_and_gates():
    x, y = xor_data()
    assert x.dtype == np.float32 and y.dtype == np.float32
    assert x.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]] and y.tolist() == [[0], [1], [1], [0]]
    gx, gy = gates_data(np.float64)
    assert gx.dtype == np.float64 and gx.tolist() == x.tolist()
    assert gy.shape == (4, 3)
    a, b = x[:, 0].astype(bool), x[:, 1].astype(bool)
    assert gy[:, 0].tolist() == (a & b).tolist()
    assert gy[:, 1].tolist() == (a | b).tolist()
    assert gy[:, 2].tolist() == (a ^ b).tolist() == y[:, 0].tolist()


# ---------------------------------------------------------------- batch order


def test_batch_order_shape_and_epoch_coverage():
    order = batch_order(10, 5, 3, seed=7)
    assert order.shape == (6, 5) and order.dtype == np.int32
    for epoch in order.reshape(3, 10):
        assert sorted(epoch.tolist()) == list(range(10))
    assert not np.array_equal(order[:2], order[2:4])  # a new permutation each epoch


def test_batch_order_drop_last_partial():
    order = batch_order(103, 10, 2, seed=1)
    assert order.shape == (20, 10)
    for epoch in order.reshape(2, 100):
        assert len(set(epoch.tolist())) == 100 and epoch.min() >= 0 and epoch.max() < 103


def test_batch_order_deterministic_and_documented_scheme():
    a = batch_order(60, 6, 4, seed=123)
    assert np.array_equal(a, batch_order(60, 6, 4, seed=123))
    assert not np.array_equal(a, batch_order(60, 6, 4, seed=124))
    rng = np.random.default_rng(123)
    expected = np.concatenate([rng.permutation(60).reshape(10, 6) for _ in range(4)])
    np.testing.assert_array_equal(a, expected)


def test_batch_order_no_shuffle_and_drop_last_false():
    np.testing.assert_array_equal(
        batch_order(6, 2, 2, seed=0, shuffle=False), np.tile(np.arange(6), 2).reshape(6, 2)
    )
    np.testing.assert_array_equal(batch_order(6, 2, 1, seed=3, drop_last=False), batch_order(6, 2, 1, seed=3))
    with pytest.raises(DataError, match="drop_last=False"):
        batch_order(7, 2, 1, seed=0, drop_last=False)
    for bad in ((0, 1, 1), (5, 0, 1), (5, 6, 1), (5, 1, -1)):
        with pytest.raises(DataError):
            batch_order(*bad, seed=0)
    assert batch_order(5, 5, 0, seed=0).shape == (0, 5)
