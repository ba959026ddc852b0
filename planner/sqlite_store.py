"""The SQLite state store: one WAL file, created 0600, safe for several planctl processes.

``synchronous=NORMAL`` in WAL mode makes every commit durable against a crash or kill -9
of planctl (the OS holds the pages); set ``PLANCTL_SYNC=FULL`` to survive power loss too,
at the cost of an fsync per commit.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Collection, Sequence
from functools import cache
from typing import Any, TypeVar

from . import jsondata
from .errors import StateError
from .store import (
    COMMAND_FIELDS,
    Batch,
    CommandRecord,
    EventRecord,
    LockRecord,
    RunRecord,
    TaskEnd,
    TaskRecord,
    live_lock,
    lost_lock,
    run_key,
    stale_run,
)

__all__ = ["MOUNTINFO", "SCHEMA_VERSION", "SQLiteStore", "network_filesystem", "store_failure"]

# 3: the tables of 2. What they hold changed meaning: outputs, results and task handles
# may hold «secret:NAME» placeholders for a resume to fill in, and a live run holds a lock
# on itself. A planctl of schema 2 would hand an inverse the placeholder as text and drive
# a run another process drives: it must refuse such a store, as it refuses schema 3.
SCHEMA_VERSION = 3

BUSY_TIMEOUT = 30.0  # seconds a write waits for another process's transaction to end

# SQLite's primary result codes of a store that cannot be used (busy, locked, read-only,
# I/O error, damaged, full, cannot open, not a database), as opposed to a bug of planctl.
_UNUSABLE = {5, 6, 8, 10, 11, 13, 14, 15, 26}


MOUNTINFO = "/proc/self/mountinfo"
# File systems whose files other hosts reach over a network: SQLite's POSIX locks and the
# shared memory of WAL mode do not hold there (sqlite.org/wal.html, "wal-index").
_NETWORK_FS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ncpfs", "9p", "afs", "ceph", "glusterfs",
    "lustre", "gpfs", "beegfs", "fuse.sshfs", "fuse.s3fs", "fuse.rclone", "fuse.gcsfuse",
    "fuse.glusterfs", "fuse.cephfs", "fuse.mountpoint-s3", "fuse.goofys", "fuse.juicefs",
})


def network_filesystem(path: str | os.PathLike[str], mountinfo: str | None = None
                       ) -> str | None:
    """The type of the network file system (``nfs4``...) holding ``path`` (a file, which
    need not exist yet), or None: a local one, or unknown (no ``/proc``, not Linux)."""
    where = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    try:
        with open(mountinfo or MOUNTINFO, encoding="utf-8", errors="surrogateescape") as lines:
            mounts = lines.read().splitlines()
    except OSError:
        return None
    best, kind = "", None
    for line in mounts:
        fields = line.split(" ")
        try:
            point = _octal(fields[4])
            kind_here = fields[fields.index("-", 6) + 1]
        except (IndexError, ValueError):
            continue
        inside = where == point or where.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):  # the deepest; of equals, the last mounted
            best, kind = point, kind_here
    return kind if kind in _NETWORK_FS else None


def _octal(field: str) -> str:
    """A mountinfo path field: space, tab, newline and backslash are written \\ooo."""
    if "\\" not in field:
        return field
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def store_failure(exc: BaseException) -> str | None:
    """What went wrong, when ``exc`` is SQLite saying the store cannot be used (damaged,
    locked too long, full, read-only): an error for the user, not a bug."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return None
    code = getattr(exc, "sqlite_errorcode", None)
    if code is None or code & 0xFF not in _UNUSABLE:
        return None
    if code & 0xFF in (5, 6):  # SQLITE_BUSY, SQLITE_LOCKED
        return (f"{exc} (another process held a write transaction on it for over "
                f"{BUSY_TIMEOUT:.0f} s)")
    return str(exc)

# Events are numbered ``run number << 32 | seq``: one integer key, clustered by run then
# sequence. Rows of an integer-keyed table are written with fewer WAL pages than rows keyed
# by ``(run_id TEXT, seq)``, and an event is written with every status change: about 6 µs
# less per step of a chain. The ``events`` view shows them with run ids, as before.
_SEQ_BITS = 32
_SEQ_MASK = (1 << _SEQ_BITS) - 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    num INTEGER NOT NULL UNIQUE,
    plan_name TEXT NOT NULL,
    plan_file TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    snapshot TEXT NOT NULL,
    variables TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    error TEXT
);
CREATE TABLE IF NOT EXISTS commands (
    run_id TEXT NOT NULL REFERENCES runs(id),
    id TEXT NOT NULL,
    spec_id TEXT NOT NULL,
    ord INTEGER NOT NULL,
    parent TEXT,
    entity TEXT,
    status TEXT NOT NULL,
    execution_reason TEXT NOT NULL,
    changed INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    revert_attempts INTEGER NOT NULL DEFAULT 0,
    params TEXT,
    result TEXT,
    outputs TEXT,
    error TEXT,
    started_at REAL,
    ended_at REAL,
    PRIMARY KEY (run_id, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS async_tasks (
    run_id TEXT NOT NULL REFERENCES runs(id),
    command_id TEXT NOT NULL,
    execution_reason TEXT NOT NULL,
    entity TEXT,
    handle TEXT NOT NULL,
    spec TEXT,
    status TEXT NOT NULL,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    polls INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, command_id, execution_reason)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS event_log (
    id INTEGER PRIMARY KEY,  -- runs.num << 32 | seq
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    command_id TEXT,
    data TEXT NOT NULL
);
CREATE VIEW IF NOT EXISTS events (run_id, seq, ts, kind, command_id, data) AS
    SELECT r.id, e.id & 4294967295, e.ts, e.kind, e.command_id, e.data
    FROM event_log AS e JOIN runs AS r ON r.num = e.id >> 32;
CREATE TABLE IF NOT EXISTS locks (
    entity TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    acquired_at REAL NOT NULL,
    heartbeat_at REAL NOT NULL
);
"""

# Schema 1 to 2: runs get a number, events move to the integer-keyed event_log.
_MIGRATE_1_2 = """
ALTER TABLE runs ADD COLUMN num INTEGER;
UPDATE runs SET num = rowid;
CREATE UNIQUE INDEX runs_num ON runs(num);
CREATE TABLE event_log (
    id INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    command_id TEXT,
    data TEXT NOT NULL
);
INSERT INTO event_log (id, ts, kind, command_id, data)
    SELECT (r.num << 32) | e.seq, e.ts, e.kind, e.command_id, e.data
    FROM events AS e JOIN runs AS r ON r.id = e.run_id;
DROP TABLE events;
CREATE VIEW events (run_id, seq, ts, kind, command_id, data) AS
    SELECT r.id, e.id & 4294967295, e.ts, e.kind, e.command_id, e.data
    FROM event_log AS e JOIN runs AS r ON r.num = e.id >> 32;
"""

_JSON_COLUMNS = frozenset({"params", "result", "outputs"})
_SELECT_LOCKS = "SELECT entity, run_id, host, pid, acquired_at, heartbeat_at FROM locks"

# Every JSON column and event is written by ``dumps_lossy``: standard JSON, and a value that
# has none (a plugin's result, say) is stored repaired rather than ending the run.
_encode = jsondata.dumps_lossy


def _dumps(value: Any) -> str | None:
    if value is None:
        return None
    if not value and isinstance(value, dict):
        return "{}"
    return _encode(value)


def _text(value: Any) -> Any:
    return jsondata.text(value) if type(value) is str else value


_Record = TypeVar("_Record", RunRecord, CommandRecord, TaskRecord, TaskEnd, EventRecord)


def _texts(record: _Record) -> _Record:
    """``record`` with its texts made storable (``jsondata.text``); its JSON values are
    written ASCII-only, lone surrogates as escapes, already."""
    return dataclasses.replace(record, **{
        f.name: _text(getattr(record, f.name)) for f in dataclasses.fields(record)
        if type(getattr(record, f.name)) is str})


def _escaped(batch: Batch) -> Batch:
    """``batch`` with every text it writes as is made storable."""
    return Batch(
        commands=[(_text(c), {k: _text(v) for k, v in fields.items()})
                  for c, fields in batch.commands],
        tasks=[_texts(t) for t in batch.tasks], task_ends=[_texts(t) for t in batch.task_ends],
        events=[_texts(e) for e in batch.events],
        run={k: _text(v) for k, v in batch.run.items()})


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


@cache
def _update(names: tuple[str, ...]) -> tuple[str, tuple[int, ...]]:
    """The UPDATE for these command fields, and the positions of its JSON columns."""
    unknown = set(names) - COMMAND_FIELDS
    if unknown:
        raise ValueError(f"not command fields: {sorted(unknown)}")
    assignments = ", ".join(f"{f} = ?" for f in names)
    return (f"UPDATE commands SET {assignments} WHERE run_id = ? AND id = ?",
            tuple(i for i, name in enumerate(names) if name in _JSON_COLUMNS))


def _execute(db: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    if len(rows) == 1:
        db.execute(sql, rows[0])
    else:
        db.executemany(sql, rows)


class SQLiteStore:
    """Store backed by one SQLite file in WAL mode."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._bases: dict[str, int] = {}
        # Each run this store's executor took the lock of (``run_key``), with the host and
        # pid it took it as: its batches are written only while it still holds it.
        self._holders: dict[str, tuple[str, int]] = {}
        # Each run's plan snapshot and vars, parsed once: they never change after
        # create_run, and a 100,000-command snapshot takes ~0.25 s to parse.
        self._plans: dict[str, tuple[Any, Any]] = {}
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
            # Created 0600 before SQLite opens it: the store holds rendered commands.
            os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT,
                                      check_same_thread=False)
            self._refuse_foreign()
            self._enter_wal()
            sync = os.environ.get("PLANCTL_SYNC", "NORMAL").upper()
            if sync not in ("NORMAL", "FULL", "EXTRA"):
                raise StateError(f"PLANCTL_SYNC={sync!r}: expected NORMAL, FULL or EXTRA")
            self.db.execute(f"PRAGMA synchronous={sync}")
            self.db.execute("PRAGMA foreign_keys=OFF")
            # Checkpoints (each an fsync) every 8,192 pages rather than 1,000: a run rewrites
            # the same few pages over and over, so a longer WAL costs little to fold back.
            self.db.execute("PRAGMA wal_autocheckpoint=8192")
            self.db.execute("PRAGMA journal_size_limit=67108864")
            self._upgrade()
        except sqlite3.DatabaseError as exc:
            raise StateError(f"{self.path}: not a usable planctl state store: "
                             f"{store_failure(exc) or exc}") from None
        except OSError as exc:
            raise StateError(f"{self.path}: cannot open state store: {exc.strerror}") from None

    def _refuse_foreign(self) -> None:
        """Refuse, before changing anything (WAL mode, tables), a SQLite file of another
        program (one without planctl's schema version that already holds tables), or one a
        newer planctl wrote."""
        # One read transaction, so both answers come from one state of the file: another
        # planctl creating this store at the same time commits its tables and its version
        # together, and must not look like another program half-way.
        self.db.execute("BEGIN")
        try:
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            tables = [row[0] for row in self.db.execute(
                "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY name")]
        finally:
            self.db.execute("COMMIT")
        if version > SCHEMA_VERSION:
            self.db.close()
            raise self._newer(version)
        if not version and tables:
            self.db.close()
            shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
            raise StateError(f"{self.path}: not a planctl state store: it holds tables of "
                             f"another program ({shown}); choose another --state")

    def _newer(self, version: int) -> StateError:
        return StateError(f"{self.path}: written by a newer planctl (schema {version}; this "
                          f"one reads schema {SCHEMA_VERSION} and older): use that planctl "
                          "or a newer one, or another --state")

    def _enter_wal(self) -> None:
        """WAL mode (once per file: it stays). Switching needs the file to itself, and
        SQLite answers "busy" at once, without the busy timeout, when another process
        opens it at the same moment (parallel CI jobs starting on a fresh store): try
        again for up to BUSY_TIMEOUT seconds."""
        deadline = time.monotonic() + BUSY_TIMEOUT
        pause = 0.005
        while True:
            try:
                self.db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if getattr(exc, "sqlite_errorcode", 0) & 0xFF != 5 \
                        or time.monotonic() + pause > deadline:  # not SQLITE_BUSY, or too long
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)

    def _upgrade(self) -> None:
        """Create the schema, or bring an older one up to date, in one transaction."""
        with self._transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:  # a newer planctl upgraded it since it was read
                raise self._newer(version)
            if version == SCHEMA_VERSION:
                return
            if version == 1:
                for statement in _MIGRATE_1_2.split(";"):
                    if statement.strip():
                        db.execute(statement)
            elif version == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
            # Schema 2 to 3: nothing to change but the version (see SCHEMA_VERSION).
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _num(self, run_id: str) -> int:
        """The run's number, the high half of its events' keys (looked up once per run)."""
        base = self._bases.get(run_id)
        if base is None:
            row = self.db.execute("SELECT num FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise StateError(f"unknown run {run_id!r}")
            base = self._bases[run_id] = row[0] << _SEQ_BITS
        return base

    # -- writes --------------------------------------------------------------------------

    def create_run(self, run: RunRecord, commands: Sequence[CommandRecord]) -> None:
        try:
            self._create_run(run, commands)
        except UnicodeEncodeError:  # a lone surrogate, as in ``commit``
            self._create_run(_texts(run), [_texts(c) for c in commands])

    def _create_run(self, run: RunRecord, commands: Sequence[CommandRecord]) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO runs (id, num, plan_name, plan_file, status, started_at, ended_at,"
                " snapshot, variables, host, pid, error) VALUES (?,"
                " (SELECT COALESCE(MAX(num), 0) + 1 FROM runs),?,?,?,?,?,?,?,?,?,?)",
                (run.id, run.plan_name, run.plan_file, run.status, run.started_at,
                 run.ended_at, json.dumps(run.snapshot, default=str),
                 json.dumps(run.variables, default=str), run.host, run.pid, run.error),
            )
            db.executemany(
                "INSERT INTO commands (run_id, id, spec_id, ord, parent, entity, status,"
                " execution_reason, changed, attempts, revert_attempts, params, result,"
                " outputs, error, started_at, ended_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (c.run_id, c.id, c.spec_id, c.order, c.parent, c.entity, c.status,
                     c.execution_reason, c.changed, c.attempts, c.revert_attempts,
                     None if c.params is None else _dumps(c.params),
                     None if c.result is None else _dumps(c.result),
                     None if c.outputs is None else _dumps(c.outputs),
                     c.error, c.started_at, c.ended_at)
                    for c in commands
                ],
            )

    def commit(self, run_id: str, batch: Batch) -> None:
        db = self.db
        base = self._num(run_id) if batch.events else 0
        db.execute("BEGIN IMMEDIATE")
        try:
            try:
                self._fence(db, run_id)
                self._write(db, run_id, batch, base)
            except UnicodeEncodeError:
                # A text with a lone surrogate (in an error a plan's Python code raised):
                # SQLite takes UTF-8 only. Written escaped rather than ending the run.
                db.execute("ROLLBACK")
                db.execute("BEGIN IMMEDIATE")
                self._fence(db, run_id)
                self._write(db, run_id, _escaped(batch), base)
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _fence(self, db: sqlite3.Connection, run_id: str) -> None:
        """In the caller's transaction: raise LockLostError if the executor that took
        ``run_id`` here no longer holds it (another planctl took it over, or it was
        unlocked), so that nothing it writes lands beside the new holder's writes."""
        holder = self._holders.get(run_id)
        if holder is None:
            return
        row = db.execute("SELECT run_id, host, pid FROM locks WHERE entity = ?",
                         (run_key(run_id),)).fetchone()
        if row is None or tuple(row) != (run_id, *holder):
            raise lost_lock(run_id, None if row is None else tuple(row))

    @staticmethod
    def _write(db: sqlite3.Connection, run_id: str, batch: Batch, base: int) -> None:
        """The statements of one batch; the caller holds the transaction. ``base`` is the
        run's number shifted into the high half of event keys."""
        # Updates run in the batch's order; neighbours with the same fields share one
        # executemany.
        rows: list[tuple[Any, ...]] = []
        sql, last = "", None
        json_at: tuple[int, ...] = ()
        for command_id, fields in batch.commands:
            names = tuple(fields)
            if names != last:
                if rows:
                    _execute(db, sql, rows)
                    rows = []
                sql, json_at = _update(names)
                last = names
            if json_at:
                values = [*fields.values(), run_id, command_id]
                for i in json_at:
                    values[i] = _dumps(values[i])
                rows.append(tuple(values))
            else:
                rows.append((*fields.values(), run_id, command_id))
        if rows:
            _execute(db, sql, rows)
        if batch.tasks:
            db.executemany(
                "INSERT OR REPLACE INTO async_tasks (run_id, command_id, execution_reason,"
                " entity, handle, spec, status, started_at, updated_at, polls)"
                " VALUES (?,?,?,?,?,?,?,?,?,?)",
                [
                    (t.run_id, t.command_id, t.execution_reason, t.entity, t.handle,
                     _dumps(t.spec), t.status, t.started_at, t.updated_at, t.polls)
                    for t in batch.tasks
                ],
            )
        if batch.task_ends:
            _execute(
                db,
                "UPDATE async_tasks SET status = ?, updated_at = ?, polls = ?"
                " WHERE run_id = ? AND command_id = ? AND execution_reason = ?",
                [(t.status, t.updated_at, t.polls, run_id, t.command_id, t.execution_reason)
                 for t in batch.task_ends],
            )
        if batch.events:
            _execute(
                db,
                "INSERT INTO event_log (id, ts, kind, command_id, data) VALUES (?,?,?,?,?)",
                [(base | e.seq, e.ts, e.kind, e.command_id, _encode(e.data))
                 for e in batch.events],
            )
        if batch.run:
            names = tuple(batch.run)
            assignments = ", ".join(f"{n} = ?" for n in names)
            db.execute(f"UPDATE runs SET {assignments} WHERE id = ?",
                       (*(batch.run[n] for n in names), run_id))

    class _Tx:
        def __init__(self, db: sqlite3.Connection) -> None:
            self.db = db

        def __enter__(self) -> sqlite3.Connection:
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, kind: object, value: object, tb: object) -> None:
            self.db.execute("COMMIT" if kind is None else "ROLLBACK")

    def _transaction(self) -> SQLiteStore._Tx:
        return SQLiteStore._Tx(self.db)

    # -- reads ---------------------------------------------------------------------------

    def _run(self, row: Sequence[Any]) -> RunRecord:
        """A record from a row of ``_RUN_COLUMNS``; its snapshot and vars are parsed once
        per run, or left empty (``{}``) when the row does not carry them."""
        (rid, name, file, status, started, ended, host, pid, error) = row[:9]
        plan = self._plans.get(rid)
        if plan is None:
            if len(row) == 9:
                snapshot: Any = {}
                variables: Any = {}
            else:
                snapshot, variables = json.loads(row[9]), json.loads(row[10])
                self._plans[rid] = (snapshot, variables)
        else:
            snapshot, variables = plan
        return RunRecord(rid, name, file, status, started, snapshot, variables, host, pid,
                         ended, error)

    _RUN_COLUMNS = "id, plan_name, plan_file, status, started_at, ended_at, host, pid, error"

    def get_run(self, run_id: str, *, plan: bool = True) -> RunRecord | None:
        more = ", snapshot, variables" if plan and run_id not in self._plans else ""
        row = self.db.execute(
            f"SELECT {self._RUN_COLUMNS}{more} FROM runs WHERE id = ?", (run_id,)
        ).fetchone()
        if row is None:
            return None
        run = self._run(row)
        return run if plan else dataclasses.replace(run, snapshot={}, variables={})

    def list_runs(self, limit: int = 50, *, plans: bool = True) -> list[RunRecord]:
        # Without plans, the snapshots (megabytes for a big plan) are not even read.
        rows = self.db.execute(
            f"SELECT {self._RUN_COLUMNS}{', snapshot, variables' if plans else ''} FROM runs"
            " ORDER BY started_at DESC, id DESC LIMIT ?",
            (limit,),
        )
        return [self._run(r) for r in rows]

    def run_ids(self, prefix: str = "") -> list[str]:
        rows = self.db.execute(
            "SELECT id FROM runs WHERE substr(id, 1, ?) = ? ORDER BY started_at DESC, id DESC",
            (len(prefix), prefix))
        return [row[0] for row in rows]

    def last_run_id(self) -> str | None:
        row = self.db.execute(
            "SELECT id FROM runs ORDER BY started_at DESC, id DESC LIMIT 1"
        ).fetchone()
        return row[0] if row else None

    def get_commands(self, run_id: str, command_id: str | None = None, *,
                     details: bool = True) -> dict[str, CommandRecord]:
        # Without details the JSON columns are not decoded: most of the cost of 100,000.
        json_columns = "params, result, outputs" if details else "NULL, NULL, NULL"
        rows = self.db.execute(
            "SELECT run_id, id, spec_id, ord, parent, entity, status, execution_reason, changed,"
            f" attempts, revert_attempts, {json_columns}, error, started_at, ended_at"
            " FROM commands WHERE run_id = ?"
            + (" ORDER BY ord" if command_id is None else " AND id = ?"),
            (run_id,) if command_id is None else (run_id, command_id),
        )
        out = {}
        for (rid, cid, spec, order, parent, entity, status, reason, changed, attempts,
             reverts, params, result, outputs, error, started, ended) in rows:
            out[cid] = CommandRecord(
                rid, cid, spec, order, parent, entity, status, reason,
                None if changed is None else bool(changed), attempts, reverts,
                _loads(params), _loads(result), _loads(outputs), error, started, ended,
            )
        return out

    def command_count(self, run_id: str) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM commands WHERE run_id = ?",
                                   (run_id,)).fetchone()[0])

    def get_tasks(self, run_id: str) -> list[TaskRecord]:
        rows = self.db.execute(
            "SELECT run_id, command_id, execution_reason, handle, status, entity, spec,"
            " started_at, updated_at, polls FROM async_tasks WHERE run_id = ?",
            (run_id,),
        )
        return [
            TaskRecord(r[0], r[1], r[2], r[3], r[4], r[5], _loads(r[6]), r[7], r[8], r[9])
            for r in rows
        ]

    def get_events(self, run_id: str, command_id: str | None = None, *,
                   after: int = 0, limit: int | None = None,
                   kind: str | None = None) -> list[EventRecord]:
        row = self.db.execute("SELECT num FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            return []
        base = row[0] << _SEQ_BITS
        # One command's events, or one kind's, are picked by SQLite: the others' data is
        # not decoded.
        rows = self.db.execute(
            "SELECT id, ts, kind, command_id, data FROM event_log WHERE id BETWEEN ? AND ?"
            + ("" if command_id is None else " AND command_id = ?")
            + ("" if kind is None else " AND kind = ?") + " ORDER BY id"
            + ("" if limit is None else f" LIMIT {int(limit)}"),
            (base | min(max(after, 0) + 1, _SEQ_MASK), base | _SEQ_MASK,
             *(() if command_id is None else (command_id,)),
             *(() if kind is None else (kind,))),
        )
        return [EventRecord(run_id, r[1], r[2], r[3], json.loads(r[4]), r[0] & _SEQ_MASK)
                for r in rows]

    # -- entity locks ---------------------------------------------------------------------

    def acquire_locks(self, run_id: str, entities: Sequence[str], host: str, pid: int,
                      now: float, alive: Callable[[LockRecord], bool] | None = None,
                      seq: int | None = None) -> list[LockRecord]:
        """As the Store protocol says, in one write transaction: two executors of the
        same run cannot both pass."""
        with self._transaction() as db:
            held = self._locks(db, entities)
            others = [lock for lock in held if lock.run_id != run_id]
            if alive is not None:
                own = (LockRecord(*row) for row in db.execute(
                    _SELECT_LOCKS + " WHERE run_id = ?", (run_id,)))
                twin = live_lock(own, run_id, alive, besides=(host, pid))
                if twin is not None:
                    others.append(twin)
            if others:
                return others
            if seq is not None and self.last_seq(run_id) != seq:
                raise stale_run(run_id)
            db.executemany(
                "INSERT INTO locks (entity, run_id, host, pid, acquired_at, heartbeat_at)"
                " VALUES (?,?,?,?,?,?) ON CONFLICT(entity) DO UPDATE SET host = excluded.host,"
                " pid = excluded.pid, heartbeat_at = excluded.heartbeat_at",
                [(entity, run_id, host, pid, now, now) for entity in entities],
            )
        if run_key(run_id) in entities:
            self._holders[run_id] = (host, pid)
        return []

    @staticmethod
    def _locks(db: sqlite3.Connection, entities: Sequence[str] | None) -> list[LockRecord]:
        sql = _SELECT_LOCKS
        if entities is None:
            return [LockRecord(*row) for row in db.execute(sql + " ORDER BY entity")]
        out = []
        for entity in entities:
            row = db.execute(sql + " WHERE entity = ?", (entity,)).fetchone()
            if row:
                out.append(LockRecord(*row))
        return out

    def _mine(self, run_id: str) -> tuple[str, tuple[Any, ...]]:
        """The WHERE clause picking the locks of ``run_id`` this store's executor took."""
        holder = self._holders.get(run_id)
        if holder is None:
            return "run_id = ?", (run_id,)
        return "run_id = ? AND host = ? AND pid = ?", (run_id, *holder)

    def heartbeat(self, run_id: str, now: float) -> bool:
        where, args = self._mine(run_id)
        with self._transaction() as db:
            db.execute(f"UPDATE locks SET heartbeat_at = ? WHERE {where}", (now, *args))
            if run_id not in self._holders:
                return True
            row = db.execute(f"SELECT 1 FROM locks WHERE entity = ? AND {where}",
                             (run_key(run_id), *args)).fetchone()
        return row is not None

    def release_locks(self, run_id: str, keep: Sequence[str] = ()) -> None:
        """Release the run's locks but those in ``keep``, which are marked as left over
        (heartbeat 0): held for the run's own rollback, with no live holder. Only those
        this store's executor took: not those of another that took the run over."""
        where, args = self._mine(run_id)
        self._holders.pop(run_id, None)
        with self._transaction() as db:
            kept = set(keep)
            for (entity,) in db.execute(f"SELECT entity FROM locks WHERE {where}",
                                        args).fetchall():
                if entity in kept:
                    db.execute("UPDATE locks SET heartbeat_at = 0 WHERE entity = ?", (entity,))
                else:
                    db.execute("DELETE FROM locks WHERE entity = ?", (entity,))

    def list_locks(self) -> list[LockRecord]:
        return self._locks(self.db, None)

    def unlock(self, entity: str) -> LockRecord | None:
        with self._transaction() as db:
            found = self._locks(db, [entity])
            db.execute("DELETE FROM locks WHERE entity = ?", (entity,))
            if found:  # its executor loses the run too: it stops at its next commit
                lock = found[0]
                db.execute("DELETE FROM locks WHERE entity = ? AND host = ? AND pid = ?",
                           (run_key(lock.run_id), lock.host, lock.pid))
        return found[0] if found else None

    def delete_run(self, run_id: str, statuses: Collection[str]) -> bool:
        with self._transaction() as db:
            row = db.execute("SELECT num, status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None or row[1] not in statuses or db.execute(
                    "SELECT 1 FROM locks WHERE run_id = ? LIMIT 1", (run_id,)).fetchone():
                return False
            base = row[0] << _SEQ_BITS
            db.execute("DELETE FROM event_log WHERE id BETWEEN ? AND ?",
                       (base, base | _SEQ_MASK))
            db.execute("DELETE FROM async_tasks WHERE run_id = ?", (run_id,))
            db.execute("DELETE FROM commands WHERE run_id = ?", (run_id,))
            db.execute("DELETE FROM runs WHERE id = ?", (run_id,))
        self._plans.pop(run_id, None)
        self._bases.pop(run_id, None)  # gone: nothing is written under its number again
        return True

    def last_seq(self, run_id: str) -> int:
        row = self.db.execute("SELECT num FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            return 0
        base = row[0] << _SEQ_BITS
        row = self.db.execute("SELECT MAX(id) FROM event_log WHERE id BETWEEN ? AND ?",
                              (base, base | _SEQ_MASK)).fetchone()
        return 0 if row[0] is None else int(row[0]) & _SEQ_MASK

    def close(self) -> None:
        self.db.close()


def read_locks(path: str | os.PathLike[str]) -> list[tuple[LockRecord, str | None]]:
    """The entity locks of the store at ``path``, each with its run's status, read without
    writing anything: no file is made when there is none (then there are no locks), no
    schema is created or upgraded. For `planctl plan`, which promises to write nothing."""
    path = os.fspath(path)
    if not os.path.exists(path):
        return []
    # Without a -wal file no connection is open and everything is in the main file: read
    # it as immutable, which makes no -wal or -shm file (a read-only connection would).
    # With one, a run may be writing: read through the WAL, whose files exist already.
    quiet = not os.path.exists(path + "-wal")
    for immutable in (True, False) if quiet else (False,):
        try:
            return _read_locks(path, immutable)
        except sqlite3.DatabaseError as exc:
            problem = exc  # with immutable: a run may have started meanwhile; read again
    raise StateError(f"{path}: not a usable planctl state store: {problem}") from None


def _read_locks(path: str, immutable: bool) -> list[tuple[LockRecord, str | None]]:
    uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=ro"
    db = sqlite3.connect(uri + ("&immutable=1" if immutable else ""), uri=True, timeout=5.0)
    try:
        if not db.execute("PRAGMA user_version").fetchone()[0]:
            return []  # an empty file: no schema yet
        rows = db.execute(
            "SELECT l.entity, l.run_id, l.host, l.pid, l.acquired_at, l.heartbeat_at,"
            " r.status FROM locks l LEFT JOIN runs r ON r.id = l.run_id"
            " ORDER BY l.entity").fetchall()
    finally:
        db.close()
    return [(LockRecord(*row[:6]), row[6]) for row in rows]
