"""What the main job runs and where it writes (:class:`JobOptions`), and the keys that decide whether a saved
result can be reused: a lab's result is reused only when everything it depends on (the lab's declaration, the
training code, the job's options that reach the lab) is unchanged."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import backend as backends
from harness.labs import LABS, Lab, get_lab
from harness.report.fingerprint import code_fingerprint

FORMAT = 1
INIT_STUDY_LAB = "mnist_relu_xavier"
INIT_STUDY_SCHEMES = ("normal", "torch_default", "xavier_uniform", "xavier_normal", "he_uniform", "he_normal",
                      "rbm_pretrained")
# Schemes that are a lab of their own rather than an ``init`` override of INIT_STUDY_LAB (the same network)
INIT_STUDY_LABS = {"rbm_pretrained": "mnist_rbm_pretrain"}
OK_STATUSES = ("ok", "diverged")  # outcomes a rerun keeps; "error" is tried again


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
    precision_labs: tuple[str, ...] | None = None  # the precision section's labs (None: its default; (): none)
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
