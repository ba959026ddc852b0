"""The state store: the records it keeps and the narrow protocol every backend implements.

A backend commits each ``Batch`` atomically: the executor relies on that for its
write-ahead rule (intent before side effect, handle before polling, outcome before any
dependent starts). ``SQLiteStore`` is the real backend; ``MemoryStore`` is the fake for unit
tests of pure logic, and both pass the same contract tests.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from .errors import LockedError, LockLostError

__all__ = [
    "COMMAND_FIELDS",
    "RUN_KEY",
    "Batch",
    "CommandRecord",
    "EventRecord",
    "LockRecord",
    "MemoryStore",
    "RunRecord",
    "Store",
    "TaskRecord",
    "live_lock",
    "lost_lock",
    "run_key",
    "stale_run",
]

# A run holds a lock on itself too, under this prefix and its id, entities or not: that is
# how `resume` and `rollback` see that the run's own executor is still alive, and how that
# executor knows it still drives the run (a store writes a run's batches only while the
# executor that took its locks holds it). No entity of a plan may start with it.
RUN_KEY = "planctl:run/"


def run_key(run_id: str) -> str:
    """The key of the lock a run holds on itself while an executor drives it."""
    return RUN_KEY + run_id


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: str
    plan_name: str
    plan_file: str
    status: str
    started_at: float
    snapshot: Mapping[str, Any]  # the plan as loaded (secrets are never in it)
    variables: Mapping[str, Any]
    host: str = ""
    pid: int = 0
    ended_at: float | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class CommandRecord:
    run_id: str
    id: str
    spec_id: str
    order: int
    parent: str | None = None
    entity: str | None = None
    status: str = "PENDING"
    execution_reason: str = "REGULAR_FLOW"
    changed: bool | None = None  # True: run changed something; None: not known
    attempts: int = 0
    revert_attempts: int = 0
    params: Any = None
    result: Any = None
    outputs: Any = None
    error: str | None = None
    started_at: float | None = None
    ended_at: float | None = None


# Fields of CommandRecord that a batch may update.
COMMAND_FIELDS = frozenset({
    "entity", "status", "execution_reason", "changed", "attempts", "revert_attempts",
    "params", "result", "outputs", "error", "started_at", "ended_at",
})


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """A polled async task; keyed by (run, command, execution_reason)."""

    run_id: str
    command_id: str
    execution_reason: str
    handle: str
    status: str  # RUNNING, SUCCEEDED, FAILED, TIMED_OUT, CANCELLED
    entity: str | None = None
    spec: Any = None  # the rendered poll/cancel operations
    started_at: float = 0.0
    updated_at: float = 0.0
    polls: int = 0


@dataclass(frozen=True, slots=True)
class TaskEnd:
    """The end of a task recorded earlier (its row is kept, these fields change)."""

    command_id: str
    execution_reason: str
    status: str  # SUCCEEDED, FAILED, TIMED_OUT, CANCELLED
    updated_at: float
    polls: int


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One entry of a run's append-only log; ``seq`` counts from 1 within the run."""

    run_id: str
    ts: float
    kind: str
    command_id: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    seq: int = 0


@dataclass(frozen=True, slots=True)
class LockRecord:
    entity: str
    run_id: str
    host: str
    pid: int
    acquired_at: float
    heartbeat_at: float


@dataclass
class Batch:
    """Writes committed together, in one transaction."""

    commands: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    tasks: list[TaskRecord] = field(default_factory=list)  # written whole (after commands)
    task_ends: list[TaskEnd] = field(default_factory=list)  # after tasks
    events: list[EventRecord] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.commands or self.tasks or self.task_ends or self.events or self.run)


class Store(Protocol):
    """What the executor needs from durable state."""

    def create_run(self, run: RunRecord, commands: Sequence[CommandRecord]) -> None: ...
    def commit(self, run_id: str, batch: Batch) -> None: ...
    def get_run(self, run_id: str, *, plan: bool = True) -> RunRecord | None:
        """The run's record; without ``plan``, its ``snapshot`` and ``variables`` are
        left empty."""
        ...
    def list_runs(self, limit: int = 50, *, plans: bool = True) -> list[RunRecord]:
        """The ``limit`` most recent runs, newest first; without ``plans``, their
        records' ``snapshot`` and ``variables`` are left empty (a listing's, cheap)."""
        ...
    def run_ids(self, prefix: str = "") -> list[str]:
        """The ids of every run that start with ``prefix``, newest first."""
        ...
    def last_run_id(self) -> str | None: ...
    def get_commands(self, run_id: str, command_id: str | None = None, *,
                     details: bool = True) -> dict[str, CommandRecord]:
        """The run's commands in plan order; with ``command_id``, only that one (if any);
        without ``details``, their ``params``, ``result`` and ``outputs`` are None."""
        ...
    def command_count(self, run_id: str) -> int: ...
    def get_tasks(self, run_id: str) -> list[TaskRecord]: ...
    def get_events(self, run_id: str, command_id: str | None = None, *,
                   after: int = 0, limit: int | None = None,
                   kind: str | None = None) -> list[EventRecord]:
        """The run's events in order; with ``command_id``, only that command's; with
        ``kind``, only those of that kind; those with a ``seq`` above ``after``; with
        ``limit``, the first ``limit`` of them (so a long log can be read a page at a
        time)."""
        ...
    def last_seq(self, run_id: str) -> int: ...
    def acquire_locks(self, run_id: str, entities: Sequence[str], host: str, pid: int,
                      now: float, alive: Callable[[LockRecord], bool] | None = None,
                      seq: int | None = None) -> list[LockRecord]:
        """Take every entity for ``run_id`` or none, in one transaction; returns the locks
        that stop it: those of other runs, and (with ``alive``) a lock of this run held
        by another executor that ``alive`` says still runs. With ``seq``, the last event
        the caller read of the run: if nothing stops it but more were written since,
        raises LockedError and takes nothing (what it read is stale)."""
        ...
    def heartbeat(self, run_id: str, now: float) -> bool:
        """Renew the run's locks held by this store's executor (the host and pid that
        took them); False when its lock on the run itself is no longer its own."""
        ...
    def release_locks(self, run_id: str, keep: Sequence[str] = ()) -> None: ...
    def list_locks(self) -> list[LockRecord]: ...
    def unlock(self, entity: str) -> LockRecord | None:
        """Release ``entity``; its holder's executor loses the run too (``run_key``), so
        that it stops at its next commit rather than act on what is no longer its own."""
        ...
    def delete_run(self, run_id: str, statuses: Collection[str]) -> bool:
        """Delete the run and everything recorded of it (commands, tasks, events) in one
        transaction, if it is still in one of ``statuses`` and holds no lock; True if it
        was deleted."""
        ...
    def close(self) -> None: ...


def stale_run(run_id: str) -> LockedError:
    return LockedError(f"run {run_id} changed since this planctl read it (another planctl "
                       "on it?): try again")


def lost_lock(run_id: str, now: tuple[str, str, int] | None) -> LockLostError:
    """The error of an executor that no longer holds ``run_id``; ``now`` is who does
    (run, host, pid), if anyone."""
    if now is None:
        why = ("its lock was released (`planctl unlock`), or another planctl took the run "
               "over and ended it")
    else:
        why = (f"another planctl took it over (pid {now[2]} on {now[1]}: a `resume` or "
               f"`rollback` of it, once this one looked dead)")
    return LockLostError(f"run {run_id} is no longer held by this planctl: {why}; this one "
                         f"stopped where its last commit left it, starting nothing more "
                         f"(`planctl show {run_id}`)")


def live_lock(locks: Iterable[LockRecord], run_id: str, alive: Callable[[LockRecord], bool],
              besides: tuple[str, int] | None = None) -> LockRecord | None:
    """The first of ``locks`` by which a live executor (but host, pid ``besides``) holds
    ``run_id``."""
    for lock in locks:
        if lock.run_id == run_id and (lock.host, lock.pid) != besides and alive(lock):
            return lock
    return None


class MemoryStore:
    """An in-memory Store for unit tests of pure logic; not durable, not shared."""

    def __init__(self) -> None:
        self.runs: dict[str, RunRecord] = {}
        self.commands: dict[str, dict[str, CommandRecord]] = {}
        self.tasks: dict[tuple[str, str, str], TaskRecord] = {}
        self.events: list[EventRecord] = []
        self.locks: dict[str, LockRecord] = {}
        self.holders: dict[str, tuple[str, int]] = {}  # run -> the executor that took it
        self.commits = 0

    def create_run(self, run: RunRecord, commands: Sequence[CommandRecord]) -> None:
        if run.id in self.runs:
            raise ValueError(f"run {run.id} exists")
        self.runs[run.id] = run
        self.commands[run.id] = {c.id: c for c in commands}

    def _fence(self, run_id: str) -> None:
        """Raise LockLostError if the executor that took ``run_id`` here no longer holds it."""
        holder = self.holders.get(run_id)
        if holder is None:
            return
        lock = self.locks.get(run_key(run_id))
        if lock is None or (lock.run_id, lock.host, lock.pid) != (run_id, *holder):
            raise lost_lock(run_id, None if lock is None
                            else (lock.run_id, lock.host, lock.pid))

    def commit(self, run_id: str, batch: Batch) -> None:
        self._fence(run_id)
        rows = self.commands[run_id]
        for command_id, fields in batch.commands:  # all or nothing, like a transaction
            unknown = set(fields) - COMMAND_FIELDS
            if unknown:
                raise ValueError(f"not command fields: {sorted(unknown)}")
            if command_id not in rows:
                raise KeyError(command_id)
        for command_id, fields in batch.commands:
            rows[command_id] = replace(rows[command_id], **fields)
        for task in batch.tasks:
            self.tasks[(task.run_id, task.command_id, task.execution_reason)] = task
        for end in batch.task_ends:
            key = (run_id, end.command_id, end.execution_reason)
            if key in self.tasks:  # as an UPDATE: no row, nothing changes
                self.tasks[key] = replace(self.tasks[key], status=end.status,
                                          updated_at=end.updated_at, polls=end.polls)
        self.events.extend(batch.events)
        if batch.run:
            self.runs[run_id] = replace(self.runs[run_id], **batch.run)
        self.commits += 1

    def get_run(self, run_id: str, *, plan: bool = True) -> RunRecord | None:
        run = self.runs.get(run_id)
        return run if run is None or plan else replace(run, snapshot={}, variables={})

    def list_runs(self, limit: int = 50, *, plans: bool = True) -> list[RunRecord]:
        ordered = sorted(self.runs.values(), key=lambda r: (r.started_at, r.id), reverse=True)
        if not plans:
            return [replace(r, snapshot={}, variables={}) for r in ordered[:limit]]
        return ordered[:limit]

    def run_ids(self, prefix: str = "") -> list[str]:
        return [r.id for r in self.list_runs(len(self.runs)) if r.id.startswith(prefix)]

    def last_run_id(self) -> str | None:
        runs = self.list_runs(1)
        return runs[0].id if runs else None

    def get_commands(self, run_id: str, command_id: str | None = None, *,
                     details: bool = True) -> dict[str, CommandRecord]:
        rows = self.commands.get(run_id, {})
        return {c.id: c if details else replace(c, params=None, result=None, outputs=None)
                for c in sorted(rows.values(), key=lambda c: c.order)
                if command_id is None or c.id == command_id}

    def command_count(self, run_id: str) -> int:
        return len(self.commands.get(run_id, {}))

    def get_tasks(self, run_id: str) -> list[TaskRecord]:
        return [t for t in self.tasks.values() if t.run_id == run_id]

    def get_events(self, run_id: str, command_id: str | None = None, *,
                   after: int = 0, limit: int | None = None,
                   kind: str | None = None) -> list[EventRecord]:
        found = [e for e in self.events if e.run_id == run_id and e.seq > after
                 and (command_id is None or e.command_id == command_id)
                 and (kind is None or e.kind == kind)]
        return found if limit is None else found[:limit]

    def last_seq(self, run_id: str) -> int:
        return max((e.seq for e in self.events if e.run_id == run_id), default=0)

    def acquire_locks(self, run_id: str, entities: Sequence[str], host: str, pid: int,
                      now: float, alive: Callable[[LockRecord], bool] | None = None,
                      seq: int | None = None) -> list[LockRecord]:
        others = [self.locks[e] for e in entities
                  if e in self.locks and self.locks[e].run_id != run_id]
        twin = None if alive is None else live_lock(self.locks.values(), run_id, alive,
                                                    besides=(host, pid))
        if twin is not None:
            others.append(twin)
        if others:
            return others
        if seq is not None and self.last_seq(run_id) != seq:
            raise stale_run(run_id)
        for entity in entities:
            since = self.locks[entity].acquired_at if entity in self.locks else now
            self.locks[entity] = LockRecord(entity, run_id, host, pid, since, now)
        if run_key(run_id) in entities:
            self.holders[run_id] = (host, pid)
        return []

    def _held(self, lock: LockRecord, run_id: str) -> bool:
        """Whether ``lock`` is one of ``run_id``'s taken by this store's executor."""
        holder = self.holders.get(run_id)
        return lock.run_id == run_id and (holder is None or (lock.host, lock.pid) == holder)

    def heartbeat(self, run_id: str, now: float) -> bool:
        for entity, lock in self.locks.items():
            if self._held(lock, run_id):
                self.locks[entity] = replace(lock, heartbeat_at=now)
        own = self.locks.get(run_key(run_id))
        return run_id not in self.holders or (own is not None and self._held(own, run_id))

    def release_locks(self, run_id: str, keep: Sequence[str] = ()) -> None:
        self.locks = {
            e: (replace(lock, heartbeat_at=0.0) if e in keep else lock)
            for e, lock in self.locks.items() if not self._held(lock, run_id) or e in keep
        }
        self.holders.pop(run_id, None)

    def list_locks(self) -> list[LockRecord]:
        return [self.locks[e] for e in sorted(self.locks)]

    def unlock(self, entity: str) -> LockRecord | None:
        found = self.locks.pop(entity, None)
        if found is not None:
            own = self.locks.get(run_key(found.run_id))
            if own is not None and (own.host, own.pid) == (found.host, found.pid):
                del self.locks[own.entity]
        return found

    def delete_run(self, run_id: str, statuses: Collection[str]) -> bool:
        run = self.runs.get(run_id)
        if run is None or run.status not in statuses \
                or any(lock.run_id == run_id for lock in self.locks.values()):
            return False
        del self.runs[run_id], self.commands[run_id]
        self.tasks = {k: t for k, t in self.tasks.items() if k[0] != run_id}
        self.events = [e for e in self.events if e.run_id != run_id]
        return True

    def close(self) -> None:
        pass
