"""The main job: check -> plan -> compute -> write.

Before any work the options and the output folder are checked (one ``error:`` line, exit 2), the folder is
locked and cleared of temporary files a killed run left. Each lab's record goes to ``OUT/labs/<lab>.json`` the
moment it is done; the report (``report.md``, ``report.html``, ``results.json``, ``plots/``) is rewritten after
every lab, each write held whole against Ctrl-C and SIGTERM, so an interrupted job leaves a consistent report of
the labs done so far.

A complete report already in the folder is never replaced by a smaller one: while it is there, this run writes
only its lab files, and writes the report when it completes; interrupted, it leaves the earlier report as it
was (its lab records stay reusable from its ``results.json``). When it completes, its report replaces the
earlier one if it covers every lab (and the init study) that one has; otherwise the larger report stays and this
run's report (``report.md``, ``report.html``, ``results.json``, ``plots/``) is written to ``OUT/runs/<id>/``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO

import harness.report.compute as compute
import harness.report.history as history
import harness.report.precision as precision
from harness import backend as backends
from harness import schemas
from harness.commands.progress import Progress, clock
from harness.errors import UsageError
from harness.labs import Lab, get_lab
from harness.report.lock import OutputLock, check_output
from harness.report.options import FORMAT, JobOptions
from harness.report.plan import MNIST_TRAIN_SIZE, STUDY, Plan, make_plan, thread_counts
from harness.report.signals import held_signals
from harness.report.typed import LabRecord, Results
from harness.run.costs import Costs, phase, recording
from harness.run.machine import busy_text, machine_busy, threads_note
from harness.run.results import clean_stale_temps, write_json
from harness.selfcheck.run import latest as latest_selfcheck

COMPLETE = ("complete", "errors")  # job statuses of a report that covers every lab it was asked for


def check(opts: JobOptions) -> None:
    """UsageError (or the registry's BackendError) for options the job cannot run with; before any work."""
    from harness.backend import DTYPES

    if not opts.labs:
        raise UsageError("no labs chosen")
    if not opts.frameworks:
        raise UsageError("no frameworks chosen")
    for lab in opts.labs:
        get_lab(lab)
    for fw in opts.frameworks:
        backends.check_device(fw, opts.device)
    if opts.dtype not in DTYPES:
        raise UsageError(f"unknown dtype {opts.dtype!r}; choose from {', '.join(DTYPES)}")
    precision.check(opts)
    check_output(opts.out)


def load_data(opts: JobOptions, labs: list[Lab]) -> int | None:
    """Load the MNIST data when a lab (or the study) needs it, setting ``opts``'s data record; the training-set
    size (None: no MNIST)."""
    from harness.data import datasets as data_mod

    if not (any(lab.task == "mnist" for lab in labs) or opts.init_study):
        return None
    ds = data_mod.load_mnist(opts.data, opts.data_dir)
    opts._data_record = ds.record
    return len(ds.train_y)


def machine(opts: JobOptions, measured: dict) -> dict:
    """Where the job ran: CPU model and count, platform, every backend's threads, the device, the load."""
    import platform

    from harness.run.machine import machine_record

    rec = {**machine_record(), "machine": platform.machine(), "processor": platform.processor(),
           "cpus": os.cpu_count(), "loadavg_start": measured.get("loadavg"), "contention": measured}
    if opts.device != "cpu":
        rec["devices"] = {fw: backends.load(fw).device_info(opts.device) for fw in opts.frameworks}
    return rec


def preload() -> None:
    """Import what the report's writes need before the first one: an import cut short by Ctrl-C leaves a
    half-made module that a later write would fail on."""
    import matplotlib.figure  # noqa: F401

    import harness.report.plots as plots  # noqa: F401


def lab_line(i: int, n: int, rec: LabRecord, seconds: float | None) -> str:
    """The log line of a finished (or reused) lab."""
    from harness.parity.verdict import brief
    from harness.report.render import final_metrics

    when = "reused" if seconds is None else f"{seconds:6.1f} s"
    if rec["status"] == "ok":
        verdict = brief(rec["parity"]) if "parity" in rec else "ran"
        finals = "  ".join(f"{fw} loss {final_metrics(run)[0]:.4g}" for fw, run in rec["runs"].items()
                           if final_metrics(run)[0] is not None)
    else:
        verdict, finals = rec["status"], rec.get("error", "")
    return f"[{i:>2}/{n}] {rec['lab']:<28} {when:>8}  {verdict:<42} {finals}"


class Job:
    """One run of the job into ``opts.out`` (locked, checked, planned)."""

    def __init__(self, opts: JobOptions, plan: Plan, out: TextIO, err: TextIO) -> None:
        self.opts, self.plan, self.out = opts, plan, out
        previous = (plan.previous or {}).get("job")
        # a complete report is already there: the report is written only when this run completes
        self.keep_previous = isinstance(previous, dict) and previous.get("status") in COMPLETE
        # ... and covers more than this run will: kept for good, this run's report is written beside it
        self.beside = beside(opts, plan.previous) if self.keep_previous else None
        self.notes = [n for n in (threads_note(opts.frameworks, opts.threads, opts.device),) if n]
        opts.busy, self.contention = machine_busy()
        self.results: Results = {
            "format": FORMAT, "command": opts.command, "options": opts.record(), "machine": {},
            "data": opts._data_record, "peak": {}, "labs": {}, "init_study": None, "pending": list(opts.labs),
            "job": {"status": "running", "computed": [], "reused": [], "errors": []},
            "precision": None,  # the precision section (harness.report.precision)
            "selfcheck": latest_selfcheck(),  # the parity checks' own test on this machine, if it was run
            "notes": self.notes,  # options that do not apply (ignored)
        }
        self.progress = Progress(sum(plan.estimates.values()), "report", opts.quiet, err, seconds=True)
        self.costs = Costs()  # the job's own phases (start-up, peak, study, writes); each lab records its own
        # plots are drawn beside the next lab's training (one thread: matplotlib's figures are not shared)
        self.drawing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="plots")
        self.drawn: list[Future] = []
        self.left = set(plan.estimates)

    def say(self, line: str) -> None:
        """A log line (not when quiet)."""
        self.progress.print(line, file=self.out)

    def done(self, name: str, line: str) -> None:
        """Task ``name`` is over: its log line, with the ETA while tasks are left."""
        self.left.discard(name)
        eta = self.progress.eta()
        self.say(f"{line}  ETA {clock(eta)}" if self.left and eta is not None else line)

    def header(self) -> None:
        """The job's first lines: what runs, where, about how long; a busy machine."""
        opts, data = self.opts, self.opts._data_record
        data_txt = (f" on {data['name']} ({data['source']}, {data['train_size']} train / {data['test_size']} "
                    f"test)" if data else "")
        n = len(self.plan.labs)
        self.say(f"report: {n} lab{'' if n == 1 else 's'} in {', '.join(opts.frameworks)}{data_txt} -> {opts.out}/ "
                 f"(about {clock(self.progress.eta() or 0)} of work, {self.plan.reused()} tasks reused"
                 f"{self._timed()})")
        single = thread_counts("mnist", opts) if opts.busy and opts.threads == "auto" else {}
        if single:
            self.say(f"the machine is busy ({busy_text(self.contention)}): "
                     f"{', '.join(single)} on one thread; timings are not representative")
        for note in self.notes:
            self.say(f"note: {note}")
        for name, why in self.plan.rejected.items():
            if self.plan.saved.get(name) is None:
                self.say(f"{name}: the saved record is not reused ({why}); computed again")
        if self.beside is not None:
            self.say(f"{opts.out}/ holds a complete report of more labs: it is kept; this run's report goes to "
                     f"{self.beside}/ when it completes")
        elif self.keep_previous:
            self.say(f"{opts.out}/ holds a complete report: it is replaced only when this run completes")

    def _timed(self) -> str:
        """How many estimates are the seconds those tasks took here before (the rest: the cost model)."""
        todo = [name for name, seconds in self.plan.estimates.items() if seconds]
        timed = sum(1 for name in todo if name in self.plan.timed)
        return f"; {timed} of {len(todo)} timed here before" if todo else ""

    def run(self) -> Results:
        """Compute what the plan leaves to compute, writing as it goes; the results."""
        opts, job = self.opts, self.results["job"]
        self.results["machine"] = machine(opts, self.contention)
        started = time.perf_counter()
        self.header()
        try:
            for i, lab in enumerate(self.plan.labs, 1):
                self.lab(i, lab)
            if precision.TASK in self.plan.saved:
                self.precision()
            if opts.init_study:
                self.study()
            job["status"] = "errors" if job["errors"] else "complete"
        except KeyboardInterrupt:
            job["status"] = "interrupted"
        finally:
            self.progress.close()
            failed_plot = self.wait_plots()
            job["wall_s"] = time.perf_counter() - started
            if job["status"] == "running":  # a crash outside the labs
                job["status"] = "failed"
            job["costs"] = self.costs.table()
            self.finish()
            self.drawing.shutdown()
        if failed_plot is not None:
            raise failed_plot
        return self.results

    def lab(self, i: int, lab: Lab) -> None:
        """Take over or compute one lab, then write it and the report."""
        rec, seconds = self.plan.saved[lab.name], None
        if rec is None:
            if not self.results["peak"]:  # measured once, before the first lab that trains
                with recording(self.costs), phase("framework start-up"):  # once a process, not the first lab's
                    for fw in self.opts.frameworks:
                        if backends.offers(fw, "warm_up"):
                            backends.capability(fw, "warm_up")()
                with recording(self.costs), phase("matmul peak"):
                    self.results["peak"] = compute.measure_peaks(self.opts)
                self.say("matmul peak: " + ", ".join(f"{fw} {p['gflops']:.1f} GFLOP/s"
                                                      for fw, p in self.results["peak"].items()))
            self.progress.begin(lab.name, self.plan.estimates[lab.name])
            t = time.perf_counter()
            with recording() as costs:
                try:
                    with phase("compute"):
                        rec = compute.compute_lab(lab, self.opts)
                except Exception as exc:  # a crash in one lab is reported; the others still run
                    rec = compute.error_record(lab, self.opts, exc)
                    self.results["job"]["errors"].append(lab.name)
            seconds = time.perf_counter() - t
            if lab.name not in self.results["job"]["errors"]:  # the next job's ETA starts from it
                history.record({self.plan.keys[lab.name]: seconds})
            rec["peak"] = self.results["peak"]  # the % of peak of a reused lab keeps the peak of its own job
            rec["costs"] = costs.table()  # what this lab cost, phase by phase
            rec = schemas.stamped("lab", rec)  # in results.json as in its own file
        self.progress.advance(self.plan.estimates[lab.name])
        with held_signals(), recording(self.costs):  # the writes: the job's phases, summed over the labs
            if seconds is not None or lab.name in self.plan.restore:
                with phase("lab files"):
                    write_json(self.opts.out / "labs" / f"{lab.name}.json", rec, "lab")
            self.results["job"]["computed" if seconds is not None else "reused"].append(lab.name)
            self.results["labs"][lab.name] = rec
            self.results["pending"].remove(lab.name)
            self.write(lambda render: render.lab_plots(self.opts.out, rec, force=seconds is not None))
        self.done(lab.name, lab_line(i, len(self.plan.labs), rec, seconds))

    def study(self) -> None:
        """Take over or compute the initialisation study, then write it."""
        study, seconds = self.plan.saved[STUDY], None
        if study is None:
            self.progress.begin(STUDY, self.plan.estimates[STUDY])
            t = time.perf_counter()
            with recording(self.costs), phase("init study"):
                study = schemas.stamped("init-study", compute.compute_init_study(self.opts))
            seconds = time.perf_counter() - t
            if study["status"] != "error":
                history.record({self.plan.keys[STUDY]: seconds})
        self.progress.advance(self.plan.estimates[STUDY])
        with held_signals():
            if seconds is not None or STUDY in self.plan.restore:
                write_json(self.opts.out / "labs" / f"{STUDY}.json", study, "init-study")
            if study["status"] == "error":
                self.results["job"]["errors"].append(STUDY)
            self.results["init_study"] = study
            if study["runs"]:
                self.write(lambda render: render.study_plot(self.opts.out, study, force=seconds is not None))
        when = "reused" if seconds is None else f"{seconds:6.1f} s"
        what = f"{len(study['runs'])} schemes, {study['steps']} steps each ({study['framework']})"
        self.done(STUDY, f"[init]  {STUDY:<28} {when:>8}  {what}" + (f"; {study['error']}" if "error" in study else ""))

    def precision(self) -> None:
        """Take over or compute the precision section (its runs beside the labs' own), then write it."""
        rec, seconds = self.plan.saved[precision.TASK], None
        if rec is None:
            self.progress.begin(precision.TASK, self.plan.estimates[precision.TASK])
            t = time.perf_counter()
            with recording(self.costs), phase("precision section"):
                rec = schemas.stamped("precision", precision.compute(self.opts, self.results["labs"]))
            seconds = time.perf_counter() - t
            if rec["status"] != "error":
                history.record({self.plan.keys[precision.TASK]: seconds})
        self.progress.advance(self.plan.estimates[precision.TASK])
        with held_signals():
            if seconds is not None or precision.TASK in self.plan.restore:
                write_json(self.opts.out / "labs" / f"{precision.TASK}.json", rec, "precision")
            if rec["status"] == "error":
                self.results["job"]["errors"].append(precision.TASK)
            self.results["precision"] = rec
            self.write(lambda render: render.precision_plot(self.opts.out, rec, force=seconds is not None))
        when = "reused" if seconds is None else f"{seconds:6.1f} s"
        self.done(precision.TASK, f"[prec]  {'precision section':<28} {when:>8}  {', '.join(rec['labs'])} in "
                  f"{', '.join(rec['precisions'])}" + (f"; {rec['error']}" if "error" in rec else ""))

    def write(self, plots: Callable[[Any], None]) -> None:
        """Draw with ``plots(render)`` in the background (beside the next lab's training) and rewrite the report
        now, with the plots drawn so far; deferred while a complete report is kept. The final write waits for
        every plot (:meth:`wait_plots`)."""
        import harness.report.render as render

        if self.keep_previous:
            return
        self.drawn.append(self.drawing.submit(self._draw, plots))
        with phase("report files"):
            render.write_report(self.opts.out, self.results, html=self.opts.html)

    def _draw(self, plots: Callable[[Any], None]) -> None:
        import harness.report.render as render

        wall, cpu = time.perf_counter(), time.thread_time()
        plots(render)
        self.costs.add("plots (drawn beside the next lab)", time.perf_counter() - wall, time.thread_time() - cpu)

    def wait_plots(self) -> BaseException | None:
        """Wait for every plot being drawn; the first error one raised (None: all drawn)."""
        errors = [f.exception() for f in self.drawn]
        self.drawn.clear()
        return next((e for e in errors if e is not None), None)

    def finish(self) -> None:
        """The final write, held whole against a second signal: the report of this run, unless an earlier
        complete report stays (this run did not complete)."""
        import harness.report.render as render

        status = self.results["job"]["status"]
        with held_signals(reraise=False):
            if self.keep_previous:
                if status not in COMPLETE:
                    self.results["job"]["kept_previous"] = True
                    return
                self.keep_previous = False
                fresh = self.beside is not None
                if fresh:
                    self.results["job"]["written_beside"] = str(self.beside)
                for name, rec in self.results["labs"].items():
                    render.lab_plots(self.target, rec, force=fresh or name in self.results["job"]["computed"])
                study = self.results["init_study"]
                if study and study["runs"]:
                    render.study_plot(self.target, study, force=fresh or self.plan.saved.get(STUDY) is None)
                if self.results.get("precision"):
                    render.precision_plot(self.target, self.results["precision"],
                                          force=fresh or self.plan.saved.get(precision.TASK) is None)
            render.write_report(self.target, self.results, html=self.opts.html, final=True)

    @property
    def target(self) -> Path:
        """The folder the report is written to: ``--out``, or the folder beside a larger report kept there."""
        return self.beside if self.beside is not None else self.opts.out


def beside(opts: JobOptions, previous: dict | None) -> Path | None:
    """Where this run's report goes when the complete report in ``opts.out`` (``previous``) has a lab (or the
    init study) this run does not: ``OUT/runs/<hash of this run's options>/`` (the same options, the same folder);
    None when this run covers all of it (its report replaces the earlier one)."""
    old = previous or {}
    labs = old.get("labs") if isinstance(old.get("labs"), dict) else {}
    more = set(labs) - set(opts.labs) or (old.get("init_study") and not opts.init_study)
    if not more:
        return None
    options = {k: v for k, v in opts.record().items() if k not in ("out", "quiet", "resume", "html")}
    digest = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return opts.out / "runs" / digest


def run_job(opts: JobOptions, out: TextIO | None = None, err: TextIO | None = None) -> Results:
    """Run the job and write the report; the results (``results.json``'s content). On KeyboardInterrupt the
    report of the labs finished so far is written (see the module's notes) and the results come back with job
    status "interrupted"."""
    check(opts)
    with OutputLock(opts.out):
        clean_stale_temps(opts.out)
        labs = [get_lab(name) for name in opts.labs]
        train_size = load_data(opts, labs)
        plan = make_plan(opts, *([train_size] if train_size else []))
        precision.plan_task(plan, opts, train_size or MNIST_TRAIN_SIZE)
        preload()
        return Job(opts, plan, out or sys.stdout, err or sys.stderr).run()
