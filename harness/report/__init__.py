"""The main job (``python -m harness report``): every lab in both frameworks, compared, timed and written up.

For each lab both frameworks train from the same initial weights on the same batches (and dropout masks);
the parity figures, a one-ulp noise floor, the course's reference numbers and the steady-state throughput go
into ``OUT/labs/<lab>.json`` the moment the lab finishes, with its plot. After every lab the report
(``report.md``, ``report.html``, ``results.json``) is rewritten from those files, so Ctrl-C, a crash or a kill
leaves a consistent report of the labs done so far; a rerun with the same options skips them. Every file is
written atomically.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
import platform
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from harness.backend import FRAMEWORKS, check_device
from harness.labs import LABS, Lab, get_lab
from harness.results import to_jsonable, write_json

if TYPE_CHECKING:
    from harness.runner import RunOptions

FORMAT = 1
INIT_STUDY_LAB = "mnist_relu_xavier"
INIT_STUDY_SCHEMES = ("normal", "torch_default", "xavier_uniform", "xavier_normal", "he_uniform", "he_normal")
OK_STATUSES = ("ok", "diverged")  # outcomes a rerun keeps; "error" is tried again


TRAINING_CODE = ("harness/labs.py", "harness/data.py", "harness/init.py", "harness/runner.py", "harness/compare.py",
                 "harness/metrics.py", "harness/backend.py", "torch_impl", "jax_impl")


@functools.cache
def code_fingerprint() -> str:
    """A hash of the code a lab's numbers come from (the harness's training path and both framework packages), so
    a rerun after a change there trains again rather than reusing stale results."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for entry in TRAINING_CODE:
        path = root / entry
        for f in sorted(path.glob("*.py")) if path.is_dir() else [path]:
            if f.exists():
                h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


@dataclass
class JobOptions:
    """What the job runs and where it writes."""

    out: Path = Path("report")
    labs: tuple[str, ...] = tuple(LABS)
    frameworks: tuple[str, ...] = FRAMEWORKS
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
    torch_threads: str = "auto"  # "auto" or a count
    busy: bool = False  # the machine was busy when the job started (set by run_job)
    command: str = ""
    _data_record: dict | None = field(default=None, repr=False)

    def lab_key(self, lab: Lab) -> dict:
        """Everything a lab's result depends on; a saved result is reused only when its key is equal."""
        key: dict[str, Any] = {
            "lab_sha": hashlib.sha256(repr(lab).encode()).hexdigest()[:16], "code": code_fingerprint(),
            "frameworks": list(self.frameworks),
            "device": self.device, "dtype": self.dtype, "steps": self.steps, "threshold": self.threshold,
            "noise": self.noise,
        }
        if lab.task == "mnist":
            key["data"] = (self._data_record or {}).get("sha256")
            key["epochs"] = self.epochs if lab.epochs else None
        return key

    def study_key(self) -> dict:
        """The key of the initialisation study."""
        return {"lab_sha": hashlib.sha256(repr(get_lab(INIT_STUDY_LAB)).encode()).hexdigest()[:16],
                "code": code_fingerprint(), "framework": self.study_framework(), "device": self.device,
                "dtype": self.dtype, "steps": self.study_steps(), "data": (self._data_record or {}).get("sha256")}

    def study_framework(self) -> str:
        """torch when chosen (six short runs: JAX would spend most of their time compiling), else JAX."""
        return "torch" if "torch" in self.frameworks else self.frameworks[0]

    def study_steps(self) -> int:
        """Steps of each initialisation run."""
        return min(self.init_steps, self.steps or self.init_steps)


# ----------------------------------------------------------------------------------------------- one lab


def run_options(lab: Lab, opts: JobOptions) -> RunOptions:
    """The RunOptions of ``lab`` in this job: shared weights, shared dropout masks, the job's data and caps."""
    from harness.runner import RunOptions

    overrides = {"epochs": opts.epochs} if opts.epochs and lab.epochs else {}
    return RunOptions(device=opts.device, dtype=opts.dtype, init="shared", steps=opts.steps, data=opts.data,
                      data_dir=opts.data_dir, masks="shared" if lab.model.dropout else "own", overrides=overrides)


def flops_per_step(lab: Lab) -> int:
    """Matmul FLOPs of one training step of the lab's (main) model: the 6·B·Σ in·out convention of
    :mod:`harness.bench.peak` (forward, and backward for inputs and weights)."""
    from harness.bench.peak import flops_per_step as flops

    return flops(lab.model, lab.batch_size or 4, lab.manual)["total"]


def _round(values: Any, digits: int = 4) -> list[float]:
    return [float(f"{float(v):.{digits}g}") for v in values]


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(to_jsonable(obj)))


PARITY_KEYS = ("steps", "threshold", "max_abs_diff", "max_rel_diff", "first_divergence_step", "growth_per_step",
               "noise_floor", "verdict")


def torch_thread_count(lab: Lab, opts: JobOptions) -> int | None:
    """torch's intra-op threads for ``lab`` (None: leave them). ``opts.torch_threads`` "auto": as ``dlzta bench``
    sets them (one for the 4-example XOR nets, every core for MNIST), except on a machine already busy when the
    job started (``opts.busy``), where one: a torch thread pool that shares its cores with other work waits at
    every parallel region, and runs ten times slower or worse."""
    if "torch" not in opts.frameworks or opts.device != "cpu":
        return None
    if opts.torch_threads != "auto":
        return int(opts.torch_threads)
    if opts.busy:
        return 1
    from harness.bench import default_threads

    return default_threads("torch", lab.task)


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the body with ``count`` torch intra-op threads (None: as they are), restored afterwards."""
    if count is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def machine_busy() -> tuple[bool, list[float] | None]:
    """Whether other work already occupies half the cores or more (1-minute load average), and the averages."""
    from harness.bench.peak import loadavg

    load = loadavg()
    return (load is not None and load[0] >= (os.cpu_count() or 1) / 2), load


def compute_lab(lab: Lab, opts: JobOptions) -> dict:
    """Train ``lab`` in the job's frameworks (compared when there are two) and, for labs with the course's
    printed loss trajectory, once more in torch with its native init; the lab's record in JSON form."""
    from harness.compare import compare
    from harness.runner import RunDiverged, run

    options = run_options(lab, opts)
    rec: dict[str, Any] = {"format": FORMAT, "lab": lab.name, "title": lab.title, "notebook": lab.notebook,
                           "task": lab.task, "key": opts.lab_key(lab), "reference": lab.reference,
                           "notes": lab.notes, "masks": options.masks, "flops_per_step": flops_per_step(lab),
                           "raw_pixel_reference": lab.reference_raw_pixels}
    if lab.companion is not None:
        rec["model_labels"] = list(lab.model_labels)
    if "torch" in opts.frameworks and opts.device == "cpu":
        import torch

        rec["torch_threads"] = torch.get_num_threads()
    start = time.perf_counter()
    try:
        if len(opts.frameworks) == 2:
            result = compare(lab, options, threshold=opts.threshold, noise=opts.noise)
            rec["runs"] = result["runs"]
            rec["parity"] = {k: result[k] for k in PARITY_KEYS if k in result}
            if "verdict" not in rec["parity"]:  # no noise floor to hold a divergence against
                first = rec["parity"]["first_divergence_step"]
                rec["parity"]["verdict"] = "agree" if first is None else "over threshold (no noise floor)"
            rec["per_step"] = {k: _round(v) for k, v in result["per_step"].items() if k != "abs_diff"}
            if "companion" in result:
                other = result["companion"]
                rec["companion_parity"] = {k: v for k, v in other.items() if k != "per_step"}
                rec["per_step"]["companion_rel_diff"] = _round(other["per_step"]["rel_diff"])
        else:
            fw = opts.frameworks[0]
            rec["runs"] = {fw: run(lab, fw, options)}
        rec["status"] = "ok"
    except RunDiverged as exc:
        rec["status"], rec["error"] = "diverged", str(exc)
        rec["runs"] = exc.result.get("runs", {exc.result.get("framework", "?"): exc.result})
    if "torch" in opts.frameworks and isinstance(lab.reference.get("loss"), dict):
        try:
            rec["native"] = {"torch": run(lab, "torch", dataclasses.replace(options, init="native"))}
        except RunDiverged as exc:
            rec["native"] = {"torch": exc.result}
    rec["wall_s"] = time.perf_counter() - start
    return _jsonable(rec)


def compute_init_study(opts: JobOptions) -> dict:
    """The same network trained briefly under each weight initialisation the lectures list."""
    from harness.runner import RunDiverged, run

    lab = get_lab(INIT_STUDY_LAB)
    fw, steps = opts.study_framework(), opts.study_steps()
    start = time.perf_counter()
    runs = {}
    for scheme in INIT_STUDY_SCHEMES:
        options = dataclasses.replace(run_options(lab, opts), steps=steps, overrides={"init": scheme})
        try:
            runs[scheme] = run(lab, fw, options)
        except RunDiverged as exc:
            runs[scheme] = exc.result
    return _jsonable({"format": FORMAT, "lab": lab.name, "framework": fw, "steps": steps, "key": opts.study_key(),
                      "runs": runs, "status": "ok", "wall_s": time.perf_counter() - start})


# ----------------------------------------------------------------------------------------------- peak

PEAK_REPEATS = 10


def measure_peak(framework: str, device: str = "cpu", threads: int | None = None) -> dict:
    """The framework's float32 matmul peak on ``device``, measured as ``harness.bench`` measures it (torch on
    ``threads`` intra-op threads when given, else on every core)."""
    from harness.bench import PEAK_N, load_bench
    from harness.bench import measure_peak as bench_peak
    from harness.bench.peak import loadavg, peak_record

    n = PEAK_N[device]
    if framework == "torch" and device == "cpu" and threads is not None:
        with torch_threads(threads):
            record = {**peak_record(load_bench("torch").matmul_times(device, n, PEAK_REPEATS), n),
                      "threads": threads, "loadavg": loadavg()}
    else:
        record = bench_peak(framework, device, n, PEAK_REPEATS)
    return {k: v for k, v in record.items() if k != "seconds"}


# ----------------------------------------------------------------------------------------------- progress


def estimate_seconds(lab: Lab, opts: JobOptions, train_size: int = 4000) -> float:
    """A rough duration of ``lab`` in this job on a CPU, for the ETA (corrected by the measured pace)."""
    steps = lab.total_steps(train_size) if lab.task == "mnist" else lab.total_steps()
    if opts.epochs and lab.epochs and lab.batch_size:
        steps = opts.epochs * (train_size // lab.batch_size)
    steps = min(steps, opts.steps or steps)
    work = flops_per_step(lab) / 28e9
    per_fw = {"torch": 1.0 + steps * (300e-6 + work), "jax": 2.0 + steps * (20e-6 + work)}
    total = sum(per_fw[fw] for fw in opts.frameworks) * (2 if lab.companion is not None else 1)
    if len(opts.frameworks) == 2 and opts.noise:
        total += per_fw["jax"]
    if "torch" in opts.frameworks and isinstance(lab.reference.get("loss"), dict):
        total += per_fw["torch"]
    return total


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}"


class Progress:
    """One line per finished task on ``out``; on a terminal, a live status line with the ETA on ``err``;
    nothing but the final summary when quiet."""

    def __init__(self, estimates: dict[str, float], quiet: bool, out: TextIO, err: TextIO) -> None:
        self.estimates, self.quiet, self.out, self.err = estimates, quiet, out, err
        self.done_est = self.done_actual = 0.0
        self.finished: set[str] = set()
        self.current: tuple[str, float] | None = None
        self.start = time.perf_counter()
        self.lock = threading.Lock()
        self.live = not quiet and getattr(err, "isatty", lambda: False)()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True) if self.live else None
        if self._thread:
            self._thread.start()

    def eta(self) -> float:
        """Seconds left: the estimates of the unfinished tasks, scaled by the pace measured so far."""
        pace = min(4.0, max(0.25, self.done_actual / self.done_est)) if self.done_est > 1 else 1.0
        left = sum(v for k, v in self.estimates.items() if k not in self.finished)
        if self.current:
            left -= min(time.perf_counter() - self.current[1], self.estimates.get(self.current[0], 0.0)) / pace
        return max(0.0, left * pace)

    def begin(self, name: str) -> None:
        """Task ``name`` starts."""
        self.current = (name, time.perf_counter())

    def finish(self, name: str, line: str, seconds: float | None) -> None:
        """Task ``name`` ended (``seconds`` None: reused from an earlier run); print its line."""
        with self.lock:
            self.finished.add(name)
            self.current = None
            if seconds is not None:
                self.done_est += self.estimates.get(name, 0.0)
                self.done_actual += seconds
            left = sum(1 for k in self.estimates if k not in self.finished)
            eta = f"  ETA {_clock(self.eta())}" if left else ""
            self.say(f"{line}{eta}")

    def say(self, line: str) -> None:
        """A line of progress (not when quiet)."""
        if self.quiet:
            return
        if self.live:
            self.err.write("\r\033[K")
            self.err.flush()
        print(line, file=self.out, flush=True)

    def close(self) -> None:
        """Stop the live line."""
        self._stop.set()
        if self._thread:
            self._thread.join()
            self.err.write("\r\033[K")
            self.err.flush()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self.lock:
                cur = self.current
                if cur is None:
                    continue
                name, since = cur
                self.err.write(f"\r\033[K  {name}: {_clock(time.perf_counter() - since)} "
                               f"(about {_clock(self.estimates.get(name, 0))})  elapsed "
                               f"{_clock(time.perf_counter() - self.start)}, ETA {_clock(self.eta())}")
                self.err.flush()


# ----------------------------------------------------------------------------------------------- the job


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _reusable(path: Path, key: dict, resume: bool) -> dict | None:
    rec = _load(path) if resume and path.exists() else None
    if rec and rec.get("format") == FORMAT and rec.get("key") == key and rec.get("status") in OK_STATUSES:
        return rec
    return None


def _lab_line(i: int, n: int, rec: dict, seconds: float | None) -> str:
    from harness.report.render import final_metrics

    when = "reused" if seconds is None else f"{seconds:6.1f} s"
    if rec["status"] == "ok":
        verdict = rec.get("parity", {}).get("verdict") or ("compared" if "parity" in rec else "ran")
        finals = "  ".join(f"{fw} loss {final_metrics(run)[0]:.4g}" for fw, run in rec.get("runs", {}).items()
                           if final_metrics(run)[0] is not None)
    else:
        verdict, finals = rec["status"], rec.get("error", "")
    return f"[{i:>2}/{n}] {rec['lab']:<28} {when:>8}  {verdict:<28} {finals}"


def machine() -> dict:
    """Where the job ran."""
    return {"platform": platform.platform(), "machine": platform.machine(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "python": platform.python_version()}


def _check(opts: JobOptions) -> None:
    from harness.errors import UsageError

    if not opts.labs:
        raise UsageError("no labs chosen")
    if not opts.frameworks:
        raise UsageError("no frameworks chosen")
    for lab in opts.labs:
        get_lab(lab)
    for fw in opts.frameworks:
        if fw not in FRAMEWORKS:
            raise UsageError(f"unknown framework {fw!r}; choose from {', '.join(FRAMEWORKS)}")
        check_device(fw, opts.device)
    if opts.dtype not in ("float32", "float64"):
        raise UsageError(f"unknown dtype {opts.dtype!r}; choose from float32, float64")
    if opts.out.exists() and not opts.out.is_dir():
        raise UsageError(f"--out {opts.out} is a file, not a folder")


def run_job(opts: JobOptions, out: TextIO | None = None, err: TextIO | None = None) -> dict:
    """Run the job and write the report; the results (``results.json``'s content). On KeyboardInterrupt the
    report of the labs finished so far is written and the results come back with job status "interrupted"."""
    from harness import data as data_mod
    from harness.report import render

    _check(opts)
    labs = [get_lab(name) for name in opts.labs]
    train_size = 4000
    if any(lab.task == "mnist" for lab in labs) or opts.init_study:
        ds = data_mod.load_mnist(opts.data, opts.data_dir)
        opts._data_record = ds.record
        train_size = len(ds.train_y)
    lab_dir = opts.out / "labs"
    saved = {lab.name: _reusable(lab_dir / f"{lab.name}.json", opts.lab_key(lab), opts.resume) for lab in labs}
    estimates = {lab.name: 0.0 if saved[lab.name] else estimate_seconds(lab, opts, train_size) for lab in labs}
    if opts.init_study:
        saved["init_study"] = _reusable(lab_dir / "init_study.json", opts.study_key(), opts.resume)
        study_opts = dataclasses.replace(opts, steps=opts.study_steps(), frameworks=(opts.study_framework(),),
                                         noise=False)
        estimates["init_study"] = 0.0 if saved["init_study"] else 6 * estimate_seconds(
            get_lab(INIT_STUDY_LAB), study_opts, train_size)
    results: dict[str, Any] = {
        "format": FORMAT, "command": opts.command, "options": _options_record(opts), "machine": machine(),
        "data": opts._data_record, "peak": {}, "labs": {}, "init_study": None, "pending": list(opts.labs),
        "job": {"status": "running", "computed": [], "reused": [], "errors": []},
    }
    opts.busy, load = machine_busy()
    results["machine"]["loadavg_start"] = load
    progress = Progress(estimates, opts.quiet, out or sys.stdout, err or sys.stderr)
    started = time.perf_counter()
    data = opts._data_record
    data_txt = (f" on {data['name']} ({data['source']}, {data['train_size']} train / {data['test_size']} test)"
                if data else "")
    progress.say(f"report: {len(labs)} labs in {', '.join(opts.frameworks)}{data_txt} -> {opts.out}/ "
                 f"(about {_clock(progress.eta())} of work, {sum(1 for v in saved.values() if v)} tasks reused)")
    if opts.busy and opts.torch_threads == "auto" and "torch" in opts.frameworks:
        progress.say(f"the machine is busy (load average {load[0]:.1f} on {os.cpu_count()} cores): torch runs on "
                     "one thread; timings are not representative")
    try:
        for i, lab in enumerate(labs, 1):
            rec, seconds = saved[lab.name], None
            if rec is None:
                if not results["peak"]:  # measured once, before the first lab that trains
                    for fw in opts.frameworks:  # torch: on as many threads as the MNIST labs get
                        threads = torch_thread_count(get_lab("mnist_softmax"), opts) if fw == "torch" else None
                        results["peak"][fw] = measure_peak(fw, opts.device, threads)
                    progress.say("matmul peak: " + ", ".join(f"{fw} {p['gflops']:.1f} GFLOP/s"
                                                              for fw, p in results["peak"].items()))
                progress.begin(lab.name)
                t = time.perf_counter()
                try:
                    with torch_threads(torch_thread_count(lab, opts)):
                        rec = compute_lab(lab, opts)
                except Exception as exc:  # a crash in one lab is reported; the others still run
                    rec = _jsonable({"format": FORMAT, "lab": lab.name, "title": lab.title, "notebook": lab.notebook,
                                     "task": lab.task, "key": opts.lab_key(lab), "status": "error",
                                     "error": f"{type(exc).__name__}: {exc}"})
                    results["job"]["errors"].append(lab.name)
                seconds = time.perf_counter() - t
                rec["peak"] = results["peak"]  # the % of peak of a reused lab keeps the peak of its own job
                write_json(lab_dir / f"{lab.name}.json", rec)
                results["job"]["computed"].append(lab.name)
            else:
                results["job"]["reused"].append(lab.name)
            results["labs"][lab.name] = rec
            results["pending"].remove(lab.name)
            render.lab_plots(opts.out, rec, force=seconds is not None)
            render.write_report(opts.out, results, html=opts.html)
            progress.finish(lab.name, _lab_line(i, len(labs), rec, seconds), seconds)
        if opts.init_study:
            study, seconds = saved["init_study"], None
            if study is None:
                progress.begin("init_study")
                t = time.perf_counter()
                with torch_threads(torch_thread_count(get_lab(INIT_STUDY_LAB), opts)):
                    study = compute_init_study(opts)
                seconds = time.perf_counter() - t
                write_json(lab_dir / "init_study.json", study)
            results["init_study"] = study
            render.study_plot(opts.out, study, force=seconds is not None)
            when = "reused" if seconds is None else f"{seconds:6.1f} s"
            progress.finish("init_study", f"[init]  {'init_study':<28} {when:>8}  {len(study['runs'])} schemes, "
                            f"{study['steps']} steps each ({study['framework']})", seconds)
        results["job"]["status"] = "errors" if results["job"]["errors"] else "complete"
    except KeyboardInterrupt:
        results["job"]["status"] = "interrupted"
    finally:
        progress.close()
        results["job"]["wall_s"] = time.perf_counter() - started
        if results["job"]["status"] == "running":  # a crash outside the labs
            results["job"]["status"] = "failed"
        render.write_report(opts.out, results, html=opts.html, final=True)
    return results


def _options_record(opts: JobOptions) -> dict:
    return {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v)
            for k, v in dataclasses.asdict(opts).items() if not k.startswith("_") and k != "command"}


# ----------------------------------------------------------------------------------------------- CLI


def cmd_report(args: argparse.Namespace) -> int:
    """Run the job; 0 when every lab ran (diverging runs are results too), 1 when a lab crashed."""
    opts = JobOptions(
        out=Path(args.out), labs=args.labs, frameworks=args.frameworks, data=args.data, data_dir=args.data_dir,
        device=args.device, dtype=args.dtype, steps=args.steps, epochs=args.epochs, threshold=args.threshold,
        noise=args.noise, init_study=args.init_study, init_steps=args.init_steps, resume=args.resume,
        quiet=args.quiet, html=args.html, torch_threads=args.torch_threads,
        command=" ".join(["dlzta", *sys.argv[1:]]),
    )
    from harness.report.render import summary_line

    with _term_as_interrupt():
        results = run_job(opts)
    print(summary_line(results, opts.out))
    if results["job"]["status"] == "interrupted":
        print(f"interrupted: {len(results['labs'])} of {len(opts.labs)} labs kept in {opts.out}/labs/ and the "
              "report; run the same command again to finish the rest", file=sys.stderr)
        return 130
    return 1 if results["job"]["errors"] else 0


@contextlib.contextmanager
def _term_as_interrupt() -> Iterator[None]:
    """SIGTERM (a CI cancel, ``timeout``) stops the job like Ctrl-C: the finished labs' report is written."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    before = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)
