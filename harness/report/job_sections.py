"""The report's job-wide sections after the labs: the initialisation study, the throughput and the machine
(with whether ``dlzta selfcheck`` ran here). Backends are named from the registry."""

from __future__ import annotations

from typing import Any

import harness.report.course as course
from harness import backend
from harness.report.doc import Doc, num
from harness.report.sections import fmt_acc, mode_text, threads_text


def init_study(doc: Doc, study: dict, has: set[str]) -> None:
    """The weight-initialisation study."""
    doc.heading(2, "Weight initialisation", anchor="init-study")
    doc.para(f"`{study['lab']}` (784-256-256-10 ReLU, Adam 0.001) trained for {study['steps']} steps in "
             f"{backend.label(study['framework'])} from each initialisation the lectures list, on the same batches:")
    rows = []
    for scheme, run in study["runs"].items():
        first = run["loss"][0] if run.get("loss") else None
        rows.append([f"`{scheme}`", num(first), num(course.metric(run, "train_loss")),
                     fmt_acc(course.metric(run, "test_accuracy")), run.get("status", "?")])
    doc.table(["init", "training loss, step 0", "training loss, last step", "test accuracy", "status"], rows,
              right=(1, 2, 3))
    native = study.get("native_init")
    if native and native.get("frameworks"):
        bad = [f"`{s}`: {t}" for s, t in native["text"].items() if t.startswith("native init differs")]
        who = " and ".join(map(backend.label, native["frameworks"]))
        doc.para(f"Native initialisation (each framework's own draw, `run --weights native`, tested against the "
                 f"declared distribution: KS and moments, {native['tests']} tests, false-alarm rate "
                 f"{native.get('alpha', 1e-6):g} per scheme): "
                 + ("; ".join(bad) if bad else f"{who} draw {', '.join(f'`{s}`' for s in native['text'])} as "
                    "declared."))
    for scheme, run in study["runs"].items():
        if run.get("pretrain"):
            doc.para(f"`{scheme}`: the hidden layers start from RBMs trained greedily by "
                     f"CD-{run['pretrain']['k']} before these steps; " + "; ".join(
                         f"rbm{i} reconstruction error per epoch " + ", ".join(f"{e:.4f}" for e in r["recon_epoch"])
                         for i, r in enumerate(run["pretrain"]["rbms"])) + ".")
    if "plots/init_study.png" in has:
        doc.image("plots/init_study.png", "training loss per initialisation, and the test accuracy reached")


def run_modes(results: dict) -> dict[str, str]:
    """Each backend's execution mode(s) in the results, in words (``{"torch": "eager", "jax": "fused (lax.scan)"}``)."""
    found: dict[str, list[str]] = {}
    for rec in results["labs"].values():
        for fw, run in rec.get("runs", {}).items():
            text = mode_text(fw, run.get("execution"))
            if text not in found.setdefault(fw, []):
                found[fw].append(text)
    return {fw: " / ".join(texts) for fw, texts in found.items()}


def throughput(doc: Doc, results: dict, has: set[str]) -> None:
    """The throughput section: the matmul peak and the plot of the runs' steps per second."""
    doc.heading(2, "Throughput", anchor="throughput")
    peak = results.get("peak", {})
    modes = run_modes(results)
    if peak:
        doc.para("Matmul peak measured in this job (float32, the best of "
                 f"{next(iter(peak.values())).get('repeats')} timed n×n products, as `dlzta bench` measures it): "
                 + ", ".join(f"{backend.label(fw)} {p['gflops']:.1f} GFLOP/s (n={p['n']}, median "
                             f"{p.get('gflops_median', p['gflops']):.1f}"
                             + (f", {p['threads']} thread{'s' if p['threads'] > 1 else ''}" if p.get("threads")
                                else "") + ")" for fw, p in peak.items()) + ".")
    doc.para("The steps per second come from the comparison runs above, each backend in its own execution mode ("
             + ", ".join(f"{backend.label(fw)} {m}" for fw, m in modes.items())
             + "); one run each, steady state after warm-up/compilation: indicative, not a benchmark (see "
             "`dlzta bench`).")
    if "plots/throughput.png" in has:
        doc.image("plots/throughput.png", "training steps per second per lab, as a share of the fastest backend")


def _flat(record: Any) -> str:
    if isinstance(record, dict):
        return ", ".join(f"{k} {_flat(v)}" for k, v in record.items() if v is not None)
    return str(record)


def machine(doc: Doc, results: dict) -> None:
    """Where the job ran: CPU model and cores, any accelerator, threads per backend, versions."""
    doc.heading(2, "Machine and versions", anchor="machine")
    m = results.get("machine", {})
    versions: dict[str, str] = {}
    devices: list[str] = []
    cpu = m.get("cpu")
    for rec in results["labs"].values():
        for run in rec.get("runs", {}).values():
            versions.update(run.get("versions", {}))
            cpu = cpu or (run.get("machine") or {}).get("cpu")
            device = (run.get("machine") or {}).get("device")
            if device and _flat(device) not in devices:
                devices.append(_flat(device))
    items = [f"CPU {cpu or m.get('processor') or m.get('machine') or '?'}, {m.get('cpus', m.get('cpu_count'))} "
             f"cores; {m.get('platform')}; Python {m.get('python')}"]
    items += [f"accelerator: {d}" for d in devices]
    threads = sorted({threads_text(rec) for rec in results["labs"].values() if threads_text(rec)})
    if threads:
        items.append("intra-op threads: " + "; ".join(threads) + " (each lab's section says which)")
    items.append(", ".join(f"{k} {v}" for k, v in sorted(versions.items())) or "–")
    items.append(selfcheck_text(results.get("selfcheck")))
    doc.bullets(items)


def selfcheck_text(rec: dict | None) -> str:
    """Whether the parity checks' own test (``dlzta selfcheck``) was run on this machine, and what it found."""
    if not rec:
        return ("parity self-test: not run on this machine (`dlzta selfcheck` plants every known porting bug and "
                "checks that the tiers catch it here)")
    p = rec.get("precision")
    part = ("precision tier: not run (`dlzta selfcheck --tiers precision`)" if not p else
            f"precision tier: {p['caught']} of {p['judged']} planted precision bugs caught, {p['side_named']} with "
            f"the side named, {p['false_alarms']} false alarms in {p['correct_sides']} correct-code controls")
    return (f"parity self-test (`dlzta selfcheck`, {rec['device']}, {rec['dtype']}, {rec['when']}): "
            f"{rec['caught']} of {rec['judged']} planted bugs caught, {rec['false_alarms']} false alarms in "
            f"{rec['controls']} correct runs; {part}")
