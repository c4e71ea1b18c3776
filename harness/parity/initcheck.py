"""The native-initialisation check: does each framework's own draw follow the declared distributions?

``compare`` hands both sides the harness's weights, so a port whose own init is wrong (fan_in where
fan_in + fan_out is declared, a truncated normal where an untruncated one is, a standard deviation taken for a
variance) passes every parity tier while ``run --weights native`` trains another model. This check draws a
model's initial parameters through each backend's ``native_params(model, seed, dtype)`` (the code path of
``run --weights native``, no training) and tests every tensor against ``harness.weights.weight_distribution`` /
``bias_distribution``:

- a Kolmogorov-Smirnov test against the declared CDF (asymptotic Kolmogorov p-value with Stephens' small-sample
  correction), on every tensor;
- the mean and the second moment against the declared ones, z-tests with the declared distribution's standard
  errors, on tensors of at least ``MOMENT_MIN`` draws (where the normal approximation holds);
- constants (zero biases, batch-norm scales and offsets) must be exactly that.

Small tensors pool the draws of consecutive seeds (up to ``MAX_SEEDS``) until the smallest has ``MIN_DRAWS``
values. A check of T tests flags a test whose p-value is under ``alpha / T`` (Bonferroni; ``ALPHA`` = 1e-6 by
default): correct code trips a check with probability at most about 1e-6. Numpy only; the backends are imported
when a check asks for them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from harness import backend as registry
from harness.labs import Lab, Model
from harness.weights import bias_distribution, weight_distribution

ALPHA = 1e-6  # family-wise false-alarm rate of one check (Bonferroni over its tests)
MIN_DRAWS = 1000  # pool seeds until the smallest tensor has this many draws ...
MAX_SEEDS = 16  # ... or this many seeds were drawn
MOMENT_MIN = 1000  # the moment z-tests need this many draws (normal approximation of the sample moments)
TRUNCATION = 2.0  # truncated normals are cut at two standard deviations (JAX's convention, harness.weights)
_erf = np.frompyfunc(math.erf, 1, 1)


def declared(model: Model) -> dict[str, tuple[str, float]]:
    """``{tensor: (kind, scale)}`` of every initial parameter of ``model``: "uniform" (bound), "normal" and
    "truncated_normal" (std of the untruncated normal), or a constant "zeros" / "ones"."""
    out: dict[str, tuple[str, float]] = {}
    for i, (fan_in, fan_out) in enumerate(zip(model.sizes[:-1], model.sizes[1:])):
        out[f"dense{i}/kernel"] = weight_distribution(model.init, fan_in, fan_out)
        out[f"dense{i}/bias"] = bias_distribution(model, fan_in)
    for i in range(len(model.sizes) - 2 if model.batchnorm else 0):
        out[f"bn{i}/scale"], out[f"bn{i}/bias"] = ("ones", 1.0), ("zeros", 0.0)
    return out


def cdf(kind: str, scale: float, x: np.ndarray) -> np.ndarray:
    """The declared distribution's CDF at ``x``."""
    x = np.asarray(x, np.float64)
    if kind == "uniform":
        return np.clip((x + scale) / (2 * scale), 0.0, 1.0)
    phi = 0.5 * (1.0 + _erf(x / (scale * math.sqrt(2.0))).astype(np.float64))
    if kind == "normal":
        return phi
    lo = 0.5 * (1.0 + math.erf(-TRUNCATION / math.sqrt(2.0)))
    return np.clip((phi - lo) / (1.0 - 2.0 * lo), 0.0, 1.0)


def even_moment(kind: str, scale: float, k: int) -> float:
    """``E[x**k]`` (k even) of the declared distribution."""
    if kind == "uniform":
        return scale**k / (k + 1)
    b = TRUNCATION if kind == "truncated_normal" else math.inf
    z = math.erf(b / math.sqrt(2.0))
    density = 0.0 if b == math.inf else math.exp(-b * b / 2) / math.sqrt(2 * math.pi)
    m = z  # M_j = integral of t**j phi(t) over [-b, b]: M_j = (j - 1) M_{j-2} - 2 b**(j-1) phi(b)
    for j in range(2, k + 1, 2):
        m = (j - 1) * m - (2 * b ** (j - 1) * density if density else 0.0)
    return scale**k * m / z


def kolmogorov_p(d: float, n: int) -> float:
    """Asymptotic p-value of a one-sample KS statistic ``d`` on ``n`` draws (Kolmogorov's series, Stephens'
    correction ``(sqrt(n) + 0.12 + 0.11 / sqrt(n)) d``)."""
    lam = (math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * d
    if lam < 0.2:
        return 1.0
    p = 2.0 * sum((-1) ** (k - 1) * math.exp(-2.0 * k * k * lam * lam) for k in range(1, 101))
    return min(1.0, max(0.0, p))


def ks_test(x: np.ndarray, kind: str, scale: float) -> tuple[float, float]:
    """``(D, p)``: the KS statistic of ``x`` against the declared distribution and its p-value."""
    f = cdf(kind, scale, np.sort(np.asarray(x, np.float64).ravel()))
    n = f.size
    steps = np.arange(1, n + 1) / n
    d = float(max(np.max(steps - f), np.max(f - (steps - 1.0 / n))))
    return d, kolmogorov_p(d, n)


def _z_p(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2.0))


def tensor_tests(x: np.ndarray, kind: str, scale: float) -> dict[str, Any]:
    """Every test of one tensor's pooled draws ``x``: ``p`` per test, the sample and declared std."""
    x = np.asarray(x, np.float64).ravel()
    row: dict[str, Any] = {"kind": kind, "scale": scale, "n": int(x.size)}
    if kind in ("zeros", "ones"):
        row["p"] = {"constant": 1.0 if np.all(x == (1.0 if kind == "ones" else 0.0)) else 0.0}
        row.update(std=float(x.std()), declared_std=0.0)
        return row
    m2, m4 = even_moment(kind, scale, 2), even_moment(kind, scale, 4)
    row.update(mean=float(x.mean()), std=float(np.sqrt(np.mean(x * x))), declared_std=math.sqrt(m2))
    d, p = ks_test(x, kind, scale)
    row["ks_d"] = d
    row["p"] = {"ks": p}
    if x.size >= MOMENT_MIN:
        row["p"]["mean"] = _z_p(x.mean() / math.sqrt(m2 / x.size))
        row["p"]["variance"] = _z_p((np.mean(x * x) - m2) / math.sqrt((m4 - m2 * m2) / x.size))
    return row


def seeds_needed(model: Model) -> int:
    """Consecutive seeds pooled so that the smallest tensor has ``MIN_DRAWS`` values (at most ``MAX_SEEDS``)."""
    smallest = min(model.sizes[1:])
    return max(1, min(MAX_SEEDS, math.ceil(MIN_DRAWS / smallest)))


def native_draws(backend: str, model: Model, seed: int, dtype: str = "float32",
                 seeds: int | None = None) -> dict[str, np.ndarray]:
    """Each tensor's native draws from consecutive seeds from ``seed`` (at most ``seeds``, default
    :func:`seeds_needed`; a tensor stops at the first seed that brings it to ``MIN_DRAWS``), flattened and
    concatenated; BackendError if ``backend`` draws no native weights."""
    native = getattr(registry.load(backend), "native_params", None)
    if native is None:
        raise registry.BackendError(f"{backend} draws no native initial weights")
    pooled: dict[str, list[np.ndarray]] = {}
    for s in range(seeds or seeds_needed(model)):
        for name, value in native(model, (seed + s) % 2**32, dtype).items():
            drawn = pooled.setdefault(name, [])
            if sum(map(len, drawn)) < MIN_DRAWS:  # a tensor takes further seeds only while it has too few draws
                drawn.append(np.asarray(value).ravel())
    return {k: np.concatenate(v) for k, v in pooled.items()}


def check(model: Model, backends: tuple[str, ...], seed: int, dtype: str = "float32", alpha: float = ALPHA,
          seeds: int | None = None) -> dict[str, Any]:
    """Every backend's native draw of ``model`` against the declared distributions: per backend and tensor the
    tests, ``ok`` (no test under ``alpha / tests``), ``failures`` (worst first) and the one-line ``text``."""
    dists = declared(model)
    n_seeds = seeds or seeds_needed(model)
    rows = {fw: {name: tensor_tests(values, *dists[name])
                 for name, values in native_draws(fw, model, seed, dtype, n_seeds).items() if name in dists}
            for fw in backends}
    tests = sum(len(r["p"]) for per in rows.values() for r in per.values())
    level = alpha / max(tests, 1)
    failures = sorted(((min(r["p"].values()), fw, name) for fw, per in rows.items() for name, r in per.items()
                       if min(r["p"].values()) < level), key=lambda f: (f[0], f[1], f[2]))
    for per in rows.values():
        for r in per.values():
            r["ok"] = min(r["p"].values()) >= level
    out = {"ok": not failures, "alpha": alpha, "tests": tests, "level": level, "seeds": n_seeds, "seed": seed,
           "dtype": dtype, "backends": list(backends), "tensors": rows,
           "failures": [{"backend": fw, "tensor": name, "p": p} for p, fw, name in failures]}
    out["text"] = text(out)
    return out


def _failure(result: dict, failure: dict) -> str:
    fw, name = failure["backend"], failure["tensor"]
    r = result["tensors"][fw][name]
    if r["kind"] in ("zeros", "ones"):
        return f"{fw} {name} is not all {r['kind']}"
    what = {"uniform": f"U(+-{r['scale']:.3g})", "normal": "normal",
            "truncated_normal": "truncated normal"}[r["kind"]]
    return (f"{fw} {name} std {r['std']:.3g}, declared {r['declared_std']:.3g} ({what}; KS D {r['ks_d']:.3g}, "
            f"p={failure['p']:.1e})")


def text(result: dict) -> str:
    """The check's verdict in one line."""
    if result["ok"]:
        who = " and ".join(map(registry.label, result["backends"]))
        verb = "draw" if len(result["backends"]) > 1 else "draws"
        return (f"native init: {who} {verb} the declared distributions ({result['tests']} tests, "
                f"{result['seeds']} seed{'s' if result['seeds'] > 1 else ''}, false-alarm rate {result['alpha']:g})")
    more = len(result["failures"]) - 1
    return ("native init differs: " + _failure(result, result["failures"][0])
            + (f" (and {more} more tensor{'s' if more > 1 else ''})" if more else ""))


def check_lab(lab: Lab, options: Any, backends: tuple[str, ...]) -> dict[str, Any]:
    """:func:`check` of ``lab``'s model (``options.overrides`` applied, ``options.seed`` or the lab's, float32
    unless both sides run float64) in those of ``backends`` that draw native weights; ``skipped`` names the
    others (a float64 referee draws none)."""
    lab = lab.with_options(**options.overrides) if options.overrides else lab
    drawing = tuple(fw for fw in dict.fromkeys(backends) if hasattr(registry.load(fw), "native_params"))
    seed = lab.seed if options.seed is None else options.seed
    out = check(lab.model, drawing, seed, options.dtype)
    out["skipped"] = [fw for fw in dict.fromkeys(backends) if fw not in drawing]
    return out
