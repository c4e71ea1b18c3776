"""The numbers the course printed, as small typed records: each says what kind of figure it is (a training-loss
series, an epoch-mean training cost, a test accuracy, ...), on which split, at which step or epoch, and whether
the course computed it on raw 0..255 pixels, so that a table can set it beside ours of the same kind.

``as_dict`` gives the layout results files hold (``{"loss": {step: value}, "cost": {epoch: value}, "accuracy": ...,
"correct_of_first_1000": {...}, "epoch_10": {...}}``); ``records_json`` the typed records as JSON objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Breakout:
    """The step at which the loss first falls ``below`` a threshold, matched within ``tolerance_steps``."""

    step: int
    below: float
    tolerance_steps: int


@dataclass(frozen=True)
class LossSeries:
    """The training loss at printed steps (before that step's update), matched to ``rtol``."""

    losses: Mapping[int, float]
    rtol: float = 1e-4
    breakout: Breakout | None = None
    split: str = "train"


@dataclass(frozen=True)
class FinalMetric:
    """One figure: ``kind`` "accuracy" (a float, or per-output values for the gates) or "epoch_cost" (the mean
    training loss over an epoch, as the course prints its cost), on ``split``, after ``epoch`` (None: at the end
    of the run)."""

    kind: str
    split: str
    value: Any
    epoch: int | None = None
    raw_pixels: bool = False


@dataclass(frozen=True)
class CorrectSeries:
    """Correct answers among the first ``of_first`` test images after each printed step."""

    correct: Mapping[int, int]
    of_first: int = 1000
    split: str = "test"
    raw_pixels: bool = False


@dataclass(frozen=True)
class EpochTable:
    """Per-model train and validation loss and accuracy after ``epoch`` (``models[label]`` holds ``train_loss``,
    ``train_acc``, ``valid_loss``, ``valid_acc``), and whether the first model led on validation loss every epoch."""

    epoch: int
    models: Mapping[str, Mapping[str, float]]
    first_ahead_every_epoch: bool = False


Record = LossSeries | FinalMetric | CorrectSeries | EpochTable


@dataclass(frozen=True)
class Reference:
    """Everything the course printed for one lab, as typed ``records`` (:func:`as_dict`: the results-file layout)."""

    records: tuple[Record, ...] = ()
    published_variant: str | None = None  # the lab whose network the course's numbers actually came from
    extras: Mapping[str, Any] = field(default_factory=dict)

    def of(self, kind: type) -> list:
        """The records of one type."""
        return [r for r in self.records if isinstance(r, kind)]

    def metrics(self, kind: str) -> list[FinalMetric]:
        """The FinalMetric records of ``kind``."""
        return [r for r in self.of(FinalMetric) if r.kind == kind]


def as_dict(ref: Reference) -> dict[str, Any]:
    """The reference in the results-file layout (see the module docstring)."""
    out: dict[str, Any] = {}
    for r in ref.records:
        if isinstance(r, LossSeries):
            out["loss"] = dict(r.losses)
            out["rtol"] = r.rtol
            if r.breakout is not None:
                out["breakout"] = {"step": r.breakout.step, "below": r.breakout.below,
                                   "tolerance_steps": r.breakout.tolerance_steps}
        elif isinstance(r, FinalMetric) and r.kind == "epoch_cost":
            out.setdefault("cost", {})[r.epoch] = r.value
        elif isinstance(r, FinalMetric):
            out[r.kind] = r.value
        elif isinstance(r, CorrectSeries):
            out[f"correct_of_first_{r.of_first}"] = dict(r.correct)
        elif isinstance(r, EpochTable):
            out[f"epoch_{r.epoch}"] = {k: dict(v) for k, v in r.models.items()}
            out["bn_ahead_every_epoch"] = r.first_ahead_every_epoch
    if ref.published_variant:
        out["published_variant"] = ref.published_variant
    return out


def records_json(ref: Reference) -> list[dict[str, Any]]:
    """Each record as a JSON object with its ``type`` (``loss_series``, ``final_metric``, ...)."""
    names = {LossSeries: "loss_series", FinalMetric: "final_metric", CorrectSeries: "correct_series",
             EpochTable: "epoch_table"}
    out = []
    for r in ref.records:
        item = {"type": names[type(r)], **{k: getattr(r, k) for k in r.__dataclass_fields__}}
        if isinstance(r, LossSeries) and r.breakout is not None:
            item["breakout"] = vars(r.breakout).copy()
        out.append(item)
    return out
