"""The job's plan: each lab's run options and thread counts, what a lab costs (for the ETA: the seconds it took
when it last ran here, :mod:`harness.report.history`, else a cost model), and which saved results a rerun can
reuse (``OUT/labs/<lab>.json``, else the record in the last ``results.json``): only one with the shape of a
fresh record (:mod:`.records`) that also validates against its JSON Schema (:mod:`harness.schemas`), as strictly
as a freshly written one."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import harness.report.history as history
from harness import backend as backends
from harness import schemas
from harness.labs import Lab, get_lab
from harness.references import LossSeries
from harness.report.options import FORMAT, INIT_STUDY_LAB, INIT_STUDY_SCHEMES, OK_STATUSES, JobOptions
from harness.report.records import LAB, problem
from harness.report.records import STUDY as STUDY_SHAPE

if TYPE_CHECKING:
    from harness.run.runner import RunOptions

MNIST_TRAIN_SIZE = 4000  # the bundled subset's, for estimates when no MNIST data is loaded
WORK_FLOPS = 28e9  # matmul FLOP/s of the ETA model (a slow CPU core's float32 rate)
STUDY = "init_study"


def run_options(lab: Lab, opts: JobOptions) -> RunOptions:
    """The RunOptions of ``lab`` in this job: shared weights, shared dropout masks, the job's data and caps."""
    from harness.run.runner import RunOptions

    overrides = {"epochs": opts.epochs} if opts.epochs and lab.epochs else {}
    return RunOptions(device=opts.device, dtype=opts.dtype, weights="shared", steps=opts.steps, data=opts.data,
                      data_dir=opts.data_dir, mask_mode="shared" if lab.model.dropout else "own",
                      overrides=overrides)


def flops_per_step(lab: Lab) -> int:
    """Matmul FLOPs of one training step of the lab's (main) model: the 6·B·Σ in·out convention of
    :mod:`harness.bench.peak` (forward, and backward for inputs and weights)."""
    from harness.bench.peak import flops_per_step as flops

    return flops(lab.model, lab.batch_size or 4, lab.manual)["total"]


def course_frameworks(opts: JobOptions) -> tuple[str, ...]:
    """The chosen frameworks the course itself ran in (registry ``course``): their native init draws the
    course's weights, so a native run there retraces the course's printed losses."""
    return tuple(fw for fw in opts.frameworks if backends.info(fw).course)


def thread_counts(task: str, opts: JobOptions) -> dict[str, int]:
    """Intra-op threads per chosen backend that sets them per task (registry ``thread_policy``), on a CPU: see
    :func:`harness.run.machine.threads_for` (``opts.threads`` a count, or "auto": as ``dlzta bench``, one on
    a machine that was busy when the job started)."""
    from harness.run.machine import threads_for

    counts = {fw: threads_for(fw, task, opts.busy, opts.threads, opts.device) for fw in opts.frameworks}
    return {fw: n for fw, n in counts.items() if n is not None}


def estimate_seconds(lab: Lab, opts: JobOptions, train_size: int = MNIST_TRAIN_SIZE) -> float:
    """A rough duration of ``lab`` in this job on a CPU, from each backend's registered cost (setup, per step)
    and the lab's matmul work; the ETA corrects it by the measured pace."""
    steps = lab.total_steps(train_size) if lab.task == "mnist" else lab.total_steps()
    if opts.epochs and lab.epochs and lab.batch_size:
        steps = opts.epochs * (train_size // lab.batch_size)
    steps = min(steps, opts.steps or steps)
    work = flops_per_step(lab) / WORK_FLOPS
    per_fw = {fw: setup + steps * (per_step + work)
              for fw in opts.frameworks for setup, per_step in [backends.info(fw).cost]}
    total = sum(per_fw.values()) * (2 if lab.companion is not None else 1)
    if opts.compares and opts.noise:  # the one-ulp twin
        total += min(per_fw.values())
    if lab.reference.of(LossSeries):  # the native runs
        total += sum(per_fw[fw] for fw in course_frameworks(opts))
    return total


def load_record(path: Path) -> dict | None:
    """A saved JSON object; None when missing, unreadable, truncated or not an object."""
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def reusable(rec: Any, key: dict, shape: Any = LAB, kind: str = "lab") -> dict | None:
    """``rec`` when it is a finished result of this format with this key, with the typed
    ``shape`` of a fresh record (:mod:`.records`) and valid against ``kind``'s JSON Schema."""
    if _matches(rec, key) and _problem(rec, shape, kind) is None:
        return rec
    return None


def _problem(rec: dict, shape: Any, kind: str) -> str | None:
    """Why ``rec`` cannot be reused: its shape (:func:`.records.problem`), else the first way it fails ``kind``'s
    schema; None: it can."""
    why = problem(rec, shape)
    if why is None and (errors := schemas.errors(kind, rec)):
        why = f"not a valid {kind} record: {errors[0]}"
    return why


def _matches(rec: Any, key: dict) -> bool:
    return isinstance(rec, dict) and rec.get("format") == FORMAT and rec.get("key") == key \
        and rec.get("status") in OK_STATUSES


@dataclass
class Plan:
    """The labs in order, what each costs, and the saved results a rerun takes over (None: compute)."""

    labs: list[Lab]
    saved: dict[str, dict | None] = field(default_factory=dict)
    estimates: dict[str, float] = field(default_factory=dict)
    previous: dict | None = None  # the folder's results.json before this run
    restore: set[str] = field(default_factory=set)  # reused from ``previous``: their lab file is written again
    rejected: dict[str, str] = field(default_factory=dict)  # saved with the key, but malformed: recomputed
    keys: dict[str, str] = field(default_factory=dict)  # each task's key in the cost history
    timed: set[str] = field(default_factory=set)  # tasks whose estimate is what they took before
    history: dict[str, float] = field(default_factory=dict)  # the cost history when the plan was made

    def reused(self) -> int:
        """Tasks taken over from earlier runs."""
        return sum(1 for v in self.saved.values() if v)


def _saved(plan: Plan, opts: JobOptions, name: str, key: dict, previous: Any,
           shapes: dict[str, tuple[Any, str]] | None = None) -> dict | None:
    """The saved result of task ``name`` with ``key``: its lab file, else its record in the earlier
    results.json (the lab file is then to be written again). A record with the key but not the typed shape of a
    fresh one is not reused: the reason goes into ``plan.rejected``. ``shapes``: the (shape, schema kind) of a
    task that is neither a lab nor the init study (the precision section)."""
    shapes = shapes or {}
    if not opts.resume:
        return None
    shape, kind = shapes.get(name) or ((STUDY_SHAPE, "init-study") if name == STUDY else (LAB, "lab"))
    for where, rec in ((f"labs/{name}.json", load_record(opts.out / "labs" / f"{name}.json")),
                       (f"results.json ({name})", previous)):
        if not _matches(rec, key):
            continue
        why = _problem(rec, shape, kind)
        if why is None:
            if where.startswith("results.json"):
                plan.restore.add(name)
            return rec
        plan.rejected.setdefault(name, f"{where}: {why}")
    return None


def _estimate(plan: Plan, name: str, key: dict, previous: Any, model: Callable[[], float]) -> float:
    """Task ``name``'s seconds: what it took before (the history, else the previous results.json's ``costs``
    under the same key), else ``model()``."""
    plan.keys[name] = history.task_key(name, key)
    seconds = plan.history.get(plan.keys[name])
    if seconds is None:
        seconds = history.previous_seconds(previous, key)
    if seconds is None:
        return model()
    plan.timed.add(name)
    return seconds


def make_plan(opts: JobOptions, train_size: int = MNIST_TRAIN_SIZE) -> Plan:
    """The plan of the job into ``opts.out``, whose data record (for the keys) is already set."""
    plan = Plan([get_lab(name) for name in opts.labs], previous=load_record(opts.out / "results.json"),
                history=history.load())
    old = plan.previous or {}
    old_labs = old.get("labs") if isinstance(old.get("labs"), dict) else {}
    for lab in plan.labs:
        key = opts.lab_key(lab)
        plan.saved[lab.name] = rec = _saved(plan, opts, lab.name, key, old_labs.get(lab.name))
        plan.estimates[lab.name] = 0.0 if rec else _estimate(
            plan, lab.name, key, old_labs.get(lab.name), lambda lab=lab: estimate_seconds(lab, opts, train_size))
    if opts.init_study:
        plan.saved[STUDY] = rec = _saved(plan, opts, STUDY, opts.study_key(), old.get(STUDY))
        study = dataclasses.replace(opts, frameworks=(opts.study_framework(),), steps=opts.study_steps(),
                                    noise=False)
        plan.estimates[STUDY] = 0.0 if rec else _estimate(
            plan, STUDY, opts.study_key(), old.get(STUDY),
            lambda: len(INIT_STUDY_SCHEMES) * estimate_seconds(get_lab(INIT_STUDY_LAB), study, train_size))
    return plan
