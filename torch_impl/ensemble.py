"""An ensemble of runs that differ only in their initial weights (and dropout seeds), trained in PyTorch (mirrors
``jax_impl/ensemble.py``): the statistical parity tier's twins (``harness.parity.ensemble``).

A plain loop over the members, each trained by ``torch_impl/train.py`` itself. ``torch.func.vmap`` would batch
the members into one program, but on these networks the eager step is compute-bound on the MNIST labs (a batched
matmul does the same work) and the XOR labs' windows take milliseconds; batching would also trade the eager
loop's fused Adam kernel and plain matmuls for other kernels, so the twins would no longer round as the run
they are twins of.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.backend import RunSpec
from harness.parity.ensemble import window_spec
from harness.weights import Params
from torch_impl import train


def train_ensemble(spec: RunSpec, params_list: Sequence[Params], steps: int,
                   seeds: Sequence[int] | None = None) -> np.ndarray:
    """The training losses ``[members, steps]`` of the first ``steps`` steps of ``spec``, once from each of
    ``params_list`` (shared layout), member ``i`` drawing its own dropout masks from ``seeds[i]`` where ``spec``
    has no shared masks (default: ``spec.seed`` for all): ``train.train`` of ``window_spec(spec, steps,
    params_list[i], seeds[i])``."""
    seeds = list(seeds) if seeds is not None else [spec.seed] * len(params_list)
    return np.stack([train.train(window_spec(spec, steps, params, seed)).losses
                     for params, seed in zip(params_list, seeds)])
