"""Run one lab in one framework: data and batch order, initial weights, the framework's training, metrics.

Everything here is framework-neutral; the framework is imported only when a run asks for it.
"""

from __future__ import annotations

import dataclasses
import math
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import harness.backend as registry
import harness.run.pretrain as pretrain
from harness.backend import DEVICES, DTYPES, RunSpec, TrainResult, check_device, info, load, resolve_execution
from harness.data import datasets as data_mod
from harness.errors import BackendError, RunDiverged
from harness.labs import Lab, LabError, Model, get_lab
from harness.precision import PRECISIONS, REDUCED, Policy, resolve
from harness.references import CorrectSeries
from harness.run.machine import machine_record
from harness.run.metrics import epoch_means, epoch_rows, evaluate, final_metrics
from harness.weights import Params, init_params, init_state

WEIGHTS = ("native", "shared")
MAX_SEED = 2**32 - 1  # torch.manual_seed, the ported mt19937 and jax.random.key all take 32-bit seeds
MAX_BATCH_INDICES = 2**28  # example indices in a run's batch order: 1 GiB of int32
MASK_MODES = ("own", "shared")


@dataclass
class RunOptions:
    """How to run a lab (not what the lab is: that is the declaration, with ``overrides`` on top).

    ``weights``: "native" (the framework draws the initial weights) or "shared" (the harness draws them);
    ``mask_mode``: "own" (each framework draws its dropout masks) or "shared". ``execution`` None: each
    backend's default.
    """

    device: str = "cpu"
    dtype: str = "float32"
    weights: str = "native"
    seed: int | None = None
    log_every: int | None = None
    steps: int | None = None  # cut a run short (tests, compare windows)
    execution: str | None = None
    data: str = "auto"
    data_dir: str | None = None
    mask_mode: str = "own"
    overrides: dict[str, Any] = field(default_factory=dict)
    precision: str | None = None  # a reduced harness.precision policy; None: the dtype's own

    def __post_init__(self) -> None:
        if self.precision in DTYPES:  # float32 and float64 are the dtypes' own policies
            if self.dtype not in ("float32", self.precision):
                raise LabError(f"precision {self.precision} with dtype {self.dtype}: give one of them")
            self.dtype, self.precision = self.precision, None

    @property
    def policy(self) -> Policy:
        """The precision policy the run follows (``precision``, else the one of ``dtype``)."""
        return resolve(self.precision, self.dtype)

    def check(self) -> None:
        """Raise LabError for a value outside its choices."""
        executions = registry.all_executions()
        for name, value, allowed in (("device", self.device, DEVICES), ("dtype", self.dtype, DTYPES),
                                     ("weights", self.weights, WEIGHTS), ("masks", self.mask_mode, MASK_MODES)):
            if value not in allowed:
                raise LabError(f"unknown {name} {value!r}; choose from {', '.join(allowed)}")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise LabError(f"unknown precision {self.precision!r}; choose from {', '.join(PRECISIONS)}")
        if self.precision in REDUCED and self.dtype != "float32":
            raise LabError(f"precision {self.precision} trains from float32 data and master weights; "
                           f"drop dtype {self.dtype}")
        if self.execution is not None and self.execution not in executions:
            raise LabError(f"unknown execution {self.execution!r}; choose from {', '.join(sorted(executions))}")
        for name in ("steps", "log_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise LabError(f"{name.replace('_', '-')} must be at least 1, got {value}")
        if self.seed is not None and not 0 <= self.seed <= MAX_SEED:
            raise LabError(f"seed must be in 0..{MAX_SEED} (the 32-bit range every generator here takes), "
                           f"got {self.seed}")


@dataclass
class Prepared:
    """A lab made concrete: its data, batch order, weights and the specs handed to the frameworks."""

    lab: Lab
    options: RunOptions
    seed: int
    steps: int
    spec: RunSpec
    data_record: dict
    steps_per_epoch: int | None
    eval_targets: dict[str, np.ndarray]
    companion: RunSpec | None = None  # the lab's second model: same data, batches, seed and eval points
    notes: tuple[str, ...] = ()  # overrides that do not apply to the lab (ignored; see ``inapplicable``)


def uncovered(lab: Lab, options: RunOptions) -> str | None:
    """Why ``options``' precision does not cover ``lab`` (None: it does): reduced precision is for module labs."""
    if options.policy.reduced and lab.manual:
        return (f"{lab.name} writes its backprop by hand in float32 or float64; reduced precision "
                f"({options.precision}) covers the module labs")
    return None


def covered(names: list[str], options: RunOptions, note: Callable[[str], None]) -> list[str]:
    """The labs of ``names`` that ``options``' precision covers, ``note`` called with why for each left out;
    LabError when none is left."""
    kept = []
    for name in names:
        why = uncovered(get_lab(name), options)
        note(why) if why else kept.append(name)
    if not kept:
        raise LabError(f"no lab left to run in {options.precision}")
    return kept


def _eval_steps(lab: Lab, steps: int, steps_per_epoch: int | None) -> tuple[int, ...]:
    if lab.eval_every_epoch and steps_per_epoch:
        points = set(range(steps_per_epoch, steps + 1, steps_per_epoch))
    elif lab.manual and lab.task == "mnist":
        points = set(range(lab.log_every, steps + 1, lab.log_every))
    else:
        points = set()
    return tuple(sorted(points | {steps}))


def shared_weights(model: Model, seed: int, dtype: str) -> tuple[Params, Params]:
    """The harness's initial weights and state for ``model``, drawn in ``dtype`` (as torch draws them when that
    is its default dtype)."""
    return init_params(model, seed, dtype), init_state(model, dtype)


def dropout_masks(model: Model, batches: np.ndarray | None, steps: int, seed: int) -> list[np.ndarray] | None:
    """0/1 keep-masks for every hidden layer and step, drawn by the harness for both frameworks."""
    if model.dropout == 0:
        return None
    rng = np.random.default_rng([seed, 0xD409])
    batch = batches.shape[1] if batches is not None else 4
    return [(rng.random((steps, batch, w)) >= model.dropout).astype(np.uint8) for w in model.sizes[1:-1]]


def _minibatches(lab: Lab, n: int, seed: int, cap: int | None, record: dict) -> tuple[int, int, np.ndarray]:
    """Steps per epoch, steps and the batch order of a minibatch lab on ``n`` training examples, the run cut
    at ``cap`` steps; only the epochs the run reaches are drawn. LabError for a batch larger than the training
    set, or a run whose batch order alone would not fit in memory."""
    batch = lab.batch_size or 1
    if batch > n:
        where = " ".join(str(record[k]) for k in ("source", "name") if record.get(k))
        raise LabError(f"batch size {batch} is larger than the training set ({n} examples in {where})")
    steps_per_epoch = n // batch
    steps = lab.total_steps(n) if cap is None else min(lab.total_steps(n), cap)
    if steps * batch > MAX_BATCH_INDICES:
        raise LabError(f"{steps} steps of {batch} examples is too long a run: its batch order alone would take "
                       f"{steps * batch * 4 / 2**30:.0f} GiB (at most {MAX_BATCH_INDICES} example indices); "
                       "use --steps or fewer --epochs")
    epochs = math.ceil(steps / steps_per_epoch)
    return steps_per_epoch, steps, data_mod.batch_order(n, batch, epochs, seed)[:steps]


def _check_float32_lr(lab: Lab, dtype: str) -> None:
    limit = float(np.finfo(np.dtype(dtype)).max)
    if lab.optimizer.lr > limit:
        raise LabError(f"learning rate {lab.optimizer.lr:g} does not fit {dtype} (at most {limit:.3g})")


def prepare(lab: Lab, options: RunOptions, model: Model | None = None) -> Prepared:
    """Data, batch order, weights and the RunSpec of ``lab`` under ``options``."""
    options.check()
    if why := uncovered(lab, options):
        raise LabError(why)
    notes = tuple(inapplicable(lab, options))
    lab = lab.with_options(**options.overrides) if options.overrides else lab
    model = model or lab.model
    seed = lab.seed if options.seed is None else options.seed
    steps_per_epoch = None
    batches = None
    if lab.task in ("xor", "gates"):
        x, y = (data_mod.xor_data if lab.task == "xor" else data_mod.gates_data)(np.dtype(options.dtype))
        eval_sets = {"train": (x, y)}
        record = {"source": "builtin", "name": lab.task, "train_size": len(x)}
        steps = lab.total_steps()
    else:
        ds = data_mod.load_mnist(options.data, options.data_dir)
        x, y = ds.train_x, ds.train_y
        eval_sets = {"test": (ds.test_x, ds.test_y)}
        if lab.eval_every_epoch:
            eval_sets["train"] = (ds.train_x, ds.train_y)
        record = ds.record
        steps_per_epoch, steps, batches = _minibatches(lab, len(x), seed, options.steps, record)
    if options.steps is not None:
        steps = min(steps, options.steps)
    _check_float32_lr(lab, options.dtype)
    params, state = shared_weights(model, seed, options.dtype) if options.weights == "shared" else (None, None)
    masks = dropout_masks(model, batches, steps, seed) if options.mask_mode == "shared" else None
    pre_batches = pre_uniforms = None
    if lab.pretrain is not None:  # RBM pre-training: its batches and sampling uniforms, and shared RBM weights
        pre_batches = pretrain.batch_order(lab.pretrain, len(x), seed, options.steps)
        pre_uniforms = pretrain.uniforms(lab.pretrain, model, len(pre_batches), seed, options.dtype)
        if params is not None:
            params = {**params, **pretrain.initial_weights(lab.pretrain, model, seed, options.dtype)}
    spec = RunSpec(
        lab=lab, model=model, dtype=options.dtype, device=options.device, seed=seed, params=params, state=state,
        train_x=x, train_y=y, batches=batches, masks=masks, steps=steps,
        eval_steps=_eval_steps(lab, steps, steps_per_epoch), eval_sets=eval_sets, execution=options.execution,
        pretrain_batches=pre_batches, pretrain_uniforms=pre_uniforms,
        precision=options.precision if options.policy.reduced else None,
    )
    companion = None
    if lab.companion is not None and model is lab.model:
        # Same seed, so the same batch order; the companion's Linear layers draw the same initial weights as the
        # main model's (batch norm draws nothing), natively and in the shared init alike.
        c_params, c_state = (shared_weights(lab.companion, seed, options.dtype) if options.weights == "shared"
                             else (None, None))
        c_masks = dropout_masks(lab.companion, batches, steps, seed) if options.mask_mode == "shared" else None
        companion = dataclasses.replace(spec, model=lab.companion, params=c_params, state=c_state, masks=c_masks)
    return Prepared(lab, options, seed, steps, spec, record, steps_per_epoch,
                    {k: v[1] for k, v in eval_sets.items()}, companion, notes)


# RunOptions.overrides keys -> the names of the command-line options (and of a run record's ``config``)
OVERRIDE_NAMES = {"lr": "lr", "optimizer_name": "optimizer", "activation": "activation", "init": "weight_init",
                  "dropout": "dropout", "epochs": "epochs", "batch_size": "batch_size"}


def inapplicable(lab: Lab, options: RunOptions) -> list[str]:
    """One line for each override that does not change a run of ``lab`` (``lab`` as declared): it is ignored,
    and said so in the output and the record."""
    given = {OVERRIDE_NAMES.get(k, k): v for k, v in options.overrides.items() if v is not None}
    notes = []
    if lab.batch_size is None:
        notes += [f"--{name.replace('_', '-')} does not apply to {lab.name} (a full-batch lab: --steps sets its "
                  "length); ignored" for name in ("epochs", "batch_size") if name in given]
    if lab.model.depth < 2:
        notes += [f"--{name} does not apply to {lab.name} (no hidden layer); ignored"
                  for name in ("activation", "dropout") if name in given]
    return notes


def run_config(prepared: Prepared, framework: str) -> dict:
    """The complete effective configuration of a run, from which ``dlzta run --config`` reruns it: the options
    as given (``overrides`` under their option names) and, in ``effective``, the values the run trained with."""
    lab, options = prepared.lab, prepared.options
    return {
        "lab": lab.name, "framework": framework, "device": options.device, "dtype": options.dtype,
        "precision": options.policy.name, "weights": options.weights, "masks": options.mask_mode,
        "seed": prepared.seed, "steps": options.steps,
        "log_every": options.log_every, "execution": resolve_execution(framework, options.execution),
        "data": options.data, "data_dir": options.data_dir,
        "overrides": {OVERRIDE_NAMES.get(k, k): v for k, v in options.overrides.items() if v is not None},
        "effective": {"lr": lab.optimizer.lr, "optimizer": lab.optimizer.name, "activation": lab.model.activation,
                      "weight_init": lab.model.init, "dropout": lab.model.dropout,
                      "epochs": lab.epochs if lab.batch_size else None,
                      "batch_size": lab.batch_size, "steps": prepared.steps,
                      "log_every": options.log_every or lab.log_every},
    }


def logged_steps(steps: int, log_every: int) -> list[int]:
    """Step numbers to report: every ``log_every``-th step from 0, and the last step."""
    return sorted(set(range(0, steps, log_every)) | {steps - 1})


def execute(prepared: Prepared, framework: str, spec: RunSpec | None = None) -> TrainResult:
    """Train ``prepared`` (or a variant ``spec`` of it) in ``framework`` on the chosen device."""
    check_device(framework, prepared.options.device)
    if prepared.options.policy.reduced and info(framework).float64_only:
        raise BackendError(f"{framework} computes in float64 only; reduced precision "
                           f"({prepared.options.precision}) runs in {', '.join(registry.names(False))}")
    spec = spec or prepared.spec
    spec = dataclasses.replace(spec, execution=resolve_execution(framework, spec.execution))
    return load(framework).train(spec)


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value


def summarize(prepared: Prepared, framework: str, result: TrainResult) -> dict:
    """The machine-readable record of one run; RunDiverged if the loss stopped being finite."""
    lab, options = prepared.lab, prepared.options
    log_every = options.log_every or lab.log_every
    losses = result.losses
    bad = np.flatnonzero(~np.isfinite(losses))
    end = int(bad[0]) if bad.size else len(losses)
    steps = [s for s in logged_steps(len(losses), log_every) if s < end]
    evals = {done: {name: evaluate(lab.task, lab.loss, out, prepared.eval_targets[name])
                    for name, out in sets.items()} for done, sets in sorted(result.outputs.items())}
    record: dict[str, Any] = {
        "lab": lab.name, "framework": framework, "device": result.device,
        "dtype": "float64" if info(framework).float64_only else options.dtype,  # a referee computes in float64
        "precision": options.policy.record(),
        "weights": options.weights, "seed": prepared.seed,
        "execution": resolve_execution(framework, options.execution),
        "data": prepared.data_record, "steps": steps, "loss": [float(losses[s]) for s in steps],
        "timing": result.timing.as_dict(), "versions": _versions(framework),
        "machine": machine_record(framework, options.device), "config": run_config(prepared, framework),
    }
    if prepared.notes:
        record["notes"] = list(prepared.notes)
    if prepared.steps_per_epoch:
        record["epoch_cost"] = epoch_means(losses[:end], prepared.steps_per_epoch)
    if result.pretrain_recon:
        record["pretrain"] = pretrain.record(result.pretrain_recon, _or_nan(result.timing.pretrain_s),
                                             lab.pretrain, len(prepared.spec.train_x))
    if bad.size:
        record["status"] = "diverged"
        record["error"] = f"loss became {losses[end]} at step {end}"
        raise RunDiverged(f"{lab.name} ({framework}): {record['error']}; {len(steps)} logged steps kept", record)
    record["final"] = final_metrics(float(losses[-1]), evals[max(evals)] if evals else {})
    record["evals"] = evals
    if lab.eval_every_epoch and prepared.steps_per_epoch:
        record["epochs"] = [{"epoch": row.pop("epoch"), lab.model_labels[0]: row}
                            for row in epoch_rows(evals, prepared.steps_per_epoch)]
    for series in lab.reference.of(CorrectSeries):
        record[f"correct_of_first_{series.of_first}"] = [
            {"step": done, "correct": sets["test"][f"correct_of_first_{series.of_first}"],
             "course": series.correct.get(done)}
            for done, sets in evals.items() if done > 0 and "test" in sets]
    record["status"] = "ok"
    return record


def course_lines(record: dict) -> list[str]:
    """The lab's own printout, as the course prints it: per-epoch train and validation loss (accuracy) of the
    model and its companion; correct answers among the first 1000 test images beside the course's; RBM
    pre-training's reconstruction error per epoch."""
    lines = pretrain.lines(record["pretrain"]) if record.get("pretrain") else []
    for row in record.get("epochs", []):
        for split, name in (("train", "TRAIN"), ("valid", "VALID")):
            cells = [f"{label} loss {m[f'{split}_loss']:.5f} (acc {m[f'{split}_acc']:.2f})"
                     for label, m in row.items() if label != "epoch"]
            lines.append(f"[epoch {row['epoch']:>2} {name}] " + " vs ".join(cells))
    for point in record.get("correct_of_first_1000", []):
        course = f" (course {point['course']}, on raw pixels)" if point.get("course") is not None else ""
        lines.append(f"step {point['step']:>6}: {point['correct']} correct of the first 1000 test images{course}")
    return lines


def add_companion(record: dict, prepared: Prepared, framework: str, result: TrainResult) -> dict:
    """Put the companion's run (``result``) into ``record`` as ``record["companion"]``, and its per-epoch
    metrics beside the main model's in ``record["epochs"]``; RunDiverged (holding both) if it diverged."""
    labels = prepared.lab.model_labels
    try:
        other = summarize(prepared, framework, result)
    except RunDiverged as exc:
        record["companion"] = exc.result
        record["status"] = "diverged"
        exc.result = record
        raise
    for key in ("lab", "framework", "device", "dtype", "precision", "init", "weights", "seed", "execution", "data",
                "versions", "machine", "config", "notes"):
        other.pop(key, None)
    other["model"] = labels[1]
    by_epoch = {row["epoch"]: row[labels[0]] for row in other.pop("epochs", [])}
    for row in record.get("epochs", []):
        if row["epoch"] in by_epoch:
            row[labels[1]] = by_epoch[row["epoch"]]
    record["companion"] = other
    return record


def _versions(framework: str) -> dict[str, str]:
    return {"python": platform.python_version(), "numpy": np.__version__, **load(framework).versions()}


def run_prepared(prepared: Prepared, framework: str) -> tuple[dict, list[TrainResult]]:
    """Train and summarize ``prepared`` in ``framework``, its companion model too (on the same batches): the
    record and the raw results (main model first)."""
    results = [execute(prepared, framework)]
    record = summarize(prepared, framework, results[0])
    if prepared.companion is not None:
        results.append(execute(prepared, framework, prepared.companion))
        add_companion(record, prepared, framework, results[1])
    return record, results


def run(lab: Lab, framework: str, options: RunOptions) -> dict:
    """Prepare, train and summarize one run of ``lab`` in ``framework`` (and of its companion model)."""
    return run_prepared(prepare(lab, options), framework)[0]

