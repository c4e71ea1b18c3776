"""The typed shape of the records a rerun reuses (``OUT/labs/<lab>.json``, the init study, the lab records in
an earlier ``results.json``): a record is reused only when it has the shape a fresh one has, so a file that
parses but holds the wrong types (``"parity": "x"``, a loss that is a string) is recomputed, never a crash.

A shape is a type (or a tuple of types; ``bool`` is not an ``int`` here), a dict of keys (``"name?"``: may be
missing; ``"*"``: every other key) or a one-element list (a list of that shape); :class:`Maybe` allows None.
"""

from __future__ import annotations

from typing import Any

ANY = object


class Maybe:
    """``shape`` or None."""

    def __init__(self, shape: Any) -> None:
        self.shape = shape


NUM = (int, float, type(None))  # a figure (NaN and inf are written as null)

RUN = {
    "lab?": str, "framework?": str, "device?": str, "dtype?": str, "weights?": str, "init?": str, "seed?": int,
    "execution?": str, "status?": str, "error?": str, "steps": [int], "loss": [NUM], "timing?": {"*": ANY},
    "final?": {"*": ANY}, "evals?": {"*": dict}, "epoch_cost?": [NUM], "epochs?": [dict], "data?": dict,
    "machine?": dict, "versions?": {"*": str}, "companion?": {"steps": [int], "loss": [NUM], "*": ANY},
    "pretrain?": dict, "same_as_shared?": bool, "*": ANY,
}

PARITY = {
    "verdict": str, "verdict_kind?": str, "steps?": int, "threshold?": NUM, "max_abs_diff?": NUM,
    "max_rel_diff?": NUM, "first_divergence_step?": Maybe(int), "growth_per_step?": NUM, "sides?": {"*": dict},
    "quantities?": {"*": dict}, "tiers?": {"*": Maybe(dict)}, "*": ANY,
}

LAB = {
    "format": int, "lab": str, "status": str, "key": dict, "title?": str, "notebook?": str, "task?": str,
    "notes?": Maybe(str), "masks?": str, "reference?": dict, "flops_per_step?": int, "raw_pixel_reference?": bool,
    "model_labels?": [str], "threads?": {"*": Maybe(int)}, "runs?": {"*": RUN}, "native?": {"*": RUN},
    "parity?": Maybe(PARITY), "per_step?": {"*": [NUM]}, "companion_parity?": Maybe(dict), "wall_s?": NUM,
    "peak?": {"*": {"gflops": NUM, "*": ANY}}, "costs?": {"*": {"wall_s": NUM, "cpu_s": NUM, "*": ANY}},
    "error?": str, "*": ANY,
}

STUDY = {
    "format": int, "lab": str, "framework": str, "steps": int, "key": dict, "status": str, "runs": {"*": RUN},
    "native_init?": Maybe({"ok": bool, "text": {"*": str}, "*": ANY}), "errors?": {"*": str}, "error?": str,
    "wall_s?": NUM, "*": ANY,
}


def _type_ok(value: Any, types: tuple) -> bool:
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def _name(shape: Any) -> str:
    if isinstance(shape, dict):
        return "an object"
    if isinstance(shape, list):
        return "a list"
    types = shape if isinstance(shape, tuple) else (shape,)
    return " or ".join("null" if t is type(None) else t.__name__ for t in types)


def problem(value: Any, shape: Any, where: str = "") -> str | None:
    """The first place where ``value`` does not have ``shape`` ("parity: expected an object, got str"), or
    None when it has it."""
    if shape is ANY:
        return None
    if isinstance(shape, Maybe):
        return None if value is None else problem(value, shape.shape, where)
    got = "null" if value is None else type(value).__name__
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return f"{where or 'record'}: expected an object, got {got}"
        for key, sub in shape.items():
            name = key.rstrip("?")
            if key == "*":
                continue
            if name not in value:
                if key.endswith("?"):
                    continue
                return f"{where + '.' if where else ''}{name}: missing"
            found = problem(value[name], sub, f"{where + '.' if where else ''}{name}")
            if found:
                return found
        rest = shape.get("*")
        for key, item in value.items():
            if rest is not None and f"{key}?" not in shape and key not in shape:
                found = problem(item, rest, f"{where + '.' if where else ''}{key}")
                if found:
                    return found
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{where}: expected a list, got {got}"
        return next((p for i, item in enumerate(value) if (p := problem(item, shape[0], f"{where}[{i}]"))), None)
    if not _type_ok(value, shape if isinstance(shape, tuple) else (shape,)):
        return f"{where}: expected {_name(shape)}, got {got}"
    return None
