"""Hand-written backpropagation for the all-sigmoid networks of the manual labs (lecture Lab-08-2, lab-08_4).

Weights are plain tensors, no autograd. As the lectures write it, the weights get the batch-summed gradient and
the biases the batch mean; ``backward`` returns exactly those update directions.
"""

from __future__ import annotations

import torch

from harness.labs import pick

Tensors = dict[str, torch.Tensor]


def forward(params: Tensors, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Pre-activations ``l`` and activations ``a`` of every layer (``a[0]`` is the input)."""
    acts, pres = [x], []
    for i in range(len(params) // 2):
        pres.append(torch.add(torch.matmul(acts[-1], params[f"dense{i}/kernel"]), params[f"dense{i}/bias"]))
        acts.append(torch.sigmoid(pres[-1]))
    return pres, acts


def targets(loss: str, y: torch.Tensor, width: int, dtype: torch.dtype) -> torch.Tensor:
    """Targets as the loss sees them: one-hot rows for class labels, as lab-08_4 builds them."""
    if loss == "manual_squared" and y.dim() == 1:
        return torch.zeros(y.shape[0], width, dtype=dtype, device=y.device).scatter_(
            1, y.long().unsqueeze(1), 1.0)
    return y


def _bce(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-mean(Y log P + (1-Y) log(1-P))."""
    return -torch.mean(y * torch.log(p) + (1 - y) * torch.log(1 - p))


def _bce_grad(p: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """The lecture's d_P = (P - Y) / (P (1 - P) + eps), per output."""
    return (p - y) / (p * (1.0 - p) + eps) / y.shape[1]


def _squared(p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean over examples of 0.5 * sum over outputs (P - Y)^2."""
    return 0.5 * torch.mean(torch.sum((p - y) ** 2, dim=1))


def _squared_grad(p: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """lab-08_4's ``diff = P - Y``."""
    return p - y


LOSSES = {"manual_bce": (_bce, _bce_grad), "manual_squared": (_squared, _squared_grad)}  # labs.MANUAL_LOSSES


def loss_value(loss: str, p: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The value of the manual loss ``loss`` (see ``LOSSES``)."""
    return pick(LOSSES, loss, "manual loss")[0](p, y)


def backward(params: Tensors, x: torch.Tensor, y: torch.Tensor, loss: str, eps: float) -> tuple[Tensors, torch.Tensor]:
    """The lectures' chain rule: update directions (weights batch-summed, biases batch-mean) and the loss."""
    pres, acts = forward(params, x)
    p = acts[-1]
    value, grad = pick(LOSSES, loss, "manual loss")
    d = grad(p, y, eps)
    grads: Tensors = {}
    for i in reversed(range(len(pres))):
        d_l = d * (torch.sigmoid(pres[i]) * (1 - torch.sigmoid(pres[i])))  # sigmoid_prime
        grads[f"dense{i}/kernel"] = torch.matmul(torch.transpose(acts[i], 0, 1), d_l)
        grads[f"dense{i}/bias"] = torch.mean(d_l, 0)
        d = torch.matmul(d_l, torch.transpose(params[f"dense{i}/kernel"], 0, 1))
    return grads, value(p, y)


def sgd_update(params: Tensors, grads: Tensors, lr: float) -> Tensors:
    """``w = w - lr * d_w`` for every tensor."""
    return {k: params[k] - lr * grads[k] for k in params}
