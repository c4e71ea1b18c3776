"""The lab networks in PyTorch, built from a declaration; losses and optimizers by the declared name."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.init import bias_distribution, weight_distribution
from harness.labs import Model, Optimizer

ACTIVATIONS = {
    "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": F.relu, "leaky_relu": F.leaky_relu, "selu": F.selu,
}


class MLP(nn.Module):
    """Linear layers; each hidden one followed by [BatchNorm1d], activation, [dropout]."""

    def __init__(self, model: Model, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.spec = model
        self.dense = nn.ModuleList(nn.Linear(a, b, dtype=dtype) for a, b in zip(model.sizes[:-1], model.sizes[1:]))
        widths = model.sizes[1:-1] if model.batchnorm else ()
        self.bn = nn.ModuleList(nn.BatchNorm1d(w, eps=model.bn_eps, momentum=model.bn_momentum, dtype=dtype)
                                for w in widths)
        self.activation = ACTIVATIONS[model.activation]

    def forward(self, x: torch.Tensor, masks: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Outputs for ``x``; ``masks`` are 0/1 keep-masks per hidden layer (None: torch's own dropout)."""
        p = self.spec.dropout
        for i, layer in enumerate(self.dense):
            x = layer(x)
            if i < len(self.dense) - 1:
                if self.bn:
                    x = self.bn[i](x)
                x = self.activation(x)
                if p > 0 and self.training:
                    x = x * masks[i] / (1 - p) if masks is not None else F.dropout(x, p, training=True)
        return torch.sigmoid(x) if self.spec.output == "sigmoid" else x


def _draw(tensor: torch.Tensor, kind: str, scale: float) -> None:
    if kind == "uniform":
        nn.init.uniform_(tensor, -scale, scale)
    elif kind == "normal":
        nn.init.normal_(tensor, 0.0, scale)
    elif kind == "truncated_normal":
        nn.init.trunc_normal_(tensor, 0.0, scale, -2 * scale, 2 * scale)
    elif kind == "zeros":
        nn.init.zeros_(tensor)


def native_init(module: MLP) -> None:
    """Apply the declared init scheme after construction (torch's default init has already been drawn)."""
    model = module.spec
    with torch.no_grad():
        for layer in module.dense:
            if model.init != "torch_default":
                _draw(layer.weight, *weight_distribution(model.init, layer.in_features, layer.out_features))
            kind, scale = bias_distribution(model, layer.in_features)
            if kind != "uniform":
                _draw(layer.bias, kind, scale)


def build(model: Model, dtype: torch.dtype, device: torch.device, seed: int,
          params: dict[str, np.ndarray] | None = None, state: dict[str, np.ndarray] | None = None) -> MLP:
    """The network with native weights drawn from ``seed``, or with the given shared ``params``."""
    torch.manual_seed(seed)
    module = MLP(model, dtype)  # drawn in ``dtype`` on the CPU generator, as with torch.set_default_dtype
    native_init(module)
    module = module.to(device=device)
    if params is not None:
        set_params(module, params, state or {})
    return module


def set_params(module: MLP, params: dict[str, np.ndarray], state: dict[str, np.ndarray]) -> None:
    """Copy shared-layout weights in (kernels are [in, out]; torch's Linear weight is [out, in])."""
    with torch.no_grad():
        for i, layer in enumerate(module.dense):
            layer.weight.copy_(torch.as_tensor(params[f"dense{i}/kernel"].T))
            layer.bias.copy_(torch.as_tensor(params[f"dense{i}/bias"]))
        for i, bn in enumerate(module.bn):
            bn.weight.copy_(torch.as_tensor(params[f"bn{i}/scale"]))
            bn.bias.copy_(torch.as_tensor(params[f"bn{i}/bias"]))
            if f"bn{i}/mean" in state:
                bn.running_mean.copy_(torch.as_tensor(state[f"bn{i}/mean"]))
                bn.running_var.copy_(torch.as_tensor(state[f"bn{i}/var"]))


def get_params(module: MLP) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Weights and batch-norm state in the shared layout."""
    out = {}
    state = {}
    for i, layer in enumerate(module.dense):
        out[f"dense{i}/kernel"] = layer.weight.detach().cpu().numpy().T.copy()
        out[f"dense{i}/bias"] = layer.bias.detach().cpu().numpy().copy()
    for i, bn in enumerate(module.bn):
        out[f"bn{i}/scale"] = bn.weight.detach().cpu().numpy().copy()
        out[f"bn{i}/bias"] = bn.bias.detach().cpu().numpy().copy()
        state[f"bn{i}/mean"] = bn.running_mean.cpu().numpy().copy()
        state[f"bn{i}/var"] = bn.running_var.cpu().numpy().copy()
    return out, state


def loss_fn(name: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The declared loss: "bce" (mean over examples, summed over independent outputs; torch clamps each log
    term at -100) or "cross_entropy" (mean over examples, from logits)."""
    if name == "bce":
        return F.binary_cross_entropy(out, y, reduction="none").mean(0).sum()
    return F.cross_entropy(out, y)


def make_optimizer(opt: Optimizer, params: list[torch.nn.Parameter], fused: bool = False) -> torch.optim.Optimizer:
    """The declared optimizer with torch's own algorithm. ``fused``: Adam through torch's fused kernel (one kernel
    per tensor instead of a dozen; the same update, rounded differently in the last bit), for eager loops."""
    extra = {"eps": opt.epsilon}
    if opt.name == "sgd":
        return torch.optim.SGD(params, lr=opt.lr)
    if opt.name == "adam":
        return torch.optim.Adam(params, lr=opt.lr, betas=opt.betas, fused=fused or None, **extra)
    if opt.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=opt.lr, alpha=opt.alpha, **extra)
    return torch.optim.Adadelta(params, lr=opt.lr, rho=opt.rho, **extra)
