"""Which recorded runs `planctl prune` may forget, and forgetting them.

A state store keeps every run and its events: a CI job applying a plan every few minutes
grows it without end. A run can be forgotten only when nothing more can be done with it:
it ended, holds no lock, and `planctl rollback` would find nothing to undo (it was rolled
back, or everything it did was read-only or irreversible). A SUCCEEDED run whose changes are
still in place is kept unless the caller says to forget those too: once forgotten, they can
no longer be rolled back by planctl. A run with leftovers (STOPPED, ROLLBACK_FAILED) or one
that did not end (RUNNING, INTERRUPTED, ROLLING_BACK) is always kept.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

from .errors import PlanctlError
from .status import RunStatus
from .store import RunRecord, Store

# Statuses a run may be forgotten in; the store deletes it only if it still has one of them.
ENDED_CLEAN = frozenset({RunStatus.SUCCEEDED, RunStatus.ROLLED_BACK})


@dataclass(frozen=True)
class Verdict:
    """One run looked at: whether it goes, and what to know about it (why it is kept)."""

    run: RunRecord
    remove: bool
    note: str


def judge(store: Store, *, keep: int | None, older_than: float | None, now: float,
          succeeded: bool) -> list[Verdict]:
    """Every run the selection reaches, newest first: those beyond the ``keep`` newest and
    started more than ``older_than`` seconds before ``now`` (either may be None: no
    limit), each with whether it may be removed. ``succeeded``: also SUCCEEDED runs whose
    changes are still in place."""
    runs = store.list_runs(limit=sys.maxsize, plans=False)
    if keep is not None:
        runs = runs[keep:]
    if older_than is not None:
        runs = [r for r in runs if r.started_at <= now - older_than]
    held = {lock.run_id for lock in store.list_locks()}
    return [_judge(store, run, run.id in held, succeeded) for run in runs]


def _judge(store: Store, run: RunRecord, held: bool, succeeded: bool) -> Verdict:
    status = run.status
    if status in (RunStatus.STOPPED, RunStatus.ROLLBACK_FAILED):
        return Verdict(run, False, f"leftovers to undo (planctl rollback {run.id})")
    if status not in ENDED_CLEAN:
        return Verdict(run, False, f"not ended (planctl resume {run.id})")
    if held:
        return Verdict(run, False, "it holds entity locks (planctl locks)")
    if status == RunStatus.ROLLED_BACK or _nothing_to_undo(store, run.id):
        return Verdict(run, True, "")
    if succeeded:
        return Verdict(run, True, "its changes stay, and planctl can no longer undo them")
    return Verdict(run, False, "its changes can still be rolled back (--include-succeeded "
                               "forgets it)")


def _nothing_to_undo(store: Store, run_id: str) -> bool:
    """Whether `planctl rollback` of the run would find nothing to undo; False when its
    plan cannot be rebuilt to tell (a plugin that is gone): it is kept."""
    from .executor import Runner

    try:
        return Runner.from_store(store, run_id, secrets={}).nothing_to_undo()
    except PlanctlError:
        return False


def remove(store: Store, verdicts: Sequence[Verdict]) -> list[str]:
    """Delete the runs judged removable, one transaction each; the ids deleted. One that
    changed since it was judged (a rollback of it started) is left alone."""
    return [v.run.id for v in verdicts
            if v.remove and store.delete_run(v.run.id, ENDED_CLEAN)]
