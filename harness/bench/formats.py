"""Output formats of a bench run: one line per workload, markdown tables (docs/benchmarks.md), the results JSON,
and github-action-benchmark's two custom formats.

github-action-benchmark files: ``PREFIX-smaller-is-better.json`` (``customSmallerIsBetter``: ms/step) and
``PREFIX-bigger-is-better.json`` (``customBiggerIsBetter``: steps/s, % of the matmul peak of the entry's own
precision and, for a reduced precision, its speed-up over float32). One entry per lab, backend, device, mode and
precision; float32's names carry no precision (the names baselines and dashboards already hold). Each value is the
median over blocks; its ``range`` is ``± X`` with X half the width of the p5..p95 interval over blocks (the form
the action parses); the percentiles themselves are in ``extra``.
"""

from __future__ import annotations

from harness.bench.protocol import half_width
from harness.bench.targets import target_value


def format_entry(e: dict) -> str:
    """One line per workload."""
    head = f"{e['lab']:<20} {e['framework']:<5} {e['device']:<3} {e['mode']:<10} {e.get('precision', 'float32'):<14}"
    if e.get("status") not in ("ok", "diverged"):
        return f"{head} {e.get('status')}: {e.get('reason', '')}"
    ms = e["ms_per_step"]
    over = f" overhead {e['overhead']['pct']:+.1f}% ({e['overhead']['basis'].replace('_', ' ')})" \
        if "overhead" in e else ""
    pct = f" {e['pct_peak']:.1f}% of {e.get('peak_dtype', 'float32')} peak" if "pct_peak" in e else ""
    speedup = f" {e['speedup_vs_float32']:.2f}x float32" if "speedup_vs_float32" in e and \
        e.get("precision", "float32") != "float32" else ""
    return (f"{head} thr {e['threads']} compile {e['compile_s']:.2f}s  {ms['median']:.4g} ms/step "
            f"[p5 {ms['p5']:.4g}, p95 {ms['p95']:.4g}]  {e['steps_per_s']:,.0f} steps/s{speedup}  "
            f"{e['samples_per_s']:,.0f} samples/s  {e['gflops']:.3g} GFLOP/s{pct}{over}")


def format_threads(summary: dict) -> str:
    """One line: the intra-op threads each framework timed on (CPU), and whether they are the same for every lab."""
    per = "; ".join(f"{fw} {', '.join(map(str, ts)) or '?'}" for fw, ts in summary["per_framework"].items())
    if not summary["per_framework"]:
        return "threads: no CPU workload"
    if summary["like_for_like"]:
        return f"threads: {per} (every framework on the same threads for each lab; each % of a peak on them)"
    return (f"threads DIFFER between frameworks for {', '.join(summary['differ'])}: {per}; each % is of a peak "
            "its framework measured on its own threads")


def _peak_line(fw: str, versions: str, device: str, gpu: str, p: dict) -> str:
    if "gflops" not in p:
        return f"- {fw} ({versions}){gpu}: {p.get('dtype')} matmul peak unavailable on {device} ({p.get('reason')})"
    return (f"- {fw} ({versions}){gpu}: {p.get('dtype', 'float32')} matmul peak {p['gflops']:.1f} GFLOP/s on "
            f"{device}, {p.get('threads')} thread(s) (n={p['n']}, best of {p['repeats']}, median "
            f"{p['gflops_median']:.1f})")


def _machine_lines(record: dict) -> list[str]:
    m = record["machine"]
    lines = [f"Machine: {m['cpu_model']}, {m['cpu_count']} cores ({', '.join(m.get('cpu_flags', []))}); "
             f"{m['platform']}; Python {m['python']}; load average {record.get('loadavg_start')} at the start, "
             f"{record.get('loadavg_end')} at the end; {record['created']}.", ""]
    if "threads" in record:
        lines += [format_threads(record["threads"]) + ".", ""]
    for fw, info in record["frameworks"].items():
        versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
        for device, d in info["devices"].items():
            gpu = f" on {d['gpu']}" if d.get("gpu") else ""
            lines += [_peak_line(fw, versions, device, gpu, p) for p in d.get("peaks", [d["peak"]])]
    return lines


def _result_row(e: dict) -> str:
    head = f"| {e['lab']} | {e['framework']} | {e['device']} | {e['mode']} | {e.get('precision', 'float32')} |"
    if e.get("status") != "ok":
        return f"{head} | | | {e.get('status')}: {e.get('reason', '')} | | | | | | | |"
    ms = e["ms_per_step"]
    over = f"{e['overhead']['pct']:+.1f}%" if "overhead" in e else ""
    speedup = f"{e['speedup_vs_float32']:.2f}x" if "speedup_vs_float32" in e else ""
    return (f"{head} {e['threads']} | {e['batch_size']} | {e['compile_s']:.2f} | {ms['median']:.4g} "
            f"[{ms['p5']:.4g}, {ms['p95']:.4g}] | {e['steps_per_s']:,.0f} | {speedup} | {e['samples_per_s']:,.0f} | "
            f"{e['gflops']:.3g} | {e.get('pct_peak', float('nan')):.3g} | {e.get('peak_dtype', '')} | {over} |")


def format_markdown(record: dict) -> str:
    """The figures of a run as markdown tables (docs/benchmarks.md): the machine, the threads each framework ran
    on, the peaks (per dtype and threads), one row per workload (its speed-up over float32, its % of its own
    precision's peak), and the development targets when the run checked them (``--targets``)."""
    lines = _machine_lines(record)
    lines += ["", "| lab | framework | device | mode | precision | threads | batch | compile s | ms/step median "
              "[p5, p95] | steps/s | vs float32 | samples/s | GFLOP/s | % of peak | peak dtype | overhead |",
              "|" + "---|" * 16]
    lines += [_result_row(e) for e in record["results"]]
    if record.get("targets"):
        lines += ["", "| target | lab | mode | this run | |", "|---|---|---|---|---|"]
        for t in record["targets"]:
            lines.append(f"| {t['target']} | {t['lab']} | {t['mode']} | {target_value(t)} | "
                         f"{'met' if t['met'] else 'missed'} |")
    return "\n".join(lines) + "\n"


def _inverse_half_width(value: float, ms: dict[str, float]) -> float:
    """``± X`` of a figure proportional to 1/(ms/step), from the p5..p95 of ms/step."""
    return value * ms["median"] * (1 / ms["p5"] - 1 / ms["p95"]) / 2


def github_action(record: dict) -> tuple[list[dict], list[dict]]:
    """The figures in github-action-benchmark's ``customSmallerIsBetter`` and ``customBiggerIsBetter`` formats:
    median values, ``range`` ``± X`` (half the p5..p95 width over blocks), percentiles and settings in ``extra``."""
    smaller, bigger = [], []
    for e in record["results"]:
        if e.get("status") != "ok":
            continue
        ms = e["ms_per_step"]
        extra = (f"ms/step p5 {ms['p5']:.4g}, median {ms['median']:.4g}, p95 {ms['p95']:.4g}; threads {e['threads']}, "
                 f"batch {e['batch_size']}, {e['blocks']} blocks of {e['block_steps']} steps")
        if e.get("precision", "float32") != "float32":
            extra += f"; precision {e['precision']}"
        smaller.append({"name": f"{e['key']} ms/step", "unit": "ms/step", "value": float(ms["median"]),
                        "range": f"± {half_width(ms):.4g}", "extra": extra})
        bigger.append({"name": f"{e['key']} steps/s", "unit": "steps/s", "value": float(e["steps_per_s"]),
                       "range": f"± {_inverse_half_width(e['steps_per_s'], ms):.4g}", "extra": extra})
        if "pct_peak" in e:
            bigger.append({"name": f"{e['key']} % of matmul peak", "unit": "% of peak",
                           "value": float(e["pct_peak"]),
                           "range": f"± {_inverse_half_width(e['pct_peak'], ms):.4g}",
                           "extra": f"{e.get('peak_dtype', 'float32')} peak {e['peak_gflops']:.1f} GFLOP/s on "
                                    f"{e.get('peak_threads')} thread(s); {extra}"})
        if e.get("precision", "float32") != "float32" and "speedup_vs_float32" in e:
            bigger.append({"name": f"{e['key']} speed-up over float32", "unit": "x float32",
                           "value": float(e["speedup_vs_float32"]),
                           "range": f"± {_inverse_half_width(e['speedup_vs_float32'], ms):.4g}",
                           "extra": f"steps/s against the float32 entry's; {extra}"})
    return smaller, bigger


def github_action_paths(prefix: str) -> tuple[str, str]:
    """The two files ``--github-action PREFIX`` writes: smaller-is-better, bigger-is-better."""
    return f"{prefix}-smaller-is-better.json", f"{prefix}-bigger-is-better.json"


def check_outputs(out: str | None, github: str | None, markdown: str | None, suffixes: tuple[str, ...] = ("",)) -> None:
    """Every file ``write_outputs`` would write (each with every suffix: one per device kind of a scaling run),
    checked before anything is measured (:func:`harness.run.results.check_output_files`)."""
    from harness.errors import UsageError
    from harness.run.results import check_output_files

    if github is not None and not github.strip():
        raise UsageError("--github-action is empty; give a file name prefix")
    for suffix in suffixes:
        paths = {"--out": out and out + suffix, "--markdown": markdown and markdown + suffix}
        if github:
            small, big = github_action_paths(github + suffix)
            paths.update({"--github-action": small, "--github-action ": big})
        check_output_files(paths)


def write_outputs(record: dict, out: str | None, github: str | None, markdown: str | None = None) -> None:
    """The results JSON, the markdown tables and, with a prefix, the two github-action-benchmark files (each
    written atomically)."""
    from harness.run.results import atomic_write, write_json

    if out:
        write_json(out, record, "bench")
    if markdown:
        atomic_write(markdown, format_markdown(record))
    if github:
        for path, items in zip(github_action_paths(github), github_action(record)):
            write_json(path, items)
