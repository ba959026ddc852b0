"""The Markdown summary of a run that GitHub Actions shows on the job page."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from .status import CommandStatus, RunStatus
from .tally import FinishedRun, History, format_duration, one_line, tally, undo_advice

__all__ = ["MAX_BYTES", "MAX_CELL", "MAX_ROWS", "append_step_summary", "markdown"]

S = CommandStatus
# GitHub shows no step summary over 1 MiB (per step, and a step may run planctl more than
# once): a huge plan shows what matters most, in rows of bounded length and in bounded
# bytes, the table and the list of leftovers each.
MAX_ROWS = 200
MAX_CELL = 300  # characters of a cell or list item before escaping; longer: cut (…)
MAX_BYTES = 200 * 1024
_QUIET = frozenset({S.SUCCEEDED, S.UNCHANGED, S.SKIPPED, S.PENDING})
# A backslash that Markdown would read as escaping the next character (ASCII punctuation).
_ESCAPING = re.compile(r"\\(?=[!-/:-@\[-`{-~])")
_ICONS = {
    RunStatus.SUCCEEDED: "✅", RunStatus.ROLLED_BACK: "↩️", RunStatus.ROLLBACK_FAILED: "❌",
    RunStatus.STOPPED: "❌", RunStatus.INTERRUPTED: "⏸️",
}


def _cut(value: object) -> str:
    """One line of at most MAX_CELL characters of the text (`planctl show` has it whole)."""
    text = one_line(value)
    if len(text) > MAX_CELL:  # cut in the middle: an entity's or an error's end tells most
        head = (MAX_CELL - 1) // 2
        text = text[:head] + "…" + text[len(text) - (MAX_CELL - 1 - head):]
    return text


def _cell(value: object) -> str:
    """Safe inside a table cell: one line, no pipes, no HTML, no links or images (a `](`
    is escaped: `clone[disk0]` stays as it is), at most MAX_CELL characters of the text
    (`planctl show` has it whole). A backslash before punctuation is doubled, so it
    shows as written rather than escaping what follows (`C:\\<dir>` is not `C:&lt;dir>`)."""
    text = _ESCAPING.sub(r"\\\\", _cut(value))
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace("|", "\\|").replace("`", "'").replace("](", "]\\(")


def _code(value: object) -> str:
    """A code span showing ``value`` as one line, exactly as written (a command to copy,
    an id): a code span takes no escapes (`&lt;` and `\\|` would show as such), so it is
    fenced with more backticks than the text holds in a row, and padded with a space when
    the text has backticks or would lose its own spaces at both ends."""
    text = one_line(value)
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if longest or (text[:1] == text[-1:] == " " and text.strip()) else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _row(history: History, leftover: Mapping[str, object] | None) -> str:
    note = history.inverse_error or history.forward_error or ""
    if leftover is not None:
        note = f"leftover: {leftover.get('reason')}"
    inverse = history.inverse or ("REVERTING" if history.inverse_started else "")
    cells = [
        history.command_id, history.entity or "", history.status, history.forward or "",
        format_duration(history.forward_time) if history.forward_time is not None else "",
        inverse,
        format_duration(history.inverse_time) if history.inverse_time is not None else "",
        note,
    ]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def markdown(finished: FinishedRun, *, verb: str = "apply", plan: str | None = None,
             message: str | None = None) -> str:
    """A heading, one line of counts, a table of commands, and the leftovers if any."""
    run_id = finished.run_id
    status = finished.status
    name = plan or finished.plan
    counts = ", ".join(tally(finished).parts())
    lines = [
        f"### {_ICONS.get(status, 'ℹ️')} planctl {verb} {_cell(name)}: {status}",
        "",
        *([f"> {_cell(finished.description)}", ""] if finished.description else []),
        f"Run `{run_id}` ended **{status}** (exit {finished.exit_code}) in "
        f"{format_duration(finished.duration)}: {counts}.",
        "",
        *([f"_{_cell(message)}_", ""] if message else []),
        "| command | entity | status | forward | time | inverse | time | note |",
        "| --- | --- | --- | --- | ---: | --- | ---: | --- |",
    ]
    left = {str(item.get("command")): item for item in finished.leftovers}
    histories = list(finished.histories.values())
    shown = histories
    if len(histories) > MAX_ROWS:
        loud = [h.command_id for h in histories
                if h.status not in _QUIET or h.command_id in left]
        keep = set(loud[:MAX_ROWS])
        for history in histories:
            if len(keep) >= MAX_ROWS:
                break
            keep.add(history.command_id)
        shown = [h for h in histories if h.command_id in keep]
    rows = _within(_row(h, left.get(h.command_id)) for h in shown)
    lines.extend(rows)
    if len(rows) < len(histories):
        lines += ["", f"_{len(histories) - len(rows)} more commands not shown; "
                  f"`planctl show {run_id}` lists them all._"]
    if finished.leftovers:
        lines += ["", "**Leftovers** (changed by this run and still there):", ""]
        items = _within(
            f"- {_code(_cut(item.get('command')))}"
            + (f" {_code(_cut(item.get('entity')))}" if item.get("entity") else "")
            + f" [{_cell(item.get('status'))}]: {_cell(item.get('reason'))}"
            for item in finished.leftovers[:MAX_ROWS])
        lines.extend(items)
        if len(items) < len(finished.leftovers):
            lines += ["", f"_… and {len(finished.leftovers) - len(items)} more leftovers; "
                      f"`planctl rollback {run_id} --dry-run` lists them all._"]
        advice, command = undo_advice(finished)
        lines += ["", f"{_cell(advice)}: {_code(command)}"]
    return "\n".join(lines) + "\n\n"


def _within(lines: Iterable[str]) -> list[str]:
    """The first lines that fit in MAX_BYTES of UTF-8."""
    out: list[str] = []
    size = 0
    for line in lines:
        size += len(line.encode("utf-8", "surrogatepass")) + 1
        if size > MAX_BYTES:
            break
        out.append(line)
    return out


def append_step_summary(path: Path, finished: FinishedRun, *, verb: str = "apply",
                        plan: str | None = None, message: str | None = None) -> None:
    """Append (never overwrite: earlier steps wrote there too) the run's summary, on a
    line of its own: what was there may not end with a line break (`printf '# Deploy'`)."""
    text = markdown(finished, verb=verb, plan=plan, message=message)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text if _ends_a_line(path) else "\n" + text)


def _ends_a_line(path: Path) -> bool:
    """Whether ``path`` is empty or ends with a line break (a file that cannot be read
    back, a pipe, counts as ending one)."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                return True
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"
    except OSError:
        return True
