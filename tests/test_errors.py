"""Tests of planner.errors: how diagnostics read and how PlanError orders them."""

from __future__ import annotations

import pytest

from planner.errors import (
    Diagnostic,
    LockedError,
    PlanctlError,
    PlanError,
    Severity,
    StateError,
    UsageError,
    format_path,
)


def test_format_path_reads_like_the_plan() -> None:
    """Paths print as `commands[2].run.command`; the root prints as nothing."""
    assert format_path(("commands", 2, "run", "command")) == "commands[2].run.command"
    assert format_path(()) == ""


def test_a_located_diagnostic_reads_file_line_column_severity_path_message_hint() -> None:
    """`plan.yaml:12:5: error: path: message (hint)` is the one format for everything."""
    found = Diagnostic(("commands", 0, "id"), "bad id", "fix it").located("plan.yaml", 12, 5)
    assert str(found) == "plan.yaml:12:5: error: commands[0].id: bad id (fix it)"
    warning = Diagnostic((), "hmm", severity=Severity.WARNING, file="p.yaml", line=1, column=1)
    assert str(warning) == "p.yaml:1:1: warning: hmm"
    assert str(Diagnostic((), "unplaced")) == "<plan>: error: unplaced"


@pytest.mark.parametrize("brk", ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x85", "\u2028"])
def test_a_diagnostic_is_always_one_line(brk: str) -> None:
    """Line breaks in keys or values quoted by a message are escaped, never printed."""
    found = Diagnostic(("vars", f"a{brk}b"), f"unknown key `a{brk}b`", file="p", line=1, column=1)
    assert len(str(found).splitlines()) == 1


def test_plan_errors_sort_diagnostics_and_count_the_rest() -> None:
    """PlanError orders by position and names the first error and how many follow."""
    late = Diagnostic((), "late", file="p", line=9, column=1)
    early = Diagnostic((), "early", file="p", line=2, column=3)
    note = Diagnostic((), "note", severity=Severity.WARNING, file="p", line=1, column=1)
    error = PlanError([late, note, early])
    assert list(error.diagnostics) == [note, early, late]
    assert str(error) == "p:2:3: error: early (and 1 more)"


def test_the_exception_family_and_exit_codes() -> None:
    """Every deliberate error is a PlanctlError; a locked entity exits 4, the rest 3."""
    for cls in (PlanError, UsageError, StateError, LockedError):
        assert issubclass(cls, PlanctlError)
    assert LockedError.exit_code == 4
    assert UsageError.exit_code == PlanError.exit_code == StateError.exit_code == 3
