"""Statuses of commands and runs, and the one table that says which transitions are legal."""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "CHANGED_STATUSES",
    "DONE_OK",
    "NO_INVERSE",
    "REGULAR_FLOW",
    "ROLLBACK_FLOW",
    "TRANSITIONS",
    "UNSURE",
    "CommandStatus",
    "IllegalTransition",
    "RunStatus",
    "check_transition",
]

REGULAR_FLOW = "REGULAR_FLOW"
ROLLBACK_FLOW = "ROLLBACK_FLOW"


class CommandStatus:
    """Statuses of a command (plain strings: they are stored, printed and compared)."""

    PENDING = "PENDING"
    STARTING = "STARTING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    UNCHANGED = "UNCHANGED"
    SKIPPED = "SKIPPED"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"
    REVERTING = "REVERTING"
    REVERTED = "REVERTED"
    REVERT_SKIPPED = "REVERT_SKIPPED"
    REVERT_FAILED = "REVERT_FAILED"


class RunStatus:
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    ROLLING_BACK = "ROLLING_BACK"
    ROLLED_BACK = "ROLLED_BACK"
    ROLLBACK_FAILED = "ROLLBACK_FAILED"
    STOPPED = "STOPPED"
    INTERRUPTED = "INTERRUPTED"


S = CommandStatus
# Ended without blocking what waits for it.
DONE_OK = frozenset({S.SUCCEEDED, S.UNCHANGED, S.SKIPPED})
# The forward run may have left something behind that only an inverse removes.
CHANGED_STATUSES = frozenset({S.SUCCEEDED, S.RUNNING, S.FAILED, S.UNKNOWN, S.STARTING})

# Why a rollback left something that no later rollback can undo by itself: once it is
# removed by hand, `planctl rollback RUN --gone ID` says so and lets the rollback go on.
NO_INVERSE = "no inverse declared"
UNSURE = "run failed part-way and no `exists` probe can tell"

# A rollback may also fail before its REVERTING (a probe that cannot answer, an inverse
# that does not render, the cap on attempts): REVERT_FAILED straight away.
_REVERTIBLE = {S.REVERTING, S.REVERT_SKIPPED, S.REVERT_FAILED}
TRANSITIONS: Mapping[str, frozenset[str]] = {
    # A probe may settle a command before it starts; a render error fails it at once.
    S.PENDING: frozenset({S.STARTING, S.RUNNING, S.UNCHANGED, S.SKIPPED, S.FAILED}),
    # Resume may find that a STARTING command never happened (exists says absent).
    S.STARTING: frozenset({S.RUNNING, S.SUCCEEDED, S.FAILED, S.UNKNOWN, S.PENDING,
                           *_REVERTIBLE}),
    # RUNNING: an async task is polled, or a parent waits for its children.
    S.RUNNING: frozenset({S.SUCCEEDED, S.UNCHANGED, S.FAILED, S.UNKNOWN, *_REVERTIBLE}),
    S.SUCCEEDED: frozenset(_REVERTIBLE),
    # A parent whose own run changed nothing still ends with failure when a child fails.
    S.UNCHANGED: frozenset({S.FAILED}),
    S.SKIPPED: frozenset(),
    S.FAILED: frozenset(_REVERTIBLE),
    S.UNKNOWN: frozenset({S.RUNNING, S.SUCCEEDED, S.FAILED, *_REVERTIBLE}),
    S.REVERTING: frozenset({S.REVERTED, S.REVERT_FAILED, S.REVERT_SKIPPED}),
    S.REVERT_FAILED: frozenset({S.REVERTING, S.REVERT_SKIPPED, S.REVERT_FAILED}),
    S.REVERTED: frozenset(),
    S.REVERT_SKIPPED: frozenset(),
}


class IllegalTransition(Exception):
    """A status change the table forbids: a bug in the engine, never a user error."""


def check_transition(command: str, old: str, new: str) -> None:
    """Raise IllegalTransition unless ``old → new`` is in the table."""
    if new != old and new not in TRANSITIONS[old]:
        raise IllegalTransition(f"{command}: {old} → {new} is not a legal transition")
