"""The lab networks in PyTorch, built from a declaration; losses and optimizers by the declared name."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.errors import LabError
from harness.labs import Model, Optimizer, pick
from harness.weights import bias_distribution, weight_distribution

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
        self.activation = pick(ACTIVATIONS, model.activation, "activation")

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


DRAWS = {  # the distributions of ``harness.weights`` (weight_distribution, bias_distribution)
    "uniform": lambda t, scale: nn.init.uniform_(t, -scale, scale),
    "normal": lambda t, scale: nn.init.normal_(t, 0.0, scale),
    "truncated_normal": lambda t, scale: nn.init.trunc_normal_(t, 0.0, scale, -2 * scale, 2 * scale),
    "zeros": lambda t, scale: nn.init.zeros_(t),
}


def _draw(tensor: torch.Tensor, kind: str, scale: float) -> None:
    pick(DRAWS, kind, "initial distribution")(tensor, scale)


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


LOSSES = {  # the module losses (labs.MODULE_LOSSES); the manual ones are in manual.py
    # mean over examples, summed over independent outputs; torch clamps each log term at -100. One output: the
    # plain mean, bit-identical to the per-column form and two autograd nodes fewer per step (the XOR labs)
    "bce": lambda out, y: (F.binary_cross_entropy(out, y) if out.shape[1] == 1
                           else F.binary_cross_entropy(out, y, reduction="none").mean(0).sum()),
    "cross_entropy": lambda out, y: F.cross_entropy(out, y),  # mean over examples, from logits
}


def loss_fn(name: str, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The declared loss (see ``LOSSES``)."""
    return pick(LOSSES, name, "loss")(out, y)


OPTIMIZERS = {  # labs.OPTIMIZERS -> (torch.optim class, its settings from the declaration)
    "sgd": (torch.optim.SGD, lambda opt: {"lr": opt.lr}),
    "adadelta": (torch.optim.Adadelta, lambda opt: {"lr": opt.lr, "rho": opt.rho, "eps": opt.epsilon}),
    "rmsprop": (torch.optim.RMSprop, lambda opt: {"lr": opt.lr, "alpha": opt.alpha, "eps": opt.epsilon}),
    "adam": (torch.optim.Adam, lambda opt: {"lr": opt.lr, "betas": opt.betas, "eps": opt.epsilon}),
}


def make_optimizer(opt: Optimizer, params: list[torch.nn.Parameter], fused: bool = False) -> torch.optim.Optimizer:
    """The declared optimizer with torch's own algorithm. ``fused``: Adam through torch's fused kernel (one kernel
    per tensor instead of a dozen; the same update, rounded differently in the last bit), for eager loops."""
    cls, settings = pick(OPTIMIZERS, opt.name, "optimizer")
    extra = {"fused": fused or None} if opt.name == "adam" else {}
    return cls(params, **settings(opt), **extra)


def optimizer_name(opt: torch.optim.Optimizer) -> str:
    """The declared name of a torch optimizer made by :func:`make_optimizer`."""
    for name, (cls, _) in OPTIMIZERS.items():
        if type(opt) is cls:
            return name
    raise LabError(f"unknown optimizer {type(opt).__name__}; choose from {', '.join(OPTIMIZERS)}")
