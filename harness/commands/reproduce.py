"""``dlzta reproduce``: each chosen lab in every framework with the lab's own settings, beside the course's numbers.

Every framework trains each lab with its declared defaults (by default from shared initial weights, on the same
batches; each framework draws its own dropout masks), in ``--precision``. The table shows the course's printed
reference (costs, test accuracy; per-epoch figures for batch norm; correct answers among the first 1000 test
images for hand-written backprop) next to each framework's result and the wall time of each run.

The course trained on full MNIST (60,000/10,000) and, in most MNIST notebooks, computed its accuracy on the raw
0..255 test pixels while training on pixels scaled to [0, 1]. This harness evaluates on correctly scaled pixels;
for the labs the course evaluated that way (``Lab.reference_raw_pixels``) it also evaluates on raw pixels, so that
the course's figure has a like-for-like neighbour.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from typing import Any

import numpy as np

from harness import backend as backends
from harness.commands.progress import Progress
from harness.labs import Lab, LabError, get_lab
from harness.references import CorrectSeries, EpochTable, FinalMetric, LossSeries, as_dict
from harness.run.metrics import evaluate

RAW = "test_raw_pixels"  # eval set: the test images times 255, as the course fed them
GAP_PP = 0.5  # the float32 gap between frameworks' final test accuracy this project aims under (percentage points)


def _with_raw_eval(prepared: Any) -> Any:
    """``prepared`` with the raw-pixel test set added to its evaluations (for labs the course evaluated so)."""
    if not prepared.lab.reference_raw_pixels or "test" not in prepared.spec.eval_sets:
        return prepared
    x, y = prepared.spec.eval_sets["test"]
    sets = {**prepared.spec.eval_sets, RAW: (x * np.asarray(255, x.dtype), y)}
    return dataclasses.replace(prepared, spec=dataclasses.replace(prepared.spec, eval_sets=sets),
                               eval_targets={**prepared.eval_targets, RAW: y})


def run_lab(prepared: Any, framework: str) -> dict:
    """One framework's run of a prepared lab (and its companion model): the runner's record, with the raw-pixel
    evaluation under ``raw_pixels`` and the wall time of the whole run under ``wall_s``."""
    from harness.run.runner import add_companion, execute, summarize

    start = time.perf_counter()
    result = execute(prepared, framework)
    raw = {done: sets.pop(RAW) for done, sets in result.outputs.items() if RAW in sets}
    record = summarize(prepared, framework, result)
    if raw:
        lab, y = prepared.lab, prepared.eval_targets[RAW]
        evals = {done: evaluate(lab.task, lab.loss, out, y) for done, out in sorted(raw.items())}
        record["raw_pixels"] = {"final": evals[max(evals)], "evals": evals}
    if prepared.companion is not None:
        add_companion(record, prepared, framework, execute(prepared, framework, prepared.companion))
    record["wall_s"] = time.perf_counter() - start
    return record


def _final_accuracy(task: str, loss: str, outputs: dict, targets: dict) -> float | None:
    sets = outputs[max(outputs)]
    if "test" not in sets:
        return None
    return evaluate(task, loss, sets["test"], targets["test"])["accuracy"]


def run_repeats(prepared: Any, framework: str, repeats: int) -> list[dict]:
    """``repeats - 1`` more runs of the main model, each from the shared weights nudged by 1, 2, ... units in the
    last place: float32 training is chaotic enough that this is a fresh draw of the final accuracy from the
    trajectory's rounding noise alone. Their final test accuracy and last-epoch cost."""
    from harness.run.runner import execute
    from harness.weights import nudge

    if repeats < 2 or prepared.spec.params is None:
        return []
    out = []
    for ulps in range(1, repeats):
        spec = dataclasses.replace(prepared.spec, params=nudge(prepared.spec.params, ulps))
        result = execute(prepared, framework, spec)
        outputs = {done: {k: v for k, v in sets.items() if k != RAW} for done, sets in result.outputs.items()}
        per_epoch = prepared.steps_per_epoch
        cost = float(np.mean(result.losses[-per_epoch:])) if per_epoch else float(result.losses[-1])
        out.append({"nudge_ulps": ulps, "cost_last_epoch": cost,
                    "accuracy": _final_accuracy(prepared.lab.task, prepared.lab.loss, outputs,
                                                prepared.eval_targets)})
    return out


def accuracy_spread(run: dict) -> dict | None:
    """Mean, standard deviation, min and max of the final test accuracy over a run and its repeats."""
    accs = [_main_accuracy(run)] + [r["accuracy"] for r in run.get("repeats", [])]
    if len(accs) < 2 or any(a is None for a in accs):
        return None
    a = np.asarray(accs)
    return {"n": len(a), "mean": float(a.mean()), "sd": float(a.std(ddof=1)), "min": float(a.min()),
            "max": float(a.max())}


def _main_accuracy(run: dict) -> float | None:
    acc = (run.get("final") or {}).get("test_accuracy")  # the test set's only (XOR labs have none)
    return acc if isinstance(acc, float) else None


# ------------------------------------------------------------------------------------------------ the table


def _f(value: Any, digits: int = 6) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3e}"
    return str(value)


def _acc(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_f(v, 4)}" for k, v in value.items())
    return "–" if value is None else f"{value:.4f}"


def _cost(run: dict, epoch: int) -> float | None:
    costs = run.get("epoch_cost") or []
    return costs[epoch - 1] if 0 < epoch <= len(costs) else None


def _correct_at(run: dict, step: int, key: str = "evals") -> Any:
    return (run.get(key) or {}).get(step, {}).get("test", {}).get("correct_of_first_1000")


class _Rows:
    """Table rows ``[what, course, <framework>...]``; a diverged run's cells say so."""

    def __init__(self, runs: dict[str, dict]) -> None:
        self.runs, self.rows = runs, []

    def add(self, what: str, course: str, cell: Any) -> None:
        self.rows.append([what, course] + [cell(r) if r.get("status") == "ok" else "diverged"
                                           for r in self.runs.values()])


def _loss_rows(t: _Rows, series: LossSeries) -> None:
    """The training loss at the first and last step the course printed (XOR labs)."""
    for step in dict.fromkeys((min(series.losses), max(series.losses))):
        t.add(f"loss, step {step}", _f(series.losses[step]),
              lambda r, s=step: _f(r["loss"][r["steps"].index(s)] if s in r.get("steps", []) else None))


def _cost_rows(t: _Rows, lab: Lab, costs: list[FinalMetric]) -> None:
    """The mean training loss of epoch 1 and of the last epoch run, beside the course's of the same epoch."""
    course = {m.epoch: m.value for m in costs}
    last = max(len(r.get("epoch_cost") or []) for r in t.runs.values()) or lab.epochs or 1
    for epoch in dict.fromkeys((1, last)):
        t.add(f"cost, epoch {epoch}", _f(course.get(epoch)), lambda r, e=epoch: _f(_cost(r, e)))


def _correct_rows(t: _Rows, series: CorrectSeries) -> None:
    star = "*" if series.raw_pixels else ""
    for step, course in sorted(series.correct.items()):
        t.add(f"correct of first {series.of_first}, step {step}", f"{course}{star}",
              lambda r, s=step: _f(_correct_at(r, s)))
    last = max(series.correct)
    t.add(f"  same on raw 0..255 pixels, step {last}", f"{series.correct[last]}",
          lambda r: _f((r.get("raw_pixels") or {}).get("evals", {}).get(last, {}).get("correct_of_first_1000")))


def _epoch_table_rows(t: _Rows, lab: Lab, table: EpochTable) -> None:
    labels = lab.model_labels
    last = max(len(r.get("epochs") or []) for r in t.runs.values())
    for label in labels:
        for split in ("train", "valid"):
            want = table.models[label]
            t.add(f"{label} {split} loss (acc), epoch {last}",
                  f"{want[f'{split}_loss']:.5f} ({want[f'{split}_acc']:.2f})" if last == table.epoch else "–",
                  lambda r, lb=label, sp=split: _epoch_cell(r, last, lb, sp))
    t.add(f"{labels[0]} ahead of {labels[1]} (valid loss) every epoch",
          "yes" if table.first_ahead_every_epoch else "–", lambda r: _ahead(r, labels))


def _accuracy_rows(t: _Rows, lab: Lab, course: FinalMetric | None) -> None:
    """Our accuracy on the set the course's figure is of (test for MNIST, the training set for XOR)."""
    split = course.split if course else ("test" if lab.task == "mnist" else "train")
    raw = bool(course and course.raw_pixels)
    what = ("test accuracy" if split == "test" else "accuracy") + (" (pixels in [0, 1])" if raw else "")
    t.add(what, _acc(course.value if course else None) + ("*" if raw else ""),
          lambda r: _acc(r["final"].get(f"{split}_accuracy")))
    if raw:
        t.add("  same on raw 0..255 pixels, as the course", _acc(course.value),
              lambda r: _acc((r.get("raw_pixels") or {}).get("final", {}).get("accuracy")))


def lab_rows(lab: Lab, runs: dict[str, dict]) -> list[list[str]]:
    """Rows ``[what, course, <framework>...]`` comparing the course's reference with each run, like with like."""
    ref, t = lab.reference, _Rows(runs)
    if ref.metrics("epoch_cost"):
        _cost_rows(t, lab, ref.metrics("epoch_cost"))
    for series in ref.of(LossSeries):
        _loss_rows(t, series)
    for correct in ref.of(CorrectSeries):
        _correct_rows(t, correct)
    for table in ref.of(EpochTable):
        _epoch_table_rows(t, lab, table)
    if not ref.records:
        t.add("loss, last step", "–", lambda r: _f(r["loss"][-1] if r.get("loss") else None))
    if not ref.of(EpochTable):
        _accuracy_rows(t, lab, next(iter(ref.metrics("accuracy")), None))
    if any(accuracy_spread(r) for r in runs.values()):
        def spread(r: dict) -> str:
            sp = accuracy_spread(r)
            return "–" if sp is None else f"{sp['mean']:.4f} ± {sp['sd']:.4f}"

        n = max((accuracy_spread(r) or {}).get("n", 0) for r in runs.values())
        t.add(f"test accuracy, mean ± sd of {n} runs (1-ulp nudges)", "", spread)
    t.add("wall time, s", "", lambda r: f"{r['wall_s']:.1f}")
    return t.rows


def _epoch_cell(run: dict, epoch: int, label: str, split: str) -> str:
    rows = {e["epoch"]: e for e in run.get("epochs") or []}
    got = rows.get(epoch, {}).get(label)
    if not got:
        return "–"
    return f"{got[f'{split}_loss']:.5f} ({got[f'{split}_acc']:.2f})"


def _ahead(run: dict, labels: tuple[str, str]) -> str:
    epochs = [e for e in run.get("epochs") or [] if labels[1] in e]
    if not epochs:
        return "–"
    behind = [e["epoch"] for e in epochs if e[labels[0]]["valid_loss"] >= e[labels[1]]["valid_loss"]]
    return "yes" if not behind else "no (epochs " + ", ".join(map(str, behind)) + ")"


def accuracy_gap_pp(runs: dict[str, dict], mean: bool = False) -> float | None:
    """The spread (max - min) of the frameworks' final test accuracy in percentage points (the main model's;
    ``mean``: of the means over the repeats), None with fewer than two."""
    if mean:
        values = [(accuracy_spread(r) or {}).get("mean") for r in runs.values()]
    else:
        values = [_main_accuracy(r) for r in runs.values()]
    values = [v for v in values if v is not None]
    return (max(values) - min(values)) * 100 if len(values) >= 2 else None


def format_table(rows: list[list[str]], header: list[str]) -> list[str]:
    """Plain-text columns, the first left-aligned, the rest right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for r in [header, *rows]:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return lines


def data_text(record: dict) -> str:
    """A data record in a few words."""
    if record.get("source") == "builtin":
        return f"built-in {record.get('name')} table"
    sha = (record.get("sha256") or "")[:12]
    return (f"{record.get('source')} {record.get('name') or ''} ({record.get('train_size')} train / "
            f"{record.get('test_size')} test, sha256 {sha}…)").replace("  ", " ")


# ------------------------------------------------------------------------------------------------ the command


def _run_framework(prepared: Any, framework: str, threads: int | None, repeats: int, echo: Any) -> dict:
    """One framework's run of a prepared lab (and its repeats) on ``threads`` intra-op threads (None: as they are);
    a diverged run's record has status "diverged"."""
    from harness.run.machine import threads_set
    from harness.run.runner import RunDiverged

    try:
        with threads_set(framework, threads):
            record = run_lab(prepared, framework)
            if repeats > 1:
                record["repeats"] = run_repeats(prepared, framework, repeats)
    except RunDiverged as exc:
        record = {**exc.result, "status": "diverged"}
    if threads is not None:
        record["threads"] = threads
    if echo:
        echo(f"{prepared.lab.name} [{framework}]: {record.get('status')}, {record.get('wall_s', float('nan')):.1f} s")
    return record


def reproduce(names: tuple[str, ...], options: Any, frameworks: tuple[str, ...] | None = None,
              out: str | None = None, echo: Any = None, threads: str = "auto", repeats: int = 1,
              progress: Progress | None = None) -> dict:
    """Run every lab in ``names`` in every framework with ``options`` (a RunOptions); the results, written to
    ``out`` (JSON, atomically) after each lab. ``echo(line)`` reports each run; ``progress`` is told each run as
    it starts (its total: the runs); ``threads``: "auto" or a count, see :func:`harness.run.machine.threads_for`;
    ``repeats``: see :func:`run_repeats` (shared init only)."""
    from harness.backend import check_device
    from harness.run.machine import busy_text, machine_busy, machine_record, threads_for
    from harness.run.results import write_json
    from harness.run.runner import prepare

    frameworks = frameworks or backends.names(include_referees=False)
    progress = progress or Progress(0, quiet=True)
    progress.total = len(names) * len(frameworks)
    for fw in frameworks:  # fail fast, and keep the frameworks' import time out of the first lab's wall time
        check_device(fw, options.device)
    busy, measured = machine_busy()
    ones = [fw for fw in frameworks if threads_for(fw, "mnist", busy, threads, options.device) == 1]
    if busy and echo and threads == "auto" and ones:
        echo(f"the machine is busy ({busy_text(measured)}): {', '.join(ones)} run(s) on one thread")
    results: dict[str, Any] = {"command": "reproduce", "frameworks": list(frameworks), "weights": options.weights,
                               "masks": options.mask_mode, "dtype": options.dtype, "device": options.device,
                               "precision": options.policy.name,
                               "epochs": options.overrides.get("epochs"), "steps": options.steps,
                               "repeats": repeats, "loadavg_at_start": measured["loadavg"], "contention": measured,
                               "machine": machine_record(),
                               "data": {}, "labs": {}}
    start = time.perf_counter()
    for name in names:
        lab = get_lab(name)
        lab_options = options
        if lab.epochs is None and "epochs" in options.overrides:
            lab_options = dataclasses.replace(options, overrides={k: v for k, v in options.overrides.items()
                                                                  if k != "epochs"})
        prepared = _with_raw_eval(prepare(lab, lab_options))
        results["data"][prepared.data_record.get("source")] = prepared.data_record
        runs = {}
        for fw in frameworks:
            progress.begin(f"{name} [{fw}]")
            runs[fw] = _run_framework(prepared, fw, threads_for(fw, lab.task, busy, threads, options.device),
                                      repeats, echo)
            progress.advance()
        entry = {"title": lab.title, "notebook": lab.notebook, "notes": lab.notes, "reference": as_dict(lab.reference),
                 "reference_raw_pixels": lab.reference_raw_pixels, "data": prepared.data_record,
                 "steps": prepared.steps, "runs": runs, "rows": lab_rows(lab, runs),
                 "accuracy_gap_pp": accuracy_gap_pp(runs), "mean_accuracy_gap_pp": accuracy_gap_pp(runs, True)}
        results["labs"][name] = entry
        results["total_s"] = time.perf_counter() - start
        if out:
            write_json(out, results)
    return results


def render(results: dict) -> list[str]:
    """The whole table, as printed lines."""
    frameworks = results["frameworks"]
    lines = []
    for record in results["data"].values():
        lines.append(f"data: {data_text(record)}")
    init = ("the same initial weights in both frameworks" if results["weights"] == "shared"
            else "each framework draws its own")
    lines.append(f"weights: {results['weights']} ({init}), dropout masks: {results['masks']}, "
                 f"{results.get('precision', results['dtype'])} on {results['device']}")
    threads = {fw: sorted({e["runs"][fw]["threads"] for e in results["labs"].values()
                           if "threads" in e["runs"].get(fw, {})}) for fw in frameworks}
    if any(threads.values()):
        load = results.get("loadavg_at_start")
        lines.append("threads: " + "; ".join(f"{fw} {', '.join(map(str, n))}" for fw, n in threads.items() if n)
                     + (f" (load average at start {load[0]:.1f})" if load else ""))
    lines.append("course: full MNIST (60,000 train / 10,000 test); * the course computed this accuracy on raw 0..255 "
                 "test pixels (trained on [0, 1]); the row below it is this run evaluated the same way")
    for name, entry in results["labs"].items():
        lines += ["", f"{name}: {entry['title']} [{entry['notebook']}], {entry['steps']} steps"]
        lines.extend("  " + t for t in format_table(entry["rows"], ["", "course"] + frameworks))
        gap, mean_gap = entry.get("accuracy_gap_pp"), entry.get("mean_accuracy_gap_pp")
        if gap is not None:
            mark = "" if gap <= GAP_PP else f"  (over {GAP_PP} pp)"
            text = f"  final test accuracy, largest gap between frameworks: {gap:.1f} pp{mark}"
            if mean_gap is not None:
                text += f"; of the means over the repeats: {mean_gap:.2f} pp"
            lines.append(text)
    lines.append("")
    lines.append(f"total: {results.get('total_s', 0):.1f} s for {len(results['labs'])} labs × "
                 f"{len(frameworks)} frameworks")
    return lines


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Run the chosen labs, print the table; exit 2 (after writing ``--out``) if a run diverged."""
    from harness.commands.options import run_options
    from harness.run.machine import threads_note
    from harness.run.results import check_output_file
    from harness.run.runner import RunDiverged, covered

    names, frameworks = args.labs, args.frameworks
    check_output_file(args.out) if args.out is not None else None
    options = run_options(args)
    options.check()
    names = covered(names, options, lambda why: print(f"note: left out: {why}", file=sys.stderr))
    if args.repeats > 1 and args.weights != "shared":
        raise LabError("--repeats needs --weights shared (the repeats nudge the shared weights)")
    if note := threads_note(frameworks, args.threads, args.device):
        print(f"note: {note}", file=sys.stderr)
    with Progress(0, "reproduce", args.quiet, unit="runs") as progress:  # the live line on a terminal
        echo = None if args.quiet else (lambda line: progress.print(line, file=sys.stderr))
        results = reproduce(names, options, frameworks, args.out, echo, args.threads, args.repeats, progress)
    print("\n".join(render(results)))
    diverged = [f"{n} ({fw})" for n, e in results["labs"].items() for fw, r in e["runs"].items()
                if r.get("status") != "ok"]
    if diverged:
        raise RunDiverged(f"diverged: {', '.join(diverged)}" + (f"; results in {args.out}" if args.out else ""), {})
    return 0
