"""The old home of the comparison, kept for its callers: everything lives in :mod:`harness.parity` now."""

from harness.parity.api import compare
from harness.parity.divergence import divergence, growth_rate

__all__ = ["compare", "divergence", "growth_rate"]
