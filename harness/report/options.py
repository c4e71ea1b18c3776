"""What the main job runs and where it writes (:class:`JobOptions`), and the keys that decide whether a saved
result can be reused: a lab's result is reused only when everything it depends on (the lab's declaration, the
training code, the job's options that reach the lab) is unchanged."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import backend as backends
from harness.labs import LABS, Lab, get_lab

FORMAT = 1
INIT_STUDY_LAB = "mnist_relu_xavier"
INIT_STUDY_SCHEMES = ("normal", "torch_default", "xavier_uniform", "xavier_normal", "he_uniform", "he_normal",
                      "rbm_pretrained")
# Schemes that are a lab of their own rather than an ``init`` override of INIT_STUDY_LAB (the same network)
INIT_STUDY_LABS = {"rbm_pretrained": "mnist_rbm_pretrain"}
OK_STATUSES = ("ok", "diverged")  # outcomes a rerun keeps; "error" is tried again
# The harness's training path; every registered backend's package is added (see code_fingerprint).
TRAINING_CODE = ("harness/labs.py", "harness/data/datasets.py", "harness/data/idx.py", "harness/weights.py",
                 "harness/run/runner.py", "harness/parity", "harness/run/metrics.py", "harness/backend.py",
                 "harness/errors.py", "harness/run/pretrain.py")


def _backend_packages() -> tuple[str, ...]:
    """Each registered backend's source: its module's package folder."""
    paths = []
    for name in backends.names():
        parts = backends.info(name).module.split(".")
        paths.append("/".join(parts[:-1]) if len(parts) > 1 else parts[0])
    return tuple(dict.fromkeys(paths))


@functools.cache
def _fingerprint(entries: tuple[str, ...]) -> str:
    root = Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    for entry in entries:
        path = root / entry
        for f in sorted(path.glob("*.py")) if path.is_dir() else [path]:
            if f.exists():
                h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def code_fingerprint() -> str:
    """A hash of the code a lab's numbers come from (the harness's training path and every backend package), so
    a rerun after a change there trains again rather than reusing stale results."""
    return _fingerprint(TRAINING_CODE + _backend_packages())


def lab_sha(lab: Lab) -> str:
    """A hash of a lab's declaration."""
    return hashlib.sha256(repr(lab).encode()).hexdigest()[:16]


def default_frameworks() -> tuple[str, ...]:
    """Every registered backend but the float64 referees."""
    return backends.names(include_referees=False)


@dataclass
class JobOptions:
    """What the job runs and where it writes."""

    out: Path = Path("report")
    labs: tuple[str, ...] = tuple(LABS)
    frameworks: tuple[str, ...] = field(default_factory=default_frameworks)
    data: str = "auto"
    data_dir: str | None = None
    device: str = "cpu"
    dtype: str = "float32"
    steps: int | None = None  # cap every lab (tests, quick looks)
    epochs: int | None = None  # override the MNIST labs' epochs
    threshold: float = 1e-4
    noise: bool = True
    init_study: bool = True
    init_steps: int = 200
    resume: bool = True
    quiet: bool = False
    html: bool = True
    threads: str = "auto"  # threads of the backends set per task ("per_task" policy): "auto" or a count
    busy: bool = False  # the machine was busy when the job started (set by run_job)
    command: str = ""
    _data_record: dict | None = field(default=None, repr=False)

    @property
    def compares(self) -> bool:
        """Whether the frameworks are compared (two or more)."""
        return len(self.frameworks) >= 2

    def lab_key(self, lab: Lab) -> dict:
        """Everything a lab's result depends on; a saved result is reused only when its key is equal."""
        key: dict[str, Any] = {
            "lab_sha": lab_sha(lab), "code": code_fingerprint(), "frameworks": list(self.frameworks),
            "device": self.device, "dtype": self.dtype, "steps": self.steps, "threshold": self.threshold,
            "noise": self.noise,
        }
        if lab.task == "mnist":
            key["data"] = (self._data_record or {}).get("sha256")
            key["epochs"] = self.epochs if lab.epochs else None
        return key

    def study_key(self) -> dict:
        """The key of the initialisation study."""
        return {"lab_sha": lab_sha(get_lab(INIT_STUDY_LAB)), "code": code_fingerprint(),
                "scheme_labs": {k: lab_sha(get_lab(v)) for k, v in INIT_STUDY_LABS.items()},
                "framework": self.study_framework(), "device": self.device, "dtype": self.dtype,
                "steps": self.study_steps(), "data": (self._data_record or {}).get("sha256")}

    def study_framework(self) -> str:
        """The chosen framework that starts fastest (the registry's setup cost; a float64 referee only when alone):
        the study is six short runs, where a framework that compiles first would spend most of its time
        compiling."""
        candidates = [fw for fw in self.frameworks if not backends.info(fw).float64_only] or self.frameworks
        return min(candidates, key=lambda fw: backends.info(fw).cost[0])

    def study_steps(self) -> int:
        """Steps of each initialisation run."""
        return min(self.init_steps, self.steps or self.init_steps)

    def record(self) -> dict:
        """The options as results.json records them."""
        return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
                for k, v in dataclasses.asdict(self).items() if not k.startswith("_") and k != "command"}
