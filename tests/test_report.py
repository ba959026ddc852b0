"""Tests of planner.report.format_command: how recorded values read in `show RUN COMMAND`."""

from __future__ import annotations

from typing import Any

from planner.report import format_command
from planner.store import CommandRecord, EventRecord, RunRecord, TaskRecord

RUN = RunRecord("r1", "demo", "/plans/demo.yaml", "SUCCEEDED", 1000.0, {}, {})


def _shown(**fields: Any) -> str:
    record = CommandRecord("r1", "c", "c", 0, status="SUCCEEDED", **fields)
    return format_command(RUN, record, [], [])


def test_text_is_a_block_marked_by_its_final_line_breaks() -> None:
    """Multi-line text is an indented block: `|` with one final line break, `|-` with none,
    `|+` with several; blank lines stay empty."""
    out = _shown(result={"a": "x\n\ny\n", "b": "x\ny", "c": "x\n\n"})
    assert "\nresult\n  a: |\n    x\n\n    y\n  b: |-\n    x\n    y\n  c: |+\n    x\n" in out


def test_scalars_that_could_be_misread_are_json() -> None:
    """Text that reads as a number, a boolean, null or nothing, or with edge spaces or
    control codes, is quoted as JSON; numbers and booleans are JSON; plain text is not."""
    out = _shown(outputs={"n": "3", "t": "true", "e": "", "s": " pad", "esc": "\x1b[1m",
                          "i": 3, "b": False, "z": None, "ok": "plain text"})
    assert ('\n  n: "3"\n  t: "true"\n  e: ""\n  s: " pad"\n  esc: "\\u001b[1m"\n'
            '  i: 3\n  b: false\n  z: null\n  ok: plain text\n') in out


def test_lists_are_inline_json_unless_long_or_nested() -> None:
    """An argv is one JSON list; a long or nested list goes below its key, item by item."""
    out = _shown(params={"action": "command", "args": ["echo", "a b"],
                         "long": ["x" * 60, "y" * 60], "nested": [{"k": 1}], "empty": []})
    assert '\n  args: ["echo", "a b"]\n' in out
    assert f"\n  long:\n    - {'x' * 60}\n    - {'y' * 60}\n" in out
    assert "\n  nested:\n    -\n      k: 1\n  empty: []\n" in out


def test_missing_values_are_dashes_and_tasks_come_forward_first() -> None:
    """What was never recorded is `-`; tasks are listed REGULAR_FLOW, then ROLLBACK_FLOW,
    each with its poll; the history has the command's own events, timed from the run's
    first event."""
    record = CommandRecord("r1", "c", "c", 0, status="REVERTED", execution_reason="ROLLBACK_FLOW")
    tasks = [TaskRecord("r1", "c", "ROLLBACK_FLOW", "h2", "SUCCEEDED", started_at=5.0,
                        updated_at=6.0, polls=2, spec={"poll": ["st", "h2"]}),
             TaskRecord("r1", "c", "REGULAR_FLOW", "h1", "RUNNING", polls=0),
             TaskRecord("r1", "other", "REGULAR_FLOW", "h3", "RUNNING")]
    events = [EventRecord("r1", 100.0, "run", None, {"status": "RUNNING"}, 1),
              EventRecord("r1", 101.5, "command", "c", {"status": "STARTING"}, 2),
              EventRecord("r1", 102.0, "command", "other", {"status": "STARTING"}, 3)]
    out = format_command(RUN, record, tasks, events)
    assert "\nerror             -\nparams            -\nresult            -\n" in out
    assert ("\ntasks\n  REGULAR_FLOW   task h1 RUNNING (0 polls)\n"
            "  ROLLBACK_FLOW  task h2 SUCCEEDED (2 polls in 1.00s)\n"
            '    poll: ["st", "h2"]\n') in out
    assert out.endswith("\nhistory\n    1.50s  STARTING       c\n")
