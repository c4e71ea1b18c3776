"""Reduced precision in PyTorch: a lab network trained under a ``harness.precision`` policy with torch's idioms,
``torch.autocast`` (mixed policies) and ``torch.amp.GradScaler`` (``mixed_float16``), or the module converted to
bfloat16 (pure ``bfloat16``). Where the idiom's default differs from the declared policy, this module makes it
match, explicitly (each place is named in ``docs/precision.md``):

- the output and the loss: autocast keeps ``cross_entropy`` in float32 on the CPU but not ``sigmoid``, and on
  CUDA refuses ``binary_cross_entropy``: the logits are widened here and the output and loss are computed
  outside autocast, in float32, on every device;
- batch norm: on the CPU autocast runs it in its input's dtype: here its input is widened and it runs in float32
  (statistics, normalisation, running statistics), its output rounded to the compute dtype;
- the sigmoid's backward in float16: torch's CPU kernel rounds three times (``(g (1 - y)) y`` in half
  arithmetic); the policy rounds ``g y (1 - y)`` once, computed in float32 (as torch's bfloat16 kernel does):
  :class:`Float16Sigmoid`;
- pure bfloat16's optimizer: torch's foreach kernels round after each of an update's ops; the policy computes an
  update in float32 from the stored values and rounds once on store: Adam runs its fused kernel (which does
  exactly that), SGD its one-op update, RMSprop and Adadelta on float32 copies rounded on store.

:func:`trace` records the first steps as ``harness.referee.precision.trace`` does (and ``harness.parity.localise``
reads), with the loss scale in effect and whether each step's gradients were finite. ``mutation`` plants one of
``MUTATIONS`` (the selfcheck's precision-placement bugs).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from harness.backend import RunSpec
from harness.precision import REDUCED, LossScale, Policy, check_learner
from torch_impl import models, rbm, runtime

TORCH_DTYPES = runtime.STORAGE_DTYPES
# the selfcheck's precision-placement bugs, and the policies where each is a bug (elsewhere it is the policy itself,
# or nothing the policy rounds differently)
MUTATIONS = {"loss_low": REDUCED, "opt_state_low": ("mixed_bfloat16", "mixed_float16"),
             "no_master": ("mixed_bfloat16", "mixed_float16"), "bn_state_low": REDUCED,
             "no_unscale": ("mixed_float16",), "no_skip": ("mixed_float16",), "growth_schedule": ("mixed_float16",),
             "input_bf16": ("mixed_float16",)}


SLOTS = {"sgd": {}, "adam": {"exp_avg": "m", "exp_avg_sq": "v"}, "rmsprop": {"square_avg": "v"},  # referee's names
         "adadelta": {"square_avg": "square_avg", "acc_delta": "acc_delta"}}


class Float16Sigmoid(torch.autograd.Function):
    """The sigmoid of a float16 tensor with the policy's backward: ``g y (1 - y)`` computed in float32 from the
    float16 output and rounded once."""

    @staticmethod
    def forward(ctx: object, z: torch.Tensor) -> torch.Tensor:
        y = torch.sigmoid(z)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        y32 = y.float()
        return (grad.float() * y32 * (1 - y32)).to(grad.dtype)


class PrecisionLearner:
    """A ``models.MLP`` trained under ``policy`` (module labs; the hand-written backprop labs are not covered)."""

    def __init__(self, spec: RunSpec, policy: Policy, device: torch.device, loss_scale: LossScale | None = None,
                 mutation: str | None = None) -> None:
        check_learner(spec.lab.manual, mutation, MUTATIONS)
        self.spec, self.policy, self.device, self.mutation = spec, policy, device, mutation
        self.compute = TORCH_DTYPES[policy.compute]
        self.sigmoid16 = self.compute == torch.float16 and spec.model.activation == "sigmoid"
        stored = TORCH_DTYPES[policy.compute if mutation == "no_master" else policy.params]
        self.module = models.build(spec.model, torch.float32, device, spec.seed, spec.params, spec.state)
        self.module.to(stored)
        for bn in self.module.bn:  # running statistics stay float32 under every policy
            bn.running_mean.data = bn.running_mean.float()
            bn.running_var.data = bn.running_var.float()
        self.module.train()
        self.params = list(self.module.parameters())
        self.low_state = (policy.optimizer_state != "float32" or mutation == "opt_state_low")
        # Adam's fused kernel and SGD's update already compute in float32 from bfloat16 values and round once on
        # store (the policy); the other optimizers (and the planted bugs) update float32 copies, rounded on store
        native = policy.name == "bfloat16" and mutation is None and spec.lab.optimizer.name in ("adam", "sgd")
        if native:
            self.low_state = False
        self.shadow = [p.detach().float().clone().requires_grad_() for p in self.params] if not native and (
            self.low_state or stored != torch.float32) else self.params
        self.opt = models.make_optimizer(spec.lab.optimizer, self.shadow, fused=native)
        scale = loss_scale or policy.loss_scale
        self.scaler = None if scale is None else torch.amp.GradScaler(
            device.type, init_scale=scale.initial, growth_factor=scale.growth_factor,
            backoff_factor=scale.backoff_factor, growth_interval=scale.growth_interval)
        if self.scaler is not None and mutation == "growth_schedule":  # grows one step late (Flax's count)
            self.scaler._growth_interval += 1

    def forward(self, x: torch.Tensor, masks: list[torch.Tensor] | None, training: bool = True) -> torch.Tensor:
        """Float32 outputs: the network under autocast (mixed) or in its own dtype (pure), cast as the policy
        declares; the sigmoid output (where the lab has one) outside autocast, in float32."""
        mixed = self.policy.mixed and self.mutation != "no_master"
        with torch.autocast(self.device.type, dtype=self.compute, enabled=mixed):
            z = self._layers(x, masks, training)
        out = z.float()
        if self.mutation == "loss_low":
            out = out.to(self.compute)
        return torch.sigmoid(out) if self.spec.model.output == "sigmoid" else out

    def _layers(self, x: torch.Tensor, masks: list[torch.Tensor] | None, training: bool) -> torch.Tensor:
        module, p, c = self.module, self.spec.model.dropout, self.compute
        h = x.to(torch.bfloat16) if self.mutation == "input_bf16" else x
        for i, layer in enumerate(module.dense):
            h = F.linear(h.to(c), layer.weight.to(c), layer.bias.to(c))
            if i == len(module.dense) - 1:
                return h
            if module.bn:
                h = self._batchnorm(module.bn[i], h, training)
            h = Float16Sigmoid.apply(h) if self.sigmoid16 else module.activation(h)
            if p > 0 and training:  # the shared masks, or torch's own draw (``--masks own``)
                mask = masks[i] if masks is not None else torch.empty(h.shape, device=h.device).bernoulli_(1 - p)
                h = h * mask / (1 - p)
        raise AssertionError("unreachable")

    def _batchnorm(self, bn: torch.nn.BatchNorm1d, h: torch.Tensor, training: bool) -> torch.Tensor:
        with torch.autocast(self.device.type, enabled=False):
            out = F.batch_norm(h.float(), bn.running_mean, bn.running_var, bn.weight.float(), bn.bias.float(),
                               training, bn.momentum, bn.eps)
        return out.to(self.compute)

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The declared loss in float32 (``loss_low``: in the compute dtype)."""
        low = self.mutation == "loss_low"
        return models.loss_fn(self.spec.lab.loss, out, y.to(out.dtype) if y.is_floating_point() else y).float() \
            if low else models.loss_fn(self.spec.lab.loss, out, y)

    def train_step(self, x: torch.Tensor, y: torch.Tensor, masks: list[torch.Tensor] | None) -> torch.Tensor:
        """One step (forward, scaled backward, unscale, optimizer or skip, scale update, store); the loss, on the
        device (no host sync)."""
        for p in (*self.params, *self.shadow):
            p.grad = None
        loss = self.loss(self.forward(x, masks), y)
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()
        if self.shadow is not self.params:
            for s, p in zip(self.shadow, self.params):
                s.grad = p.grad.float()
        if self.scaler is not None and self.mutation != "no_unscale":
            self.scaler.unscale_(self.opt)
        if self.scaler is None or self.mutation == "no_unscale":  # no_unscale: the scaled gradients step
            self.opt.step()
        else:
            self.opt.step() if self.mutation == "no_skip" else self.scaler.step(self.opt)
            self.scaler.update()
        self._store()
        if self.mutation == "bn_state_low":  # the running statistics kept in bfloat16
            with torch.no_grad():
                for bn in self.module.bn:
                    for stat in (bn.running_mean, bn.running_var):
                        stat.copy_(stat.to(torch.bfloat16))
        return loss.detach()

    def probe_step(self, x: torch.Tensor, y: torch.Tensor, masks: list[torch.Tensor] | None) -> dict:
        """One step; its loss, the gradients the optimizer saw (unscaled), the scale in effect and finiteness."""
        scale = 1.0 if self.scaler is None else self.scaler.get_scale()
        loss = self.train_step(x, y, masks)
        grads = [s.grad.detach().clone() for s in self.shadow]  # the optimizer leaves them as it found them
        finite = all(bool(torch.isfinite(g).all()) for g in grads)
        return {"loss": float(loss), "grads": grads, "loss_scale": scale, "finite": finite}

    # ``train`` and the bench drive it as they drive ``learners.ModuleLearner``: step, outputs, export
    step = train_step

    @torch.no_grad()
    def outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Float32 outputs in eval mode (no dropout, batch norm on its running statistics), under the policy."""
        return self.forward(x, None, training=False)

    @torch.no_grad()
    def _store(self) -> None:
        """Round what the policy stores below float32: the weights (from the float32 update) and the slots."""
        if self.shadow is self.params:
            return
        for s, p in zip(self.shadow, self.params):
            p.copy_(s)
            s.copy_(p)
        if self.low_state:
            low = TORCH_DTYPES[self.policy.compute if self.mutation == "opt_state_low"
                               else self.policy.optimizer_state]
            for state in self.opt.state.values():
                for key, value in state.items():
                    if key != "step" and torch.is_tensor(value) and value.is_floating_point():
                        value.copy_(value.to(low))

    def opt_state(self) -> dict[str, np.ndarray]:
        """The optimizer's slots as the referee names them (``dense0/kernel:m``), float64, shared layout."""
        out = {}
        for (name, _), p in zip(self.module.named_parameters(), self.shadow):
            kind, i, what = name.split(".")
            key = f"{kind}{i}/" + {"weight": "kernel" if kind == "dense" else "scale", "bias": "bias"}[what]
            state = self.opt.state.get(p, {})
            for slot, name in SLOTS[self.spec.lab.optimizer.name].items():
                a = _np(state[slot]) if slot in state else np.zeros(tuple(p.shape))  # zero before the first update
                out[f"{key}:{name}"] = a.T if a.ndim == 2 else a
        return out

    def export(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Weights and running statistics in the shared layout, float64."""
        params, state = {}, {}
        for i, layer in enumerate(self.module.dense):
            params[f"dense{i}/kernel"], params[f"dense{i}/bias"] = _np(layer.weight).T, _np(layer.bias)
        for i, bn in enumerate(self.module.bn):
            params[f"bn{i}/scale"], params[f"bn{i}/bias"] = _np(bn.weight), _np(bn.bias)
            state[f"bn{i}/mean"], state[f"bn{i}/var"] = _np(bn.running_mean), _np(bn.running_var)
        return params, state


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _layout_grads(module: models.MLP, grads: list[torch.Tensor]) -> dict[str, np.ndarray]:
    names = [n for n, _ in module.named_parameters()]
    out = {}
    for name, g in zip(names, grads):
        kind, i, what = name.split(".")
        key = {("dense", "weight"): "kernel", ("dense", "bias"): "bias", ("bn", "weight"): "scale",
               ("bn", "bias"): "bias"}[kind, what]
        g = _np(g)
        out[f"{kind}{i}/{key}"] = g.T if (kind, what) == ("dense", "weight") else g
    return out


def trace(spec: RunSpec, steps: int, policy: Policy, loss_scale: LossScale | None = None,
          mutation: str | None = None) -> list[dict]:
    """Per step of the first ``steps``: ``loss``, ``grads`` (unscaled, as the optimizer saw them), ``updates``,
    ``params`` and ``state`` after the step (float64 arrays, shared layout), ``loss_scale``, ``finite``."""
    device = torch.device("cuda" if spec.device == "gpu" else "cpu")
    runtime.set_precision()  # every policy declares "highest"
    spec = rbm.pretrained(spec, torch.float32, device)[0]
    learner = PrecisionLearner(spec, policy, device, loss_scale, mutation)
    x, y = runtime.to_tensor(spec.train_x, device, torch.float32), runtime.to_tensor(spec.train_y, device)
    if y.is_floating_point():
        y = y.float()
    batches = runtime.to_tensor(spec.batches, device)
    masks = [runtime.to_tensor(m, device, torch.float32) for m in spec.masks] if spec.masks is not None else None
    records = []
    for s in range(min(steps, spec.steps)):
        xb, yb = (x, y) if batches is None else (x[batches[s]], y[batches[s]])
        before = learner.export()[0]
        try:
            record = learner.probe_step(xb, yb, None if masks is None else [m[s] for m in masks])
        except RuntimeError:  # e.g. a loss of non-finite outputs: the trace ends here (the tier names the step)
            break
        params, state = learner.export()
        record.update(grads=_layout_grads(learner.module, record["grads"]), opt_state=learner.opt_state(),
                      updates={k: params[k] - before[k] for k in params}, params=params, state=state)
        records.append(record)
    return records
