"""Tests of planner.ndjson: the JSON object of each event, the outcome and the error."""

from __future__ import annotations

import io
import json

from finishedrun import FAILED_AND_REVERTED

from planner.errors import Diagnostic, LockedError, LockLostError, PlanError, UsageError
from planner.ndjson import (
    FIELDS,
    SCHEMA_VERSION,
    JsonReporter,
    error_object,
    event_object,
    iso_time,
    outcome_object,
)
from planner.store import EventRecord


def test_iso_time_is_utc_with_milliseconds() -> None:
    assert iso_time(0) == "1970-01-01T00:00:00.000Z"
    assert iso_time(1_795_332_014.4526) == "2026-11-22T07:20:14.452Z"


def test_event_objects_have_stable_keys_and_pass_new_data_on() -> None:
    """Every key of a kind is present (null when unknown) in a fixed order; data keys this
    version does not know are passed on; the executor's own `version` is dropped."""
    event = EventRecord("r1", 10.0, "command", "a", {"status": "STARTING", "previous": "PENDING",
                                                     "execution_reason": "REGULAR_FLOW",
                                                     "entity": "vm/a", "shiny": 1}, 4)
    obj = event_object(event)
    assert list(obj) == ["schema_version", "kind", "seq", "ts", "time", "run_id",
                         *FIELDS["command"], "shiny"]
    assert (obj["schema_version"], obj["seq"], obj["error"], obj["shiny"]) == \
        (SCHEMA_VERSION, 4, None, 1)
    run = event_object(EventRecord("r1", 10.0, "run", None, {"status": "RUNNING",
                                                              "version": 1}, 1),
                       plan="p", commands=3)
    assert (run["plan"], run["commands"], run["leftovers"]) == ("p", 3, None)
    assert "version" not in run
    odd = event_object(EventRecord("r1", 10.0, "novel", "a", {"x": [1]}, 2))
    assert (odd["command_id"], odd["x"]) == ("a", [1])


def test_reporter_writes_one_line_per_event_and_knows_task_entities() -> None:
    """Task events, which carry no entity, get the one their command event named."""
    out = io.StringIO()
    reporter = JsonReporter(out, plan="p", commands=1)
    reporter(EventRecord("r1", 1.0, "command", "a", {"status": "RUNNING", "entity": "vm/a"}, 1))
    reporter(EventRecord("r1", 2.0, "task", "a", {"handle": "t", "task_status": "RUNNING"}, 2))
    reporter.finish(FAILED_AND_REVERTED)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    task = json.loads(lines[1])
    assert (task["entity"], task["handle"], task["polls"]) == ("vm/a", "t", None)
    assert json.loads(lines[2])["kind"] == "outcome"


def test_outcome_carries_exit_code_counts_and_leftovers() -> None:
    obj = outcome_object(FAILED_AND_REVERTED, plan="handmade", now=5.0)
    assert (obj["kind"], obj["seq"], obj["status"], obj["exit_code"]) == \
        ("outcome", None, "ROLLED_BACK", 1)
    assert obj["counts"] == {"changed": 2, "unchanged": 0, "failed": 2, "reverted": 2,
                             "skipped": 0, "not_run": 1, "leftovers": 0}
    assert list(obj)[6:] == list(FIELDS["outcome"])


def test_error_objects_name_the_kind_of_error() -> None:
    """Plan errors carry their located diagnostics; other errors their class; anything
    else is internal."""
    plan = PlanError([Diagnostic(("commands", 0, "run"), "bad", "fix it", file="p.yaml",
                                 line=3, column=5)])
    obj = error_object(plan, 3, now=0.0)
    assert (obj["error"], obj["exit_code"]) == ("plan", 3)
    assert obj["diagnostics"] == [{"severity": "error", "file": "p.yaml", "line": 3,
                                   "column": 5, "path": "commands[0].run", "message": "bad",
                                   "hint": "fix it"}]
    assert error_object(UsageError("no"), 3)["error"] == "usage"
    assert error_object(LockedError("held"), 4)["error"] == "locked"
    # A run whose lock another planctl took stopped where it was, resumable: one of the
    # documented kinds (it used to be "locklost", which output.md does not list).
    assert error_object(LockLostError("taken over"), 130)["error"] == "interrupted"
    assert error_object(RuntimeError("bug"), 70)["error"] == "internal"


def test_dumps_is_json_dumps_compact_ascii_with_str_for_the_rest() -> None:
    """`dumps` keeps one encoder rather than building one per line: the text is still
    json.dumps(obj, separators=(",", ":"), default=str) and a newline, call after call."""
    from pathlib import PurePosixPath

    from planner.ndjson import dumps

    objects = [{"kind": "command", "seq": 1, "time": 1.5, "error": None, "ok": True},
               {"message": "étape ✓ \u2028 \x1b[31m", "nested": {"a": [1, 2.25, "x"]}},
               {"path": PurePosixPath("/tmp/x"), "big": 10**30, "nan": float("nan")}]
    for obj in objects * 2:
        assert dumps(obj) == json.dumps(obj, separators=(",", ":"), default=str) + "\n"
    assert dumps(objects[2]) == '{"path":"/tmp/x","big":1000000000000000000000000000000,' \
                                '"nan":NaN}\n'
