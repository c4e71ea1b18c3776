"""Parity between two run configurations: does the other side compute the same thing, and if not, where do
the two part? (``docs/parity.md``)

``configs`` (what a side is: backend, device, execution, dtype), ``divergence`` (figures of two trajectories or
tensors), ``quantities`` (everything a run produces, compared), ``exact`` (the float64 "same math" tier) with
``localise`` (the first step and tensor that part, through each backend's ``trace``), ``ensemble`` (the
statistical tier for float32 and GPU runs), ``verdict`` (one vocabulary) and ``api`` (:func:`compare`).
"""

from harness.parity.api import compare
from harness.parity.configs import RunConfig, parse_config
from harness.parity.divergence import divergence, growth_rate

__all__ = ["RunConfig", "compare", "divergence", "growth_rate", "parse_config"]
