"""Precision policies, declared once: which tensors are stored in which dtype, which ops compute in low precision
and which stay float32, the matmul precision, and (float16) the dynamic loss scale. Both backends follow a
policy with their own idioms (torch ``autocast`` and ``GradScaler``; Flax NNX ``dtype``/``param_dtype`` and a
loss scale in JAX); the numpy referee emulates it (``harness.referee.precision``) for the precision tier
(``harness.parity.precision``). Names follow Keras's policies (``mixed_bfloat16``, ``mixed_float16``).

The cast points of a reduced-precision policy (``compute`` is bfloat16 or float16; "rounded" means rounded to
nearest even from float32):

- ``matmul``: each Linear layer's input, kernel and bias are rounded to ``compute``; the products accumulate in
  float32 and the output (bias included) is rounded once to ``compute``. The training inputs are rounded where
  they enter the first layer, on both sides.
- ``activation`` and ``dropout``: evaluated on ``compute`` values, the result rounded to ``compute``.
- ``batchnorm`` (in ``float32_ops``): the input widened to float32; batch statistics, normalisation and running
  statistics in float32 (running statistics are stored float32 under every policy); the output rounded.
- ``output`` and ``loss`` (in ``float32_ops``): the logits widened to float32; the sigmoid / softmax
  (log-softmax inside cross-entropy) and the loss in float32.
- backward: every gradient flowing between layers is rounded to ``compute`` at each op's output (the float32
  ops' input gradients too, on their way back into low precision); parameter gradients are ``compute``-valued
  and widened to ``grads`` for the optimizer.
- ``optimizer``: each update computed in float32 from the stored values; parameters stored as ``params``,
  optimizer slots as ``optimizer_state`` (pure ``bfloat16``: both bfloat16, rounded on store).
- ``loss_scale`` (``mixed_float16``, in ``float32_ops``): the float32 loss multiplied by the scale before the
  backward pass; the float32 gradients multiplied by its reciprocal (exact: the scale is a power of two) and
  checked for inf/nan before the optimizer; :class:`LossScale` says what follows.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from harness.backend import RunSpec
from harness.backend import info as registry_info
from harness.errors import BackendError

PRECISIONS = ("float32", "float64", "bfloat16", "mixed_bfloat16", "mixed_float16")
REDUCED = ("bfloat16", "mixed_bfloat16", "mixed_float16")
MATMUL_PRECISIONS = ("highest", "high", "default")  # torch.set_float32_matmul_precision / jax_default_matmul_precision
FLOAT32_OPS = ("output", "loss", "batchnorm", "loss_scale")  # the ops a reduced policy may keep in float32
CAST_POINTS = ("matmul", "activation", "dropout", "batchnorm", "output", "loss", "backward", "optimizer")


@dataclass(frozen=True)
class LossScale:
    """A dynamic loss scale with ``torch.amp.GradScaler``'s semantics and defaults: the loss is multiplied by
    ``scale`` before the backward pass and the gradients divided by it; a step whose unscaled gradients hold an
    inf or nan is skipped (no parameter or optimizer-state update, the optimizer's step count unchanged) and the
    scale multiplied by ``backoff_factor``; after ``growth_interval`` consecutive finite steps (the current one
    included) the scale is multiplied by ``growth_factor`` and the count restarts."""

    initial: float = 2.0**16
    growth_interval: int = 2000
    growth_factor: float = 2.0
    backoff_factor: float = 0.5

    def update(self, scale: float, tracker: int, finite: bool) -> tuple[float, int]:
        """The scale and consecutive-finite count after a step with (un)finite gradients (``GradScaler.update``)."""
        if not finite:
            return scale * self.backoff_factor, 0
        if tracker + 1 == self.growth_interval:
            return scale * self.growth_factor, 0
        return scale, tracker + 1

    def schedule(self, finite: list[bool]) -> list[float]:
        """The scale in effect at each step, given each step's finiteness (the scale of step 0 is ``initial``)."""
        scales, scale, tracker = [], self.initial, 0
        for ok in finite:
            scales.append(scale)
            scale, tracker = self.update(scale, tracker, ok)
        return scales


# The precision tier's loss scale: GradScaler's rule with parameters chosen so that a few traced steps overflow,
# skip, back off and grow (the declared 2**16 and 2000 would show none of it in the first steps).
PROBE_LOSS_SCALE = LossScale(initial=2.0**24, growth_interval=2, growth_factor=2.0**4, backoff_factor=2.0**-4)


@dataclass(frozen=True)
class Policy:
    """One precision. ``params``: the dtype of the weights the optimizer updates (the master copy under a mixed
    policy); ``compute``: matmul operands and outputs, activations and the gradients flowing back;
    ``grads``: the parameter gradients as the optimizer sees them; ``optimizer_state``: its slots;
    ``float32_ops``: the ops that stay float32 (see the module docstring); ``matmul_precision``: the float32
    matmul setting both frameworks are given explicitly (``highest``: no TF32 or bf16 passes for float32 dots)."""

    name: str
    params: str
    compute: str
    grads: str
    optimizer_state: str
    float32_ops: tuple[str, ...] = ()
    loss_scale: LossScale | None = None
    matmul_precision: str = "highest"
    label: str = ""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def reduced(self) -> bool:
        """Whether anything computes below float32."""
        return self.compute in ("bfloat16", "float16")

    @property
    def mixed(self) -> bool:
        """Whether the stored weights are wider than the compute dtype (a master copy)."""
        return self.reduced and self.params != self.compute

    def keeps_float32(self, op: str) -> bool:
        """Whether ``op`` (one of ``FLOAT32_OPS``) computes in float32 (or the policy's own wider dtype)."""
        if op not in FLOAT32_OPS:
            raise ValueError(f"unknown op {op!r}; choose from {', '.join(FLOAT32_OPS)}")
        return not self.reduced or op in self.float32_ops

    def storage(self, kind: str) -> str:
        """The dtype a tensor of ``kind`` is stored in: ``params``, ``grads``, ``optimizer_state``,
        ``bn_state`` (batch-norm running statistics), ``activations``."""
        kinds = {"params": self.params, "grads": self.grads, "optimizer_state": self.optimizer_state,
                 "bn_state": "float64" if self.params == "float64" else "float32", "activations": self.compute}
        if kind not in kinds:
            raise ValueError(f"unknown tensor kind {kind!r}; choose from {', '.join(kinds)}")
        return kinds[kind]

    def record(self) -> dict:
        """Everything the policy declares, for results."""
        out = {k: getattr(self, k) for k in ("name", "params", "compute", "grads", "optimizer_state",
                                             "matmul_precision")}
        out["float32_ops"] = list(self.float32_ops)
        out["loss_scale"] = None if self.loss_scale is None else vars(self.loss_scale).copy()
        return out


_LOW_KEPT = ("output", "loss", "batchnorm")
POLICIES: dict[str, Policy] = {p.name: p for p in (
    Policy("float32", "float32", "float32", "float32", "float32", label="float32"),
    Policy("float64", "float64", "float64", "float64", "float64", label="float64"),
    Policy("bfloat16", "bfloat16", "bfloat16", "bfloat16", "bfloat16", _LOW_KEPT, label="bf16",
           notes=("weights, activations, gradients and optimizer state in bfloat16; the optimizer's arithmetic "
                  "in float32 from the stored values, rounded on store",)),
    Policy("mixed_bfloat16", "float32", "bfloat16", "float32", "float32", _LOW_KEPT, label="mixed bf16",
           notes=("float32 master weights and optimizer; bfloat16 compute",)),
    Policy("mixed_float16", "float32", "float16", "float32", "float32", (*_LOW_KEPT, "loss_scale"), LossScale(),
           label="mixed f16", notes=("float32 master weights and optimizer; float16 compute; dynamic loss scale",)),
)}


def get_policy(name: str) -> Policy:
    """The declared policy ``name``; ValueError naming the choices otherwise."""
    if name not in POLICIES:
        raise ValueError(f"unknown precision {name!r}; choose from {', '.join(POLICIES)}")
    return POLICIES[name]


def resolve(precision: str | None, dtype: str = "float32") -> Policy:
    """The policy a run follows: ``precision`` where given, else the one of its ``dtype`` (float32 or float64)."""
    return get_policy(precision or dtype)


def run_dtype(precision: str | None, dtype: str = "float32") -> str:
    """The plain dtype a run's data and float64/float32 machinery use under ``precision``: float64 only for the
    float64 policy, float32 for every other."""
    return "float64" if resolve(precision, dtype).name == "float64" else "float32"


def unit_roundoff(dtype: str) -> float:
    """Half the distance from 1 to the next number of ``dtype``: 2**-(mantissa bits + 1)."""
    bits = {"float64": 52, "float32": 23, "float16": 10, "bfloat16": 7}
    if dtype not in bits:
        raise ValueError(f"unknown dtype {dtype!r}; choose from {', '.join(bits)}")
    return math.ldexp(1.0, -(bits[dtype] + 1))


def check_learner(manual: bool, mutation: str | None, mutations: Iterable[str]) -> None:
    """What a backend's precision learner accepts, the same in every backend: a module lab (not a hand-written
    backprop lab) and a planted bug out of ``mutations`` (None: correct code); a BackendError otherwise."""
    if manual:
        raise BackendError("reduced precision covers the module labs; the hand-written backprop labs run "
                           "float32 or float64")
    if mutation is not None and mutation not in mutations:
        raise BackendError(f"unknown precision mutation {mutation!r}; choose from {', '.join(mutations)}")


def reduced_policy(spec: RunSpec, name: str) -> Policy | None:
    """The reduced policy backend ``name`` trains ``spec`` under (None: its dtype's own);
    a BackendError for an execution the entry does not declare in ``precision_executions``."""
    if spec.precision not in REDUCED:
        return None
    allowed = registry_info(name).precision_executions
    if spec.execution is not None and allowed and spec.execution not in allowed:
        raise BackendError(f"{name} runs reduced precision ({spec.precision}) in execution "
                           f"{' or '.join(allowed)}, not {spec.execution!r}")
    return get_policy(spec.precision)
