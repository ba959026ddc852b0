"""What a finished run did, read back from the store: command histories and summary counts."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .status import NO_INVERSE, ROLLBACK_FLOW, UNSURE, CommandStatus
from .store import CommandRecord, EventRecord, RunRecord, Store

__all__ = [
    "FinishedRun",
    "History",
    "HistoryBook",
    "Tally",
    "finished_run",
    "format_duration",
    "histories",
    "one_line",
    "plan_description",
    "plural",
    "read_events",
    "read_finished_run",
    "summary_text",
    "tally",
    "undo_advice",
]

S = CommandStatus
# Where the forward (REGULAR_FLOW) part of a command ends, for good or not.
FORWARD_ENDS = frozenset({S.SUCCEEDED, S.UNCHANGED, S.SKIPPED, S.FAILED, S.UNKNOWN})
INVERSE_ENDS = frozenset({S.REVERTED, S.REVERT_SKIPPED, S.REVERT_FAILED})
# The closing lines list this many leftovers at most; a run of thousands points to
# `planctl rollback RUN --dry-run` for the rest (the JSON outcome keeps them all).
MAX_LISTED = 20
# Past this many commands no rollback can undo, the advice names a few and says how to
# write --gone, rather than one command line with hundreds of options.
MAX_GONE = 10


# Control characters (a tool's coloured stderr quoted in an error) shown as escapes, never
# sent to a terminal; line breaks become spaces: one event, one line. So are the other
# characters XML 1.0 cannot carry, even as references (JUnit reports, the step summary):
# lone surrogates, which UTF-8 cannot encode either, and U+FFFE and U+FFFF.
_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7f]}
_CONTROLS.update({c: f"\\u{c:04x}" for c in [*range(0xD800, 0xE000), 0xFFFE, 0xFFFF]})
_CONTROLS.update({ord("\n"): " ", ord("\r"): " ", ord("\t"): " "})


def one_line(text: object) -> str:
    """``text`` as one line of plain text: no line breaks, no control codes, nothing that
    XML 1.0 or UTF-8 cannot carry."""
    return str(text).translate(_CONTROLS)


def plural(count: object, word: str) -> str:
    """``1 command``, ``3 commands``; ``count`` as given (None and the like take the
    plural)."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def format_duration(seconds: float | None) -> str:
    """``0.42s``, ``12.30s``, ``3m07s``; ``-`` when not known."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


@dataclass(slots=True)
class History:
    """One command across the run's event log: its forward part, then its inverse (if any).

    Built once by ``histories`` and only read afterwards.
    """

    command_id: str
    entity: str | None = None
    parent: str | None = None
    status: str = S.PENDING  # the final status, as stored
    changed: bool | None = None  # its own run changed something (as stored)
    forward: str | None = None  # how the forward part ended (a FORWARD_ENDS status)
    forward_error: str | None = None
    started: float | None = None
    ended: float | None = None
    retries: int = 0  # failed attempts that were tried again, forward
    polls: int = 0  # polls of its async task, forward
    handle: str | None = None  # its async task, forward
    inverse: str | None = None  # how its inverse ended (an INVERSE_ENDS status)
    inverse_error: str | None = None
    inverse_started: float | None = None
    inverse_ended: float | None = None
    inverse_runs: int = 0  # times REVERTING was entered, across rollbacks
    inverse_retries: int = 0
    notes: list[str] = field(default_factory=list)  # warnings about this command

    @property
    def forward_time(self) -> float | None:
        if self.started is None or self.ended is None:
            return None
        return max(0.0, self.ended - self.started)

    @property
    def inverse_time(self) -> float | None:
        if self.inverse_started is None or self.inverse_ended is None:
            return None
        return max(0.0, self.inverse_ended - self.inverse_started)


class HistoryBook:
    """Command histories written one event at a time, so that a reporter keeps what it
    needs of a long run (a few fields per command) instead of every event."""

    def __init__(self) -> None:
        self.book: dict[str, History] = {}
        self.first_seq: int | None = None
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.leftovers: Any = None  # as the last run event carrying them lists them

    @classmethod
    def of(cls, events: Iterable[EventRecord]) -> HistoryBook:
        book = cls()
        for event in events:
            book.add(event)
        return book

    def add(self, event: EventRecord) -> None:
        if self.first_seq is None:
            self.first_seq, self.first_ts = event.seq, event.ts
        self.last_ts = event.ts
        data = event.data
        kind = event.kind
        if event.command_id is None:
            if kind == "run" and "leftovers" in data:
                self.leftovers = data["leftovers"]
            return
        history = self.book.get(event.command_id)
        if history is None:
            history = self.book[event.command_id] = History(event.command_id)
        if kind == "command":
            status = str(data.get("status"))
            if data.get("execution_reason") == ROLLBACK_FLOW:
                if status == S.REVERTING:
                    history.inverse_runs += 1
                    history.inverse_started = event.ts
                    history.inverse_ended = None
                    history.inverse_error = None
                elif status in INVERSE_ENDS:
                    if history.inverse_started is None:  # settled without running it
                        history.inverse_started = event.ts
                    history.inverse = status
                    history.inverse_ended = event.ts
                    history.inverse_error = data.get("error") or None
            else:
                if history.started is None and status != S.PENDING:
                    history.started = event.ts
                if status in FORWARD_ENDS:
                    history.forward = status
                    history.ended = event.ts
                    history.forward_error = data.get("error") or None
        elif kind == "retry":
            if history.inverse_started is not None:
                history.inverse_retries += 1
            else:
                history.retries += 1
        elif kind == "task" and data.get("execution_reason") != ROLLBACK_FLOW:
            history.handle = str(data.get("handle"))
            if data.get("polls") is not None:
                history.polls += int(data["polls"])
        elif kind == "warning" and data.get("message"):
            history.notes.append(str(data["message"]))

    def histories(self, commands: Mapping[str, CommandRecord]) -> dict[str, History]:
        """Each command's history, in plan order, completed from its record."""
        out: dict[str, History] = {}
        for iid, record in sorted(commands.items(), key=lambda item: item[1].order):
            history = self.book.get(iid) or History(iid)
            history.entity, history.parent = record.entity, record.parent
            history.status, history.changed = record.status, record.changed
            out[iid] = history
        return out


def histories(commands: Mapping[str, CommandRecord], events: Iterable[EventRecord]
              ) -> dict[str, History]:
    """Each command's history, in plan order, from its record and the run's events."""
    return HistoryBook.of(events).histories(commands)


@dataclass(frozen=True)
class FinishedRun:
    """A run as its reports see it once an invocation (apply, rollback, resume) ended."""

    run_id: str
    plan: str
    plan_file: str
    status: str
    histories: Mapping[str, History]
    exit_code: int
    duration: float  # seconds this invocation took
    leftovers: tuple[Mapping[str, Any], ...] = ()  # command, entity, status, reason
    read_only: frozenset[str] = frozenset()  # commands declared `changes: false`
    host: str = ""
    first_event: float | None = None
    last_event: float | None = None
    description: str | None = None  # the plan's, as recorded with the run

    @property
    def span(self) -> float:
        """Seconds from the run's first event to its last, over every invocation."""
        if self.first_event is None or self.last_event is None:
            return 0.0
        return max(0.0, self.last_event - self.first_event)


def finished_run(run: RunRecord, commands: Mapping[str, CommandRecord],
                 events: Iterable[EventRecord] | HistoryBook, *, exit_code: int,
                 duration: float, status: str | None = None,
                 leftovers: Iterable[Mapping[str, Any]] | None = None,
                 read_only: Iterable[str] = ()) -> FinishedRun:
    """Gather what the reports need from a run's record (its id, plan, status and host are
    used), its commands' records and its events (or a book already written from them);
    ``status`` overrides the record's, and the leftovers default to what the run's last
    event lists."""
    book = events if isinstance(events, HistoryBook) else HistoryBook.of(events)
    if leftovers is None:
        leftovers = book.leftovers or ()
    return FinishedRun(
        run.id, run.plan_name, run.plan_file, status or run.status,
        book.histories(commands), exit_code, duration, tuple(leftovers),
        frozenset(read_only), run.host, book.first_ts, book.last_ts,
        plan_description(run.snapshot))


def plan_description(snapshot: Any) -> str | None:
    """The plan's description on one line, if it has one."""
    about = snapshot.get("description") if isinstance(snapshot, Mapping) else None
    return (" ".join(str(about).split()) or None) if about else None


def read_finished_run(store: Store, run_id: str, *, exit_code: int, duration: float,
                      read_only: Iterable[str] = ()) -> FinishedRun:
    """A run read back whole from the store."""
    run = store.get_run(run_id)
    if run is None:
        raise KeyError(run_id)
    # Histories read no params, results or outputs: not decoded.
    return finished_run(run, store.get_commands(run_id, details=False),
                        read_events(store, run_id), exit_code=exit_code, duration=duration,
                        read_only=read_only)


# Events read at once by ``read_events``.
EVENTS_PAGE = 5000


def read_events(store: Store, run_id: str, command_id: str | None = None, *,
                page: int | None = None) -> Iterator[EventRecord]:
    """The run's events in order (with ``command_id``, that command's), read ``page``
    (default EVENTS_PAGE) at a time: a HistoryBook written from them keeps a few fields
    per command, not the whole log (200,000 events of a 100,000-command run took 200 MiB
    at once), and `planctl events` prints them as they come."""
    after = 0
    while batch := store.get_events(run_id, command_id, after=after,
                                    limit=page or EVENTS_PAGE):
        yield from batch
        after = batch[-1].seq


@dataclass(frozen=True, slots=True)
class Tally:
    """The counts of a summary; a command may count twice (changed, then reverted)."""

    changed: int = 0  # its own run changed something (still there or since reverted)
    unchanged: int = 0  # ended well and changed nothing (present already, read-only)
    failed: int = 0  # its forward part failed (a parent whose child failed included)
    reverted: int = 0  # undone by its inverse
    leftovers: int = 0  # changed by the run and (maybe) still there
    skipped: int = 0  # `when` was false, or its parent was skipped
    not_run: int = 0  # never started: the run stopped first

    def parts(self) -> list[str]:
        """``["3 changed", "0 unchanged", ...]``; skipped and not-run only when any."""
        out = [f"{self.changed} changed", f"{self.unchanged} unchanged",
               f"{self.failed} failed", f"{self.reverted} reverted",
               f"{self.leftovers} left over"]
        if self.skipped:
            out.append(f"{self.skipped} skipped")
        if self.not_run:
            out.append(f"{self.not_run} not run")
        return out


def tally(finished: FinishedRun) -> Tally:
    changed = unchanged = failed = reverted = skipped = not_run = 0
    for iid, history in finished.histories.items():
        counted = history.changed is True and iid not in finished.read_only
        changed += counted
        if history.forward in (S.SUCCEEDED, S.UNCHANGED) and not counted:
            unchanged += 1
        elif history.forward in (S.FAILED, S.UNKNOWN):
            failed += 1
        reverted += history.status == S.REVERTED
        skipped += history.status == S.SKIPPED
        not_run += history.status == S.PENDING
    return Tally(changed, unchanged, failed, reverted, len(finished.leftovers), skipped,
                 not_run)


def summary_text(finished: FinishedRun, paint: Callable[[str, str], str] = lambda t, s: t
                 ) -> str:
    """The closing lines of a run: status, duration, counts, leftovers and what to do next.

    ``paint(text, status)`` may colour the status word.
    """
    status = finished.status
    lines = [f"\n{paint(status, status)} in {format_duration(finished.duration)}: "
             f"{', '.join(tally(finished).parts())}\n"]
    if finished.leftovers:
        lines.append("leftovers (changed by this run and still there):\n")
        for item in finished.leftovers[:MAX_LISTED]:
            entity = f" {item.get('entity')}" if item.get("entity") else ""
            lines.append(one_line(f"  - {item.get('command')}{entity} [{item.get('status')}]: "
                                  f"{item.get('reason')}") + "\n")
        if len(finished.leftovers) > MAX_LISTED:
            lines.append(f"  ... and {len(finished.leftovers) - MAX_LISTED} more: "
                         f"planctl rollback {finished.run_id} --dry-run lists them all\n")
    run_id = finished.run_id
    if status == "INTERRUPTED":
        lines.append(f"continue with: planctl resume {run_id}"
                     f"  (or undo with: planctl rollback {run_id})\n")
    elif finished.leftovers:
        advice, command = undo_advice(finished)
        lines.append(f"{advice}: {command}\n")
    return "".join(lines)


def undo_advice(finished: FinishedRun) -> tuple[str, str]:
    """What to do about a run's leftovers: the advice, and the command it ends with.

    ``("undo them with", "planctl rollback RUN")``; but what no rollback can undo by itself
    (no inverse, or no probe can tell) keeps what depends on it, too: ``("planctl cannot
    undo X: remove it by hand, then", "planctl rollback RUN --gone X")``; past MAX_GONE such
    commands, the first three and ``planctl rollback RUN --gone ID``, one per command.
    """
    run_id = finished.run_id
    by_hand = [str(item.get("command")) for item in finished.leftovers
               if item.get("reason") in (NO_INVERSE, UNSURE)]
    if not by_hand:
        return "undo them with", f"planctl rollback {run_id}"
    if len(by_hand) > MAX_GONE:
        return (f"planctl cannot undo {len(by_hand)} commands ({', '.join(by_hand[:3])}, ...): "
                f"remove them by hand, then, with one --gone per command",
                f"planctl rollback {run_id} --gone ID")
    said = " ".join("--gone " + shlex.quote(c) for c in by_hand)
    return (f"planctl cannot undo {', '.join(by_hand)}: remove "
            f"{'it' if len(by_hand) == 1 else 'them'} by hand, then",
            f"planctl rollback {run_id} {said}")
