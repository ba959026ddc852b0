"""Tests of planner.tally: command histories from the event log, the counts and the summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from finishedrun import FAILED_AND_REVERTED, command, make_finished

from planner.store import EventRecord
from planner.tally import format_duration, one_line, summary_text, tally


def test_history_keeps_the_forward_part_apart_from_the_inverse() -> None:
    """A copied-then-reverted command keeps SUCCEEDED as its forward outcome with the
    forward time and polls, and REVERTED as its inverse with the inverse's own time; a
    retry counts where it happened."""
    image = FAILED_AND_REVERTED.histories["img[a]"]
    assert (image.forward, image.inverse, image.status) == ("SUCCEEDED", "REVERTED", "REVERTED")
    assert round(image.forward_time or 0, 3) == 0.7
    assert round(image.inverse_time or 0, 3) == 0.3
    assert (image.handle, image.polls, image.retries, image.inverse_retries) == ("t-1", 3, 0, 1)
    other = FAILED_AND_REVERTED.histories["img[b]"]
    assert (other.forward, other.retries, other.inverse_runs) == ("FAILED", 1, 0)
    assert other.forward_error == "exit status 1: \x1b[31mno\x1b[0m"
    assert other.inverse == "REVERT_SKIPPED" and other.inverse_time == 0.0
    assert FAILED_AND_REVERTED.histories["report"].forward is None


def test_history_of_an_inverse_run_twice_keeps_the_last_attempt() -> None:
    """A REVERT_FAILED inverse started again by a later rollback ends REVERTED, counted as
    two inverse runs, its error gone."""
    finished = make_finished({"a": ("REVERTED", True, None)}, [
        (0.0, "command", "a", command("STARTING")),
        (0.5, "command", "a", command("SUCCEEDED")),
        (1.0, "command", "a", command("REVERTING", "ROLLBACK_FLOW")),
        (1.5, "command", "a", command("REVERT_FAILED", "ROLLBACK_FLOW", error="busy")),
        (9.0, "command", "a", command("REVERTING", "ROLLBACK_FLOW")),
        (9.5, "command", "a", command("REVERTED", "ROLLBACK_FLOW")),
    ])
    history = finished.histories["a"]
    assert (history.inverse, history.inverse_runs, history.inverse_error) == ("REVERTED", 2, None)
    assert history.inverse_time == 0.5
    assert finished.span == 9.5


def test_tally_counts_each_bucket() -> None:
    """Changed counts what a run changed even if reverted since; a read-only command that
    succeeded is unchanged; a failed parent counts as failed; skipped, never-run and
    leftovers are counted apart."""
    assert tally(FAILED_AND_REVERTED).parts() == [
        "2 changed", "0 unchanged", "2 failed", "2 reverted", "0 left over", "1 not run"]
    finished = make_finished(
        {"made": ("SUCCEEDED", True, None), "seen": ("UNCHANGED", False, None),
         "read": ("SUCCEEDED", True, None), "off": ("SKIPPED", None, None)},
        [(0.0, "command", "made", command("STARTING")),
         (0.1, "command", "made", command("SUCCEEDED")),
         (0.1, "command", "seen", command("UNCHANGED")),
         (0.2, "command", "read", command("STARTING")),
         (0.3, "command", "read", command("SUCCEEDED")),
         (0.3, "command", "off", command("SKIPPED"))],
        status="STOPPED", exit_code=2, read_only=["read"],
        leftovers=[{"command": "made", "entity": "thing/made", "status": "SUCCEEDED",
                    "reason": "changed by the run"}])
    counts = tally(finished)
    assert (counts.changed, counts.unchanged, counts.failed, counts.reverted) == (1, 2, 0, 0)
    assert (counts.skipped, counts.not_run, counts.leftovers) == (1, 0, 1)


def test_summary_lists_leftovers_and_what_to_do_next() -> None:
    """The summary names the status, duration and counts, then each leftover on one line
    (control codes escaped) and the rollback command; an interrupted run gets the resume
    hint instead."""
    leftover = {"command": "a", "entity": "thing/a", "status": "REVERT_FAILED",
                "reason": "inverse failed: \x1b[1mbusy\nreally"}
    finished = make_finished({"a": ("REVERT_FAILED", True, None)}, [], status="ROLLBACK_FAILED",
                             exit_code=2, leftovers=[leftover])
    text = summary_text(finished, lambda t, s: f"<{t}>")
    assert text.splitlines() == [
        "",
        "<ROLLBACK_FAILED> in 2.50s: 1 changed, 0 unchanged, 0 failed, 0 reverted, "
        "1 left over",
        "leftovers (changed by this run and still there):",
        "  - a thing/a [REVERT_FAILED]: inverse failed: \\x1b[1mbusy really",
        f"undo them with: planctl rollback {finished.run_id}",
    ]
    stopped = make_finished({"a": ("RUNNING", True, None)}, [], status="INTERRUPTED",
                            exit_code=130)
    assert f"continue with: planctl resume {stopped.run_id}" in summary_text(stopped)


def test_summary_says_what_only_a_removal_by_hand_can_undo() -> None:
    """A leftover with no inverse, or that no probe can tell about, keeps what depends on
    it; the summary says to remove it by hand and name it with --gone (shell-quoted)."""
    leftovers = [
        {"command": "vm", "entity": None, "status": "FAILED",
         "reason": "not undone: something that depends on it was not undone"},
        {"command": "img[0]", "entity": None, "status": "FAILED",
         "reason": "run failed part-way and no `exists` probe can tell"},
        {"command": "note", "entity": None, "status": "SUCCEEDED",
         "reason": "no inverse declared"},
    ]
    finished = make_finished({"vm": ("FAILED", True, None)}, [], status="ROLLBACK_FAILED",
                             exit_code=2, leftovers=leftovers)
    last = summary_text(finished).splitlines()[-1]
    assert last == (f"planctl cannot undo img[0], note: remove them by hand, then: planctl "
                    f"rollback {finished.run_id} --gone 'img[0]' --gone note")
    assert "undo them with" not in summary_text(finished)


def test_one_line_and_durations() -> None:
    """Text for one line loses its breaks and control codes; durations read naturally."""
    assert one_line("a\r\nb\tc\x07\x7f") == "a  b c\\x07\\x7f"
    assert [format_duration(s) for s in (None, 0.424, 59.999, 187.0)] == \
        ["-", "0.42s", "60.00s", "3m07s"]


def test_a_run_read_back_reads_its_events_a_page_at_a_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`resume -o json` of an ended run and the reports of `rollback`/`resume` read the run
    back: its log is read a page at a time (a 100,000-command run's 200,000 events took
    200 MiB at once), and the run read back is the one the whole log gives, on a real run
    applied, failed and rolled back in a real state store."""
    import planner
    import planner.tally as tally_module
    from planner.sqlite_store import SQLiteStore
    from planner.tally import HistoryBook, finished_run, read_finished_run

    plan = tmp_path / "plan.yaml"
    plan.write_text("name: pages\ncommands:\n" + "".join(
        f"  - id: c{i}\n    run: {{command: ['true']}}\n    inverse: {{command: ['true']}}\n"
        + (f"    needs: c{i - 1}\n" if i else "") for i in range(6))
        + "  - id: last\n    needs: c5\n    changes: false\n    run: {command: ['false']}\n")
    store = SQLiteStore(tmp_path / "state.db")
    try:
        outcome = planner.apply_plan(planner.load_plan(plan), store, handle_signals=False)
        assert outcome.status == "ROLLED_BACK"
        run_id = outcome.run_id
        whole = finished_run(store.get_run(run_id), store.get_commands(run_id),  # type: ignore[arg-type]
                             HistoryBook.of(store.get_events(run_id)), exit_code=1,
                             duration=1.0)
        limits: list[int | None] = []
        read = store.get_events

        def spy(*args: Any, **kwargs: Any) -> list[EventRecord]:
            limits.append(kwargs.get("limit"))
            return read(*args, **kwargs)

        monkeypatch.setattr(store, "get_events", spy)
        monkeypatch.setattr(tally_module, "EVENTS_PAGE", 4)
        paged = read_finished_run(store, run_id, exit_code=1, duration=1.0)
    finally:
        store.close()
    assert limits and set(limits) == {4} and len(limits) > 5  # ~30 events, 4 at a time
    assert paged == whole and paged.histories["c3"].inverse == "REVERTED"
    assert tally(paged) == tally(whole)
