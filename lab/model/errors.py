"""Errors the lab reports to people, each with the exit code the CLI contract gives it.

Exit codes (the README's contract): 0 success; 1 the lab or a check is not as expected;
2 bad input (usage or topology); 3 environment (not root, missing kernel feature or tool).
"""

from __future__ import annotations


class LabError(Exception):
    """A failure we can explain in one sentence; never shown as a traceback."""

    exit_code = 1

    def __init__(self, message: str, *, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class NotAsExpected(LabError):
    """The lab, or a check run against it, is not in the expected state (exit 1)."""

    exit_code = 1


class BadInput(LabError):
    """Usage error or invalid topology (exit 2)."""

    exit_code = 2


class EnvironmentProblem(LabError):
    """Not root, not Linux, a missing kernel feature or tool (exit 3)."""

    exit_code = 3
