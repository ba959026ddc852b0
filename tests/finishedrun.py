"""Finished runs made by hand in a MemoryStore, for unit tests of the reports."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from planner.store import Batch, CommandRecord, EventRecord, MemoryStore, RunRecord
from planner.tally import FinishedRun, read_finished_run

RUN_ID = "20261122-070000-abcdef"
T0 = 1_795_330_000.0


def make_finished(commands: Mapping[str, tuple[str, bool | None, str | None]],
                  events: Sequence[tuple[float, str, str | None, Mapping[str, Any]]], *,
                  status: str = "ROLLED_BACK", exit_code: int = 1,
                  leftovers: Sequence[Mapping[str, Any]] = (),
                  read_only: Sequence[str] = ()) -> FinishedRun:
    """``commands``: id -> (final status, changed, parent); ``events``: (seconds after T0,
    kind, command id, data); the run ends with ``status`` and ``leftovers``."""
    store = MemoryStore()
    records = [CommandRecord(RUN_ID, iid, iid.split("[")[0], n, parent, f"thing/{iid}")
               for n, (iid, (_, _, parent)) in enumerate(commands.items())]
    store.create_run(RunRecord(RUN_ID, "handmade", "plan.yaml", "RUNNING", T0, {}, {},
                               "host", 1), records)
    log = [EventRecord(RUN_ID, T0 + at, kind, cid, dict(data), n + 1)
           for n, (at, kind, cid, data) in enumerate(events)]
    end = T0 + (events[-1][0] if events else 0.0)
    log.append(EventRecord(RUN_ID, end, "run", None,
                           {"status": status, "leftovers": list(leftovers)}, len(log) + 1))
    store.commit(RUN_ID, Batch(
        commands=[(iid, {"status": st, "changed": changed})
                  for iid, (st, changed, _) in commands.items()],
        events=log, run={"status": status, "ended_at": end}))
    return read_finished_run(store, RUN_ID, exit_code=exit_code, duration=2.5,
                        read_only=read_only)


def command(status: str, reason: str = "REGULAR_FLOW", **more: Any) -> dict[str, Any]:
    return {"status": status, "execution_reason": reason, **more}


# A parent with two children: one copied then reverted, one failed; the parent reverted.
FAILED_AND_REVERTED = make_finished(
    {"vm": ("REVERTED", True, None), "img[a]": ("REVERTED", True, "vm"),
     "img[b]": ("REVERT_SKIPPED", None, "vm"), "report": ("PENDING", None, None)},
    [
        (0.0, "run", None, {"status": "RUNNING"}),
        (0.1, "command", "vm", command("STARTING")),
        (0.2, "command", "vm", command("RUNNING")),
        (0.3, "command", "img[a]", command("STARTING")),
        (0.3, "command", "img[b]", command("STARTING")),
        (0.4, "retry", "img[b]", {"attempt": 1, "error": "busy"}),
        (0.5, "task", "img[a]", {"handle": "t-1", "task_status": "RUNNING",
                                 "execution_reason": "REGULAR_FLOW"}),
        (1.0, "task", "img[a]", {"handle": "t-1", "task_status": "SUCCEEDED", "polls": 3,
                                 "execution_reason": "REGULAR_FLOW"}),
        (1.0, "command", "img[a]", command("SUCCEEDED")),
        (1.1, "command", "img[b]", command("FAILED", error="exit status 1: \x1b[31mno\x1b[0m")),
        (1.1, "command", "vm", command("FAILED", error="a child failed")),
        (1.2, "run", None, {"status": "ROLLING_BACK"}),
        (1.3, "command", "img[b]", command("REVERT_SKIPPED", "ROLLBACK_FLOW")),
        (1.3, "command", "img[a]", command("REVERTING", "ROLLBACK_FLOW")),
        (1.4, "retry", "img[a]", {"attempt": 1, "error": "busy"}),
        (1.6, "command", "img[a]", command("REVERTED", "ROLLBACK_FLOW")),
        (1.7, "command", "vm", command("REVERTING", "ROLLBACK_FLOW")),
        (1.9, "command", "vm", command("REVERTED", "ROLLBACK_FLOW")),
    ])
