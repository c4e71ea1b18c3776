"""The report's records, typed for the code that reads them: ``OUT/labs/<lab>.json``, ``labs/init_study.json`` and
``OUT/results.json`` hold, as :class:`TypedDict` s mirroring their JSON Schemas (``harness/schemas/``: lab,
init-study, results; a run: run). A key that is ``Required`` here is required by the schema (a test checks the
two agree), so code reading a record the job computed, or one it reused (reuse validates it first), indexes
those keys directly; ``NotRequired`` keys are read with ``.get``.

The records stay plain dicts (JSON in, JSON out): these types document them and let a type checker follow
them; nothing converts. (No ``from __future__ import annotations`` here: ``Required`` must be evaluated for
``__required_keys__``.)"""

from typing import Any, Literal, Required, TypedDict

Status = Literal["ok", "diverged", "error"]
VerdictKind = Literal["same math", "within rounding noise", "beyond rounding noise", "differs", "not judged"]


class Timing(TypedDict, total=False):
    """A run's timing in seconds (``compile_s``: backends that compile; ``pretrain_s``: RBM pre-training)."""

    warmup_s: Required[float | None]
    run_s: Required[float | None]
    total_s: Required[float | None]
    steps_per_s: Required[float | None]
    compile_s: float | None
    pretrain_s: float | None


class RunRecord(TypedDict, total=False):
    """One run of a lab in one backend (``run.schema.json``): ``final`` and ``evals`` once it finished ("ok"),
    ``error`` where it diverged."""

    lab: Required[str]
    framework: Required[str]
    device: Required[str]
    dtype: Required[str]
    precision: dict[str, Any]  # the policy it trained under (harness.precision.Policy.record)
    weights: Required[Literal["native", "shared"]]
    seed: Required[int]
    execution: Required[str]
    data: Required[dict[str, Any]]
    steps: Required[list[int]]
    loss: Required[list[float | None]]
    timing: Required[Timing]
    versions: Required[dict[str, str]]
    machine: Required[dict[str, Any]]
    status: Required[Literal["ok", "diverged"]]
    config: Required[dict[str, Any]]
    notes: list[str]
    error: str
    final: dict[str, Any]  # train_loss, train_eval_loss, <set>_<metric>: one meaning per key
    evals: dict[str, dict[str, dict[str, Any]]]  # steps done -> set -> metric
    epoch_cost: list[float | None]
    epochs: list[dict[str, Any]]
    pretrain: dict[str, Any]
    correct_of_first_1000: list[dict[str, Any]]
    companion: dict[str, Any]
    parallel: dict[str, Any]
    same_as_shared: bool


class Parity(TypedDict, total=False):
    """The comparison of a lab's first two backends (``compare.schema.json#/$defs/parity``)."""

    steps: Required[int]
    threshold: Required[float]
    max_abs_diff: Required[float | None]
    max_rel_diff: Required[float | None]
    first_divergence_step: Required[int | None]
    sides: Required[dict[str, dict[str, Any]]]
    verdict: Required[str]
    verdict_kind: Required[VerdictKind]
    growth_per_step: float | None
    noise_floor: dict[str, Any]
    quantities: dict[str, dict[str, Any]]
    tiers: dict[str, dict[str, Any]]


class LabKey(TypedDict, total=False):
    """Everything a lab's result depends on; a rerun reuses a record only when its key is equal."""

    lab_sha: Required[str]
    code: Required[str]
    frameworks: Required[list[str]]
    device: Required[str]
    dtype: Required[str]
    steps: Required[int | None]
    threshold: Required[float]
    noise: Required[bool]
    data: str | None
    epochs: int | None


class LabRecord(TypedDict, total=False):
    """One lab of the main job (``lab.schema.json``). "ok": the runs (and, with two or more backends, the
    parity); "diverged": what ran, and the error; "error": the lab crashed, and the error (a rerun tries it
    again)."""

    format: Required[int]
    lab: Required[str]
    title: Required[str]
    notebook: Required[str]
    task: Required[Literal["gates", "xor", "mnist"]]
    key: Required[LabKey]
    status: Required[Status]
    error: str
    reference: dict[str, Any]
    notes: str
    masks: Literal["shared", "own"]
    flops_per_step: int
    raw_pixel_reference: bool
    model_labels: list[str]
    threads: dict[str, int | None]
    runs: dict[str, RunRecord]
    parity: Parity
    companion_parity: dict[str, Any]
    per_step: dict[str, list[float | None]]
    native: dict[str, RunRecord]
    wall_s: float | None
    peak: dict[str, dict[str, Any]]
    costs: dict[str, dict[str, float]]


class StudyRecord(TypedDict, total=False):
    """The initialisation study (``init-study.schema.json``): a run per scheme, the native-init check."""

    format: Required[int]
    lab: Required[str]
    framework: Required[str]
    steps: Required[int]
    key: Required[dict[str, Any]]
    runs: Required[dict[str, RunRecord]]
    status: Required[Literal["ok", "error"]]
    native_init: Required[dict[str, Any] | None]
    wall_s: Required[float | None]
    errors: dict[str, str]
    error: str


class JobStatus(TypedDict, total=False):
    """What the job did: its status, the labs computed, reused and failed, its time and costs."""

    status: Required[Literal["running", "complete", "errors", "interrupted", "failed"]]
    computed: Required[list[str]]
    reused: Required[list[str]]
    errors: Required[list[str]]
    wall_s: float
    costs: dict[str, dict[str, float]]
    kept_previous: bool


class PrecisionRecord(TypedDict, total=False):
    """The precision section (``labs/precision.json``, ``precision.schema.json``): per lab its rows (framework x
    precision, float32 from the lab's own run) and each precision's tier verdict."""

    format: Required[int]
    key: Required[dict[str, Any]]
    status: Required[Status]
    precisions: Required[list[str]]
    frameworks: Required[list[str]]
    labs: Required[dict[str, dict[str, Any]]]
    wall_s: Required[float]
    error: str


class Results(TypedDict, total=False):
    """``results.json`` (``results.schema.json``): ``generated`` and ``summary`` are set when it is written."""

    format: Required[int]
    command: Required[str]
    options: Required[dict[str, Any]]
    machine: Required[dict[str, Any]]
    data: Required[dict[str, Any] | None]
    peak: Required[dict[str, dict[str, Any]]]
    labs: Required[dict[str, LabRecord]]
    init_study: Required[StudyRecord | None]
    pending: Required[list[str]]
    job: Required[JobStatus]
    selfcheck: Required[dict[str, Any] | None]
    notes: Required[list[str]]  # options that do not apply (ignored), one line each
    generated: str
    summary: list[dict[str, Any]]
    precision: PrecisionRecord | None  # the precision section (None: the job had none)


__all__ = ["JobStatus", "LabKey", "LabRecord", "Parity", "PrecisionRecord", "Results", "RunRecord", "Status",
           "StudyRecord", "Timing", "VerdictKind"]
