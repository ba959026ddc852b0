"""Embed planctl: preview, apply with a listener, watch a failure roll back, clean up.

Run it from anywhere (``python examples/api/embed.py``); it drives the seed plan
``plans/vm-from-template/plan.yaml`` against a throw-away storage directory and state
file, and exits 0 when every step ended as expected.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import planner
from planner import ApplyOptions, EventRecord, RunOutcome

PLAN = Path(__file__).resolve().parents[2] / "plans" / "vm-from-template" / "plan.yaml"


def show(event: EventRecord) -> None:
    """A listener: called with every event as it is recorded (the ones the CLI prints)."""
    data = event.data
    if event.kind == "run":
        print(f"  run {data['status']}")
    elif event.kind == "command":
        flow = " [ROLLBACK_FLOW]" if data.get("execution_reason") == "ROLLBACK_FLOW" else ""
        print(f"  {data['status']:<14} {event.command_id}{flow}")
    elif event.kind == "task":
        print(f"  task {data['task_status']:<9} {event.command_id}")


def report(what: str, outcome: RunOutcome) -> None:
    # exit_code is what `planctl apply` exits with; `planctl rollback` exits 0 when
    # nothing is left (ROLLED_BACK) and 2 when leftovers remain.
    code = outcome.exit_code if what == "apply" else 2 if outcome.leftovers else 0
    print(f"{what}: {outcome.status}, exit code {code}")
    for leftover in outcome.leftovers:
        print(f"  leftover {leftover.command} ({leftover.entity}): {leftover.reason}")


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="planctl-embed-"))
    os.environ["STORE_DIR"] = str(work / "storage")  # where the stand-in keeps VMs and images
    store = planner.SQLiteStore(work / "state.db")
    try:
        # 1. What would apply do? Only `exists` probes run; nothing is written.
        loaded = planner.load_plan(PLAN, variables={"vm": "vm-7", "copy_seconds": 0.1})
        preview = planner.preview_plan(loaded)
        print(planner.format_preview(preview), end="")
        print(f"preview: {len(preview.changes)} commands would change, "
              f"exit code {preview.exit_code(detailed=True)} with --detailed-exitcode")

        # 2. One copy fails: everything the run changed is undone, in reverse order.
        failing = planner.load_plan(PLAN, variables={"vm": "vm-7", "copy_seconds": 0.1,
                                                     "fail_disks": "disk1"})
        print("\napply, with the copy of disk1 failing:")
        rolled = planner.apply_plan(failing, store, listener=show)
        report("apply", rolled)

        # 3. The same failure with on_failure=stop leaves it all; rollback_run undoes it.
        print("\napply --no-rollback, then rollback:")
        stopped = planner.apply_plan(failing, store, options=ApplyOptions(on_failure="stop"))
        report("apply", stopped)
        undone = planner.rollback_run(store, stopped.run_id, listener=show)
        report("rollback", undone)

        # 4. A run that succeeds, and a preview that now finds everything present.
        print()
        ok = planner.apply_plan(loaded, store)
        report("apply", ok)
        again = planner.preview_plan(loaded)
        print(f"preview after apply: {len(again.changes)} commands would change, exit code "
              f"{again.exit_code(detailed=True)} with --detailed-exitcode")
        cleanup = planner.rollback_run(store, ok.run_id)
        report("rollback", cleanup)
    finally:
        store.close()
        shutil.rmtree(work, ignore_errors=True)
    expected = [(rolled.exit_code, 1), (stopped.exit_code, 2), (undone.status, "ROLLED_BACK"),
                (ok.exit_code, 0), (again.exit_code(detailed=True), 0),
                (cleanup.status, "ROLLED_BACK")]
    return 0 if all(got == want for got, want in expected) else 1


if __name__ == "__main__":
    sys.exit(main())
