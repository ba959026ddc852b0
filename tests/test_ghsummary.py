"""Tests of planner.ghsummary: the Markdown appended to $GITHUB_STEP_SUMMARY."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from finishedrun import FAILED_AND_REVERTED, command, make_finished

from planner import ghsummary
from planner.ghsummary import append_step_summary, markdown


def test_markdown_has_heading_counts_and_one_row_per_command() -> None:
    text = markdown(FAILED_AND_REVERTED, verb="apply")
    lines = text.splitlines()
    assert lines[0] == "### ↩️ planctl apply handmade: ROLLED_BACK"
    assert "(exit 1) in 2.50s: 2 changed, 0 unchanged, 2 failed, 2 reverted" in lines[2]
    rows = [line for line in lines if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[0] for row in rows] == ["| vm", "| img[a]", "| img[b]", "| report"]
    assert "| img[a] | thing/img[a] | REVERTED | SUCCEEDED | 0.70s | REVERTED | 0.30s |  |" \
        in text
    assert text.endswith("\n\n")


def test_cells_cannot_break_the_table_or_inject_html() -> None:
    finished = make_finished({"a": ("FAILED", None, None)}, [
        (0.0, "command", "a", command("STARTING")),
        (0.1, "command", "a", command("FAILED", error="x | y <b>`z`</b>\nmore")),
    ], status="STOPPED", exit_code=2)
    row = next(line for line in markdown(finished).splitlines() if line.startswith("| a "))
    assert row.endswith("| x \\| y &lt;b&gt;'z'&lt;/b&gt; more |")


def test_the_plans_description_is_quoted_under_the_heading_when_it_has_one() -> None:
    lines = markdown(FAILED_AND_REVERTED).splitlines()
    assert lines[1:3] == ["", lines[2]] and lines[2].startswith("Run `")
    described = dataclasses.replace(FAILED_AND_REVERTED,
                                    description="Blue | green <i>deploy</i>")
    lines = markdown(described).splitlines()
    assert lines[1:4] == ["", "> Blue \\| green &lt;i&gt;deploy&lt;/i&gt;", ""]
    assert lines[4].startswith("Run `")


def test_a_huge_run_shows_troubled_rows_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_ROWS rows, commands in trouble are shown and the rest counted."""
    monkeypatch.setattr(ghsummary, "MAX_ROWS", 3)
    commands = {f"c{n}": ("SUCCEEDED", True, None) for n in range(5)}
    commands["c4"] = ("FAILED", None, None)
    text = markdown(make_finished(commands, [], status="STOPPED", exit_code=2))
    rows = [line.split(" | ")[0] for line in text.splitlines() if re.match(r"\| c\d ", line)]
    assert rows == ["| c0", "| c1", "| c4"]
    assert "_2 more commands not shown;" in text


def test_append_keeps_what_was_there(tmp_path: Path) -> None:
    path = tmp_path / "summary.md"
    path.write_text("before\n")
    append_step_summary(path, FAILED_AND_REVERTED)
    append_step_summary(path, FAILED_AND_REVERTED)
    text = path.read_text()
    assert text.startswith("before\n") and text.count("### ") == 2


def test_a_lone_surrogate_or_noncharacter_is_escaped_not_written(tmp_path: Path) -> None:
    """An error holding a lone surrogate (which UTF-8 cannot encode) or U+FFFE is written
    escaped: the summary is appended, as UTF-8, instead of planctl failing to write it."""
    finished = make_finished(
        {"img": ("FAILED", None, None)},
        [(0.0, "command", "img", command("STARTING")),
         (0.1, "command", "img", command("FAILED", error="bad \udcff \ufffe"))])
    path = tmp_path / "summary.md"
    append_step_summary(path, finished)
    assert "bad \\udcff \\ufffe" in path.read_text(encoding="utf-8")


def _leftover(command: str, reason: str) -> dict[str, object]:
    return {"command": command, "entity": None, "status": "FAILED", "reason": reason}


def test_leftovers_only_a_removal_by_hand_can_undo_get_the_summarys_advice() -> None:
    """Leftovers no rollback can undo by itself (no inverse, or no probe can tell) get the
    advice the text summary gives: remove them by hand, then roll back naming them with
    --gone; not `planctl rollback RUN` alone, which would leave them again."""
    finished = make_finished(
        {"vm": ("FAILED", True, None), "img[0]": ("FAILED", True, None)}, [],
        status="ROLLBACK_FAILED", exit_code=2, leftovers=[
            _leftover("vm", "not undone: something that depends on it was not undone"),
            _leftover("img[0]", "run failed part-way and no `exists` probe can tell")])
    text = markdown(finished)
    run_id = finished.run_id
    assert "undo them with" not in text
    assert (f"planctl cannot undo img[0]: remove it by hand, then: "
            f"`planctl rollback {run_id} --gone 'img[0]'`") in text


def test_leftovers_a_rollback_can_undo_say_to_run_it() -> None:
    """Leftovers a later rollback can undo (an inverse failed) say to run it."""
    finished = make_finished(
        {"vm": ("REVERT_FAILED", True, None)}, [], status="ROLLBACK_FAILED", exit_code=2,
        leftovers=[_leftover("vm", "inverse failed: exit status 1")])
    assert f"undo them with: `planctl rollback {finished.run_id}`" in markdown(finished)


def test_long_cells_are_cut_and_rows_stop_at_the_byte_budget(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An error of 100,000 characters takes MAX_CELL of them in its cell, its start and
    its end; rows past
    MAX_BYTES are counted as not shown instead of written."""
    finished = make_finished({"a": ("FAILED", None, None)}, [
        (0.0, "command", "a", command("STARTING")),
        (0.1, "command", "a", command("FAILED", error="e" * 100_000 + "nd")),
    ], status="STOPPED", exit_code=2)
    row = next(line for line in markdown(finished).splitlines() if line.startswith("| a "))
    cell = row.split(" | ")[-1].removesuffix(" |")
    assert len(cell) == ghsummary.MAX_CELL and cell.startswith("eee")
    assert cell.endswith("…" + "e" * (ghsummary.MAX_CELL // 2 - 2) + "nd")
    monkeypatch.setattr(ghsummary, "MAX_BYTES", 200)
    commands = {f"c{n}": ("SUCCEEDED", True, None) for n in range(10)}
    text = markdown(make_finished(commands, [], status="SUCCEEDED", exit_code=0))
    shown = [line for line in text.splitlines() if re.match(r"\| c\d ", line)]
    assert 0 < len(shown) < 10
    assert f"_{10 - len(shown)} more commands not shown;" in text
