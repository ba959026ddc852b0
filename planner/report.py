"""Human-readable reporting: one plain line per event, run summaries, run and command tables."""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO

from .sink import Sink
from .status import REGULAR_FLOW, ROLLBACK_FLOW
from .store import CommandRecord, EventRecord, RunRecord, TaskRecord
from .tally import FinishedRun, one_line, plan_description, plural, summary_text
from .tally import format_duration as _duration

__all__ = ["PROGRESS_INTERVAL", "LineReporter", "Progress", "format_command", "format_run",
           "format_runs"]

# Seconds without a line after which plain lines say what is still running, as
# Terraform's "Still creating... [10s elapsed]" does: a CI log shows a sign of life (and
# a CI system that kills a job silent for too long leaves it alone).
PROGRESS_INTERVAL = 10.0
_ACTIVE = frozenset({"STARTING", "RUNNING", "REVERTING"})
_SHOWN_ACTIVE = 3  # commands a progress line names; it counts the others

_COLORS = {
    "SUCCEEDED": "32", "REVERTED": "32", "UNCHANGED": "2", "SKIPPED": "2",
    "REVERT_SKIPPED": "2", "FAILED": "31", "REVERT_FAILED": "31", "UNKNOWN": "33",
    "STARTING": "36", "RUNNING": "36", "REVERTING": "35", "ROLLED_BACK": "33",
    "ROLLBACK_FAILED": "31", "STOPPED": "31", "INTERRUPTED": "33",
}


def _paint(text: str, status: str, color: bool) -> str:
    code = _COLORS.get(status)
    return f"\033[{code}m{text}\033[0m" if color and code else text


class Progress:
    """The ``still running`` line: when ``interval`` seconds pass without a line on its
    sink while commands are in flight (a copy polled for minutes), one line names the
    longest-running ones; 0 turns it off. The timer runs on the loop that delivers the
    events. ``follow`` each event; ``printed`` says whether that event put a line on the
    same sink (plain lines), which puts the next progress line off."""

    def __init__(self, sink: Sink, interval: float = PROGRESS_INTERVAL,
                 clock: Callable[[], float] = time.time) -> None:
        self.sink = sink
        self.interval = interval
        self.clock = clock
        self.started: float | None = None  # the first event's time: lines count from it
        self.active: dict[str, float] = {}  # command in flight -> since when
        self.done: set[str] = set()  # commands that started and are no longer in flight
        self.total: object = None  # commands in the plan, once the run says
        self.last = clock()  # when the last line was written
        self.timer: asyncio.TimerHandle | None = None
        self.timer_loop: asyncio.AbstractEventLoop | None = None
        self.ended = False

    def follow(self, event: EventRecord, *, printed: bool) -> None:
        """Keep what a progress line says, and its timer, up to date."""
        if self.started is None:
            self.started = event.ts
        if printed:
            self.last = self.clock()
        data = event.data
        if event.kind == "run":
            self.total = data.get("commands", self.total)
            if "leftovers" in data:  # the run ended
                self.close()
                return
        elif event.kind == "command" and event.command_id is not None:
            status = str(data.get("status"))
            if status in _ACTIVE:
                if status != "RUNNING" or event.command_id not in self.active:
                    self.active[event.command_id] = event.ts
            else:
                self.active.pop(event.command_id, None)
                if status != "PENDING":
                    self.done.add(event.command_id)
        if self.interval <= 0 or self.ended:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        if self.timer is None or self.timer_loop is not loop:  # none, or one of a closed loop
            self.timer_loop = loop
            self.timer = loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        self.timer = None
        if self.ended:
            return
        now = self.clock()
        if self.active and now - self.last >= self.interval * 0.99:
            self.sink.write(self.line(now))
            self.last = now
        delay = max(self.interval - (now - self.last), self.interval / 10)
        self.timer = asyncio.get_running_loop().call_later(delay, self._tick)

    def line(self, now: float) -> str:
        """``still running  2 commands: copy 1m05s, check 3.20s; 4 of 9 done``."""
        longest = sorted(self.active.items(), key=lambda item: item[1])
        shown = ", ".join(f"{iid} {_duration(now - since)}"
                          for iid, since in longest[:_SHOWN_ACTIVE])
        if len(longest) > _SHOWN_ACTIVE:
            shown += f" and {len(longest) - _SHOWN_ACTIVE} more"
        text = f"{'still running':<14} {plural(len(longest), 'command')}: {shown}"
        if isinstance(self.total, int):
            text += f"; {len(self.done)} of {self.total} done"
        elapsed = now - (self.started if self.started is not None else now)
        return f"{elapsed:8.2f}s  {one_line(text)}\n"

    def close(self) -> None:
        """No more progress lines (the run ended, or the CLI gives up)."""
        self.ended = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class LineReporter:
    """A listener that prints one plain line per event (no control codes unless ``color``),
    and a ``still running`` line (``Progress``) when there has been none for ``progress``
    seconds while commands are in flight."""

    def __init__(self, stream: TextIO, *, color: bool = False,
                 progress: float = PROGRESS_INTERVAL,
                 clock: Callable[[], float] = time.time) -> None:
        self.sink = Sink(stream)
        self.color = color
        self.started: float | None = None
        self.progress = Progress(self.sink, progress, clock)

    def __call__(self, event: EventRecord) -> None:
        self.sink.write(self.line(event))
        self.progress.follow(event, printed=True)

    def close(self) -> None:
        self.progress.close()

    def line(self, event: EventRecord) -> str:
        """The line of one event, with its time since the first event seen."""
        if self.started is None:
            self.started = event.ts
        elapsed = event.ts - self.started
        data = event.data
        if event.kind == "run":
            status = str(data.get("status"))
            text = f"run {event.run_id} {_paint(status, status, self.color)}"
            if data.get("plan"):
                text += f" plan {data['plan']} ({plural(data.get('commands'), 'command')})"
            if data.get("previous"):
                text += f" (was {data['previous']})"
            if data.get("signal"):
                text += f" on {data['signal']}"
        elif event.kind == "command":
            status = str(data.get("status"))
            text = f"{_paint(f'{status:<14}', status, self.color)} {event.command_id}"
            if data.get("execution_reason") == ROLLBACK_FLOW:
                text += " [ROLLBACK_FLOW]"
            if data.get("error"):
                text += f": {one_line(data['error'])}"
        elif event.kind == "task":
            state = str(data.get("task_status"))
            text = f"{'task ' + state:<14} {event.command_id} handle {one_line(data.get('handle'))}"
            if data.get("polls"):
                text += f" after {plural(data['polls'], 'poll')}"
        elif event.kind == "retry":
            text = f"{'retry':<14} {event.command_id} attempt {data.get('attempt')} failed: " \
                   f"{one_line(data.get('error'))}"
        elif event.kind == "warning":
            text = f"{'warning':<14} {event.command_id or '-'} {one_line(data.get('message'))}"
        else:
            text = one_line(f"{event.kind:<14} {event.command_id or ''} {dict(data)}")
        return f"{elapsed:8.2f}s  {text}\n"

    def finish(self, finished: FinishedRun) -> None:
        """Print the summary: status, duration, counts, leftovers, what to do next."""
        self.progress.close()
        self.sink.write(summary_text(finished, lambda t, s: _paint(t, s, self.color)))


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _table(header: list[str], rows: Iterable[list[str]]) -> str:
    rows = [header, *rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n"
        for row in rows
    )


def format_runs(runs: Iterable[RunRecord]) -> str:
    rows = [
        [r.id, r.plan_name, r.status, _when(r.started_at),
         _duration(r.ended_at - r.started_at if r.ended_at else None)]
        for r in runs
    ]
    if not rows:
        return "no runs recorded\n"
    return _table(["RUN", "PLAN", "STATUS", "STARTED", "DURATION"], rows)


def format_run(run: RunRecord | None, commands: Mapping[str, CommandRecord],
               tasks: Iterable[TaskRecord], names: Mapping[str, str] | None = None) -> str:
    """`planctl show`: the run, then its commands as a tree; a NAME column when
    ``names`` (each command's `name`, as shown) has any."""
    names = names or {}
    if run is None:
        return "no such run\n"
    by_task = {(t.command_id, t.execution_reason): t for t in tasks}
    children: dict[str | None, list[CommandRecord]] = {}
    for record in commands.values():
        children.setdefault(record.parent, []).append(record)
    lines = [
        f"run      {run.id}",
        f"plan     {run.plan_name} ({_near(run.plan_file)})",
        *([f"         {about}"] if (about := plan_description(run.snapshot)) else []),
        f"status   {run.status}",
        f"started  {_when(run.started_at)} on {run.host} (pid {run.pid})",
        f"ended    {_when(run.ended_at)}",
        "",
    ]
    rows: list[list[str]] = []

    def walk(parent: str | None, depth: int) -> None:
        for record in sorted(children.get(parent, []), key=lambda r: r.order):
            took = (record.ended_at - record.started_at
                    if record.ended_at and record.started_at else None)
            task = by_task.get((record.id, record.execution_reason))
            notes = []
            if task is not None:
                notes.append(f"task {task.handle} {task.status} ({plural(task.polls, 'poll')})")
            if record.error:
                notes.append(record.error)
            row = ["  " * depth + record.id, record.status, record.execution_reason,
                   str(record.attempts), _duration(took), record.entity or ""]
            if names:
                row.append(one_line(names.get(record.id, "")))
            rows.append([*row, "; ".join(notes)])
            walk(record.id, depth + 1)

    walk(None, 0)
    header = ["COMMAND", "STATUS", "REASON", "TRIES", "TIME", "ENTITY"]
    table = _table([*header, *(["NAME"] if names else []), "NOTES"], rows)
    return "\n".join(lines) + table


def format_command(run: RunRecord, record: CommandRecord, tasks: Iterable[TaskRecord],
                   events: Sequence[EventRecord], name: str | None = None,
                   read_only: bool = False) -> str:
    """`planctl show RUN COMMAND`: one command of a run as recorded: status, times, the
    rendered `run` operation, its result and outputs, its async tasks (forward and
    inverse) and its history of events (``events``: the whole run's, in order).
    ``read_only``: the plan declares it `changes: false` (it changed nothing, as the
    summary counts it, whatever its `run` did)."""
    took = (record.ended_at - record.started_at
            if record.ended_at and record.started_at else None)
    changed = {True: "yes", False: "no", None: "-"}[record.changed]
    if read_only and record.changed:
        changed = "no (changes: false)"
    lines = [
        f"run               {run.id} ({run.plan_name}, {run.status})",
        f"command           {record.id}",
        *([f"name              {one_line(name)}"] if name else []),
        *([f"spec              {record.spec_id}"] if record.spec_id != record.id else []),
        f"parent            {record.parent or '-'}",
        f"entity            {record.entity or '-'}",
        f"status            {record.status}",
        f"execution_reason  {record.execution_reason}",
        f"changed           {changed}",
        f"attempts          {record.attempts}",
        f"revert_attempts   {record.revert_attempts}",
        f"started           {_when(record.started_at)}",
        f"ended             {_when(record.ended_at)}"
        + (f" ({_duration(took)})" if took is not None else ""),
    ]
    lines += _field("error", record.error)
    lines += _field("params", record.params)
    lines += _field("result", record.result)
    lines += _field("outputs", record.outputs)
    order = {REGULAR_FLOW: 0, ROLLBACK_FLOW: 1}
    mine = sorted((t for t in tasks if t.command_id == record.id),
                  key=lambda t: (order.get(t.execution_reason, 2), t.started_at))
    lines.append("tasks" if mine else "tasks             -")
    for task in mine:
        took = task.updated_at - task.started_at if task.updated_at else None
        lines.append(f"  {task.execution_reason:<15}task {task.handle} {task.status} "
                     f"({plural(task.polls, 'poll')}"
                     + (f" in {_duration(took)}" if took is not None else "") + ")")
        if task.entity and task.entity != record.entity:
            lines.append(f"    entity: {_scalar(task.entity)}")
        if isinstance(task.spec, Mapping) and task.spec:
            lines += _value_lines(task.spec, "    ")
    history = [e for e in events if e.command_id == record.id]
    lines.append("history" if history else "history           -")
    if history:
        # Seconds since the run's first event, as the run's plain lines counted them.
        reporter = LineReporter(io.StringIO())  # only its lines
        reporter.started = events[0].ts
        lines += [reporter.line(e).rstrip("\n") for e in history]
    return "\n".join(lines) + "\n"


# Control characters in a command's output are shown as escapes, as in plain lines; its
# line breaks and tabs are kept, so that multi-line text reads as it was printed.
_BLOCK_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7f] if chr(c) not in "\n\t"}


def _field(label: str, value: Any) -> list[str]:
    """One recorded field of `show RUN COMMAND`: ``-`` when there is none, a scalar on
    the label's line, a mapping or list below it, multi-line text as a block."""
    if value is None or value == "":
        return [f"{label:<18}-"]
    if isinstance(value, Mapping | list):
        if not value:
            return [f"{label:<18}{json.dumps(value)}"]
        return [label, *_value_lines(value, "  ")]
    if isinstance(value, str) and "\n" in value:
        marker, *body = _block(value, "  ")
        return [f"{label:<18}{marker}", *body]
    return [f"{label:<18}{_scalar(value)}"]


def _scalar(value: Any) -> str:
    """A value on one line: text as it is when that cannot be misread, else JSON."""
    if isinstance(value, str):
        if value and value == value.strip() and value.translate(_BLOCK_CONTROLS) == value \
                and "\n" not in value and "\t" not in value \
                and not value.startswith(("[", "{", '"', "|", "-", "'")):
            try:
                json.loads(value)  # 3, true, null: quoted, not to be read as numbers
            except ValueError:
                return value
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value, ensure_ascii=False, default=str)


def _block(text: str, indent: str) -> list[str]:
    """A YAML literal block: its marker (``|``; ``|-`` without a final line break, ``|+``
    with several), then the text's lines at ``indent``."""
    body = text.rstrip("\n")
    marker = "|-" if body == text else "|" if text == body + "\n" else "|+"
    return [marker, *(f"{indent}{line}" if line else ""
                      for line in body.translate(_BLOCK_CONTROLS).split("\n"))]


def _value_lines(value: Mapping[str, Any] | list[Any], indent: str) -> list[str]:
    """A recorded mapping or list as YAML-like lines at ``indent``: a list of plain values
    on one line (as JSON), nested ones below their key, multi-line text as a block."""
    items: list[tuple[str, Any]] = (
        [(f"{key}:", item) for key, item in value.items()] if isinstance(value, Mapping)
        else [("-", item) for item in value])
    lines: list[str] = []
    for key, item in items:
        head = f"{indent}{key}"
        if isinstance(item, str) and "\n" in item:
            marker, *body = _block(item, indent + "  ")
            lines += [f"{head} {marker}", *body]
        elif isinstance(item, Mapping | list) and item:
            inline = json.dumps(item, ensure_ascii=False, default=str)
            flat = isinstance(item, list) and not any(
                isinstance(i, Mapping | list) or (isinstance(i, str) and "\n" in i)
                for i in item)
            if flat and len(head) + len(inline) < 100:
                lines.append(f"{head} {inline}")
            else:
                lines += [head, *_value_lines(item, indent + "  ")]
        elif isinstance(item, Mapping | list):
            lines.append(f"{head} {json.dumps(item)}")
        else:
            lines.append(f"{head} {_scalar(item)}")
    return lines


def _near(path: str) -> str:
    """A recorded (absolute) path, relative to the working directory when it is below it."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    return path if relative.startswith(os.pardir) else relative


def format_rollback_plan(runner: Any) -> str:
    """``rollback --dry-run``: what would be undone, in the order it would be."""
    import asyncio

    from . import orphans
    from .rollback import Reverter

    reverter = Reverter(runner)
    graph = runner.graph
    order = sorted((i for i in graph.instances.values() if reverter.must_undo(i)),
                   key=lambda i: -graph.steps[i.id].order)

    runner._find_orphans()

    async def probe(instance: Any) -> str:
        spec = instance.spec
        if instance.id in runner.options.gone:
            return "absent (--gone): skip"
        left = runner.left_running(instance.id)
        if left:
            return f"would wait for {orphans.describe(left)} to end first, then decide"
        task = runner.task_in_flight(instance.id, REGULAR_FLOW, spec.run)
        if task is not None:
            return f"would follow task {task.handle} to its end first, then decide"
        if spec.inverse is None:
            return "LEFTOVER (no inverse)"
        if spec.exists is None:
            return "would run inverse" if runner.changed.get(instance.id) else \
                "unknown (no exists probe): left alone"
        context = runner._context(instance, ROLLBACK_FLOW)
        try:
            present = await runner._probe(spec.exists, context, instance.id, ROLLBACK_FLOW)
        except Exception as exc:  # noqa: BLE001 - a dry run reports, it never fails
            return f"unknown: {runner.redact(str(exc))}"
        return "would run inverse" if present else "absent: skip"

    async def main() -> list[str]:
        return [await probe(i) for i in order]

    verdicts = asyncio.run(main())
    if not order:
        return "nothing to undo\n"
    # A leftover with no inverse, or whose probe cannot answer (REVERT_FAILED), keeps
    # what it depends on (its parent, what it needs), as in the rollback itself: those
    # come later in the order.
    blocked: dict[str, str] = {}
    for n, (instance, verdict) in enumerate(zip(order, verdicts, strict=True)):
        if instance.id in blocked:
            verdicts[n] = f"kept: {blocked[instance.id]} is still there"
        elif verdict.startswith(("LEFTOVER", "unknown:")):
            for step in graph.ancestors(instance.first_step):
                blocked.setdefault(graph.steps[step].command, instance.id)
    rows = [[str(n + 1), i.id, runner.status[i.id], runner._entities.get(i.id) or "", v]
            for n, (i, v) in enumerate(zip(order, verdicts, strict=True))]
    return _table(["#", "COMMAND", "STATUS", "ENTITY", "ROLLBACK"], rows)
