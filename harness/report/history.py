"""The ETA's memory: what each task of the main job took when it last ran on this machine.

The cost model (:func:`harness.report.plan.estimate_seconds`) knows nothing of the machine, JAX's compile cache
or the tiers' real work, so a first job's promise can be off by a factor of two or three. Each task the job
computes records its wall-clock seconds here (``$DLZTA_CACHE_DIR/report-costs.json``, at most ``KEEP``
entries, the newest kept), under its reuse key less the code fingerprint and the threshold (neither changes
what a run costs); the next job's plan takes the recorded seconds where the key matches, else the ``costs``
the output folder's previous ``results.json`` recorded for that task under the same key, else the model.
A missing or unreadable history is an empty one; writes are atomic and a failed write is ignored.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

FILE = "report-costs.json"
KEEP = 500
_IGNORED = ("code", "threshold")  # key fields that do not change what a task costs


def path() -> Path:
    """The history file (in the disk-cache folder)."""
    from harness.data.tfds import cache_dir

    return Path(cache_dir()) / FILE


def task_key(name: str, key: dict) -> str:
    """The history's key of task ``name`` with reuse key ``key``."""
    kept = {k: v for k, v in key.items() if k not in _IGNORED}
    return hashlib.sha256(json.dumps([name, kept], sort_keys=True, default=str).encode()).hexdigest()[:20]


def load() -> dict[str, float]:
    """``{task key: seconds}`` (empty when missing or unreadable)."""
    try:
        data = json.loads(path().read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: float(v) for k, v in data.items() if isinstance(v, (int, float)) and v >= 0}


def previous_seconds(rec: Any, key: dict) -> float | None:
    """The wall seconds a task record of an earlier job (its ``costs``) says it took, when its key matches
    ``key`` but for the fields that do not change the cost; None otherwise."""
    if not isinstance(rec, dict) or not isinstance(rec.get("key"), dict) or not isinstance(rec.get("costs"), dict):
        return None
    same = {k: v for k, v in rec["key"].items() if k not in _IGNORED} == {
        k: v for k, v in key.items() if k not in _IGNORED}
    wall = [e.get("wall_s") for name, e in rec["costs"].items() if "/" not in name and isinstance(e, dict)]
    return float(sum(wall)) if same and wall and all(isinstance(w, (int, float)) for w in wall) else None


def record(entries: dict[str, float]) -> None:
    """Add ``{task key: seconds}`` to the history (the newest ``KEEP`` kept)."""
    from harness.run.results import atomic_write

    data = load()
    for k, v in entries.items():
        data.pop(k, None)
        data[k] = round(float(v), 3)
    data = dict(list(data.items())[-KEEP:])
    try:
        atomic_write(path(), json.dumps(data, indent=0))
    except OSError:
        pass
