"""Planted porting bugs in the PyTorch backend, for the mutation suite (mirrors ``jax_impl/mutations.py``; see
``harness.selfcheck``): each a patch of one of this package's functions, a test-only hook, never a user option."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F

from harness.selfcheck import Mutation, Patch, activation, after_init, scaled_lr, wrap_optimizer
from torch_impl import models, rbm

SELU_ALPHA = 1.6732632423543772848170429916717
RELU = "mnist_relu_xavier"
BN = "mnist_batchnorm"
RBM = "mnist_rbm_pretrain"


def _bn_momentum(module: models.MLP) -> None:
    for bn in module.bn:
        bn.momentum = 0.11


def _dropout(module: models.MLP) -> None:
    module.spec = dataclasses.replace(module.spec, dropout=0.31)


def _kernel_untransposed(mp: Patch) -> None:
    original = models.set_params

    def set_params(module: models.MLP, params: dict, state: dict) -> None:
        original(module, params, state)
        with torch.no_grad():  # the square 256x256 layer loaded as [in, out], not transposed to torch's [out, in]
            module.dense[1].weight.copy_(torch.as_tensor(params["dense1/kernel"]))
    mp.setattr(models, "set_params", set_params)


def _init_scheme(change: Callable) -> Callable[[Patch], None]:
    """A patch of the declared weight distribution as this package's native init reads it: ``change(original,
    scheme, fan_in, fan_out)`` in place of ``harness.weights.weight_distribution``."""
    def patch(mp: Patch) -> None:
        original = models.weight_distribution
        mp.setattr(models, "weight_distribution", lambda *a: change(original, *a))
    return patch


def _fan_in_only(original: Callable, scheme: str, fan_in: int, fan_out: int) -> tuple[str, float]:
    """Xavier's fan_in + fan_out read as fan_in alone."""
    return original(scheme, fan_in, 0) if scheme.startswith("xavier") else original(scheme, fan_in, fan_out)


def _truncated(original: Callable, scheme: str, fan_in: int, fan_out: int) -> tuple[str, float]:
    """He normal drawn as JAX's ``he_normal`` does: truncated at two std, rescaled to the declared variance."""
    kind, scale = original(scheme, fan_in, fan_out)
    return ("truncated_normal", scale / 0.87962566103423978) if scheme == "he_normal" else (kind, scale)


def _logits_bfloat16(mp: Patch) -> None:
    """The logits rounded through bfloat16 before the loss, in float32 runs (float64 runs untouched)."""
    original = dict(models.LOSSES)
    for name, fn in original.items():
        mp.setitem(models.LOSSES, name, lambda out, y, fn=fn: fn(
            out.to(torch.bfloat16).to(out.dtype) if out.dtype == torch.float32 else out, y))


def _naive_cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy with an unshifted log-sum-exp: ``exp`` overflows past a logit of 88 in float32,
    709 in float64."""
    return (torch.log(torch.exp(out).sum(1)) - out.gather(1, y[:, None])[:, 0]).mean()


MUTATIONS = (
    Mutation("lr x 0.99", "torch", "xor_mlp", wrap_optimizer(models, scaled_lr(0.99)), r"update at step 0"),
    Mutation("batch-norm momentum 0.11", "torch", BN, after_init(models.MLP, _bn_momentum),
             r"bn\d/(mean|var) running statistic, after step 0"),
    Mutation("dropout rate 0.31", "torch", RELU, after_init(models.MLP, _dropout),
             r"training loss at step 0", {"dropout": 0.3}),
    Mutation("SELU scale 1.0507 (five digits)", "torch", RELU, activation(
        models, "selu", lambda x: 1.0507 * F.elu(x, SELU_ALPHA)), r"training loss at step 0",
        {"activation": "selu"}),
    Mutation("kernel not transposed on import", "torch", RELU, _kernel_untransposed, r"training loss at step 0"),
    Mutation("Xavier uniform bound from fan_in only (native init)", "torch", RELU, _init_scheme(_fan_in_only),
             r"dense0/kernel", tier="init"),
    Mutation("He normal through trunc_normal_ (native init)", "torch", RELU, _init_scheme(_truncated),
             r"dense\d/kernel", {"init": "he_normal"}, tier="init"),
    Mutation("RBM negative phase from hidden probabilities, not samples", "torch", RBM,
             lambda mp: mp.setattr(rbm, "sample", lambda p, u: p),
             r"^pretraining reconstruction error of rbm0 at step 0$"),
    # float32 only: the float64 exact tier passes them; the statistical tier must catch them
    Mutation("logits rounded through bfloat16 before the loss (float32 runs)", "torch", RELU, _logits_bfloat16,
             r"^step \d+$", tier="statistical"),
    Mutation("cross-entropy through an unshifted log-sum-exp (overflows in float32)", "torch", "mnist_softmax",
             lambda mp: mp.setitem(models.LOSSES, "cross_entropy", _naive_cross_entropy), r"^step \d+$",
             {"lr": 0.3}, tier="statistical"),
)
