"""How each check judges a mutation's settings: one runner per ``Mutation.tier``, each returning a
:class:`Finding` (whether it found a difference, and where). The mutation suite (``tests/``) and ``dlzta
selfcheck`` both call these, mutated and unmutated (the false-alarm control).

- ``exact``: the exact tier over a short float64 window (``EXACT_STEPS``) from the float32 run's shared weights,
  as ``compare`` does; where: its localisation, else the first quantity over tolerance.
- ``statistical``: both sides' own float32 runs (in their execution modes) over the tier's window, judged against
  their one-ulp twin ensembles; where: the first step beyond the band.
- ``init``: the native-initialisation check of the lab's model in the mutated backend (``harness.parity.initcheck``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from harness.labs import get_lab
from harness.run.runner import RunOptions, execute, prepare

EXACT_STEPS = 6


@dataclass(frozen=True)
class Finding:
    """A check's finding on one run of a mutation's settings: ``found`` a difference, ``where`` it named it."""

    found: bool
    where: str
    text: str
    off: str | None = None  # the side a referee named, where there is one


def options(lab: str, overrides: dict, dtype: str, device: str, steps: int) -> RunOptions:
    """The run options every check of the suite uses: bundled data, shared weights and masks."""
    return RunOptions(data="mnist-5k", dtype=dtype, device=device, weights="shared", mask_mode="shared", steps=steps,
                      overrides=dict(overrides))


def sides(opts: RunOptions, configs: tuple[str, str] | None) -> tuple:
    """The two run configurations: ``configs`` (``BACKEND[:FIELD]...``) or the first two registered backends."""
    from harness.parity.api import resolve

    return resolve(opts, *(configs or (None, None)))


def exact(lab: str, overrides: dict, configs: tuple[str, str] | None = None, device: str = "cpu",
          dtype: str = "float32") -> Finding:
    """The exact tier (float64) on these settings."""
    from harness.parity.configs import run_keys
    from harness.parity.exact import exact_tier

    opts = options(lab, overrides, dtype, device, EXACT_STEPS)
    a, b = sides(opts, configs)
    tier = exact_tier(prepare(get_lab(lab), opts), a, b, run_keys(a, b))
    if tier["localised"] is not None:
        where = tier["localised"]["what"]
    else:
        failed = [(f["first_step_over"], name) for name, f in tier["quantities"].items() if not f["ok"]]
        where = min(failed)[1] if failed else ""
    return Finding(not tier["ok"], where, tier["text"], (tier["referee"] or {}).get("off"))


def statistical(lab: str, overrides: dict, configs: tuple[str, str] | None = None, device: str = "cpu",
                dtype: str = "float32") -> Finding:
    """The statistical tier on these settings, between the two sides' own runs."""
    from harness.parity.api import statistical_tier
    from harness.parity.configs import for_config
    from harness.parity.ensemble import LAG, WINDOW

    opts = options(lab, overrides, dtype, device, WINDOW + LAG)
    a, b = sides(opts, configs)
    prepared = prepare(get_lab(lab), opts)
    runs = tuple(execute(for_config(prepared, c), c.backend).losses for c in (a, b))
    tier = statistical_tier(prepared, a, b, runs=runs)
    return Finding(not tier["ok"], f"step {tier['first_step_over']}" if not tier["ok"] else "", tier["text"])


def init(lab: str, overrides: dict, configs: tuple[str, str] | None = None, device: str = "cpu",
         dtype: str = "float32", backends: tuple[str, ...] | None = None) -> Finding:
    """The native-initialisation check of the lab's model (in ``backends``, default both sides')."""
    from harness.parity import initcheck

    model = get_lab(lab).with_options(**overrides).model if overrides else get_lab(lab).model
    names = backends or tuple(dict.fromkeys(c.backend for c in sides(options(lab, overrides, dtype, device, 1),
                                                                       configs)))
    result = initcheck.check(model, names, seed=11, dtype=dtype)
    first = (result.get("failures") or [{}])[0]
    return Finding(not result["ok"], first.get("tensor", ""), result["text"], first.get("backend"))


RUNNERS: dict[str, Callable[..., Finding]] = {"exact": exact, "statistical": statistical, "init": init}
NEEDS_FLOAT32 = ("statistical",)  # the tiers that judge a float32 run: not applicable where float64 is asked


def applies(tier: str, dtype: str) -> bool:
    """Whether a mutation of ``tier`` can be judged in ``dtype``."""
    return tier in RUNNERS and (dtype == "float32" or tier not in NEEDS_FLOAT32)


def run(tier: str, lab: str, overrides: dict, configs: tuple[str, str] | None = None, device: str = "cpu",
        dtype: str = "float32", **kw: object) -> Finding:
    """``RUNNERS[tier]`` on these settings."""
    return RUNNERS[tier](lab, overrides, configs, device, dtype, **kw)


__all__ = ["EXACT_STEPS", "Finding", "RUNNERS", "applies", "run"]
