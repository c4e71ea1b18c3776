"""Initial weights as numpy arrays, for the shared-weights mode.

Weights cross the framework boundary as a flat mapping ``{"dense0/kernel": [in, out], "dense0/bias": [out],
"bn0/scale": ..., "bn0/bias": ...}``; each framework package converts at its edge (torch's Linear weight is the
transposed kernel).

Uniform draws come from :class:`TorchGenerator`, a numpy port of PyTorch's CPU generator (mt19937 and its
``uniform_`` transformation): with the same seed it produces bit-identical values to ``torch.manual_seed(seed)``
followed by the same sequence of ``uniform_`` calls, so ``torch_default`` shared weights equal torch's native
ones. Normal draws use numpy's ``default_rng`` seeded with the lab seed (torch's vectorised normal kernel is not
ported).
"""

from __future__ import annotations

import math

import numpy as np

from harness.labs import Model

Params = dict[str, np.ndarray]


class TorchGenerator:
    """PyTorch's CPU random generator, ported: mt19937 seeded like ``torch.manual_seed``."""

    def __init__(self, seed: int) -> None:
        self._mt = np.random.RandomState(seed)  # numpy's legacy RandomState is mt19937 with init_genrand

    def uniform(self, n: int, low: float, high: float, dtype: str = "float32") -> np.ndarray:
        """``torch.empty(n, dtype=dtype).uniform_(low, high)``: float32 takes 24 bits of one 32-bit draw and maps
        them in double; float64 takes 53 bits of two draws (the first is the high word), mapped with a fused
        multiply-add (emulated in extended precision)."""
        if np.dtype(dtype) == np.float32:
            raw = self._mt.randint(0, 2**32, size=n, dtype=np.uint64)
            x = (raw & ((1 << 24) - 1)).astype(np.float64) * 2.0**-24
            lo, hi = np.float32(low), np.float32(high)
            return (x * np.float64(hi - lo) + np.float64(lo)).astype(np.float32)
        raw = self._mt.randint(0, 2**32, size=2 * n, dtype=np.uint64)
        bits = (raw[0::2] << np.uint64(32)) | raw[1::2]
        x = (bits & np.uint64((1 << 53) - 1)).astype(np.float64) * 2.0**-53
        span = np.longdouble(np.float64(high) - np.float64(low))
        return (x.astype(np.longdouble) * span + np.longdouble(low)).astype(np.float64)


def weight_distribution(scheme: str, fan_in: int, fan_out: int) -> tuple[str, float]:
    """``(kind, scale)`` of a weight init scheme: kind "uniform" (scale = bound), "normal" or "truncated_normal"
    (scale = standard deviation of the untruncated normal; truncation at two of them, as JAX does)."""
    if scheme == "torch_default":  # kaiming_uniform_(a=sqrt(5)): bound = sqrt(3) * gain / sqrt(fan_in)
        a = math.sqrt(5)
        return "uniform", math.sqrt(3.0) * (math.sqrt(2.0 / (1 + a**2)) / math.sqrt(fan_in))
    return {
        # The formulas as torch.nn.init evaluates them, so that bounds agree to the last bit.
        "xavier_uniform": ("uniform", math.sqrt(3.0) * (1.0 * math.sqrt(2.0 / float(fan_in + fan_out)))),
        "xavier_normal": ("normal", 1.0 * math.sqrt(2.0 / float(fan_in + fan_out))),
        "he_uniform": ("uniform", math.sqrt(3.0) * (math.sqrt(2.0) / math.sqrt(fan_in))),
        "he_normal": ("normal", math.sqrt(2.0) / math.sqrt(fan_in)),
        "normal": ("normal", 1.0),
        # Flax's default kernel init, lecun_normal: a normal truncated at 2 std, rescaled to variance 1/fan_in.
        "flax_default": ("truncated_normal", math.sqrt(1.0 / fan_in) / 0.87962566103423978),
    }[scheme]


def bias_distribution(model: Model, fan_in: int) -> tuple[str, float]:
    """``(kind, scale)`` of the bias init: "uniform" (torch's), "normal" or "zeros"."""
    if model.bias_init == "zeros" or (model.bias_init == "torch_default" and model.init == "flax_default"):
        return "zeros", 0.0
    if model.bias_init == "normal":
        return "normal", 1.0
    return "uniform", 1.0 / math.sqrt(fan_in)


def init_params(model: Model, seed: int, dtype: str = "float32") -> Params:
    """Initial weights of ``model`` drawn from ``seed`` in ``dtype``, in torch's order: every Linear layer draws
    its default init (weight, then bias) when built; the declared scheme then redraws weights (and biases)
    layer by layer."""
    torch_gen = TorchGenerator(seed)
    rng = np.random.default_rng(seed)
    layers = list(enumerate(zip(model.sizes[:-1], model.sizes[1:])))
    params: Params = {}
    for i, (fan_in, fan_out) in layers:
        _, bound = weight_distribution("torch_default", fan_in, fan_out)
        weight = torch_gen.uniform(fan_in * fan_out, -bound, bound, dtype)
        params[f"dense{i}/kernel"] = weight.reshape(fan_out, fan_in).T
        params[f"dense{i}/bias"] = torch_gen.uniform(fan_out, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in), dtype)
    for i, (fan_in, fan_out) in layers:
        kind, scale = weight_distribution(model.init, fan_in, fan_out)
        if model.init == "torch_default":
            pass
        elif kind == "uniform":  # torch.nn.init draws [out, in] in that order
            weight = torch_gen.uniform(fan_in * fan_out, -scale, scale, dtype)
            params[f"dense{i}/kernel"] = weight.reshape(fan_out, fan_in).T
        elif kind == "normal":
            params[f"dense{i}/kernel"] = (scale * rng.standard_normal((fan_in, fan_out))).astype(dtype)
        else:
            params[f"dense{i}/kernel"] = _truncated_normal(rng, (fan_in, fan_out), scale).astype(dtype)
        kind, scale = bias_distribution(model, fan_in)
        if kind == "zeros":
            params[f"dense{i}/bias"] = np.zeros(fan_out, dtype)
        elif kind == "normal":
            params[f"dense{i}/bias"] = rng.standard_normal(fan_out).astype(dtype)
    if model.batchnorm:
        for i, width in enumerate(model.sizes[1:-1]):
            params[f"bn{i}/scale"] = np.ones(width, dtype)
            params[f"bn{i}/bias"] = np.zeros(width, dtype)
    return {k: np.ascontiguousarray(v) for k, v in params.items()}


def _truncated_normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    """Normal(0, std) truncated at two standard deviations (JAX's truncated_normal convention)."""
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2
    return (std * out).astype(np.float32)


def init_state(model: Model, dtype: str = "float32") -> Params:
    """Non-trainable state: batch-norm running statistics (torch's initial values)."""
    state: Params = {}
    if model.batchnorm:
        for i, width in enumerate(model.sizes[1:-1]):
            state[f"bn{i}/mean"] = np.zeros(width, dtype)
            state[f"bn{i}/var"] = np.ones(width, dtype)
    return state


def nudge(params: Params, ulps: int = 1) -> Params:
    """Every weight moved by ``ulps`` units in the last place (towards +inf): the rounding-noise twin."""
    out = {}
    for key, value in params.items():
        moved = value
        for _ in range(ulps):
            moved = np.nextafter(moved, np.array(np.inf, dtype=moved.dtype))
        out[key] = moved
    return out
