"""The selfcheck's precision part: each backend's planted precision-placement bugs (its ``precision_mutations``
capability: name -> the policies where each is a bug) through the precision tier (``harness.parity.precision``),
and correct code under every reduced policy as the false-alarm controls.

A planted bug is caught when the tier says ``differs``, and its side is named when the verdict names the planted
side and no other. Each bug runs on the cheapest lab where it can act (:data:`LABS`, cheapest first, filtered by
:func:`applies`: batch-norm statistics need batch norm, optimizer state an optimizer that keeps some, an input
rounded to bfloat16 inputs that bfloat16 changes); the controls run every reduced policy on the labs the bugs
used. ``benchmarks/precision_calibration.py`` (the seeds x labs calibration) calls the same functions.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

from harness import backend as registry
from harness.backend import RunSpec
from harness.errors import UsageError
from harness.labs import get_lab
from harness.precision import REDUCED, get_policy
from harness.run.runner import Prepared, RunOptions, prepare

LABS = ("xor_mlp", "mnist_softmax", "mnist_batchnorm")  # cheapest first; every mutation acts on one of them
TRACE_STEPS = 8  # steps prepared (the tier traces at most its SCALE_STEPS of them)


def prepared(lab: str, seed: int | None = None) -> Prepared:
    """The lab as the precision tier judges it: bundled data, shared weights, batches and masks."""
    return prepare(get_lab(lab), RunOptions(weights="shared", mask_mode="shared", steps=TRACE_STEPS,
                                            data="mnist-5k", seed=seed))


@functools.cache
def _prepared(lab: str) -> Prepared:
    return prepared(lab)


def applies(mutation: str, spec: RunSpec) -> bool:
    """Whether ``mutation`` can change anything in ``spec``'s lab: batch-norm statistics need batch norm,
    optimizer state an optimizer that keeps some, an input rounded to bfloat16 inputs that bfloat16 changes (not
    XOR's 0/1)."""
    if mutation == "bn_state_low":
        return spec.model.batchnorm
    if mutation == "opt_state_low":
        return spec.lab.optimizer.name != "sgd"
    if mutation == "input_bf16":
        from harness.referee.precision import round_to

        return spec.train_x is not None and bool((round_to(spec.train_x, "bfloat16") != spec.train_x).any())
    return True


def lab_for(mutation: str) -> str | None:
    """The cheapest lab of :data:`LABS` where ``mutation`` can act (None: none of them)."""
    return next((lab for lab in LABS if applies(mutation, _prepared(lab).spec)), None)


def sides_of(frameworks: Sequence[str]) -> list[str]:
    """The frameworks that trace a reduced precision (``precision_trace``), in the order given."""
    return [fw for fw in frameworks if registry.offers(fw, "precision_trace")]


def planted(spec: RunSpec, policy: str, sides: Sequence[str], mutation: str, side: str) -> dict[str, Any]:
    """The precision tier of ``spec`` under ``policy`` with ``mutation`` planted in ``side`` (the others correct):
    ``caught`` (the tier says differs), ``side_named`` (the verdict names ``side`` and no other), the verdict.
    A mutation ``side`` does not declare: UsageError."""
    from harness.parity.precision import backend_sides, tier

    known = registry.capability(side, "precision_mutations") if registry.offers(side, "precision_mutations") else {}
    if mutation not in known:
        raise UsageError(f"{side} has no precision mutation {mutation!r}; choose from {', '.join(known) or 'none'}")
    start = time.perf_counter()
    r = tier(spec, get_policy(policy), backend_sides(sides, mutation, side))
    flagged = [s for s, v in r["sides"].items() if v["off"] is not None or v["scale_off"] is not None]
    caught = r["verdict_kind"] == "differs"
    return {"kind": "mutation", "lab": spec.lab.name, "policy": policy, "mutation": mutation, "side": side,
            "caught": caught, "side_named": caught and flagged == [side], "verdict": r["verdict"],
            "seconds": round(time.perf_counter() - start, 2)}


def control(spec: RunSpec, policy: str, sides: Sequence[str]) -> dict[str, Any]:
    """The precision tier of ``spec`` under ``policy`` on correct code: the verdict, and per side whether it follows
    the policy and how close it came to a tolerance (its share, and where)."""
    from harness.parity.precision import backend_sides, tier

    start = time.perf_counter()
    r = tier(spec, get_policy(policy), backend_sides(sides))
    return {"kind": "correct", "lab": spec.lab.name, "seed": spec.seed, "policy": policy, "verdict": r["verdict"],
            "verdict_kind": r["verdict_kind"], "seconds": round(time.perf_counter() - start, 2),
            "follows": {s: v["off"] is None and v["scale_off"] is None for s, v in r["sides"].items()},
            "closest": {s: {"what": v["closest"]["what"], "share": v["closest"]["share"]}
                        for s, v in r["sides"].items()}}


def bugs(frameworks: Sequence[str], only: str | None = None) -> list[tuple[str, str, str]]:
    """Every ``(mutation, side, policy)`` the selfcheck plants: each framework's precision mutations whose name
    contains ``only`` (any case), under each policy where it is a bug."""
    out = []
    for side in sides_of(frameworks):
        if not registry.offers(side, "precision_mutations"):
            continue
        for mutation, policies in registry.capability(side, "precision_mutations").items():
            if only is None or only.lower() in mutation.lower():
                out.extend((mutation, side, policy) for policy in policies)
    return out


def plan(frameworks: Sequence[str], only: str | None = None) -> list[tuple[str, str, str, str | None]]:
    """:func:`bugs`, each with :func:`lab_for` its lab: ``(mutation, side, policy, lab)``."""
    return [(mutation, side, policy, lab_for(mutation)) for mutation, side, policy in bugs(frameworks, only)]


def selfcheck(frameworks: Sequence[str], only: str | None = None, device: str = "cpu",
              echo: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """The precision part of ``dlzta selfcheck``: every planted bug of :func:`plan`, and every reduced policy on the
    labs they used, on correct code. The section of the record: rows, controls and their counts."""
    sides = sides_of(frameworks)
    planned = plan(frameworks, only)
    start = time.perf_counter()
    rows: list[dict] = []
    if device != "cpu":  # the referee's emulation runs on the cpu, and so must the sides it judges
        rows = [{"kind": "mutation", "lab": lab, "policy": policy, "mutation": mutation, "side": side,
                 "status": f"not applicable ({device}: the precision tier runs on the cpu)"}
                for mutation, side, policy, lab in planned]
        return section(rows, [], sides, time.perf_counter() - start)
    for mutation, side, policy, lab in planned:
        if lab is None:
            row = {"kind": "mutation", "lab": None, "policy": policy, "mutation": mutation, "side": side,
                   "status": f"no lab of {', '.join(LABS)} where it acts"}
        else:
            row = planted(_prepared(lab).spec, policy, sides, mutation, side)
            row["status"] = "caught" if row["caught"] and row["side_named"] else (
                "caught, side not named" if row["caught"] else "MISSED")
        rows.append(row)
        if echo:
            echo(line(row))
    controls = []
    for lab in dict.fromkeys(r["lab"] for r in rows if r["lab"] is not None):
        for policy in REDUCED:
            controls.append(control(_prepared(lab).spec, policy, sides))
            if echo:
                echo(control_line(controls[-1]))
    return section(rows, controls, sides, time.perf_counter() - start)


def section(rows: list[dict], controls: list[dict], sides: Sequence[str], wall_s: float) -> dict[str, Any]:
    """The record's ``precision`` section: its rows and the counts the summary line gives."""
    judged = [r for r in rows if "caught" in r]
    alarms = [(c, s) for c in controls for s, ok in c["follows"].items() if not ok]
    return {"sides": list(sides), "rows": rows, "controls": controls, "judged": len(judged),
            "caught": sum(r["caught"] for r in judged), "side_named": sum(r["side_named"] for r in judged),
            "correct_sides": sum(len(c["follows"]) for c in controls), "false_alarms": len(alarms),
            "wall_s": round(wall_s, 2)}


def ok(sec: dict) -> bool:
    """Whether every planted bug was caught with its side named, and no control raised an alarm."""
    return sec["caught"] == sec["side_named"] == sec["judged"] and not sec["false_alarms"]


def line(row: dict) -> str:
    """One planted bug's row of the table."""
    verdict = f": {row['verdict']}" if row.get("verdict") else ""
    return (f"{row['status']:<8} precision   {row['side']:<6} {row['mutation']} ({row['policy']}) "
            f"[{row['lab']}]{verdict}")


def control_line(row: dict) -> str:
    """One correct-code control's row of the table."""
    status = "ok" if row["verdict_kind"] == "follows policy" else "ALARM"
    return f"{status:<8} precision   {'+'.join(row['follows']):<6} correct code [{row['lab']}]: {row['verdict']}"


def summary(sec: dict) -> str:
    """The precision part's closing line."""
    return (f"precision: {sec['caught']} of {sec['judged']} planted bugs caught, {sec['side_named']} with the side "
            f"named; {sec['correct_sides']} correct-code controls, {sec['false_alarms']} false alarms")
