"""The PyTorch runtime (mirrors ``jax_impl/runtime.py``): dtypes, precision settings, device placement and the
numpy <-> tensor conversions every other module of this package goes through.

Add a dtype or a precision setting here; the learners, the loops, the RBMs, the probe and the bench all take
theirs from this module.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64}  # harness dtype name -> torch dtype
# every dtype a precision policy stores or computes in (harness.precision), the low ones beside DTYPES
STORAGE_DTYPES = {**DTYPES, "bfloat16": torch.bfloat16, "float16": torch.float16}


def dtype(name: str) -> torch.dtype:
    """The torch dtype of harness dtype ``name`` (``harness.backend.DTYPES``)."""
    return DTYPES[name]


def storage_dtype(name: str) -> torch.dtype:
    """The torch dtype of a precision policy's dtype ``name`` (float32, float64, bfloat16, float16)."""
    return STORAGE_DTYPES[name]


def device(name: str) -> torch.device:
    """The torch device of harness device ``name`` ("cpu", "gpu")."""
    return torch.device("cuda" if name == "gpu" else "cpu")


def available_devices() -> list[str]:
    """Devices torch can use here, in the harness's names."""
    return ["cpu"] + (["gpu"] if torch.cuda.is_available() else [])


def versions() -> dict[str, str]:
    """Framework versions, for the results."""
    return {"torch": torch.__version__}


def sync(dev: torch.device) -> None:
    """Wait for queued device work."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def set_precision() -> dict[str, object]:
    """Full float32 matmuls (no silent TF32 on GPUs), set explicitly; returns the settings in effect."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    return {"float32_matmul_precision": torch.get_float32_matmul_precision(),
            "cuda_matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}


def to_tensor(a: np.ndarray | None, dev: torch.device, dt: torch.dtype | None = None) -> torch.Tensor | None:
    """``a`` as a tensor on ``dev``: floats in ``dt``, labels and indices as int64 (what torch indexes and
    classifies with); None stays None."""
    if a is None:
        return None
    if not np.issubdtype(a.dtype, np.floating):
        return torch.tensor(a, dtype=torch.int64, device=dev)
    return torch.tensor(a, dtype=dt, device=dev)


def to_numpy(tensors: Mapping[str, torch.Tensor], dt: np.dtype | type | None = None) -> dict[str, np.ndarray]:
    """Host copies of ``tensors`` (detached), in ``dt`` (None: their own dtype)."""
    out = {k: v.detach().cpu().numpy() for k, v in tensors.items()}
    return {k: v.astype(dt) if dt is not None else v.copy() for k, v in out.items()}
