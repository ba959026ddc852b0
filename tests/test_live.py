"""Tests of planner.live: which rows the tree shows, and how a row reads."""

from __future__ import annotations

import io

from rich.console import Console

from planner.graph import command_names
from planner.live import LiveReporter, visible_rows
from planner.loader import load_text
from planner.store import EventRecord

PLAN = """\
name: tree
commands:
  - id: vm
    changes: false
    run: {command: [echo]}
    children:
      - id: img
        for_each: [a, b]
        changes: false
        run: {command: [echo]}
  - id: other
    changes: false
    run: {command: [echo]}
"""


def test_all_rows_when_they_fit() -> None:
    order = ["a", "b", "c"]
    assert visible_rows(order, {"a": None, "b": "a", "c": None}, {}, 3) == order


def test_too_many_rows_keep_what_moves_or_failed_with_its_ancestors() -> None:
    order = ["p", "p1", "p2", "q", "q1", "r"]
    parents = {"p": None, "p1": "p", "p2": "p", "q": None, "q1": "q", "r": None}
    statuses = {"p": "RUNNING", "p1": "SUCCEEDED", "p2": "RUNNING", "q": "RUNNING",
                "q1": "FAILED", "r": "PENDING"}
    assert visible_rows(order, parents, statuses, 4) == ["p", "p2", "q", "q1"]
    assert visible_rows(order, parents, statuses, 3) == ["p", "p2", "q"]
    assert visible_rows(order, parents, statuses, 2) == ["p", "p2"]
    quiet = dict.fromkeys(order, "PENDING")
    assert visible_rows(order, parents, quiet, 2) == ["p", "p1"]


def _event(seq: int, at: float, kind: str, cid: str | None, **data: object) -> EventRecord:
    return EventRecord("r1", 100.0 + at, kind, cid, data, seq)


def test_rows_show_status_time_spinner_and_rollback() -> None:
    """A polled command shows `polling`; a reverted one its forward outcome and time, an
    arrow and its inverse's status; the tree nests children under their parent."""
    loaded = load_text(PLAN, "tree.yaml")
    screen = Console(file=io.StringIO(), force_terminal=True, width=100, height=20)
    reporter = LiveReporter(screen, loaded.graph.instances, title="planctl apply tree",
                            clock=lambda: 103.0, refresh_per_second=1)
    try:
        reporter(_event(1, 0.0, "run", None, status="RUNNING"))
        reporter(_event(2, 0.5, "command", "img[a]", status="STARTING", entity="image/a",
                        execution_reason="REGULAR_FLOW"))
        reporter(_event(3, 1.0, "task", "img[a]", task_status="RUNNING", handle="t"))
        reporter(_event(4, 0.5, "command", "img[b]", status="STARTING",
                        execution_reason="REGULAR_FLOW"))
        reporter(_event(5, 1.5, "command", "img[b]", status="SUCCEEDED",
                        execution_reason="REGULAR_FLOW"))
        reporter(_event(6, 2.0, "command", "img[b]", status="REVERTING",
                        execution_reason="ROLLBACK_FLOW"))
        reporter(_event(7, 2.5, "command", "img[b]", status="REVERTED",
                        execution_reason="ROLLBACK_FLOW"))
        record = Console(record=True, width=100, file=io.StringIO())
        record.print(reporter.render())
        text = record.export_text()
    finally:
        reporter.close()
    lines = text.splitlines()
    assert lines[0] == "planctl apply tree  run r1  RUNNING  3.00s"
    assert lines[1] == "├── · vm  PENDING"
    assert lines[2].startswith("│   ├── ") and lines[2].endswith(
        " img[a]  image/a  STARTING 2.50s  polling")
    assert lines[3] == "│   └── ↺ img[b]  SUCCEEDED 1.00s → REVERTED 0.50s"
    assert lines[4] == "└── · other  PENDING"


def test_retries_and_warnings_show_under_the_tree() -> None:
    """A retried command says how often; warnings of the run appear below the tree."""
    loaded = load_text(PLAN, "tree.yaml")
    screen = Console(file=io.StringIO(), force_terminal=True, width=100, height=20)
    reporter = LiveReporter(screen, loaded.graph.instances, title="planctl apply tree",
                            clock=lambda: 101.0, refresh_per_second=1)
    try:
        reporter(_event(1, 0.0, "command", "other", status="STARTING",
                        execution_reason="REGULAR_FLOW"))
        reporter(_event(2, 0.5, "retry", "other", attempt=1, error="busy"))
        reporter(_event(3, 0.6, "warning", "other", message="outputs not\navailable"))
        record = Console(record=True, width=100, file=io.StringIO())
        record.print(reporter.render())
        text = record.export_text()
    finally:
        reporter.close()
    lines = text.splitlines()
    assert lines[4] == "└── ▸ other  STARTING 1.00s  retried 1×"
    assert lines[5] == "warning: other: outputs not available"


def test_a_command_name_ends_its_row() -> None:
    """A command's `name`, rendered with vars and loop variables, ends its row (where a
    narrow terminal cuts it before the status)."""
    loaded = load_text(PLAN.replace("name: tree\n", "name: tree\nvars: {vm: vm-7}\n").replace(
        "      - id: img\n", '      - id: img\n        name: "Image {{ item }} of {{ vm }}"\n'),
        "tree.yaml")
    screen = Console(file=io.StringIO(), force_terminal=True, width=100, height=20)
    reporter = LiveReporter(screen, loaded.graph.instances, title="planctl apply tree",
                            names=command_names(loaded.plan, loaded.graph),
                            clock=lambda: 101.0, refresh_per_second=1)
    record = Console(record=True, width=100, file=io.StringIO())
    record.print(reporter.render())
    lines = record.export_text().splitlines()
    assert lines[1] == "├── · vm  PENDING"
    assert lines[2] == "│   ├── · img[a]  PENDING  Image a of vm-7"
