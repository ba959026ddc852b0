"""Tests of planner.status: the one transition table and the function that checks it."""

from __future__ import annotations

from collections import deque

import pytest

from planner.status import (
    CHANGED_STATUSES,
    DONE_OK,
    TRANSITIONS,
    CommandStatus,
    IllegalTransition,
    RunStatus,
    check_transition,
)

S = CommandStatus
ALL = frozenset(v for k, v in vars(CommandStatus).items() if k.isupper())


def reachable(start: str) -> set[str]:
    """Every status reachable from ``start`` through the table (breadth first)."""
    seen = {start}
    queue = deque([start])
    while queue:
        for nxt in TRANSITIONS[queue.popleft()]:
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen


def test_the_spec_lists_twelve_command_statuses() -> None:
    """CommandStatus names exactly the twelve statuses of SPEC §2, spelled as stored."""
    expected = {
        "PENDING", "STARTING", "RUNNING", "SUCCEEDED", "UNCHANGED", "SKIPPED", "FAILED",
        "REVERTING", "REVERTED", "REVERT_SKIPPED", "REVERT_FAILED", "UNKNOWN",
    }
    assert expected == ALL
    assert {getattr(S, name) for name in vars(CommandStatus) if name.isupper()} == ALL


def test_run_statuses_match_the_spec() -> None:
    """RunStatus names exactly the seven run statuses of SPEC §2."""
    names = {v for k, v in vars(RunStatus).items() if k.isupper()}
    assert names == {"RUNNING", "SUCCEEDED", "ROLLING_BACK", "ROLLED_BACK",
                     "ROLLBACK_FAILED", "STOPPED", "INTERRUPTED"}


def test_table_has_a_row_for_every_status_and_names_only_known_statuses() -> None:
    """Every status has a row, and every target of a row is a known status."""
    assert set(TRANSITIONS) == ALL
    for old, targets in TRANSITIONS.items():
        assert targets <= ALL, old


@pytest.mark.parametrize(("old", "new"), [
    (S.PENDING, S.STARTING),
    (S.PENDING, S.SKIPPED),
    (S.PENDING, S.UNCHANGED),
    (S.PENDING, S.FAILED),
    (S.PENDING, S.RUNNING),  # a parent whose exists says present waits for its children
    (S.STARTING, S.RUNNING),
    (S.STARTING, S.SUCCEEDED),
    (S.STARTING, S.FAILED),
    (S.STARTING, S.PENDING),  # resume: exists says it never happened
    (S.RUNNING, S.SUCCEEDED),
    (S.RUNNING, S.FAILED),
    (S.RUNNING, S.UNCHANGED),
    (S.UNCHANGED, S.FAILED),  # a quiet parent whose child failed
    (S.SUCCEEDED, S.REVERTING),
    (S.SUCCEEDED, S.REVERT_SKIPPED),
    (S.FAILED, S.REVERTING),
    (S.UNKNOWN, S.REVERTING),
    (S.REVERTING, S.REVERTED),
    (S.REVERTING, S.REVERT_FAILED),
    (S.REVERTING, S.REVERT_SKIPPED),
    (S.REVERT_FAILED, S.REVERTING),  # `planctl rollback` retries an inverse
    (S.SUCCEEDED, S.REVERT_FAILED),  # its exists probe could not answer
    (S.REVERT_FAILED, S.REVERT_FAILED),  # the next rollback's probe could not either
])
def test_legal_transitions_pass(old: str, new: str) -> None:
    """A transition the table allows is accepted silently."""
    check_transition("c", old, new)


@pytest.mark.parametrize(("old", "new"), [
    (S.PENDING, S.SUCCEEDED),  # no side effect without a recorded intent
    (S.PENDING, S.REVERTING),
    (S.SUCCEEDED, S.RUNNING),
    (S.SUCCEEDED, S.FAILED),
    (S.SUCCEEDED, S.PENDING),
    (S.FAILED, S.SUCCEEDED),
    (S.SKIPPED, S.STARTING),
    (S.REVERTED, S.REVERTING),  # never inverted twice
    (S.REVERTED, S.SUCCEEDED),
    (S.REVERT_SKIPPED, S.REVERTING),
    (S.UNCHANGED, S.REVERTING),  # not this run's doing: never inverted
    (S.REVERT_FAILED, S.REVERTED),  # only through a new REVERTING
])
def test_illegal_transitions_raise(old: str, new: str) -> None:
    """A transition missing from the table raises IllegalTransition naming the command."""
    with pytest.raises(IllegalTransition, match=rf"clone\[disk0\]: {old} → {new}"):
        check_transition("clone[disk0]", old, new)


@pytest.mark.parametrize("status", sorted(ALL))
def test_staying_in_a_status_is_always_allowed(status: str) -> None:
    """Re-recording the current status (e.g. with new fields) is not a transition."""
    check_transition("c", status, status)


def test_an_unknown_target_status_is_illegal() -> None:
    """A misspelt target status is refused like any illegal transition."""
    with pytest.raises(IllegalTransition):
        check_transition("c", S.RUNNING, "SUCCEDED")


def test_terminal_statuses_have_no_way_out() -> None:
    """SKIPPED, REVERTED and REVERT_SKIPPED are final; every other status can still move."""
    terminal = {s for s, targets in TRANSITIONS.items() if not targets}
    assert terminal == {S.SKIPPED, S.REVERTED, S.REVERT_SKIPPED}
    for status in terminal:
        for other in ALL - {status}:
            with pytest.raises(IllegalTransition):
                check_transition("c", status, other)


def test_every_status_is_reachable_from_pending() -> None:
    """Starting from PENDING, the table reaches every status."""
    assert reachable(S.PENDING) == ALL


def test_pending_is_never_reached_except_by_resuming_a_starting_command() -> None:
    """Only STARTING leads back to PENDING (resume settling an intent that never acted)."""
    assert {s for s, targets in TRANSITIONS.items() if S.PENDING in targets} == {S.STARTING}


def test_every_reverting_path_ends_in_a_terminal_or_retriable_status() -> None:
    """From REVERTING, only REVERTED, REVERT_SKIPPED and REVERT_FAILED (and back) are reachable."""
    assert reachable(S.REVERTING) == {S.REVERTING, S.REVERTED, S.REVERT_SKIPPED,
                                      S.REVERT_FAILED}


def test_done_ok_statuses_are_the_ones_that_unblock_dependents() -> None:
    """SUCCEEDED, UNCHANGED and SKIPPED let dependents run; nothing else does."""
    assert frozenset({S.SUCCEEDED, S.UNCHANGED, S.SKIPPED}) == DONE_OK


def test_changed_statuses_never_include_settled_or_untouched_ones() -> None:
    """A command PENDING, UNCHANGED, SKIPPED or already reverted is never a rollback candidate."""
    assert CHANGED_STATUSES <= ALL
    assert not CHANGED_STATUSES & {S.PENDING, S.UNCHANGED, S.SKIPPED, S.REVERTED,
                                   S.REVERT_SKIPPED}
    assert {S.SUCCEEDED, S.FAILED, S.UNKNOWN} <= CHANGED_STATUSES


@pytest.mark.parametrize(("flows", "asked"), [
    # `planctl rollback` of a run that succeeded, interrupted, continued by `resume`
    (["RUNNING", "SUCCEEDED", "ROLLING_BACK", "INTERRUPTING", "INTERRUPTED", "RESUMED",
      "ROLLING_BACK", "ROLLED_BACK"], True),
    # `planctl rollback` of an interrupted apply, then of a stopped one
    (["RUNNING", "INTERRUPTING", "INTERRUPTED", "ROLLING_BACK", "ROLLED_BACK"], True),
    (["RUNNING", "STOPPED", "ROLLING_BACK", "INTERRUPTED", "RESUMED", "ROLLING_BACK"], True),
    # a failed apply's own rollback, interrupted and continued by `resume`
    (["RUNNING", "ROLLING_BACK", "INTERRUPTING", "INTERRUPTED", "RESUMED", "ROLLING_BACK",
      "ROLLED_BACK"], False),
    # a resumed apply that went on forward, failed and rolled back itself
    (["RUNNING", "INTERRUPTING", "INTERRUPTED", "RESUMED", "ROLLING_BACK", "ROLLED_BACK"],
     False),
    # ... and twice interrupted on the way
    (["RUNNING", "INTERRUPTED", "RESUMED", "ROLLING_BACK", "INTERRUPTED", "RESUMED",
      "ROLLING_BACK", "ROLLED_BACK"], False),
    (["RUNNING", "SUCCEEDED"], False),  # no rollback at all
])
def test_a_rollback_is_told_asked_for_or_begun_by_a_failed_apply(
        flows: list[str], asked: bool) -> None:
    """`resume` ends a rollback `planctl rollback` began as that command ends (exit 0 once
    nothing is left), and a failed apply's own rollback as a failed apply (exit 1): told
    from the run's `run` events, through the resumes that continued it."""
    from planner.executor import rollback_asked

    assert rollback_asked(flows) is asked
