"""Metrics from model outputs, computed once in numpy for both frameworks."""

from __future__ import annotations

import numpy as np

GATES = ("AND", "OR", "XOR")


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean softmax cross-entropy of integer ``labels``."""
    z = logits.astype(np.float64)
    z = z - z.max(1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
    return float(-log_p[np.arange(len(labels)), labels].mean())


def evaluate(task: str, loss: str, outputs: np.ndarray, y: np.ndarray) -> dict:
    """Accuracy (and loss where it is defined on outputs) of ``outputs`` against targets ``y``."""
    if task in ("xor", "gates"):
        correct = ((outputs > 0.5).astype(np.float64) == y).mean(0)
        metrics: dict = {"predictions": (outputs > 0.5).astype(int).ravel().tolist() if task == "xor" else None}
        if task == "gates":
            metrics["accuracy"] = {g: float(c) for g, c in zip(GATES, correct)}
        else:
            metrics["accuracy"] = float(correct[0])
        return {k: v for k, v in metrics.items() if v is not None}
    predicted = outputs.argmax(1)
    metrics = {"accuracy": float((predicted == y).mean()), "correct": int((predicted == y).sum()),
               "correct_of_first_1000": int((predicted[:1000] == y[:1000]).sum())}
    if loss == "cross_entropy":
        metrics["loss"] = cross_entropy(outputs, y)
    return metrics


def epoch_means(losses: np.ndarray, steps_per_epoch: int) -> list[float]:
    """Mean loss of each full epoch, as the course prints its cost."""
    n = len(losses) // steps_per_epoch
    return [float(v) for v in losses[: n * steps_per_epoch].reshape(n, steps_per_epoch).mean(1)]


def epoch_rows(evals: dict[int, dict[str, dict]], steps_per_epoch: int) -> list[dict]:
    """Per-epoch train and validation loss and accuracy, as lab-09_6 prints them, from the evaluations after
    each full epoch (in eval mode, on the whole training set and on the test set)."""
    rows = []
    for done, sets in sorted(evals.items()):
        if done == 0 or done % steps_per_epoch or "train" not in sets or "test" not in sets:
            continue
        rows.append({"epoch": done // steps_per_epoch,
                     "train_loss": sets["train"].get("loss"), "train_acc": sets["train"]["accuracy"],
                     "valid_loss": sets["test"].get("loss"), "valid_acc": sets["test"]["accuracy"]})
    return rows


def final_metrics(train_loss: float, last: dict[str, dict]) -> dict:
    """A run record's ``final``, one meaning per key: ``train_loss`` (the last training step's loss, before its
    update), and for every evaluated set ``<set>_accuracy``, ``<set>_loss``, ... (``train_*``: the whole training
    set in eval mode after training, as the XOR labs and the batch-norm lab evaluate; its loss is
    ``train_eval_loss``)."""
    final: dict = {"train_loss": train_loss}
    for split, metrics in last.items():
        for key, value in metrics.items():
            name = "train_eval_loss" if (split, key) == ("train", "loss") else f"{split}_{key}"
            final[name] = value
    return final
