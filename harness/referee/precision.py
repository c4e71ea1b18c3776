"""The referee's emulation of a reduced-precision policy (``harness.precision``): the lab network's forward and
backward passes and its optimizer with every value rounded to bfloat16 or float16 (``ml_dtypes``) exactly at the
policy's declared cast points, and stored tensors rounded to their declared storage dtype. Between cast points it
computes in ``accumulate``: float64 (the policy's exact arithmetic: the reference the precision tier holds each
side to) or float32 (one float32 implementation of the same policy: how far float32 accumulation alone moves the
result, the tier's noise). :func:`trace` records the first steps as ``harness.parity.localise`` reads them, plus
the loss scale in effect and whether each step's gradients were finite.
"""

from __future__ import annotations

import numpy as np

from harness.backend import BackendError, RunSpec
from harness.precision import LossScale, Policy
from harness.referee import losses, optim, rbm
from harness.referee.model import Arrays, activation, batch_sum, batchnorm, batchnorm_backward, layout, sigmoid
from harness.referee.train import batch, check

ACCUMULATE = {"float64": np.float64, "float32": np.float32}


def np_dtype(name: str) -> np.dtype:
    """The numpy dtype of a policy dtype name (bfloat16 from ``ml_dtypes``)."""
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def round_to(x: np.ndarray, dtype: str, acc: type = np.float64) -> np.ndarray:
    """``x`` rounded (to nearest even, through float32 as a float32 accumulator would) to ``dtype``, held in
    ``acc``; float16 overflows to inf."""
    x = np.asarray(x)
    if dtype == "float64":
        return x.astype(acc)
    with np.errstate(over="ignore", invalid="ignore"):
        return x.astype(np.float32).astype(np_dtype(dtype)).astype(acc)


class Emulator:
    """One network trained under ``policy``, one step at a time (``spec``: shared weights, batches and masks;
    ``loss_scale``: the scale rule under a float16 policy, the policy's own where None)."""

    def __init__(self, spec: RunSpec, policy: Policy, accumulate: str = "float64",
                 loss_scale: LossScale | None = None, mutation: str | None = None, split: int = 1,
                 jitter: int | None = None) -> None:
        check(spec)
        if not policy.reduced:
            raise BackendError(f"the emulation is of reduced precisions; {policy.name} is the referee's own")
        self.lab, self.model, self.policy, self.mutation, self.split = spec.lab, spec.model, policy, mutation, split
        self.jitter = None if jitter is None else np.random.default_rng(jitter)
        self.acc = ACCUMULATE[accumulate]
        self.params = {k: self.store(v, policy.storage("params")) for k, v in spec.params.items()}
        names = layout(self.model)[1]
        initial = {k: (np.zeros if k.endswith("/mean") else np.ones)(self.params[k.split("/")[0] + "/scale"].shape)
                   for k in names}
        self.state = {k: self.store((spec.state or {}).get(k, v), policy.storage("bn_state")) for k, v in
                      initial.items()}
        self.rule = optim.make(spec.lab.optimizer)
        self.scaler = loss_scale or policy.loss_scale
        self.scale, self.tracker = (self.scaler.initial, 0) if self.scaler else (1.0, 0)

    def store(self, x: np.ndarray, dtype: str) -> np.ndarray:
        """``x`` as stored in ``dtype``, held in the accumulation dtype (``jitter``, below float32: from a value
        moved by a float32 rounding or two first, as in :meth:`c`)."""
        if self.jitter is not None and dtype in ("bfloat16", "float16"):
            x = x * (1 + self.jitter.standard_normal(np.shape(x)) * 2.0**-23).astype(self.acc)
        return round_to(x, dtype, self.acc)

    def mm(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``a @ b`` accumulated in ``split`` partial products over the inner dimension (another summation order:
        a float32 accumulation of the same products, differently rounded), or with ``jitter``: each entry moved by
        a random float32 accumulation error of the typical size."""
        if self.jitter is not None:
            return self.accumulated(a @ b, (a * a) @ (b * b))
        if self.split == 1 or a.shape[1] < self.split:
            return a @ b
        bounds = np.linspace(0, a.shape[1], self.split + 1).astype(int)
        out = a[:, bounds[0]:bounds[1]] @ b[bounds[0]:bounds[1]]
        for lo, hi in zip(bounds[1:-1], bounds[2:]):
            out = out + a[:, lo:hi] @ b[lo:hi]
        return out

    def total(self, x: np.ndarray) -> np.ndarray:
        """``x.sum(0)``, the batch sums of bias gradients and batch-norm statistics; with ``jitter`` each moved by a
        random float32 accumulation error of the typical size, as :meth:`mm`'s (another framework, thread count
        or card sums the batch in another order: a sum that cancels moves by far more than a rounding of it)."""
        out = batch_sum(x)
        return out if self.jitter is None else self.accumulated(out, batch_sum(x * x))

    def accumulated(self, out: np.ndarray, squares: np.ndarray) -> np.ndarray:
        """``out``, a float32 sum of terms whose squares sum to ``squares``, moved by a random accumulation error of
        its typical size: 2**-24 x the root sum of squares (a random walk of roundings of the partial sums)."""
        noise = self.jitter.standard_normal(out.shape) * 2.0**-24
        return out + np.sqrt(squares) * noise.astype(out.dtype)

    def c(self, x: np.ndarray) -> np.ndarray:
        """Rounded to the compute dtype (``jitter``: from a value moved by a float32 rounding or two first, as
        another order of the float32 ops before a cast point would leave it)."""
        if self.jitter is not None:
            x = x * (1 + self.jitter.standard_normal(np.shape(x)) * 2.0**-23).astype(self.acc)
        return round_to(x, self.policy.compute, self.acc)

    def forward(self, x: np.ndarray, masks: list[np.ndarray] | None, training: bool) -> tuple:
        """The float32 outputs (sigmoid applied, or logits widened), the tape and the state after the pass."""
        f, _ = activation(self.model.activation)
        model, p, new_state, tape = self.model, self.params, dict(self.state), []
        h = self.c(x)
        for i in range(model.depth):
            record = {"input": h}
            z = self.c(self.mm(h, self.c(p[f"dense{i}/kernel"])) + self.c(p[f"dense{i}/bias"]))
            if i == model.depth - 1:
                tape.append(record)
                return (sigmoid(z) if model.output == "sigmoid" else z), tape, new_state
            if model.batchnorm:
                z, record["bn"] = self.batchnorm(z, i, training, new_state)
            h = self.c(f(z))
            record["z"], record["a"] = z, h
            if model.dropout > 0 and training:
                record["keep"] = masks[i].astype(self.acc) / self.acc(1 - model.dropout)
                h = self.c(h * record["keep"])
            tape.append(record)
        raise AssertionError("unreachable")

    def batchnorm(self, z: np.ndarray, i: int, training: bool, new_state: Arrays) -> tuple:
        """Batch norm in float32 from compute-dtype input; the output rounded; running statistics stored
        float32 (``bn_bf16`` mutation: accumulated in bfloat16)."""
        out, saved = batchnorm(z, i, self.model, self.params, self.state, training, new_state, self.total)
        if training:  # the float64 batch norm's running statistics, stored as the policy (or mutation) says
            stats = "bfloat16" if self.mutation == "bn_state_bf16" else self.policy.storage("bn_state")
            for key in (f"bn{i}/mean", f"bn{i}/var"):
                new_state[key] = self.store(new_state[key], stats)
        return self.c(out), saved

    def backward(self, tape: list[dict], out: np.ndarray, d_out: np.ndarray) -> Arrays:
        """Compute-dtype-valued gradients of every parameter from the float32 ``d_out`` = dL/d(outputs)."""
        _, df = activation(self.model.activation)
        p, grads = self.params, {}
        d = d_out * out * (1.0 - out) if self.model.output == "sigmoid" else d_out
        d = self.c(d)  # into the low-precision graph at the logits
        for i in reversed(range(self.model.depth)):
            record = tape[i]
            if i < self.model.depth - 1:
                if "keep" in record:
                    d = self.c(d * record["keep"])
                d = self.c(d * df(record["z"], record["a"]))
                if "bn" in record:
                    d, grads[f"bn{i}/scale"], grads[f"bn{i}/bias"] = batchnorm_backward(
                        d, record["bn"], p[f"bn{i}/scale"], self.total)  # float32, like the parameters' gradients
                    d = self.c(d)
            grads[f"dense{i}/kernel"] = self.c(self.mm(record["input"].T, d))
            grads[f"dense{i}/bias"] = self.c(self.total(d))
            if i > 0:
                d = self.c(self.mm(d, self.c(p[f"dense{i}/kernel"]).T))
        return grads

    def step(self, x: np.ndarray, y: np.ndarray, masks: list[np.ndarray] | None) -> dict:
        """One training step; its record (loss, unscaled gradients, updates, params, state, loss scale, finite)."""
        with np.errstate(over="ignore", invalid="ignore"):  # float16 overflows are the loss scale's business
            return self._step(x, y, masks)

    def _step(self, x: np.ndarray, y: np.ndarray, masks: list[np.ndarray] | None) -> dict:
        out, tape, state = self.forward(x, masks, training=True)
        loss, d_out = losses.loss_and_direction(self.lab.loss, out.astype(np.float64), y, self.lab.grad_eps)
        d_out = np.asarray(d_out, self.acc) * self.acc(self.scale)
        grads = self.backward(tape, out, d_out)
        if self.lab.manual:
            grads = {k: g / len(x) if k.endswith("/bias") else g for k, g in grads.items()}
        grads = {k: self.store(g, self.policy.grads) * self.acc(1.0 / self.scale) for k, g in grads.items()}
        finite = all(np.isfinite(g).all() for g in grads.values())
        scale = self.scale
        before = self.params
        if finite or self.scaler is None:
            self.params = {k: self.store(v, self.policy.storage("params"))
                           for k, v in self.rule.step(self.params, grads).items()}
            for slots in self.rule.slots.values():
                for value in slots.values():
                    value[...] = self.store(value, self.policy.optimizer_state)
        self.state = state  # the forward pass moved the running statistics, skipped step or not (as torch's)
        if self.scaler is not None:
            self.scale, self.tracker = self.scaler.update(self.scale, self.tracker, finite)
        slots = {f"{k}:{slot}": store[k].copy() if k in store else np.zeros_like(v)  # zero before the first update
                 for slot, store in self.rule.slots.items() for k, v in self.params.items()}
        return {"loss": float(loss), "grads": grads, "updates": {k: self.params[k] - before[k] for k in before},
                "params": dict(self.params), "state": dict(self.state), "opt_state": slots, "loss_scale": scale,
                "finite": finite}


def trace(spec: RunSpec, steps: int, policy: Policy, accumulate: str = "float64",
          loss_scale: LossScale | None = None, split: int = 1, mutation: str | None = None,
          jitter: int | None = None) -> list[dict]:
    """The first ``steps`` steps of ``spec`` under ``policy``, as :meth:`Emulator.step` records them (tensors as
    float64 arrays); ``split``, ``jitter``: each matmul's float32 accumulation varied (see :meth:`Emulator.mm`)."""
    spec = rbm.pretrained(spec)[0]
    emulator = Emulator(spec, policy, accumulate, loss_scale, mutation, split, jitter)
    records = []
    for s in range(min(steps, spec.steps)):
        record = emulator.step(*batch(spec, s))
        for kind in ("grads", "updates", "params", "state", "opt_state"):
            record[kind] = {k: np.asarray(v, np.float64) for k, v in record[kind].items()}
        records.append(record)
    return records
