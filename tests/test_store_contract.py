"""One contract suite for every Store backend (MemoryStore, SQLiteStore), plus SQLite specifics."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from planner.errors import LockedError, LockLostError, StateError
from planner.sqlite_store import SCHEMA_VERSION, SQLiteStore
from planner.store import (
    Batch,
    CommandRecord,
    EventRecord,
    LockRecord,
    MemoryStore,
    RunRecord,
    Store,
    TaskEnd,
    TaskRecord,
    run_key,
)

SNAPSHOT: dict[str, Any] = {
    "name": "add-vm",
    "vars": {"vm": "vm-42", "disks": ["disk0", "disk1"], "n": 3, "ratio": 0.5,
             "flag": True, "none": None, "nested": {"a": [1, {"b": "ü→✓"}]}},
    "commands": [{"id": "add_vm", "run": {"command": ["./store", "create-vm", "{{ vm }}"]}}],
}
VARIABLES: dict[str, Any] = {"vm": "vm-42", "disks": ["disk0", "disk1"], "n": 3}


def run_record(run_id: str = "run-1", started_at: float = 1000.0, **extra: Any) -> RunRecord:
    """A run record as the executor creates it."""
    return RunRecord(run_id, "add-vm", "/plans/plan.yaml", "RUNNING", started_at, SNAPSHOT,
                     VARIABLES, host="host-a", pid=4242, **extra)


def commands(run_id: str = "run-1") -> list[CommandRecord]:
    """Three command records, deliberately not given in plan order."""
    return [
        CommandRecord(run_id, "clone[disk1]", "clone", 2, parent="add_vm",
                      entity="image/vm-42-disk1"),
        CommandRecord(run_id, "add_vm", "add_vm", 0, entity="vm/vm-42"),
        CommandRecord(run_id, "clone[disk0]", "clone", 1, parent="add_vm",
                      entity="image/vm-42-disk0"),
    ]


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each backend in turn: a fresh MemoryStore, or a SQLiteStore on a file in tmp_path."""
    backend: Store = MemoryStore() if request.param == "memory" else SQLiteStore(
        tmp_path / "s.db")
    try:
        yield backend
    finally:
        backend.close()


@pytest.fixture
def run(store: Store) -> Store:
    """The store with run-1 and its three commands created."""
    store.create_run(run_record(), commands())
    return store


def test_create_run_then_get_run_round_trips_every_field(store: Store) -> None:
    """get_run returns the record as created, snapshot and variables as equal JSON values."""
    record = run_record(error=None)
    store.create_run(record, commands())
    got = store.get_run("run-1")
    assert got == record
    assert got is not None and got.snapshot["vars"]["nested"] == {"a": [1, {"b": "ü→✓"}]}


def test_get_run_of_an_unknown_run_is_none(store: Store) -> None:
    """Asking for a run that was never created gives None, not an error."""
    assert store.get_run("nope") is None
    assert store.get_commands("nope") == {}
    assert store.get_tasks("nope") == []
    assert store.get_events("nope") == []


def test_created_commands_start_pending_with_their_fields(run: Store) -> None:
    """Commands come back with the fields given at creation and default status PENDING."""
    got = run.get_commands("run-1")
    assert set(got) == {"add_vm", "clone[disk0]", "clone[disk1]"}
    disk1 = got["clone[disk1]"]
    assert (disk1.spec_id, disk1.order, disk1.parent, disk1.entity) == (
        "clone", 2, "add_vm", "image/vm-42-disk1")
    assert all(c.status == "PENDING" and c.execution_reason == "REGULAR_FLOW"
               for c in got.values())
    assert all(c.changed is None and c.attempts == 0 for c in got.values())


def test_get_commands_is_ordered_by_plan_order(request: pytest.FixtureRequest,
                                               run: Store) -> None:
    """get_commands iterates in ``order``, whatever order the commands were created in."""
    assert list(run.get_commands("run-1")) == ["add_vm", "clone[disk0]", "clone[disk1]"]


def test_commit_updates_command_fields(run: Store) -> None:
    """A batch's command updates change only the named fields, JSON values included."""
    batch = Batch(commands=[
        ("add_vm", {"status": "STARTING", "params": {"action": "command",
                                                     "args": ["create-vm", "vm-42"]},
                    "started_at": 1001.5}),
        ("clone[disk0]", {"status": "SKIPPED", "ended_at": 1002.0}),
    ])
    run.commit("run-1", batch)
    run.commit("run-1", Batch(commands=[
        ("add_vm", {"status": "SUCCEEDED", "changed": True, "attempts": 2,
                    "result": {"rc": 0, "stdout": "uuid-1\n", "json": [1, 2]},
                    "outputs": {"uuid": "uuid-1"}, "ended_at": 1003.0}),
        ("clone[disk1]", {"status": "FAILED", "changed": False, "error": "exit status 1"}),
    ]))
    got = run.get_commands("run-1")
    vm = got["add_vm"]
    assert vm.status == "SUCCEEDED"
    assert vm.params == {"action": "command", "args": ["create-vm", "vm-42"]}
    assert vm.result == {"rc": 0, "stdout": "uuid-1\n", "json": [1, 2]}
    assert vm.outputs == {"uuid": "uuid-1"}
    assert (vm.changed, vm.attempts, vm.started_at, vm.ended_at) == (True, 2, 1001.5, 1003.0)
    assert vm.entity == "vm/vm-42"  # untouched
    assert got["clone[disk0]"].status == "SKIPPED"
    assert got["clone[disk0]"].params is None
    assert got["clone[disk1]"].changed is False
    assert got["clone[disk1]"].error == "exit status 1"


def test_commit_upserts_tasks_keyed_by_run_command_and_reason(run: Store) -> None:
    """A task with the same (run, command, execution_reason) replaces the earlier row."""
    spec = {"poll": ["./store", "task-status", "t-1"]}
    first = TaskRecord("run-1", "clone[disk0]", "REGULAR_FLOW", "t-1", "RUNNING",
                       "image/vm-42-disk0", spec, 10.0, 10.0, 0)
    run.commit("run-1", Batch(tasks=[first]))
    assert run.get_tasks("run-1") == [first]
    later = TaskRecord("run-1", "clone[disk0]", "REGULAR_FLOW", "t-1", "SUCCEEDED",
                       "image/vm-42-disk0", spec, 10.0, 12.5, 7)
    undo = TaskRecord("run-1", "clone[disk0]", "ROLLBACK_FLOW", "t-9", "RUNNING",
                      "image/vm-42-disk0", None, 13.0, 13.0, 0)
    run.commit("run-1", Batch(tasks=[later, undo]))
    tasks = sorted(run.get_tasks("run-1"), key=lambda t: t.execution_reason)
    assert tasks == [later, undo]


def test_commit_records_the_end_of_a_task_without_rewriting_it(run: Store) -> None:
    """A TaskEnd changes status, updated_at and polls of the task's row, and only those;
    in one batch it comes after the batch's whole tasks."""
    spec = {"poll": ["./store", "task-status", "t-1"]}
    first = TaskRecord("run-1", "clone[disk0]", "REGULAR_FLOW", "t-1", "RUNNING",
                       "image/vm-42-disk0", spec, 10.0, 10.0, 0)
    undo = TaskRecord("run-1", "clone[disk0]", "ROLLBACK_FLOW", "t-9", "RUNNING",
                      None, None, 13.0, 13.0, 0)
    run.commit("run-1", Batch(tasks=[first]))
    run.commit("run-1", Batch(tasks=[undo], task_ends=[
        TaskEnd("clone[disk0]", "REGULAR_FLOW", "SUCCEEDED", 12.5, 7),
        TaskEnd("clone[disk0]", "ROLLBACK_FLOW", "TIMED_OUT", 14.0, 3)]))
    tasks = sorted(run.get_tasks("run-1"), key=lambda t: t.execution_reason)
    assert tasks == [
        TaskRecord("run-1", "clone[disk0]", "REGULAR_FLOW", "t-1", "SUCCEEDED",
                   "image/vm-42-disk0", spec, 10.0, 12.5, 7),
        TaskRecord("run-1", "clone[disk0]", "ROLLBACK_FLOW", "t-9", "TIMED_OUT",
                   None, None, 13.0, 14.0, 3),
    ]


def test_commit_appends_events_with_their_seq(run: Store) -> None:
    """Events come back in seq order with kind, command and data intact."""
    first = [EventRecord("run-1", 1.0, "run", None, {"status": "RUNNING"}, 1),
             EventRecord("run-1", 1.1, "command", "add_vm",
                         {"status": "STARTING", "execution_reason": "REGULAR_FLOW"}, 2)]
    run.commit("run-1", Batch(events=first))
    second = [EventRecord("run-1", 1.2, "task", "clone[disk0]",
                          {"handle": "t-1", "nested": {"a": [1, None]}}, 3)]
    run.commit("run-1", Batch(events=second))
    assert run.get_events("run-1") == [*first, *second]


def test_commit_updates_run_fields(run: Store) -> None:
    """A batch's run fields change the run record and nothing else of it."""
    run.commit("run-1", Batch(run={"status": "SUCCEEDED", "ended_at": 1010.0}))
    got = run.get_run("run-1")
    assert got is not None
    assert (got.status, got.ended_at, got.error) == ("SUCCEEDED", 1010.0, None)
    assert got.snapshot == SNAPSHOT and got.host == "host-a" and got.pid == 4242


def test_one_batch_carries_commands_tasks_events_and_run_together(run: Store) -> None:
    """Everything in one batch is visible after one commit."""
    task = TaskRecord("run-1", "clone[disk0]", "REGULAR_FLOW", "t-1", "RUNNING")
    run.commit("run-1", Batch(
        commands=[("clone[disk0]", {"status": "RUNNING"})],
        tasks=[task],
        events=[EventRecord("run-1", 5.0, "task", "clone[disk0]", {"handle": "t-1"}, 1)],
        run={"status": "ROLLING_BACK"},
    ))
    assert run.get_commands("run-1")["clone[disk0]"].status == "RUNNING"
    assert run.get_tasks("run-1") == [task]
    assert [e.seq for e in run.get_events("run-1")] == [1]
    got = run.get_run("run-1")
    assert got is not None and got.status == "ROLLING_BACK"


def test_a_failing_commit_leaves_nothing_of_its_batch(request: pytest.FixtureRequest,
                                                      run: Store) -> None:
    """A batch that fails midway (an unknown command field after valid ones) is not applied
    at all: the store commits each batch atomically."""
    batch = Batch(commands=[("add_vm", {"status": "STARTING"}),
                            ("clone[disk0]", {"status": "STARTING", "colour": "red"})],
                  events=[EventRecord("run-1", 1.0, "command", "add_vm", {}, 1)],
                  run={"status": "SUCCEEDED"})
    with pytest.raises((ValueError, TypeError)):
        run.commit("run-1", batch)
    got = run.get_commands("run-1")
    assert {c.status for c in got.values()} == {"PENDING"}
    assert run.get_events("run-1") == []
    record = run.get_run("run-1")
    assert record is not None and record.status == "RUNNING"


def test_runs_are_kept_apart(run: Store) -> None:
    """Commands, tasks and events of one run never show up in another."""
    run.create_run(run_record("run-2", 2000.0), commands("run-2"))
    run.commit("run-2", Batch(
        commands=[("add_vm", {"status": "SUCCEEDED"})],
        tasks=[TaskRecord("run-2", "add_vm", "REGULAR_FLOW", "t", "RUNNING")],
        events=[EventRecord("run-2", 1.0, "run", None, {}, 1)],
    ))
    assert run.get_commands("run-1")["add_vm"].status == "PENDING"
    assert run.get_commands("run-2")["add_vm"].status == "SUCCEEDED"
    assert run.get_tasks("run-1") == [] and run.get_events("run-1") == []
    assert len(run.get_tasks("run-2")) == 1 and len(run.get_events("run-2")) == 1


def test_delete_run_removes_the_run_and_all_of_it_and_nothing_else(run: Store) -> None:
    """delete_run removes a run in one of the statuses asked, with its commands, tasks and
    events; the other run keeps all of its own, and a later run's events number as usual.
    A run in another status, an unknown one, or one holding a lock is not deleted."""
    run.create_run(run_record("run-2", 2000.0), commands("run-2"))
    for rid in ("run-1", "run-2"):
        run.commit(rid, Batch(
            tasks=[TaskRecord(rid, "add_vm", "REGULAR_FLOW", "t", "SUCCEEDED")],
            events=[EventRecord(rid, 1.0, "run", None, {}, 1),
                    EventRecord(rid, 1.1, "command", "add_vm", {"status": "SUCCEEDED"}, 2)],
            run={"status": "SUCCEEDED"}))
    assert not run.delete_run("run-1", {"ROLLED_BACK"})  # its status is another
    assert not run.delete_run("run-9", {"SUCCEEDED"})
    assert run.acquire_locks("run-1", ["vm/vm-42"], "host-a", 11, 100.0) == []
    assert not run.delete_run("run-1", {"SUCCEEDED"})  # it holds a lock
    run.release_locks("run-1")
    assert run.delete_run("run-1", {"SUCCEEDED", "ROLLED_BACK"})
    assert run.get_run("run-1") is None and run.run_ids() == ["run-2"]
    assert run.get_commands("run-1") == {} and run.get_tasks("run-1") == []
    assert run.get_events("run-1") == [] and run.last_seq("run-1") == 0
    assert len(run.get_commands("run-2")) == 3 and len(run.get_tasks("run-2")) == 1
    assert [e.seq for e in run.get_events("run-2")] == [1, 2]
    assert not run.delete_run("run-1", {"SUCCEEDED"})  # gone already
    run.create_run(run_record("run-3", 3000.0), commands("run-3"))
    run.commit("run-3", Batch(events=[EventRecord("run-3", 1.0, "run", None, {}, 1)]))
    assert [e.seq for e in run.get_events("run-3")] == [1]
    assert [e.seq for e in run.get_events("run-2")] == [1, 2]


def test_list_runs_is_newest_first_and_limited(store: Store) -> None:
    """list_runs orders by start time, newest first, and honours ``limit``."""
    for run_id, started in [("b", 2000.0), ("a", 1000.0), ("c", 3000.0)]:
        store.create_run(run_record(run_id, started), [])
    assert [r.id for r in store.list_runs()] == ["c", "b", "a"]
    assert [r.id for r in store.list_runs(2)] == ["c", "b"]


def test_runs_read_without_plans_leave_snapshot_and_variables_empty(store: Store) -> None:
    """list_runs(plans=False) and get_run(plan=False) give every field of the runs but the
    plan snapshot and vars, which are empty; a read with them still has them, whether
    they were read before or not."""
    for run_id, started in [("b", 2000.0), ("a", 1000.0)]:
        store.create_run(run_record(run_id, started), [])
    listed = store.list_runs(plans=False)
    assert [(r.id, r.snapshot, r.variables) for r in listed] == [("b", {}, {}), ("a", {}, {})]
    assert listed[0] == dataclasses.replace(run_record("b", 2000.0), snapshot={},
                                            variables={})
    assert store.get_run("b") == run_record("b", 2000.0)
    assert store.list_runs(1) == [run_record("b", 2000.0)]
    assert store.get_run("a", plan=False) == dataclasses.replace(
        run_record("a", 1000.0), snapshot={}, variables={})
    assert store.get_run("a") == run_record("a", 1000.0)
    assert store.get_run("b", plan=False) == listed[0]
    assert store.get_run("nope", plan=False) is None


def test_run_ids_match_a_prefix_newest_first(store: Store) -> None:
    """run_ids(prefix) lists every run whose id starts with it, newest first; "" all."""
    for run_id, started in [("ab", 2000.0), ("aa", 3000.0), ("b", 1000.0), ("a%_", 500.0)]:
        store.create_run(run_record(run_id, started), [])
    assert store.run_ids("a") == ["aa", "ab", "a%_"]
    assert store.run_ids("a%") == ["a%_"]
    assert store.run_ids("ab") == ["ab"]
    assert store.run_ids("c") == []
    assert store.run_ids() == ["aa", "ab", "b", "a%_"]


def test_one_command_and_the_command_count(run: Store) -> None:
    """get_commands(run, id) holds that command alone (nothing for an unknown id), as the
    full read has it; command_count counts the run's commands."""
    every = run.get_commands("run-1")
    assert run.get_commands("run-1", "clone[disk0]") == {"clone[disk0]": every["clone[disk0]"]}
    assert run.get_commands("run-1", "nope") == {}
    assert run.get_commands("run-2", "add_vm") == {}
    assert (run.command_count("run-1"), run.command_count("run-2")) == (3, 0)


def test_events_of_one_command_and_the_first_ones(run: Store) -> None:
    """get_events(run, command_id) keeps that command's events, in order; ``limit`` keeps
    the first ones."""
    events = [EventRecord("run-1", float(seq), "command", cid, {"status": "RUNNING"}, seq)
              for seq, cid in enumerate(["add_vm", "clone[disk0]", "add_vm", None], start=1)]
    run.commit("run-1", Batch(events=events))
    assert run.get_events("run-1", "add_vm") == [events[0], events[2]]
    assert run.get_events("run-1", "clone[disk1]") == []
    assert run.get_events("run-1", limit=1) == [events[0]]
    assert run.get_events("run-1", "add_vm", limit=1) == [events[0]]
    assert run.get_events("run-1", limit=10) == events
    assert run.get_events("run-1", after=1, limit=2) == events[1:3]
    assert run.get_events("run-1", "add_vm", after=1) == [events[2]]
    assert run.get_events("run-1", after=4) == []
    assert run.get_events("run-1", kind="command", after=3) == [events[3]]
    assert run.get_events("run-1", kind="run") == []


def test_commands_without_details_leave_params_result_and_outputs_out(run: Store) -> None:
    """get_commands(details=False) gives every field as recorded but params, result and
    outputs, which are None."""
    run.commit("run-1", Batch(commands=[("add_vm", {
        "status": "SUCCEEDED", "params": {"action": "command"}, "result": {"rc": 0},
        "outputs": {"uuid": "u-1"}, "error": "e", "changed": True, "attempts": 2})]))
    full = run.get_commands("run-1")
    light = run.get_commands("run-1", details=False)
    assert list(light) == list(full)
    assert light["add_vm"] == dataclasses.replace(full["add_vm"], params=None, result=None,
                                                  outputs=None)
    assert full["add_vm"].outputs == {"uuid": "u-1"}
    assert run.get_commands("run-1", "add_vm", details=False) == {"add_vm": light["add_vm"]}


def test_last_run_id_is_the_newest_run(store: Store) -> None:
    """last_run_id is None on an empty store, then the id of the most recently started run."""
    assert store.last_run_id() is None
    assert store.list_runs() == []
    store.create_run(run_record("20260101-000000-aaaaaa", 1000.0), [])
    store.create_run(run_record("20260101-000002-cccccc", 3000.0), [])
    store.create_run(run_record("20260101-000001-bbbbbb", 2000.0), [])
    assert store.last_run_id() == "20260101-000002-cccccc"


def test_last_seq_is_the_highest_event_seq_of_the_run(run: Store) -> None:
    """last_seq is 0 before any event, then the highest seq committed for that run only."""
    assert run.last_seq("run-1") == 0
    run.commit("run-1", Batch(events=[EventRecord("run-1", 1.0, "run", None, {}, seq)
                                      for seq in (1, 2, 3)]))
    run.create_run(run_record("run-2", 2000.0), commands("run-2"))
    run.commit("run-2", Batch(events=[EventRecord("run-2", 1.0, "run", None, {}, 9)]))
    assert run.last_seq("run-1") == 3
    assert run.last_seq("run-2") == 9


# -- entity locks --------------------------------------------------------------------------


def test_locks_are_taken_all_or_nothing(store: Store) -> None:
    """A run gets every entity it asks for, or none when another run holds one of them; the
    answer lists the other run's locks."""
    assert store.acquire_locks("run-1", ["vm/a", "image/a-0"], "host-a", 11, 100.0) == []
    held = store.acquire_locks("run-2", ["image/b-0", "vm/a"], "host-b", 22, 101.0)
    assert held == [LockRecord("vm/a", "run-1", "host-a", 11, 100.0, 100.0)]
    assert [lock.entity for lock in store.list_locks()] == ["image/a-0", "vm/a"]
    assert {lock.run_id for lock in store.list_locks()} == {"run-1"}


def test_a_run_may_take_its_own_locks_again(store: Store) -> None:
    """Re-acquiring (resume, rollback) keeps acquired_at and refreshes holder and heartbeat."""
    store.acquire_locks("run-1", ["vm/a"], "host-a", 11, 100.0)
    assert store.acquire_locks("run-1", ["vm/a", "vm/b"], "host-a", 12, 150.0) == []
    locks = {lock.entity: lock for lock in store.list_locks()}
    assert locks["vm/a"] == LockRecord("vm/a", "run-1", "host-a", 12, 100.0, 150.0)
    assert locks["vm/b"] == LockRecord("vm/b", "run-1", "host-a", 12, 150.0, 150.0)


def test_a_live_other_executor_of_the_same_run_stops_a_takeover(store: Store) -> None:
    """With ``alive``, a lock of the same run held by another executor that still runs is
    returned and nothing is taken; a dead one is taken over."""
    store.acquire_locks("run-1", ["vm/a"], "host-a", 11, 100.0)
    held = store.acquire_locks("run-1", ["vm/a", "vm/b"], "host-a", 12, 150.0,
                               alive=lambda lock: lock.pid == 11)
    assert held == [LockRecord("vm/a", "run-1", "host-a", 11, 100.0, 100.0)]
    assert store.list_locks() == held
    assert store.acquire_locks("run-1", ["vm/a", "vm/b"], "host-a", 12, 150.0,
                               alive=lambda lock: False) == []
    assert {lock.pid for lock in store.list_locks()} == {12}


def test_locks_of_a_run_read_before_others_wrote_to_it_are_refused(run: Store) -> None:
    """With ``seq``, the last event the caller read of the run: if the run has more, the
    caller's view is stale: LockedError, and nothing is taken."""
    run.commit("run-1", Batch(events=[EventRecord("run-1", 1.0, "run", None, {}, 1)]))
    with pytest.raises(LockedError, match="changed since this planctl read it"):
        run.acquire_locks("run-1", ["vm/a"], "h", 1, 100.0, seq=0)
    assert run.list_locks() == []
    assert run.acquire_locks("run-1", ["vm/a"], "h", 1, 100.0, seq=1) == []


def test_heartbeat_refreshes_only_the_runs_own_locks(store: Store) -> None:
    """heartbeat moves heartbeat_at of one run's locks and leaves other runs' alone."""
    store.acquire_locks("run-1", ["vm/a"], "h", 1, 100.0)
    store.acquire_locks("run-2", ["vm/b"], "h", 2, 100.0)
    store.heartbeat("run-1", 130.0)
    beats = {lock.entity: lock.heartbeat_at for lock in store.list_locks()}
    assert beats == {"vm/a": 130.0, "vm/b": 100.0}


def test_release_and_unlock_free_entities(store: Store) -> None:
    """release_locks frees a run's entities; unlock frees one entity and returns its lock."""
    store.acquire_locks("run-1", ["vm/a", "vm/b"], "h", 1, 100.0)
    store.acquire_locks("run-2", ["vm/c"], "h", 2, 100.0)
    store.release_locks("run-1")
    assert [lock.entity for lock in store.list_locks()] == ["vm/c"]
    assert store.unlock("vm/c") == LockRecord("vm/c", "run-2", "h", 2, 100.0, 100.0)
    assert store.unlock("vm/c") is None
    assert store.list_locks() == []
    assert store.acquire_locks("run-3", ["vm/a", "vm/c"], "h", 3, 200.0) == []


def test_unlock_takes_the_run_from_the_executor_holding_the_entity(run: Store) -> None:
    """`unlock` of an entity also releases the run's own lock held by the same executor:
    that executor's heartbeat then says so, and its next commit raises LockLostError and
    writes nothing (before, it went on acting on the entity another run could now take)."""
    event = EventRecord("run-1", 1.0, "run", None, {}, 1)
    assert run.acquire_locks("run-1", ["vm/a", run_key("run-1")], "h", 1, 100.0) == []
    assert run.heartbeat("run-1", 110.0) is True
    run.commit("run-1", Batch(events=[event]))
    unlocked = run.unlock("vm/a")
    assert unlocked is not None and unlocked.run_id == "run-1"
    assert run.list_locks() == []
    assert run.heartbeat("run-1", 120.0) is False
    with pytest.raises(LockLostError, match="run run-1 is no longer held by this planctl"):
        run.commit("run-1", Batch(events=[dataclasses.replace(event, seq=2)]))
    assert run.last_seq("run-1") == 1


# -- SQLite only -------------------------------------------------------------------------


def test_an_executor_whose_run_was_taken_over_writes_nothing_more(tmp_path: Path) -> None:
    """Two executors of one run on one file, the first paused past its lease (SIGSTOP, a
    slow machine) and the run taken over by the second (its resume): the first's heartbeat
    says it lost the run and leaves the second's locks alone, its commits raise
    LockLostError naming the new holder and write nothing, and its release frees nothing
    of the second's. Before, it wrote beside the second (exit 70 on a clash of event
    numbers, or a step run twice) and its release freed the second's locks."""
    path = tmp_path / "s.db"
    old, new = SQLiteStore(path), SQLiteStore(path)
    try:
        old.create_run(run_record(), commands())
        keys = ["vm/a", run_key("run-1")]
        assert old.acquire_locks("run-1", keys, "h", 1, 100.0) == []
        old.commit("run-1", Batch(events=[EventRecord("run-1", 1.0, "run", None, {}, 1)]))
        assert new.acquire_locks("run-1", keys, "h", 2, 200.0, alive=lambda lock: False,
                                 seq=1) == []
        assert old.heartbeat("run-1", 300.0) is False
        assert {(lock.pid, lock.heartbeat_at) for lock in new.list_locks()} == {(2, 200.0)}
        with pytest.raises(LockLostError, match="took it over \\(pid 2 on h"):
            old.commit("run-1", Batch(events=[EventRecord("run-1", 2.0, "x", None, {}, 2)]))
        old.release_locks("run-1")
        assert [lock.entity for lock in new.list_locks()] == sorted(keys)
        new.commit("run-1", Batch(events=[EventRecord("run-1", 3.0, "run", None, {}, 2)]))
        assert [e.kind for e in new.get_events("run-1")] == ["run", "run"]
        assert new.heartbeat("run-1", 310.0) is True
    finally:
        old.close()
        new.close()


def test_sqlite_file_is_created_private(tmp_path: Path) -> None:
    """The state file (and its WAL) are created readable by the owner only, in a new directory."""
    path = tmp_path / "deep" / "dir" / "state.db"
    store = SQLiteStore(path)
    try:
        store.create_run(run_record(), commands())
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        wal = Path(f"{path}-wal")
        assert wal.exists()
        assert stat.S_IMODE(os.stat(wal).st_mode) == 0o600
    finally:
        store.close()


def test_sqlite_journal_mode_is_wal(tmp_path: Path) -> None:
    """The file is in WAL mode, as another connection sees it."""
    path = tmp_path / "s.db"
    SQLiteStore(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_sqlite_second_store_on_the_same_file_sees_committed_data(tmp_path: Path) -> None:
    """Two SQLiteStores (two connections) on one file: each commit is visible to the other."""
    path = tmp_path / "s.db"
    writer, reader = SQLiteStore(path), SQLiteStore(path)
    try:
        writer.create_run(run_record(), commands())
        assert reader.get_run("run-1") == run_record()
        writer.commit("run-1", Batch(
            commands=[("add_vm", {"status": "STARTING"})],
            tasks=[TaskRecord("run-1", "add_vm", "REGULAR_FLOW", "t-1", "RUNNING")],
        ))
        assert reader.get_commands("run-1")["add_vm"].status == "STARTING"
        assert [t.handle for t in reader.get_tasks("run-1")] == ["t-1"]
        reader.commit("run-1", Batch(run={"status": "STOPPED"}))
        got = writer.get_run("run-1")
        assert got is not None and got.status == "STOPPED"
    finally:
        writer.close()
        reader.close()


def test_sqlite_locks_are_shared_between_connections(tmp_path: Path) -> None:
    """A lock taken through one SQLiteStore blocks another run on a second connection."""
    path = tmp_path / "s.db"
    first, second = SQLiteStore(path), SQLiteStore(path)
    try:
        assert first.acquire_locks("run-1", ["vm/a"], "host-a", 11, 100.0) == []
        held = second.acquire_locks("run-2", ["vm/a", "vm/b"], "host-b", 22, 101.0)
        assert [(lock.entity, lock.run_id) for lock in held] == [("vm/a", "run-1")]
        assert [lock.entity for lock in second.list_locks()] == ["vm/a"]
        first.release_locks("run-1")
        assert second.acquire_locks("run-2", ["vm/a", "vm/b"], "host-b", 22, 102.0) == []
    finally:
        first.close()
        second.close()


def test_sqlite_data_survives_reopening(tmp_path: Path) -> None:
    """A store closed and opened again finds every run, command, task and event."""
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    store.create_run(run_record(), commands())
    store.commit("run-1", Batch(
        commands=[("add_vm", {"status": "SUCCEEDED", "outputs": {"uuid": "u"}})],
        events=[EventRecord("run-1", 1.0, "run", None, {"status": "RUNNING"}, 1)],
    ))
    store.close()
    again = SQLiteStore(path)
    try:
        assert again.last_run_id() == "run-1"
        assert again.get_commands("run-1")["add_vm"].outputs == {"uuid": "u"}
        assert len(again.get_events("run-1")) == 1
    finally:
        again.close()


def test_sqlite_commit_failing_at_the_last_statement_rolls_back_everything(
        tmp_path: Path) -> None:
    """A batch whose final statement fails (an unknown run field) leaves no command update,
    task or event behind, as another connection sees."""
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    try:
        store.create_run(run_record(), commands())
        batch = Batch(
            commands=[("add_vm", {"status": "STARTING"})],
            tasks=[TaskRecord("run-1", "add_vm", "REGULAR_FLOW", "t-1", "RUNNING")],
            events=[EventRecord("run-1", 1.0, "command", "add_vm", {}, 1)],
            run={"no_such_column": 1},
        )
        with pytest.raises(sqlite3.Error):
            store.commit("run-1", batch)
        with sqlite3.connect(path) as db:
            assert db.execute("SELECT DISTINCT status FROM commands").fetchall() == [
                ("PENDING",)]
            assert db.execute("SELECT count(*) FROM async_tasks").fetchone() == (0,)
            assert db.execute("SELECT count(*) FROM events").fetchone() == (0,)
        # The connection is usable afterwards: no transaction was left open.
        store.commit("run-1", Batch(commands=[("add_vm", {"status": "STARTING"})]))
        assert store.get_commands("run-1")["add_vm"].status == "STARTING"
    finally:
        store.close()


def test_sqlite_duplicate_event_seq_rolls_back_the_batch(tmp_path: Path) -> None:
    """Two events with one seq in a run violate the log's key, and nothing of the batch stays."""
    store = SQLiteStore(tmp_path / "s.db")
    try:
        store.create_run(run_record(), commands())
        store.commit("run-1", Batch(events=[EventRecord("run-1", 1.0, "run", None, {}, 1)]))
        with pytest.raises(sqlite3.IntegrityError):
            store.commit("run-1", Batch(
                commands=[("add_vm", {"status": "STARTING"})],
                events=[EventRecord("run-1", 2.0, "command", "add_vm", {}, 1)]))
        assert store.get_commands("run-1")["add_vm"].status == "PENDING"
        assert len(store.get_events("run-1")) == 1
    finally:
        store.close()


def test_sqlite_file_that_is_not_a_database_is_a_state_error(tmp_path: Path) -> None:
    """Opening a file that is not SQLite raises StateError naming the file."""
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database, just some text\n" * 100)
    with pytest.raises(StateError, match=r"state\.db"):
        SQLiteStore(path)


def test_sqlite_schema_newer_than_this_planctl_is_a_state_error(tmp_path: Path) -> None:
    """A store written by a newer planctl (higher user_version) is refused with StateError,
    before anything of it changes: its journal mode stays what that planctl chose."""
    path = tmp_path / "state.db"
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
        db.commit()
    with pytest.raises(StateError, match="newer"):
        SQLiteStore(path)
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_sqlite_bad_sync_setting_is_a_state_error(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """PLANCTL_SYNC set to something other than NORMAL, FULL or EXTRA raises StateError."""
    monkeypatch.setenv("PLANCTL_SYNC", "sometimes")
    with pytest.raises(StateError, match="PLANCTL_SYNC"):
        SQLiteStore(tmp_path / "s.db")


def test_sqlite_directory_in_the_way_is_a_state_error(tmp_path: Path) -> None:
    """A state path that is a directory raises StateError, not an OSError traceback."""
    (tmp_path / "state.db").mkdir()
    with pytest.raises(StateError):
        SQLiteStore(tmp_path / "state.db")


_SCHEMA_1 = """
CREATE TABLE runs (id TEXT PRIMARY KEY, plan_name TEXT NOT NULL, plan_file TEXT NOT NULL,
    status TEXT NOT NULL, started_at REAL NOT NULL, ended_at REAL, snapshot TEXT NOT NULL,
    variables TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL, error TEXT);
CREATE TABLE commands (run_id TEXT NOT NULL, id TEXT NOT NULL, spec_id TEXT NOT NULL,
    ord INTEGER NOT NULL, parent TEXT, entity TEXT, status TEXT NOT NULL,
    execution_reason TEXT NOT NULL, changed INTEGER, attempts INTEGER NOT NULL DEFAULT 0,
    revert_attempts INTEGER NOT NULL DEFAULT 0, params TEXT, result TEXT, outputs TEXT,
    error TEXT, started_at REAL, ended_at REAL, PRIMARY KEY (run_id, id)) WITHOUT ROWID;
CREATE TABLE async_tasks (run_id TEXT NOT NULL, command_id TEXT NOT NULL,
    execution_reason TEXT NOT NULL, entity TEXT, handle TEXT NOT NULL, spec TEXT,
    status TEXT NOT NULL, started_at REAL NOT NULL, updated_at REAL NOT NULL,
    polls INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, command_id, execution_reason)) WITHOUT ROWID;
CREATE TABLE events (run_id TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL,
    kind TEXT NOT NULL, command_id TEXT, data TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)) WITHOUT ROWID;
CREATE TABLE locks (entity TEXT PRIMARY KEY, run_id TEXT NOT NULL, host TEXT NOT NULL,
    pid INTEGER NOT NULL, acquired_at REAL NOT NULL, heartbeat_at REAL NOT NULL);
PRAGMA user_version=1;
"""


def test_sqlite_store_of_schema_1_is_upgraded_with_its_events(tmp_path: Path) -> None:
    """A state file written by schema 1 (events keyed by run id and seq) is upgraded when
    opened: its runs and events read back as before, and new runs log after them."""
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:
        db.executescript(_SCHEMA_1)
        for rid, started in (("old-b", 20.0), ("old-a", 10.0)):
            db.execute("INSERT INTO runs VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                       (rid, "p", "/p.yaml", "SUCCEEDED", started, None, "{}", "{}", "h", 1,
                        None))
            db.executemany("INSERT INTO events VALUES (?,?,?,?,?,?)",
                           [(rid, seq, started + seq, "command", "c", f'{{"n": {seq}}}')
                            for seq in (1, 2, 3)])
    store = SQLiteStore(path)
    try:
        assert [e.data["n"] for e in store.get_events("old-a")] == [1, 2, 3]
        assert {e.run_id for e in store.get_events("old-b")} == {"old-b"}
        assert store.last_seq("old-b") == 3
        store.create_run(run_record("new"), commands())
        store.commit("new", Batch(events=[EventRecord("new", 1.0, "run", None, {}, 1)]))
        assert [e.seq for e in store.get_events("new")] == [1]
        assert store.last_seq("old-a") == 3
    finally:
        store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        # The events view keeps SQL written against schema 1 working.
        assert db.execute("SELECT count(*) FROM events WHERE run_id = 'old-a'").fetchone() \
            == (3,)


def test_sqlite_store_of_schema_2_is_taken_as_it_is_and_marked_3(tmp_path: Path) -> None:
    """Schema 3 has schema 2's tables: a schema-2 store (made here as this planctl makes
    one, then marked 2, as a planctl of schema 2 left it) keeps its rows, and is marked 3,
    so that a planctl of schema 2 refuses it from then on."""
    path = tmp_path / "state.db"
    store = SQLiteStore(path)
    try:
        store.create_run(run_record(), commands())
        store.commit("run-1", Batch(events=[EventRecord("run-1", 1.0, "run", None, {}, 1)]))
    finally:
        store.close()
    with closing(sqlite3.connect(path)) as db:
        tables = db.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall()
        db.execute("PRAGMA user_version=2")
        db.commit()
    store = SQLiteStore(path)
    try:
        assert [e.kind for e in store.get_events("run-1")] == ["run"]
        assert sorted(store.get_commands("run-1")) == sorted(c.id for c in commands())
    finally:
        store.close()
    with closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        assert db.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall() \
            == tables


def test_sqlite_writes_what_has_no_json_form_repaired_and_escapes_lone_surrogates(
        tmp_path: Path) -> None:
    """The last line of defence: a result with no JSON form (a plugin's) is written as
    standard JSON, what has none replaced, and a text with a lone surrogate (which SQLite
    refuses) escaped; neither ends the commit, nor the run with it."""
    store = SQLiteStore(tmp_path / "s.db")
    try:
        store.create_run(run_record(), commands())
        itself: dict[str, Any] = {"n": 1}
        itself["me"] = itself
        result = {"nan": float("nan"), (1, 2): "tuple key", "big": 10**5000, "me": itself}
        error = "cannot open disk-" + os.fsdecode(b"\xff")
        store.commit("run-1", Batch(
            commands=[("add_vm", {"status": "FAILED", "result": result, "error": error})],
            events=[EventRecord("run-1", 1.0, "command", "add_vm",
                                {"status": "FAILED", "error": error, "inf": float("inf")}, 1)],
        ))
        row = store.get_commands("run-1")["add_vm"]
        (event,) = store.get_events("run-1")
    finally:
        store.close()
    assert row.result == {"nan": None, "[1, 2]": "tuple key",
                          "big": "<int of 16610 bits>",
                          "me": {"n": 1, "me": "<circular reference>"}}
    assert row.error == "cannot open disk-\\udcff"
    assert event.data["inf"] is None
    with sqlite3.connect(tmp_path / "s.db") as db:  # standard JSON: SQLite's own parser
        assert db.execute("SELECT json_valid(result) FROM commands WHERE id = 'add_vm'"
                          ).fetchone() == (1,)
