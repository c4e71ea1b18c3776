"""Reader for the MNIST IDX file format (also used by Fashion-MNIST), written with numpy only.

An IDX file is a big-endian header -- two zero bytes, a type code (0x08 = unsigned byte), the number of
dimensions -- then one uint32 per dimension, then the payload. MNIST images have magic 0x00000803
(ubyte, 3 dims: count, rows, cols) and labels 0x00000801 (ubyte, 1 dim: count). Files may be gzipped
(detected from the content, whatever the name). Every fault raises :class:`harness.data.datasets.DataError`
with a one-line message naming the file.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from harness.errors import DataError

IMAGES_MAGIC = 0x00000803
LABELS_MAGIC = 0x00000801

# (train images, train labels, test images, test labels), as named on the MNIST / Fashion-MNIST pages.
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read file ({_one_line(e)})") from e
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt gzip data ({_one_line(e)})") from e
    if path.suffix == ".gz":
        raise DataError(f"{path}: corrupt gzip data (no gzip header)")
    return raw


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """Read one unsigned-byte IDX file, checking its magic number and that the header matches the payload."""
    path = Path(path)
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(
            f"{path}: truncated file ({len(raw)} bytes, shorter than the 4-byte IDX magic number)"
        )
    (found,) = struct.unpack(">I", raw[:4])
    if found != magic:
        raise DataError(f"{path}: wrong magic number 0x{found:08x} (expected 0x{magic:08x})")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated file ({len(raw)} bytes, shorter than its {header}-byte header)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = math.prod(dims)
    payload = len(raw) - header
    shape = "x".join(map(str, dims))
    if payload < expected:
        raise DataError(
            f"{path}: truncated file (header says {shape} = {expected} bytes, payload has {payload})"
        )
    if payload > expected:
        raise DataError(
            f"{path}: header dimensions {shape} ({expected} bytes) disagree with the {payload}-byte payload"
        )
    return np.frombuffer(raw, dtype=np.uint8, count=expected, offset=header).reshape(dims)


def find_idx_file(folder: Path, stem: str) -> Path:
    """The file for ``stem`` in ``folder``: raw or ``.gz`` (also the ``train-images.idx3-ubyte`` spelling)."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"{folder / stem}: missing file (looked for {stem} and {stem}.gz)")


def _read_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if images.shape[1:] != (28, 28):
        rows, cols = images.shape[1:]
        raise DataError(f"{images_path}: images are {rows}x{cols}, expected 28x28")
    if len(images) != len(labels):
        raise DataError(
            f"{labels_path}: {len(labels)} labels but {images_path.name} holds {len(images)} images"
        )
    if labels.size and labels.max() > 9:
        raise DataError(f"{labels_path}: label {int(labels.max())} outside 0..9")
    return images, labels


def load_idx_dir(folder: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read the four MNIST IDX files in ``folder``.

    Returns uint8 (train_images [N, 28, 28], train_labels [N], test_images, test_labels).
    """
    folder = Path(folder)
    try:
        exists = folder.is_dir()
    except OSError as exc:  # a name too long, a path through a file: one line, not a traceback
        raise DataError(f"{str(folder)[:80]}: cannot be read ({exc.strerror or exc})") from None
    if not exists:
        raise DataError(
            f"{folder}: missing directory (idx:DIR must name a folder holding the four MNIST IDX files)"
        )
    paths = [find_idx_file(folder, stem) for stem in IDX_FILES]
    train_images, train_labels = _read_split(paths[0], paths[1])
    test_images, test_labels = _read_split(paths[2], paths[3])
    return train_images, train_labels, test_images, test_labels
