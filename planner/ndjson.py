"""`--output json`: every event as one JSON object per line (NDJSON), with a schema version."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from .errors import Diagnostic, LockLostError, PlanctlError, PlanError, format_path
from .sink import Sink
from .store import EventRecord
from .tally import FinishedRun, tally

__all__ = [
    "FIELDS",
    "SCHEMA_VERSION",
    "JsonReporter",
    "dumps",
    "error_object",
    "event_object",
    "iso_time",
    "outcome_object",
]

# Bumped only when a key is removed or renamed or changes meaning; new keys and new kinds
# may appear within a version, so readers ignore what they do not know.
SCHEMA_VERSION = 1

# The keys of each kind, always present (null when not known), in this order, after the
# keys every object has: schema_version, kind, seq, ts, time, run_id.
FIELDS: Mapping[str, tuple[str, ...]] = {
    "run": ("plan", "commands", "status", "previous", "signal", "leftovers"),
    "command": ("command_id", "entity", "status", "previous", "execution_reason", "error"),
    "task": ("command_id", "entity", "execution_reason", "task_status", "handle", "polls"),
    "retry": ("command_id", "entity", "attempt", "error"),
    "warning": ("command_id", "message"),
    "outcome": ("plan", "status", "exit_code", "duration", "counts", "leftovers", "message"),
    "error": ("exit_code", "error", "message", "diagnostics"),
}
# Keys of the executor's event data that the envelope already says.
_DROPPED = frozenset({"version"})


def iso_time(ts: float) -> str:
    """ISO 8601 in UTC with milliseconds: ``2026-11-22T07:20:14.452Z``."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def dumps(obj: Mapping[str, Any]) -> str:
    """One line of ASCII JSON (safe on any stdout encoding), newline-terminated."""
    return _ENCODER.encode(obj) + "\n"


# What json.dumps(obj, separators=(",", ":"), default=str) builds anew for every object
# (it keeps no state between calls): made once, as json.dumps does for its defaults.
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str)


def _envelope(kind: str, ts: float, run_id: str | None, seq: int | None) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "kind": kind, "seq": seq, "ts": iso_time(ts),
            "time": round(ts, 6), "run_id": run_id}


def event_object(event: EventRecord, *, plan: str | None = None, commands: int | None = None,
                 entity: str | None = None) -> dict[str, Any]:
    """The JSON object of one executor event: its data flattened into the envelope."""
    obj = _envelope(event.kind, event.ts, event.run_id, event.seq)
    data = event.data
    known = FIELDS.get(event.kind, ("command_id",))
    given = {"plan": plan, "commands": commands, "command_id": event.command_id,
             "entity": entity}
    for key in known:
        obj[key] = data[key] if key in data else given.get(key)
    for key, value in data.items():  # anything newer than this reporter, passed on
        if key not in obj and key not in _DROPPED:
            obj[key] = value
    return obj


def outcome_object(finished: FinishedRun, *, plan: str | None, message: str | None = None,
                   now: float | None = None) -> dict[str, Any]:
    """The last object of a run: how it ended, its counts and its leftovers."""
    counts = tally(finished)
    obj = _envelope("outcome", time.time() if now is None else now, finished.run_id, None)
    obj.update(
        plan=plan, status=finished.status, exit_code=finished.exit_code,
        duration=round(finished.duration, 3),
        counts={"changed": counts.changed, "unchanged": counts.unchanged,
                "failed": counts.failed, "reverted": counts.reverted,
                "skipped": counts.skipped, "not_run": counts.not_run,
                "leftovers": counts.leftovers},
        leftovers=[dict(item) for item in finished.leftovers],
        message=message,
    )
    return obj


def _diagnostic(diagnostic: Diagnostic) -> dict[str, Any]:
    return {"severity": diagnostic.severity.value, "file": diagnostic.file,
            "line": diagnostic.line, "column": diagnostic.column,
            "path": format_path(diagnostic.path), "message": diagnostic.message,
            "hint": diagnostic.hint}


def error_object(error: BaseException, exit_code: int, *, kind: str | None = None,
                 run_id: str | None = None, now: float | None = None) -> dict[str, Any]:
    """What ends the stream instead of an outcome when planctl could not run (or crashed).

    ``kind``: ``plan``, ``usage``, ``state``, ``locked`` (from the error's class when not
    given), ``interrupted`` or ``internal``.
    """
    obj = _envelope("error", time.time() if now is None else now, run_id, None)
    diagnostics: Sequence[Diagnostic] = error.diagnostics if isinstance(error, PlanError) else ()
    if kind is not None:
        pass
    elif isinstance(error, PlanError):
        kind = "plan"
    elif isinstance(error, LockLostError):
        kind = "interrupted"  # stopped where it was, resumable (exit 130), as if killed
    elif isinstance(error, PlanctlError):
        kind = type(error).__name__.removesuffix("Error").lower() or "usage"
    elif isinstance(error, KeyboardInterrupt):
        kind = "interrupted"
    else:
        kind = "internal"
    obj.update(exit_code=exit_code, error=kind, message=str(error),
               diagnostics=[_diagnostic(d) for d in diagnostics])
    return obj


class JsonReporter:
    """A listener writing each event as one JSON line; ``finish`` writes the outcome."""

    def __init__(self, stream: TextIO, *, plan: str | None = None, commands: int | None = None,
                 entities: Mapping[str, str | None] | None = None, batch: bool = False) -> None:
        self.sink = Sink(stream, batch=batch)  # batch: see Sink
        self.plan = plan
        self.commands = commands
        self.entities: dict[str, str | None] = dict(entities or {})

    def __call__(self, event: EventRecord) -> None:
        command = event.command_id
        if command is not None and event.kind == "command" and "entity" in event.data:
            self.entities[command] = event.data["entity"]
        entity = self.entities.get(command) if command is not None else None
        self.sink.write(dumps(event_object(event, plan=self.plan, commands=self.commands,
                                           entity=entity)))

    def finish(self, finished: FinishedRun, message: str | None = None) -> None:
        self.sink.write(dumps(outcome_object(finished, plan=self.plan, message=message)))
