"""One verdict vocabulary for ``compare``, the report and the JSON.

- ``same math (float64, 200 steps, max 3e-15)``: the exact tier passed (float64, same weights, batches and
  masks): the two sides compute the same thing; the largest relative training-loss difference in the window.
- ``float32 within rounding noise (1.8x band)`` / ``float32 beyond rounding noise (150x band at step 3, limit
  100x)``: the statistical tier's reading of the run in the user's dtype (``harness.parity.ensemble``).
- ``float32: not judged (statistical tier off)``: appended where the statistical tier did not run.
- ``differs: dense2/kernel update at step 0 (rel 1e-06)``: the exact tier failed; the first step and tensor (or
  quantity) that part, and, with a referee, which side is off.

A float32 (or mixed, or own-mask) comparison says both: ``same math (...); float32 within rounding noise (...)``.
``kind`` sums a verdict up in one word for tables and counts: "same math", "within rounding noise",
"beyond rounding noise", "differs", or "not judged"; :func:`brief` gives the kind and its key figure for a table
cell ("same math (max 3e-15)", "float32 within rounding noise (1.8x band)").

``compare --weights native`` adds a third check, each side's own initial draw against the declared distributions
(:mod:`harness.parity.initcheck`): :func:`with_native_init` folds it into the same verdict (a wrong draw makes it
"differs", whatever the trained tiers said). :func:`exit_status` turns the kind into the exit status scripts read,
as ``diff`` does: 0 nothing found to differ, 1 differs (or beyond rounding noise); bad input exits 2 elsewhere.
"""

from __future__ import annotations

KINDS = ("same math", "within rounding noise", "beyond rounding noise", "differs", "not judged")
DIFFERENT = ("differs", "beyond rounding noise")  # the kinds that exit 1
EXIT_SAME, EXIT_DIFFERS = 0, 1  # and 2, bad input (harness.errors.EXIT_USAGE)


def _num(x: float | None) -> str:
    return "nan" if x is None or x != x else f"{x:.1g}"


def same_math(steps: int, max_rel: float | None) -> str:
    """The exact tier's text when it passes."""
    return f"same math (float64, {steps} steps, max {_num(max_rel)})"


def differs(what: str, rel: float | None, side: str = "") -> str:
    """The exact tier's text when it fails: ``what`` names the tensor or quantity and the step."""
    how = "not finite on one side" if rel is None or rel != rel else f"rel {_num(rel)}"
    return f"differs: {what} ({how}){side}"


def combine(exact: dict | None, statistical: dict | None, needs: str | None, why: str = "no statistical tier"
            ) -> tuple[str, str]:
    """The verdict text and its kind from the exact tier's and the statistical tier's dicts (either None where
    it did not run). ``needs``: what the exact tier alone does not settle ("float32", "float32/float64", "own
    dropout masks"), None for a float64 comparison with shared masks; ``why``: why the statistical tier is
    missing, where it is."""
    if exact is not None and not exact["ok"]:
        return exact["text"], "differs"
    parts = [exact["text"]] if exact is not None else []
    if needs is None:
        return (parts[0], "same math") if parts else ("not judged", "not judged")
    if statistical is None or "ok" not in statistical:
        parts.append(f"{needs}: not judged ({why})")
        return "; ".join(parts), "not judged"
    parts.append(statistical["text"])
    return "; ".join(parts), "within rounding noise" if statistical["ok"] else "beyond rounding noise"


def with_native_init(verdict: str, kind: str, native: dict | None) -> tuple[str, str]:
    """The verdict and kind once the native-initialisation check (``native``, None where it did not run) is
    added: a failed check leads the text and makes the kind "differs"; a passed one is appended."""
    if native is None:
        return verdict, kind
    if not native["ok"]:
        return f"{native['text']}; trained from shared weights: {verdict}", "differs"
    return f"{verdict}; native init as declared", kind


def exit_status(kinds: str | list[str] | tuple[str, ...]) -> int:
    """The exit status for one verdict kind (or several: 1 if any differs): 0 same math, within rounding noise,
    or not judged (nothing was found to differ); 1 differs or beyond rounding noise."""
    kinds = [kinds] if isinstance(kinds, str) else kinds
    return EXIT_DIFFERS if any(k in DIFFERENT for k in kinds) else EXIT_SAME


def brief(result: dict) -> str:
    """The short form of ``result``'s verdict (a ``compare`` result, or a report's parity record): the kind and
    its key figure, without the referee's reasoning; the full ``verdict`` where the tiers are not recorded."""
    kind, tiers, full = result.get("verdict_kind"), result.get("tiers") or {}, result.get("verdict") or ""
    exact, stats = tiers.get("exact"), tiers.get("ensemble")
    native = result.get("native_init")
    if kind == "differs" and native is not None and not native.get("ok", True) and (exact is None or exact["ok"]):
        return native["text"]
    if kind == "differs" and exact is not None:
        off = (exact.get("referee") or {}).get("off")
        return exact["text"].split("; ")[0] + (f"; {off} is off" if off else "")
    same = f"same math (max {_num(exact.get('max_rel_diff'))})" if exact is not None and exact.get("ok") else None
    if kind == "same math" and same:
        return same
    if kind in ("within rounding noise", "beyond rounding noise") and stats is not None:
        return stats["text"]
    if kind == "not judged":
        what = full.rsplit("; ", 1)[-1].split(":")[0] if ": not judged" in full else ""
        return ", ".join(x for x in (same, f"{what} not judged".strip()) if x)
    return full or "not judged"
