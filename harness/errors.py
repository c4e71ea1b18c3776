"""The error types a user can cause, below every other harness module (no imports, no cycles).

Each ends a command with one ``error: <message>`` line on stderr and exit status 2 (see ``harness.commands.cli``).
"""

from __future__ import annotations

EXIT_USAGE = 2


class UsageError(Exception):
    """A command line that cannot be run; the message is the one line shown."""


class LabError(ValueError):
    """An unknown lab or an option value a lab cannot take."""


class DataError(ValueError):
    """A data source is missing, unreadable or malformed; a one-line message naming the file and fault."""


class BackendError(RuntimeError):
    """A framework that is not installed, or a device it does not have."""


class RunDiverged(RuntimeError):
    """The loss became NaN or infinite; ``result`` holds what was logged before."""

    def __init__(self, message: str, result: dict) -> None:
        super().__init__(message)
        self.result = result


USER_ERRORS = (UsageError, LabError, DataError, BackendError, RunDiverged)
