"""The terminal view of a run: a live tree of commands with status, elapsed time and spinners."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text
from rich.tree import Tree

from .graph import CommandInstance
from .status import ROLLBACK_FLOW, CommandStatus, RunStatus
from .store import EventRecord
from .tally import FinishedRun, format_duration, one_line, summary_text

__all__ = ["REFRESH_PER_SECOND", "LiveReporter", "visible_rows"]

S = CommandStatus
REFRESH_PER_SECOND = 8
ACTIVE = frozenset({S.STARTING, S.RUNNING, S.REVERTING})
TROUBLE = frozenset({S.FAILED, S.UNKNOWN, S.REVERT_FAILED})

STYLES: Mapping[str, str] = {
    S.PENDING: "dim", S.STARTING: "cyan", S.RUNNING: "cyan", S.SUCCEEDED: "green",
    S.UNCHANGED: "dim green", S.SKIPPED: "dim", S.FAILED: "bold red", S.UNKNOWN: "yellow",
    S.REVERTING: "magenta", S.REVERTED: "magenta", S.REVERT_SKIPPED: "dim magenta",
    S.REVERT_FAILED: "bold red",
    RunStatus.SUCCEEDED: "bold green", RunStatus.ROLLING_BACK: "bold magenta",
    RunStatus.ROLLED_BACK: "bold yellow", RunStatus.ROLLBACK_FAILED: "bold red",
    RunStatus.STOPPED: "bold red", RunStatus.INTERRUPTED: "bold yellow",
    "RESUMED": "cyan", "INTERRUPTING": "yellow",
}
_ICONS = {
    S.PENDING: "·", S.STARTING: "▸", S.RUNNING: "▸", S.SUCCEEDED: "✔", S.UNCHANGED: "=",
    S.SKIPPED: "-", S.FAILED: "✘", S.UNKNOWN: "?", S.REVERTING: "↺", S.REVERTED: "↺",
    S.REVERT_SKIPPED: "↺", S.REVERT_FAILED: "✘",
}
_ASCII_ICONS = {**_ICONS, S.PENDING: ".", S.STARTING: ">", S.RUNNING: ">", S.SUCCEEDED: "+",
                S.FAILED: "x", S.REVERTING: "<", S.REVERTED: "<", S.REVERT_SKIPPED: "<",
                S.REVERT_FAILED: "x"}


@dataclass(slots=True)
class _Row:
    """What the tree shows of one command; written by the run, read by the refresh thread."""

    status: str = S.PENDING
    entity: str | None = None
    started: float | None = None
    ended: float | None = None
    polling: bool = False  # its async task is being polled
    forward: str | None = None  # the last forward status, once the rollback began
    forward_time: float | None = None
    reverted_at: float | None = None
    error: str | None = None
    retries: int = 0  # failed attempts tried again, in the current phase


def visible_rows(order: Sequence[str], parents: Mapping[str, str | None],
                 statuses: Mapping[str, str], limit: int) -> list[str]:
    """The commands a tree of at most ``limit`` rows shows, in plan order: all when they
    fit; otherwise those in flight or in trouble, with their ancestors, then the rest."""
    if len(order) <= limit:
        return list(order)
    keep: dict[str, None] = {}
    for iid in order:
        if statuses.get(iid) in ACTIVE or statuses.get(iid) in TROUBLE:
            chain = []
            node: str | None = iid
            while node is not None and node not in keep:
                chain.append(node)
                node = parents.get(node)
            if len(keep) + len(chain) > limit:
                break
            keep.update(dict.fromkeys(chain))
    if not keep:  # nothing remarkable: the first rows, as far as they fit
        return list(order[:limit])
    return [iid for iid in order if iid in keep]


class LiveReporter:
    """A listener that keeps a tree of the plan's commands up to date on a terminal.

    Events update plain rows (cheap, on the run's thread); rich's refresh thread draws
    them a few times a second. Rollback shows on the same rows: each command keeps its
    forward outcome and gains its inverse's status as it happens.
    """

    def __init__(self, console: Console, instances: Mapping[str, CommandInstance], *,
                 title: str, statuses: Mapping[str, str] | None = None,
                 entities: Mapping[str, str | None] | None = None,
                 names: Mapping[str, str] | None = None,
                 clock: Callable[[], float] = time.time,
                 refresh_per_second: float = REFRESH_PER_SECOND) -> None:
        self.console = console
        self.title = title
        self.clock = clock
        self.order = [i.id for i in sorted(instances.values(), key=lambda i: i.order)]
        self.parents = {i.id: i.parent for i in instances.values()}
        self.names = {iid: one_line(name) for iid, name in (names or {}).items()}
        self.rows = {iid: _Row() for iid in self.order}
        for iid, status in (statuses or {}).items():
            if iid in self.rows:
                self.rows[iid].status = status
        for iid, entity in (entities or {}).items():
            if iid in self.rows:
                self.rows[iid].entity = entity
        self.warnings: list[str] = []
        self.run_id: str | None = None
        self.run_status = ""
        self.started: float | None = None
        self.ended: float | None = None
        self.lock = threading.Lock()
        utf = (console.encoding or "").lower().startswith("utf")
        self.icons = _ICONS if utf else _ASCII_ICONS
        self.spinner = Spinner("dots" if utf else "line")
        self.live = Live(console=console, get_renderable=self.render, transient=False,
                         refresh_per_second=refresh_per_second)
        self.showing = False

    # -- the run's side --------------------------------------------------------------------

    def __call__(self, event: EventRecord) -> None:
        with self.lock:
            self._update(event)
        if not self.showing:  # at the first event: `nothing to undo` never draws a tree
            self.showing = True
            self.live.start()

    def _update(self, event: EventRecord) -> None:
        if self.started is None:
            self.started = event.ts
        self.run_id = event.run_id
        data = event.data
        if event.kind == "run":
            self.run_status = str(data.get("status"))
            if "leftovers" in data:
                self.ended = event.ts
            return
        if event.kind == "warning":
            where = f"{event.command_id}: " if event.command_id else ""
            self.warnings.append(one_line(f"{where}{data.get('message')}"))
            return
        row = self.rows.get(event.command_id or "")
        if row is None:
            return
        if event.kind == "retry":
            row.retries += 1
        elif event.kind == "command":
            status = str(data.get("status"))
            if data.get("entity"):
                row.entity = str(data["entity"])
            rollback = data.get("execution_reason") == ROLLBACK_FLOW
            if rollback and row.reverted_at is None:
                row.forward = row.status
                row.forward_time = None if row.started is None else \
                    (row.ended or event.ts) - row.started
                row.reverted_at = event.ts
                row.started, row.ended, row.retries = event.ts, None, 0
            elif row.started is None or status in (S.STARTING, S.REVERTING):
                row.started, row.ended = event.ts, None
            row.status = status
            if status in ACTIVE:
                row.ended = None
            else:
                row.ended = event.ts
                row.polling = False
            if data.get("error"):
                row.error = one_line(data["error"])
        elif event.kind == "task":
            row.polling = data.get("task_status") in ("RUNNING", "REATTACHED")

    def finish(self, finished: FinishedRun) -> None:
        """Draw the tree one last time, stop, and print the summary below it."""
        self.close()
        text = Text(summary_text(finished).lstrip("\n"))
        text.highlight_words([finished.status], STYLES.get(finished.status, ""))
        # The terminal may wrap it, rich must not: a command cut by a line break of ours
        # would not paste whole.
        self.console.print(text, end="", soft_wrap=True)

    def close(self) -> None:
        if self.showing:
            self.showing = False
            self.live.stop()

    # -- the refresh thread's side -----------------------------------------------------------

    def _spin(self, now: float, style: str) -> Text:
        frames = self.spinner.frames
        index = int(now / (self.spinner.interval / 1000.0)) % len(frames)
        return Text(frames[index], style=style)

    def _label(self, iid: str, row: _Row, now: float) -> Text:
        style = STYLES.get(row.status, "")
        polling = row.polling and row.status in ACTIVE and self.ended is None
        if polling:
            icon = self._spin(now, style)
        else:
            icon = Text(self.icons.get(row.status, "?"), style=style)
        label = Text.assemble(icon, " ", (iid, "bold" if row.status in ACTIVE else ""))
        if row.entity:
            label.append(f"  {one_line(row.entity)}", style="dim")
        if row.forward is not None:
            took = "" if row.forward_time is None else f" {format_duration(row.forward_time)}"
            label.append(f"  {row.forward}{took}", style=STYLES.get(row.forward, ""))
            label.append(" →" if self.icons is _ICONS else " ->", style="dim")
        label.append(f"{' ' if row.forward else '  '}{row.status}", style=style)
        if row.started is not None and (row.ended is not None or row.status in ACTIVE):
            label.append(f" {format_duration((row.ended or now) - row.started)}", style="dim")
        if polling:
            label.append("  polling", style="dim")
        if row.retries:
            label.append(f"  retried {row.retries}×" if self.icons is _ICONS
                         else f"  retried {row.retries}x", style="yellow")
        if row.error:
            label.append(f"  {row.error}", style="red")
        # Last: a row cut at the terminal's width loses the name before the status.
        name = self.names.get(iid)
        if name:
            label.append(f"  {name}", style="dim italic")
        label.no_wrap = True
        label.overflow = "ellipsis"
        return label

    def _head(self, now: float) -> Text:
        """The root line: title, run id, run status, elapsed time, on one line whatever the
        width (the rows below are counted to fit the screen), the run id dropped and then
        the title cut where they do not fit, before the status would be."""
        rest = Text()
        if self.run_status:
            rest.append(f"  {self.run_status}", style=STYLES.get(self.run_status, ""))
        if self.started is not None:
            rest.append(f"  {format_duration(now - self.started)}", style="dim")
        run = f"  run {self.run_id}" if self.run_id else ""
        width = self.console.size.width
        if len(self.title) + len(run) + len(rest) > width:
            run = ""
        head = Text(self.title, style="bold")
        if len(self.title) + len(rest) > width:
            head.truncate(max(len("planctl apply ") + 1, width - len(rest)), overflow="ellipsis")
        head.append(run, style="dim")
        head.append_text(rest)
        head.no_wrap = True
        head.overflow = "ellipsis"
        return head

    def render(self) -> RenderableType:
        """The whole view: a root line for the run, then the commands as a tree."""
        with self.lock:
            now = self.ended or self.clock()  # an ended run's clock stops
            tree = Tree(self._head(now), guide_style="dim")
            # Room for the root line, the footer, warnings and the cursor's line.
            limit = max(3, self.console.size.height - 3 - min(3, len(self.warnings)))
            statuses = {iid: row.status for iid, row in self.rows.items()}
            shown = visible_rows(self.order, self.parents, statuses, limit)
            nodes: dict[str | None, Tree] = {None: tree}
            for iid in shown:
                parent = self.parents[iid]
                while parent is not None and parent not in nodes:
                    parent = self.parents[parent]
                nodes[iid] = nodes[parent].add(self._label(iid, self.rows[iid], now))
            parts: list[RenderableType] = [tree]
            hidden = len(self.order) - len(shown)
            if hidden:
                seen = set(shown)
                counts = Counter(statuses[iid] for iid in self.order if iid not in seen)
                more = ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
                parts.append(Text(f"… {hidden} more commands: {more}", style="dim",
                                  no_wrap=True, overflow="ellipsis"))
            parts.extend(Text(f"warning: {w}", style="yellow", no_wrap=True, overflow="ellipsis")
                         for w in self.warnings[-3:])
            return parts[0] if len(parts) == 1 else Group(*parts)
