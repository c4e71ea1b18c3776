"""The main job (``dlzta report``): every lab in every chosen framework, compared, timed and written up.

For each lab the frameworks train from the same initial weights on the same batches (and dropout masks); the
parity figures and verdict of the first two (the exact float64 tier, and in float32 the statistical tier of
one-ulp twins: :mod:`harness.parity`), the course's reference numbers and the
steady-state throughput go into ``OUT/labs/<lab>.json`` the moment the lab finishes, with its plot. After every
lab the report (``report.md``, ``report.html``, ``results.json``) is rewritten from those files, so Ctrl-C, a
crash or a kill leaves a consistent report of the labs done so far; a rerun with the same options skips them.
Every file is written atomically.

The rooms: :mod:`.options` (what the job runs, the reuse keys), :mod:`.plan` (run options, threads, estimates,
what a rerun reuses), :mod:`.compute` (one lab, the init study, the matmul peak), :mod:`.job` (check -> plan ->
compute -> write), :mod:`.lock` (the output folder: checked, cleaned, locked), :mod:`.signals` (interrupts),
:mod:`.fingerprint` (the training code's files, from its imports); :mod:`.render`, :mod:`.doc` and :mod:`.plots`
write the report. The live progress line is :mod:`harness.commands.progress`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.commands import interrupts
from harness.report.compute import compute_init_study, compute_lab
from harness.report.job import run_job
from harness.report.options import FORMAT, INIT_STUDY_LAB, INIT_STUDY_SCHEMES, JobOptions, code_fingerprint
from harness.report.plan import estimate_seconds, flops_per_step, run_options
from harness.report.signals import term_as_interrupt

__all__ = ["FORMAT", "INIT_STUDY_LAB", "INIT_STUDY_SCHEMES", "JobOptions", "cmd_report", "code_fingerprint",
           "compute_init_study", "compute_lab", "estimate_seconds", "flops_per_step", "run_job", "run_options"]


def options_from(args: argparse.Namespace) -> JobOptions:
    """JobOptions from the parsed ``report`` command line."""
    return JobOptions(
        out=Path(args.out), labs=args.labs, frameworks=args.frameworks, data=args.data, data_dir=args.data_dir,
        device=args.device, dtype=args.dtype, steps=args.steps, epochs=args.epochs, threshold=args.threshold,
        noise=args.noise, init_study=args.init_study, init_steps=args.init_steps, resume=args.resume,
        quiet=args.quiet, html=args.html, threads=args.threads, precision_labs=args.precision_labs,
        command=" ".join(["dlzta", *sys.argv[1:]]),
    )


def interrupted_note(results: dict, opts: JobOptions) -> str:
    """What an interrupted job kept, and how to finish it."""
    done = len(results["job"]["computed"]) + len(results["job"]["reused"])
    if results["job"].get("kept_previous"):
        return (f"interrupted: the complete report already in {opts.out}/ is kept as it was; this run's "
                f"{len(results['job']['computed'])} finished labs are in {opts.out}/labs/; run the same command "
                "again to finish the rest")
    return (f"interrupted: {done} of {len(opts.labs)} labs kept in {opts.out}/labs/ and the report; run the same "
            "command again to finish the rest")


def cmd_report(args: argparse.Namespace) -> int:
    """Run the job; 0 when every lab ran (diverging runs are results too) and no comparison found the backends
    to differ, 1 when a lab crashed or a verdict is "differs" or "beyond rounding noise", 130 when interrupted
    (143 by SIGTERM: :mod:`harness.commands.interrupts`)."""
    from harness.parity.verdict import exit_status
    from harness.report.render import summary_line
    from harness.run.results import check_output_dir

    check_output_dir(args.out)  # the name as given: Path("") would be the current folder
    opts = options_from(args)
    with term_as_interrupt():
        results = run_job(opts)
    if not results["job"].get("kept_previous"):
        print(summary_line(results, Path(results["job"].get("written_beside") or opts.out)))
    if results["job"]["status"] == "interrupted":
        print(interrupted_note(results, opts), file=sys.stderr)
        return interrupts.exit_status()
    kinds = [(rec.get("parity") or {}).get("verdict_kind") or "" for rec in results["labs"].values()]
    return 1 if results["job"]["errors"] else exit_status(kinds)
