"""The floor under planctl's durable runs: its exact SQLite writes, replayed with bare sqlite3.

``record`` runs a W1 (or W3) chain, or W2's fan-out, in process with the real
``SQLiteStore`` whose connection is wrapped so that every statement and its bound values
are noted, grouped by transaction, and writes them to a trace file with the store's
schema and pragmas (``asyncio_limit.py`` replays W2's between its jobs and polls).
``replay`` (run as its own process, importing nothing but ``sqlite3``) opens a fresh
file with the same schema and pragmas and runs the same transactions: the same
statements in the same order, prepared, with values already encoded, one ``BEGIN
IMMEDIATE`` ... ``COMMIT`` per store transaction. It prints JSON: ``inner`` (seconds of
the replay) and ``transactions``. planctl's own time over ``inner`` is what its engine,
store code and plan handling cost above SQLite itself.

    python bench/sqlite_limit.py record W1 10000 /tmp/w1.trace
    python bench/sqlite_limit.py replay /tmp/w1.trace /tmp/limit.db
"""

from __future__ import annotations

import argparse
import json
import pickle
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

# A statement: SQL, its rows of values, and whether it went through executemany.
Statement = tuple[str, list[tuple[Any, ...]], bool]
# A unit: a transaction (or a statement outside one), and whether it is one of the
# commits of the run's steps (the rest: creating the run, locks, reads).
Unit = tuple[bool, list[Statement]]

PRAGMAS = ("journal_mode", "synchronous", "foreign_keys", "wal_autocheckpoint",
           "journal_size_limit")


class _Recorder:
    """A ``sqlite3.Connection`` stand-in that notes each statement, then runs it."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.units: list[Unit] = []
        self.in_commit = False
        self._open: list[Statement] | None = None

    def _note(self, sql: str, rows: list[tuple[Any, ...]], many: bool) -> None:
        word = sql.split(None, 1)[0].upper()
        if word == "BEGIN":
            self._open = [(sql, [()], False)]
            return
        if self._open is None:
            self.units.append((self.in_commit, [(sql, rows, many)]))
            return
        self._open.append((sql, rows, many))
        if word in ("COMMIT", "ROLLBACK"):
            self.units.append((self.in_commit, self._open))
            self._open = None

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        self._note(sql, [tuple(params)], False)
        return self.db.execute(sql, params)

    def executemany(self, sql: str, rows: Any) -> sqlite3.Cursor:
        listed = [tuple(row) for row in rows]
        self._note(sql, listed, True)
        return self.db.executemany(sql, listed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def record(workload: str, n: int, out: Path) -> None:
    """Run the chain in process with a recording store; write the trace to ``out``."""
    import harness
    from workloads import chain, fanout

    import planner
    from planner.sqlite_store import SQLiteStore
    from planner.store import Batch

    class RecordingStore(SQLiteStore):
        def __init__(self, path: Path) -> None:
            super().__init__(path)
            self.recorder = _Recorder(self.db)
            self.db = self.recorder  # type: ignore[assignment]

        def commit(self, run_id: str, batch: Batch) -> None:
            self.recorder.in_commit = True
            try:
                super().commit(run_id, batch)
            finally:
                self.recorder.in_commit = False

    expect = "ROLLBACK_FAILED" if workload == "W3" else "SUCCEEDED"
    text = fanout(n) if workload == "W2" else chain(n, fail_last=workload == "W3")
    with harness.plan_dir(text) as root:
        loaded = harness.load(root)
        store = RecordingStore(root / "state.db")
        try:
            outcome = planner.apply_plan(loaded, store, handle_signals=False)
            if outcome.status != expect:
                sys.exit(f"record: the run ended {outcome.status}, expected {expect}")
            real = store.recorder.db
            pragmas = [f"PRAGMA {name}={real.execute(f'PRAGMA {name}').fetchone()[0]}"
                       for name in PRAGMAS]
            schema = [sql for (sql,) in real.execute(
                "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY rowid")]
            version = real.execute("PRAGMA user_version").fetchone()[0]
            units = store.recorder.units
        finally:
            store.close()
    with open(out, "wb") as handle:
        pickle.dump({"pragmas": pragmas, "schema": schema, "user_version": version,
                     "units": units}, handle, protocol=pickle.HIGHEST_PROTOCOL)


class Replayer:
    """A trace's transactions, replayed into a fresh SQLite file with the trace's schema
    and pragmas, all at once (``replay``) or in parts (``asyncio_limit.py``)."""

    def __init__(self, trace: Path, path: Path) -> None:
        with open(trace, "rb") as handle:
            data = pickle.load(handle)
        self.units: list[Unit] = data["units"]
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        self.db = db = sqlite3.connect(path, isolation_level=None)
        for pragma in data["pragmas"]:
            db.execute(pragma)
        db.execute("BEGIN")
        for sql in data["schema"]:
            db.execute(sql)
        db.execute(f"PRAGMA user_version={int(data['user_version'])}")
        db.execute("COMMIT")
        self.next = 0  # the next unit to replay
        self.step_commits = 0  # commits of the run's steps replayed so far

    def _play(self, unit: Unit) -> None:
        execute, executemany = self.db.execute, self.db.executemany
        for sql, rows, many in unit[1]:
            if many:
                executemany(sql, rows)
            else:
                execute(sql, rows[0])

    def until_step_commit(self, count: int) -> None:
        """Replay up to and including the ``count``-th commit of the run's steps."""
        while self.step_commits < count and self.next < len(self.units):
            unit = self.units[self.next]
            self._play(unit)
            self.next += 1
            if unit[0] and unit[1][0][0].upper().startswith("BEGIN"):
                self.step_commits += 1

    def rest(self) -> None:
        for unit in self.units[self.next:]:
            self._play(unit)
        self.next = len(self.units)

    def close(self) -> None:
        self.db.close()


def replay(trace: Path, path: Path) -> dict[str, Any]:
    """Replay a trace into a fresh SQLite file; returns the figures."""
    replayer = Replayer(trace, path)
    units = replayer.units
    cpu = time.process_time()
    start = time.perf_counter()
    replayer.rest()
    inner = time.perf_counter() - start
    cpu = time.process_time() - cpu
    replayer.close()
    return {"inner": inner, "cpu": cpu, "transactions": sum(
        1 for _, statements in units if statements[0][0].upper().startswith("BEGIN")),
        "step_commits": sum(1 for in_commit, _ in units if in_commit)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="verb", required=True)
    rec = sub.add_parser("record", help="run the workload in process, write its trace")
    rec.add_argument("workload", choices=["W1", "W2", "W3"])
    rec.add_argument("n", type=int)
    rec.add_argument("trace", type=Path)
    rep = sub.add_parser("replay", help="replay a trace into a fresh file, print JSON")
    rep.add_argument("trace", type=Path)
    rep.add_argument("db", type=Path)
    args = p.parse_args(argv)
    if args.verb == "record":
        record(args.workload, args.n, args.trace)
    else:
        print(json.dumps(replay(args.trace, args.db)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
