"""Our figures beside the course's, like with like: for each lab, each figure the course printed and ours of the
same kind (training loss at the same step, validation loss at the same epoch, accuracy on the same set), with
the kind named, and where our run stopped earlier, where ours was taken.

Reads the JSON form of a lab's record (``OUT/labs/<lab>.json``, :class:`harness.report.typed.LabRecord`): one
the job computed, or one it reused after checking it against its schema. Run records name one meaning per key in
``final`` (``train_loss``, ``test_loss``, ``test_accuracy``, ``train_accuracy``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from harness.report.typed import RunRecord

METRICS = ("train_loss", "test_loss", "test_accuracy", "train_accuracy")
RAW_PIXELS = "raw pixels *"  # the course's accuracy came from raw 0..255 test pixels


def metric(run: dict, key: str) -> Any:
    """``final[key]`` of a run (``key`` in :data:`METRICS`; None where the run has no such figure)."""
    return (run.get("final") or {}).get(key)


def accuracy(run: RunRecord) -> tuple[Any, str]:
    """The run's headline accuracy and its set: test accuracy where there is a test set, else training-set."""
    test = metric(run, "test_accuracy")
    return (test, "test") if test is not None else (metric(run, "train_accuracy"), "training set")


@dataclass
class Figure:
    """One like-with-like comparison: ``kind`` names what the course printed (and ``course`` holds it); ``ours``
    the same kind per backend; ``ours_at`` where ours was taken when that differs (a shortened run);
    ``course_note`` qualifies the course's figure (:data:`RAW_PIXELS`)."""

    kind: str
    course: Any
    ours: dict[str, Any]
    ours_at: str | None = None
    course_note: str | None = None

    def asdict(self) -> dict:
        """JSON form."""
        return asdict(self)


def _last_key(table: dict) -> int:
    return max(int(k) for k in table)


def _trajectory(rec: dict, runs: dict, ref: dict) -> list[Figure]:
    """XOR: the course's loss at its last printed step beside ours at that step (or at our last one)."""
    step = _last_key(ref["loss"])
    ours, at = {}, None
    for fw, run in runs.items():
        steps = run.get("steps") or []
        if step in steps:
            ours[fw] = run["loss"][steps.index(step)]
        elif steps:
            ours[fw], at = run["loss"][-1], f"step {steps[-1]}"
    figures = [Figure(f"training loss at step {step}", ref["loss"][str(step)], ours, at)]
    if "accuracy" in ref:
        figures.append(Figure(f"training-set accuracy after step {step}", ref["accuracy"],
                              {fw: metric(r, "train_accuracy") for fw, r in runs.items()},
                              at and f"after {at}"))
    return figures


def _epoch_value(run: dict, epoch: int, get: Any) -> tuple[Any, int | None]:
    """``get(run, e)`` at ``epoch``, or at the last epoch the run finished (returned) when it stopped earlier."""
    done = len(run.get("epoch_cost") or run.get("epochs") or [])
    if done >= epoch:
        return get(run, epoch), None
    return (get(run, done), done) if done else (None, 0)


def _at_epoch(found: list[int | None]) -> str | None:
    short = [e for e in found if e is not None]
    if not short:
        return None
    return "no full epoch" if min(short) == 0 else f"epoch {min(short)}"


def _costs(rec: dict, runs: dict, ref: dict) -> list[Figure]:
    """MNIST: the course's mean training loss of its last printed epoch and its accuracy beside ours."""
    epoch = _last_key(ref["cost"])
    values = {fw: _epoch_value(r, epoch, lambda run, e: run["epoch_cost"][e - 1]) for fw, r in runs.items()}
    figures = [Figure(f"mean training loss of epoch {epoch}", ref["cost"][str(epoch)],
                      {fw: v for fw, (v, _) in values.items()}, _at_epoch([e for _, e in values.values()]))]
    if "accuracy" in ref:
        short = figures[0].ours_at is not None
        last = max((r["steps"][-1] for r in runs.values() if r.get("steps")), default=None)
        figures.append(Figure(f"test accuracy after epoch {epoch}", ref["accuracy"],
                              {fw: metric(r, "test_accuracy") for fw, r in runs.items()},
                              f"after step {last}" if short and last is not None else None, _raw(rec)))
    return figures


def _raw(rec: dict) -> str | None:
    return RAW_PIXELS if rec.get("raw_pixel_reference") else None


def _correct(rec: dict, runs: dict, ref: dict) -> list[Figure]:
    """Backprop by hand: correct answers among the first 1000 test images at the course's last iteration."""
    table = ref["correct_of_first_1000"]
    it = _last_key(table)
    ours, at = {}, None
    for fw, run in runs.items():
        evals = run.get("evals") or {}
        key = str(it) if str(it) in evals else (max(evals, key=int) if evals else None)
        ours[fw] = evals[key].get("test", {}).get("correct_of_first_1000") if key else None
        if key and key != str(it):
            at = f"iteration {key}"
    return [Figure(f"correct of the first 1000 test images, iteration {it}", table[str(it)], ours, at, _raw(rec))]


def _valid_loss(run: RunRecord, epoch: int, model: str) -> float | None:
    """``model``'s validation loss after ``epoch`` (None: the run has no such per-epoch record)."""
    rows = run.get("epochs") or []
    return rows[epoch - 1].get(model, {}).get("valid_loss") if len(rows) >= epoch else None


def _epochs_table(rec: dict, runs: dict, ref: dict) -> list[Figure]:
    """Batch norm: the course's validation loss of each model at epoch 10 beside ours at the same epoch."""
    epoch = int(next(k for k in ref if k.startswith("epoch_")).split("_")[1])
    course = ref[f"epoch_{epoch}"]
    figures = []
    for model, name in (("bn", "BN"), ("plain", "no BN")):
        if model not in course:
            continue
        values = {fw: _epoch_value(r, epoch, lambda run, e, m=model: _valid_loss(run, e, m)) for fw, r in runs.items()}
        figures.append(Figure(f"{name}: validation loss, epoch {epoch}", course[model]["valid_loss"],
                              {fw: v for fw, (v, _) in values.items()}, _at_epoch([e for _, e in values.values()])))
    return figures


def figures(rec: dict) -> list[Figure]:
    """The like-with-like comparisons of a lab with the course (where the course printed nothing to hold against,
    our last training loss alone; none when the lab did not run)."""
    ref = rec.get("reference") or {}
    runs = rec.get("runs") or {}
    if not runs or rec.get("status") == "error":
        return []
    if isinstance(ref.get("loss"), dict):
        return _trajectory(rec, runs, ref)
    if isinstance(ref.get("cost"), dict):
        return _costs(rec, runs, ref)
    if "correct_of_first_1000" in ref:
        return _correct(rec, runs, ref)
    if any(k.startswith("epoch_") for k in ref):
        return _epochs_table(rec, runs, ref)
    if isinstance(ref.get("accuracy"), dict):
        return [Figure("training-set accuracy per gate", ref["accuracy"],
                       {fw: metric(r, "train_accuracy") for fw, r in runs.items()})]
    last = max((r["steps"][-1] for r in runs.values() if r.get("steps")), default=None)
    return [Figure(f"training loss at step {last} (the course printed none)", None,
                   {fw: metric(r, "train_loss") for fw, r in runs.items()})]
