"""TFDS source for :func:`harness.data.datasets.load_mnist`, with an on-disk cache of the decoded arrays.

``tensorflow_datasets`` is imported only inside these functions, so the harness runs without it. Prepared
datasets are read with ``tfds`` random-access data sources (array_record), which need no TensorFlow.

Disk cache: decoding 70,000 PNGs takes ~10 s, so the decoded uint8 arrays are kept as an uncompressed
``.npz`` in ``$DLZTA_CACHE_DIR`` (default ``$XDG_CACHE_HOME/dlzta``, else ``~/.cache/dlzta``), named
``tfds-<name>-<version>-<key>.npz``. ``<key>`` is the first 24 hex digits of the sha256 of a JSON record of
the cache format, dataset name, version, the absolute data dir and dataset dir, and the name, size and
mtime (ns) of every file in the dataset dir; the full record is stored in the file and compared on load,
so a changed source is never served stale. Writes go to a temp file then ``os.replace``; an unreadable
or mismatching cache file is ignored and rebuilt.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import socket
import tempfile
import threading
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import DataError

CACHE_FORMAT = 1
NETWORK_PROBE = ("storage.googleapis.com", 443)  # where TFDS downloads MNIST from
_ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")

Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def cache_dir() -> Path:
    """The disk-cache folder: ``$DLZTA_CACHE_DIR``, else ``$XDG_CACHE_HOME/dlzta`` or ``~/.cache/dlzta``."""
    if os.environ.get("DLZTA_CACHE_DIR"):
        return Path(os.environ["DLZTA_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dlzta"


def default_data_dir() -> str:
    """TFDS's default data dir: ``$TFDS_DATA_DIR``, else ``~/tensorflow_datasets``."""
    return os.path.expanduser(os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets")


def tensorflow_available() -> bool:
    """Whether TensorFlow is importable (needed only to prepare a TFDS dataset), without importing it."""
    return importlib.util.find_spec("tensorflow") is not None


def online(timeout: float = 2.0) -> bool:
    """Whether a TCP connection to TFDS's download host opens within ``timeout`` seconds (DNS included)."""
    ok: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(NETWORK_PROBE, timeout=timeout):
                ok.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(ok)


def _import_tfds() -> Any:
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(
            "tensorflow-datasets is not installed (pip install 'dlzta-harness[tfds]', or tensorflow-datasets), "
            "so source tfds is unavailable; use idx:DIR with the MNIST IDX files or the bundled mnist-5k"
        ) from e
    return tfds


def _builder(tfds: Any, name: str, data_dir: str | None) -> Any:
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # DatasetNotFoundError and friends; keep the message to one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(f"tfds:{name}: cannot open TFDS dataset ({first})") from e
    features = builder.info.features
    try:
        image, label = features["image"], features["label"]
    except (KeyError, TypeError):
        image = label = None
    shape = tuple(image.shape) if image is not None else None
    classes = getattr(label, "num_classes", None)
    if shape != (28, 28, 1) or getattr(image, "np_dtype", None) != np.uint8 or classes != 10:
        raise DataError(
            f"tfds:{name}: not an MNIST-shaped dataset (image {shape}, {classes} classes); "
            "need uint8 28x28x1 images with 10 classes"
        )
    return builder


def tfds_ready(name: str, data_dir: str | None) -> bool:
    """Cheap check (no download, no decoding) that ``name`` is prepared and readable in the data dir."""
    root = Path(data_dir or default_data_dir())
    if importlib.util.find_spec("tensorflow_datasets") is None:
        return False
    if not any(root.glob(f"{name}/*/dataset_info.json")):  # skip importing tfds when nothing is there
        return False
    try:
        builder = _builder(_import_tfds(), name, str(root))
        if not builder.is_prepared():
            return False
        fmt = str(getattr(builder.info.file_format, "value", builder.info.file_format))
        return fmt in ("array_record", "parquet") or tensorflow_available()
    except Exception:  # noqa: BLE001 -- any failure here just means "not usable": auto falls back to mnist-5k
        return False


def _prepare(builder: Any) -> None:
    """Download and prepare (needs TensorFlow and the internet) as array_record, readable without TF."""
    try:
        builder.download_and_prepare(file_format="array_record")
    except Exception as e:
        raise DataError(
            f"tfds:{builder.name}: download_and_prepare failed ({' '.join(str(e).split())})"
        ) from e


def _not_prepared(name: str, where: str, reason: str) -> DataError:
    return DataError(
        f"TFDS dataset {name} is not prepared in {where} and cannot be prepared here ({reason}). "
        "Ways forward: install TensorFlow and run once online so TFDS can download and prepare it; "
        "or point --data-dir at a prepared TFDS data directory; "
        "or use source idx:DIR with the four MNIST IDX files; or use the bundled 5,000-digit subset mnist-5k"
    )


def _fingerprint(dataset_dir: Path) -> list[list[Any]]:
    files = sorted(p for p in dataset_dir.iterdir() if p.is_file())
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def _cache_key(name: str, version: str, data_dir: str, dataset_dir: Path) -> str:
    record = {
        "format": CACHE_FORMAT,
        "name": name,
        "version": version,
        "data_dir": os.path.abspath(data_dir),
        "dataset_dir": os.path.abspath(dataset_dir),
        "files": _fingerprint(dataset_dir),
    }
    return json.dumps(record, sort_keys=True)


def _cache_path(name: str, version: str, key: str) -> Path:
    digest = hashlib.sha256(key.encode()).hexdigest()[:24]
    return cache_dir() / f"tfds-{name}-{version}-{digest}.npz"


def _read_cache(path: Path, key: str) -> Arrays | None:
    """The cached arrays, or None when the file is absent, unreadable, or not for ``key``."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:
                return None
            arrays = tuple(z[k] for k in _ARRAYS)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    tx, ty, vx, vy = arrays
    for images, labels in ((tx, ty), (vx, vy)):
        if images.dtype != np.uint8 or images.shape[1:] != (28, 28) or labels.shape != (len(images),):
            return None
    return arrays  # type: ignore[return-value]


def _write_cache(path: Path, key: str, arrays: Arrays) -> None:
    """Atomic write; a cache that cannot be written only costs a warning."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, key=np.array(key), **dict(zip(_ARRAYS, arrays, strict=True)))
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except OSError as e:
        warnings.warn(f"could not write MNIST cache {path}: {e}", RuntimeWarning, stacklevel=3)
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def _decode_split(builder: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode one split to uint8 images [N, 28, 28] and int64 labels."""
    try:
        source = builder.as_data_source(split)
    except NotImplementedError:  # prepared as tfrecord: only TensorFlow can read it
        if not tensorflow_available():
            raise DataError(
                f"{builder.data_dir}: prepared in a format that needs TensorFlow to read; "
                "install tensorflow, or prepare it again with file_format=array_record"
            ) from None
        import tensorflow_datasets as tfds

        batch = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        return np.asarray(batch["image"], np.uint8).reshape(-1, 28, 28), np.asarray(batch["label"], np.int64)
    n = len(source)
    images = np.empty((n, 28, 28), np.uint8)
    labels = np.empty(n, np.int64)
    chunk = 2048
    for start in range(0, n, chunk):
        items = source.__getitems__(list(range(start, min(n, start + chunk))))
        for i, item in enumerate(items, start):
            images[i] = np.asarray(item["image"]).reshape(28, 28)
            labels[i] = item["label"]
    return images, labels


def load_tfds(name: str, data_dir: str | None) -> tuple[Arrays, dict[str, Any]]:
    """Load a prepared (or preparable) MNIST-shaped TFDS dataset; returns uint8 arrays and record fields."""
    tfds = _import_tfds()
    where = os.path.abspath(data_dir or default_data_dir())
    builder = _builder(tfds, name, where)
    if not builder.is_prepared():
        if not tensorflow_available():
            raise _not_prepared(name, where, "TensorFlow is not installed")
        if not online():
            raise _not_prepared(name, where, f"no network: {NETWORK_PROBE[0]} unreachable")
        _prepare(builder)
    missing = {"train", "test"} - set(builder.info.splits)
    if missing:
        raise DataError(f"{builder.data_dir}: TFDS dataset {name} has no {'/'.join(sorted(missing))} split")
    version = str(builder.version)
    dataset_dir = Path(str(builder.data_dir))
    key = _cache_key(name, version, where, dataset_dir)
    path = _cache_path(name, version, key)
    arrays = _read_cache(path, key)
    if arrays is None:
        arrays = (*_decode_split(builder, "train"), *_decode_split(builder, "test"))
        _write_cache(path, key, arrays)
    meta = {"name": name, "path": str(dataset_dir), "version": version, "data_dir": where, "cache": str(path)}
    return arrays, meta
