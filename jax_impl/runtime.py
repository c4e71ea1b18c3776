"""The JAX runtime (mirrors ``torch_impl/runtime.py``): dtypes, 64-bit mode, matmul precision, the persistent
compilation cache, device placement and the numpy -> array conversions every other module of this package goes
through.

Add a dtype or a precision setting here; the learners, the loops, the RBMs, the probe and the bench all take
theirs from this module.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

DTYPES = {"float32": jnp.float32, "float64": jnp.float64}  # harness dtype name -> JAX dtype
# every dtype a precision policy stores or computes in (harness.precision), the low ones beside DTYPES
STORAGE_DTYPES = {**DTYPES, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
PRECISION = jax.lax.Precision.HIGHEST  # every matmul and layer: no silent TF32/bf16 passes on accelerators


def dtype(name: str) -> Any:
    """The JAX dtype of harness dtype ``name`` (``harness.backend.DTYPES``)."""
    return DTYPES[name]


def storage_dtype(name: str) -> Any:
    """The JAX dtype of a precision policy's dtype ``name`` (float32, float64, bfloat16, float16)."""
    return STORAGE_DTYPES[name]


def device(name: str) -> jax.Device:
    """The first JAX device of harness device ``name`` ("cpu", "gpu", "tpu")."""
    return jax.devices(name)[0]


def compilation_cache() -> str | None:
    """Turn on JAX's persistent compilation cache (every program, however quick to compile), in
    ``$DLZTA_JAX_CACHE`` or ``$XDG_CACHE_HOME/dlzta/jax`` (default ``~/.cache/dlzta/jax``); the folder, or None when
    it is off (``DLZTA_JAX_CACHE=off``) or JAX's own ``JAX_COMPILATION_CACHE_DIR`` chooses. A program compiled
    once is loaded, not compiled again: the exact tier's one-ulp twin is the float64 run's very program (only the
    weights differ), and a second job or test session reuses the first's. The executable is the same, so
    results are too; compile time is reported apart from the steady state either way."""
    setting = os.environ.get("DLZTA_JAX_CACHE", "")
    if setting.lower() in ("0", "off", "no", "false") or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = setting or os.path.join(base, "dlzta", "jax")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return None
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


CACHE_DIR = compilation_cache()


def available_devices() -> list[str]:
    """Devices JAX can use here, in the harness's names."""
    found = []
    for platform in ("cpu", "gpu", "tpu"):
        try:
            if jax.devices(platform):
                found.append(platform)
        except RuntimeError:
            pass
    return found


def versions() -> dict[str, str]:
    """Framework versions, for the results."""
    import flax
    import optax

    return {"jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__}


@contextlib.contextmanager
def x64(enabled: bool) -> Iterator[None]:
    """64-bit mode for the duration of a run (float64 runs), restored afterwards."""
    if hasattr(jax, "enable_x64"):
        with jax.enable_x64(enabled):
            yield
        return
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", enabled)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", previous)


def sync(tree: Any) -> Any:
    """Wait for every array of ``tree`` (JAX dispatches asynchronously)."""
    return jax.block_until_ready(tree)


def set_precision() -> dict[str, object]:
    """Full float32 matmuls (no silent TF32/bf16 passes on accelerators), set explicitly; returns the settings in
    effect. The models also ask for :data:`PRECISION` in every layer."""
    jax.config.update("jax_default_matmul_precision", "highest")
    return {"jax_default_matmul_precision": jax.config.jax_default_matmul_precision,
            "layer_precision": str(PRECISION)}


def label_dtype(a: np.ndarray, dt: Any) -> Any:
    """The dtype ``a`` travels in: ``dt`` for floats, int32 for labels and indices."""
    return dt if np.issubdtype(a.dtype, np.floating) else jnp.int32


def to_array(a: np.ndarray | None, dt: Any) -> jax.Array | None:
    """``a`` as a JAX array: floats in ``dt``, labels and indices as int32; None stays None."""
    return None if a is None else jnp.asarray(a, label_dtype(a, dt))


def to_numpy(arrays: dict[str, Any], dt: np.dtype | type | None = None) -> dict[str, np.ndarray]:
    """Host copies of ``arrays``, in ``dt`` (None: their own dtype)."""
    return {k: np.asarray(v, dt) for k, v in arrays.items()}
