"""The exception family of planctl and the located diagnostics plan errors carry.

Exception tree::

    PlanctlError                 every error planctl raises on purpose
    ├── PlanError                the plan is invalid (exit 3); carries located Diagnostics
    ├── UsageError               bad command-line or API arguments, an unknown run (exit 3)
    ├── StateError               the state store is unusable, or a write names no run (exit 3)
    └── LockedError              an entity is locked by another run (exit 4)
        └── LockLostError        a run lost its locks to another planctl while it ran (130)

Anything else escaping the CLI is a bug: the CLI writes its traceback to a debug log
and prints a one-line message pointing there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "Diagnostic",
    "LockLostError",
    "LockedError",
    "PlanError",
    "PlanctlError",
    "Severity",
    "StateError",
    "UsageError",
    "format_path",
]

Path = tuple[str | int, ...]
# Every character str.splitlines() breaks on, written as an escape instead.
_ONE_LINE = {ord(c): c.encode("unicode_escape").decode("ascii")
             for c in "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"}


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


def format_path(path: Path) -> str:
    """Render a JSON path as the user writes it: ``commands[2].run.command``."""
    out: list[str] = []
    for part in path:
        if isinstance(part, int):
            out.append(f"[{part}]")
        elif out:
            out.append(f".{part}")
        else:
            out.append(part)
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One finding about a plan, pinned to a JSON path and, once located, a file position."""

    path: Path
    message: str
    hint: str | None = None
    severity: Severity = Severity.ERROR
    file: str | None = None
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based
    # Points at the key (``foo:``) rather than its value; used for unknown keys.
    at_key: bool = False

    def located(self, file: str, line: int, column: int) -> Diagnostic:
        return Diagnostic(
            self.path, self.message, self.hint, self.severity, file, line, column, self.at_key
        )

    def __str__(self) -> str:
        where = self.file or "<plan>"
        if self.line is not None:
            where = f"{where}:{self.line}:{self.column}"
        field = format_path(self.path)
        text = f"{where}: {self.severity.value}: "
        if field:
            text += f"{field}: "
        text += self.message
        if self.hint:
            text += f" ({self.hint})"
        # One diagnostic, one line: keys and values quoted in messages may hold line breaks.
        return text.translate(_ONE_LINE)

    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.file or "", self.line or 0, self.column or 0, self.message)


class PlanctlError(Exception):
    """Base of every error planctl raises deliberately."""

    exit_code = 3


class PlanError(PlanctlError):
    """A plan failed to load; ``diagnostics`` lists every error found, located."""

    def __init__(self, diagnostics: Iterable[Diagnostic]) -> None:
        self.diagnostics: Sequence[Diagnostic] = sorted(diagnostics, key=Diagnostic.sort_key)
        errors = [d for d in self.diagnostics if d.severity is Severity.ERROR]
        first = str(errors[0]) if errors else "invalid plan"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(first + more)


class UsageError(PlanctlError):
    """The caller asked for something impossible (bad flag, bad --var, unknown run)."""


class StateError(PlanctlError):
    """The state store cannot be used as asked."""


class LockedError(PlanctlError):
    """An entity the run needs is held by another run."""

    exit_code = 4


class LockLostError(LockedError):
    """The executor of a run lost the run's lock while it ran: another planctl took the run
    over (its `resume` or `rollback`, once this one looked dead: paused, or its heartbeat
    late) or `planctl unlock` released it. Nothing more was recorded or started; the run
    stopped where its last commit left it, as if killed."""

    exit_code = 130
