"""Reduced precision in JAX (mirrors ``torch_impl/precision.py``): a lab network trained under a
``harness.precision`` policy with Flax NNX's idioms, ``nnx.Linear(dtype=compute, param_dtype=params)``, and
Flax's ``DynamicScale`` for the float16 loss scale. Where an idiom's default differs from the declared policy,
this module makes it match, explicitly (each place is named in ``docs/precision.md``):

- ``nnx.Linear`` rounds its product to ``dtype`` and adds the bias in ``dtype`` (two roundings): here it returns
  the float32 product (``preferred_element_type``), the bias is added in float32 and the sum rounded once;
- activations: XLA may evaluate a bfloat16 elementwise op through float32 and drop the rounding between fused
  ops (``xla_allow_excess_precision``): each activation is a ``custom_vjp`` computing in float32 from the
  compute-dtype input and rounding its output and its input gradient once (the policy's cast points);
- the output and the loss: the logits widened to float32 (optax's cross-entropy would compute in bfloat16);
- batch norm in float32 (``models.BatchNorm`` on the widened input), its output rounded;
- ``DynamicScale`` grows the scale on the finite step *after* ``growth_interval`` finite steps (it compares the
  count before incrementing it); GradScaler, the policy's rule, on the ``growth_interval``-th: it is given
  ``growth_interval - 1``;
- pure bfloat16's optimizer: optax computes in its inputs' dtype op by op; the policy computes each update in
  float32 from the stored values and rounds once on store (:func:`opt_step`).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from flax.training.dynamic_scale import DynamicScale

from harness.backend import RunSpec
from harness.labs import Model
from harness.precision import REDUCED, LossScale, Policy, check_learner
from harness.referee.model import LEAKY_SLOPE, SELU_ALPHA, SELU_SCALE
from jax_impl import models, rbm, runtime

JAX_DTYPES = runtime.STORAGE_DTYPES
MUTATIONS = {"loss_low": REDUCED, "opt_state_low": ("mixed_bfloat16", "mixed_float16"),
             "no_master": ("mixed_bfloat16", "mixed_float16"), "bn_state_low": REDUCED,
             "no_unscale": ("mixed_float16",), "no_skip": ("mixed_float16",), "growth_schedule": ("mixed_float16",),
             "input_bf16": ("mixed_float16",)}
DERIVATIVES = {  # f'(z) from z and the rounded a = f(z), as harness.referee.model computes them
    "sigmoid": lambda z, a: a * (1 - a), "tanh": lambda z, a: 1 - a * a,
    "relu": lambda z, a: (z > 0).astype(z.dtype), "leaky_relu": lambda z, a: jnp.where(z > 0, 1.0, LEAKY_SLOPE),
    "selu": lambda z, a: jnp.where(z > 0, SELU_SCALE, SELU_SCALE * SELU_ALPHA * jnp.exp(jnp.minimum(z, 0.0))),
}


def policy_activation(name: str) -> jax.custom_vjp:
    """Activation ``name`` on a compute-dtype array: evaluated in float32, output rounded once; its backward
    ``g f'(z)`` in float32 from the rounded output, rounded once."""
    f, df = models.ACTIVATIONS[name], DERIVATIVES[name]

    @jax.custom_vjp
    def act(z: jax.Array) -> jax.Array:
        return f(z.astype(jnp.float32)).astype(z.dtype)

    def fwd(z: jax.Array) -> tuple[jax.Array, tuple]:
        a = act(z)
        return a, (z, a)

    def bwd(res: tuple, g: jax.Array) -> tuple[jax.Array]:
        z, a = res
        return ((g.astype(jnp.float32) * df(z.astype(jnp.float32), a.astype(jnp.float32))).astype(g.dtype),)

    act.defvjp(fwd, bwd)
    return act


class PolicyMLP(nnx.Module):
    """The lab network under a policy: ``nnx.Linear`` layers in the compute dtype over ``param_dtype`` weights,
    float32 batch norm, activations at the policy's cast points; float32 outputs."""

    def __init__(self, model: Model, compute: jnp.dtype, stored: jnp.dtype, rngs: nnx.Rngs) -> None:
        self.spec, self.compute = model, compute
        self.dense = nnx.List([nnx.Linear(a, b, dtype=compute, param_dtype=stored, precision=runtime.PRECISION,
                                          preferred_element_type=jnp.float32, rngs=rngs)
                               for a, b in zip(model.sizes[:-1], model.sizes[1:])])
        widths = model.sizes[1:-1] if model.batchnorm else ()
        self.bn = nnx.List([models.BatchNorm(w, model.bn_momentum, model.bn_eps, stored) for w in widths])

    def __call__(self, x: jax.Array, masks: list[jax.Array] | None, train: bool, mutation: str | None) -> jax.Array:
        act, p, c = policy_activation(self.spec.activation), self.spec.dropout, self.compute
        h = x.astype(jnp.bfloat16) if mutation == "input_bf16" else x
        for i, layer in enumerate(self.dense):
            h = layer(h).astype(c)
            if i == len(self.dense) - 1:
                break
            if len(self.bn):
                h = self.bn[i](h.astype(jnp.float32), train).astype(c)
            h = act(h)
            if p > 0 and train:
                h = (h.astype(jnp.float32) * masks[i] / (1 - p)).astype(c)
        out = h if mutation == "loss_low" else h.astype(jnp.float32)
        return jax.nn.sigmoid(out) if self.spec.output == "sigmoid" else out


def _cast(tree: object, dtype: jnp.dtype) -> object:
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


class PrecisionLearner:
    """``PolicyMLP`` trained with the declared Optax optimizer under ``policy`` (module labs only)."""

    def __init__(self, spec: RunSpec, policy: Policy, loss_scale: LossScale | None = None,
                 mutation: str | None = None) -> None:
        check_learner(spec.lab.manual, mutation, MUTATIONS)
        self.spec, self.policy, self.mutation = spec, policy, mutation
        compute = JAX_DTYPES[policy.compute]
        self.stored = JAX_DTYPES[policy.compute if mutation == "no_master" else policy.params]
        self.state_dtype = JAX_DTYPES[policy.compute if mutation == "opt_state_low" else policy.optimizer_state]
        module = nnx.eval_shape(lambda: PolicyMLP(spec.model, compute, self.stored, nnx.Rngs(0)))
        if spec.params is None:  # native init: the weights jax_impl.models draws from the seed, in float32
            spec = dataclasses.replace(spec, params=models.get_params(models.build(spec.model, jnp.float32,
                                                                                   spec.seed))[0])
        state = dict(spec.state or {})
        for i, width in enumerate(spec.model.sizes[1:-1] if spec.model.batchnorm else ()):
            state.setdefault(f"bn{i}/mean", np.zeros(width))
            state.setdefault(f"bn{i}/var", np.ones(width))
        models.set_params(module, spec.params, state, self.stored)
        for bn in module.bn:  # running statistics stay float32 under every policy
            bn.mean.set_value(bn.mean.get_value().astype(jnp.float32))
            bn.var.set_value(bn.var.get_value().astype(jnp.float32))
        self.graphdef, params, stats = nnx.split(module, nnx.Param, nnx.BatchStat)
        self.opt = models.make_optimizer(spec.lab.optimizer)
        rule = loss_scale or policy.loss_scale
        interval = None if rule is None else rule.growth_interval - (0 if mutation == "growth_schedule" else 1)
        self.scale = None if rule is None else DynamicScale(
            growth_factor=rule.growth_factor, backoff_factor=rule.backoff_factor, growth_interval=interval,
            scale=jnp.float32(rule.initial))
        self.carry = (params, _cast(self.opt.init(_cast(params, jnp.float32)), self.state_dtype), stats, self.scale)
        self.probe_step = jax.jit(self._step)  # the traced step: its gradients, finiteness and scale come back too
        self.train_step = jax.jit(lambda carry, x, y, masks: (lambda c, out: (c, out["loss"]))(
            *self._step(carry, x, y, masks)), donate_argnums=0)  # training: the carry donated, the loss only

    def _loss(self, params: nnx.State, stats: nnx.State, x: jax.Array, y: jax.Array,
              masks: list[jax.Array] | None) -> tuple[jax.Array, nnx.State]:
        module = nnx.merge(self.graphdef, params, stats, copy=True)
        out = module(x, masks, True, self.mutation)
        loss = models.loss_fn(self.spec.lab.loss, out, y.astype(out.dtype) if y.dtype != jnp.int32 else y)
        new_stats = nnx.state(module, nnx.BatchStat)
        if self.mutation == "bn_state_low":
            new_stats = _cast(_cast(new_stats, jnp.bfloat16), jnp.float32)
        return loss.astype(jnp.float32), new_stats

    def _step(self, carry: tuple, x: jax.Array, y: jax.Array, masks: list[jax.Array] | None) -> tuple:
        params, opt_state, stats, scale = carry
        if scale is None:
            (loss, stats), grads = jax.value_and_grad(self._loss, has_aux=True)(params, stats, x, y, masks)
            grads, finite, used = _cast(grads, jnp.float32), jnp.array(True), jnp.float32(1.0)
        else:
            used = scale.scale
            scale, finite, (loss, stats), grads = scale.value_and_grad(self._loss, has_aux=True)(
                params, stats, x, y, masks)
            if self.mutation == "no_unscale":
                grads = jax.tree.map(lambda g: g * used, grads)
        new_params, new_state = opt_step(self.opt, params, opt_state, grads, self.stored, self.state_dtype)
        keep = finite if scale is not None and self.mutation != "no_skip" else jnp.array(True)
        params = jax.tree.map(lambda n, o: jnp.where(keep, n, o), new_params, params)
        opt_state = jax.tree.map(lambda n, o: jnp.where(keep, n, o), new_state, opt_state)
        return (params, opt_state, stats, scale), {"loss": loss, "grads": grads, "finite": finite,
                                                    "loss_scale": used}

    def step(self, carry: tuple, x: jax.Array, y: jax.Array, masks: list[jax.Array] | None) -> tuple:
        """``(carry, loss)`` of one step, as ``learners.ModuleLearner.step`` (``train`` and the bench jit it)."""
        carry, out = self._step(carry, x, y, masks)
        return carry, out["loss"]

    def outputs(self, carry: tuple, x: jax.Array) -> jax.Array:
        """Float32 outputs in eval mode (no dropout, batch norm on its running statistics), under the policy."""
        return nnx.merge(self.graphdef, carry[0], carry[2], copy=True)(x, None, False, None)

    def export(self, carry: tuple) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Weights and running statistics in the shared layout, float64."""
        module = nnx.merge(self.graphdef, carry[0], carry[2], copy=True)
        params = {}
        for i, layer in enumerate(module.dense):
            params[f"dense{i}/kernel"] = _np(layer.kernel.get_value())
            params[f"dense{i}/bias"] = _np(layer.bias.get_value())
        state = {}
        for i, bn in enumerate(module.bn):
            params[f"bn{i}/scale"], params[f"bn{i}/bias"] = _np(bn.scale.get_value()), _np(bn.bias.get_value())
            state[f"bn{i}/mean"], state[f"bn{i}/var"] = _np(bn.mean.get_value()), _np(bn.var.get_value())
        return params, state


SLOTS = {optax.ScaleByAdamState: {"mu": "m", "nu": "v"}, optax.ScaleByRmsState: {"nu": "v"},  # referee's names
         optax.ScaleByAdaDeltaState: {"e_g": "square_avg", "e_x": "acc_delta"}}


def opt_slots(learner: PrecisionLearner, carry: tuple) -> dict[str, np.ndarray]:
    """The optimizer's slots as the referee names them (``dense0/kernel:m``), float64, shared layout."""
    out = {}
    found = jax.tree_util.tree_leaves(carry[1], is_leaf=lambda x: type(x) in SLOTS)
    for state in (s for s in found if type(s) in SLOTS):
        for field, slot in SLOTS[type(state)].items():
            tree = _cast(getattr(state, field), jnp.float32)
            params = models.get_params(nnx.merge(learner.graphdef, tree, carry[2], copy=True))[0]
            out.update({f"{k}:{slot}": np.asarray(v, np.float64) for k, v in params.items()})
    return out


def _np(a: jax.Array) -> np.ndarray:
    return np.asarray(a.astype(jnp.float32), np.float64)


def opt_step(opt: optax.GradientTransformation, params: nnx.State, opt_state: object, grads: nnx.State,
             stored: jnp.dtype, state_dtype: jnp.dtype) -> tuple:
    """One optimizer update computed in float32 from the stored parameters and slots (and float32 gradients),
    the results rounded once to their storage dtypes."""
    p32 = _cast(params, jnp.float32)
    updates, new_state = opt.update(_cast(grads, jnp.float32), _cast(opt_state, jnp.float32), p32)
    return _cast(optax.apply_updates(p32, updates), stored), _cast(new_state, state_dtype)


def trace(spec: RunSpec, steps: int, policy: Policy, loss_scale: LossScale | None = None,
          mutation: str | None = None) -> list[dict]:
    """Per step of the first ``steps``: ``loss``, ``grads`` (unscaled, float32), ``updates``, ``params`` and
    ``state`` after the step (float64 arrays, shared layout), ``loss_scale``, ``finite``."""
    runtime.set_precision()
    with jax.default_device(jax.devices(spec.device)[0]):
        spec = rbm.pretrained(spec, jnp.float32)[0]
        learner = PrecisionLearner(spec, policy, loss_scale, mutation)
        records = []
        for s in range(min(steps, spec.steps)):
            idx = slice(None) if spec.batches is None else spec.batches[s]
            xb = jnp.asarray(spec.train_x[idx].astype(np.float32))
            y = spec.train_y[idx]
            yb = jnp.asarray(y.astype(np.float32) if np.issubdtype(y.dtype, np.floating) else y.astype(np.int32))
            masks = None if spec.masks is None else [jnp.asarray(m[s].astype(np.float32)) for m in spec.masks]
            before = learner.export(learner.carry)[0]
            learner.carry, out = learner.probe_step(learner.carry, xb, yb, masks)
            params, state = learner.export(learner.carry)
            grads = models.get_params(nnx.merge(learner.graphdef, out["grads"], learner.carry[2], copy=True))[0]
            records.append({"loss": float(out["loss"]), "grads": {k: np.asarray(v, np.float64)
                                                                  for k, v in grads.items()},
                            "updates": {k: params[k] - before[k] for k in params}, "params": params,
                            "state": state, "opt_state": opt_slots(learner, learner.carry),
                            "loss_scale": float(out["loss_scale"]), "finite": bool(out["finite"])})
    return records
