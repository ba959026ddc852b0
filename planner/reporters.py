"""How the CLI reports a run: live tree, plain lines or JSON lines, and files due at the end."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from .sink import Sink
from .store import CommandRecord, EventRecord, RunRecord, Store
from .tally import (
    FinishedRun,
    HistoryBook,
    finished_run,
    read_events,
    read_finished_run,
    summary_text,
)

if TYPE_CHECKING:
    from .executor import RunOutcome
    from .loader import LoadedPlan
    from .report import Progress

__all__ = ["JSON", "LIVE", "PLAIN", "Reporting", "choose_view", "divert_stdout", "no_color",
           "progress_interval", "reports_due"]

JSON, LIVE, PLAIN = "json", "live", "plain"


def no_color(environ: Mapping[str, str]) -> bool:
    """Whether the user asked for no colour: ``NO_COLOR`` is set and not empty, as
    https://no-color.org says (an empty one counts as unset)."""
    return bool(environ.get("NO_COLOR"))


def choose_view(output: str, stream: TextIO, environ: Mapping[str, str]) -> str:
    """``json`` when asked; the live tree on a terminal that takes colour and cursor moves
    (not ``NO_COLOR``, not ``TERM=dumb``); plain lines anywhere else."""
    if output == "json":
        return JSON
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if tty and not no_color(environ) and environ.get("TERM", "") != "dumb":
        return LIVE
    return PLAIN


def progress_interval(environ: Mapping[str, str]) -> float:
    """``PLANCTL_PROGRESS_INTERVAL``: seconds without a plain line after which one says what
    is still running (default 10; 0: never)."""
    from .report import PROGRESS_INTERVAL

    text = environ.get("PLANCTL_PROGRESS_INTERVAL", "").strip()
    if not text:
        return PROGRESS_INTERVAL
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        from .errors import UsageError

        raise UsageError(f"PLANCTL_PROGRESS_INTERVAL={text!r}: expected seconds "
                         f"(0 turns the progress lines off)")
    return seconds


def divert_stdout(stdout: TextIO, stderr: TextIO) -> tuple[TextIO, Callable[[], None]]:
    """Keep stdout for JSON alone: until the returned function is called, whatever else
    writes there (a `python` action's ``print``, a program it starts with ``os.system``,
    a library writing to file descriptor 1) goes to stderr instead. Returns the stream
    the JSON is to be written to meanwhile, and the function that puts stdout back."""
    for stream in (stdout, stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):  # None: closed
            stream.flush()
    try:
        out, err = stdout.fileno(), stderr.fileno()
        if out == err:
            raise ValueError(out)
        copy = os.dup(out)  # not inherited: a program a step starts never holds it open
    except (AttributeError, OSError, ValueError):  # no descriptors (an embedding's StringIO)
        saved = sys.stdout
        sys.stdout = stderr

        def restore_object() -> None:
            if sys.stdout is stderr:
                sys.stdout = saved

        return stdout, restore_object
    json_out = os.fdopen(copy, "w", encoding=getattr(stdout, "encoding", None) or "utf-8",
                         errors="backslashreplace")
    os.dup2(err, out)
    done: list[bool] = []

    def restore() -> None:
        if done:
            return
        done.append(True)
        for stream in (sys.stdout, stdout, json_out):
            with contextlib.suppress(AttributeError, OSError, ValueError):
                stream.flush()
        os.dup2(json_out.fileno(), out)
        with contextlib.suppress(OSError, ValueError):
            json_out.close()

    return json_out, restore


def reports_due(output: str, junit: Path | None, environ: Mapping[str, str]) -> bool:
    """Whether a run's reports are due besides its text: JSON lines, JUnit or a GitHub
    step summary."""
    return output == JSON or junit is not None or bool(environ.get("GITHUB_STEP_SUMMARY"))


class Reporting:
    """The listener of one CLI invocation (apply, rollback, resume) and what it writes last.

    Events go to the live tree or plain lines on stdout, or to JSON lines on stdout, with
    every human word (summary, messages) on stderr then. ``finish`` gathers the run (from
    the events it saw, or from the store when the run began in another invocation) for the
    summary, the JSON outcome, ``--junit`` and the GitHub summary.
    """

    def __init__(self, *, output: str, verb: str, loaded: LoadedPlan | None, stdout: TextIO,
                 stderr: TextIO, environ: Mapping[str, str], junit: Path | None = None,
                 statuses: Mapping[str, str] | None = None,
                 entities: Mapping[str, str | None] | None = None,
                 ended: RunRecord | None = None, read_only: frozenset[str] = frozenset()
                 ) -> None:
        """``loaded`` may be None for a run that ``ended`` (its record, plan snapshot
        included), to say ``nothing_to_do`` outside the live view without loading its
        plan: ``read_only`` then names its commands declared `changes: false`."""
        self.view = choose_view(output, stdout, environ)
        self.verb = verb
        self.junit = junit
        self.book = HistoryBook()  # this invocation's events, as command histories
        self.run_id: str | None = None  # once an event was seen: the run exists
        self.environ = environ
        self.started = time.monotonic()
        if loaded is not None:
            self.plan = loaded.plan.name
            self.plan_file = loaded.plan.file
            self.snapshot = {"description": loaded.plan.description}  # what the reports read
            self.instances = instances = loaded.graph.instances
            self.read_only = frozenset(iid for iid, i in instances.items()
                                       if not i.spec.changes)
        else:  # as the run recorded them: the name and file of the plan it loaded
            assert ended is not None and self.view != LIVE
            self.plan, self.plan_file = ended.plan_name, ended.plan_file
            self.snapshot = {}
            self.instances = instances = {}
            self.read_only = read_only
        self.stderr = Sink(stderr)
        self.listener: Any
        self.progress: Progress | None = None
        self.stdout = stdout
        self.restore_stdout: Callable[[], None] | None = None
        if self.view == JSON:
            from .ndjson import JsonReporter
            from .report import Progress

            json_out, self.restore_stdout = divert_stdout(stdout, stderr)
            self.listener = JsonReporter(json_out, plan=self.plan, commands=len(instances),
                                         entities=entities)
            self.human = self.stderr
            # stdout goes to a file or a program: the sign of life of a long run goes to
            # stderr, which a CI log shows.
            self.progress = Progress(self.stderr, progress_interval(environ))
        elif self.view == LIVE:
            from rich.console import Console

            from .graph import command_names
            from .live import LiveReporter

            assert loaded is not None
            console = Console(file=stdout, highlight=False)
            self.listener = LiveReporter(console, instances, title=f"planctl {verb} {self.plan}",
                                         statuses=statuses, entities=entities,
                                         names=command_names(loaded.plan, loaded.graph))
            self.human = Sink(stdout)
        else:
            from .report import LineReporter

            self.listener = LineReporter(stdout, progress=progress_interval(environ))
            self.human = Sink(stdout)

    def __call__(self, event: EventRecord) -> None:
        self.run_id = event.run_id
        self.book.add(event)
        self.listener(event)
        if self.progress is not None:
            self.progress.follow(event, printed=False)

    def say(self, text: str) -> None:
        """Human text: on stdout, or on stderr when stdout carries JSON."""
        self.human.write(text if text.endswith("\n") else text + "\n")

    def finish(self, store: Store, outcome: RunOutcome, changed: Mapping[str, bool | None],
               exit_code: int | None = None) -> FinishedRun:
        """The run ended: summary, JSON outcome and files; ``changed`` is the runner's
        (whether each command's run changed something), ``exit_code`` the CLI's."""
        book = self.book
        if book.first_seq != 1:  # rollback, resume: the run began before
            book = HistoryBook.of(read_events(store, outcome.run_id))
        commands = {
            iid: CommandRecord(outcome.run_id, iid, instance.spec.id, instance.order,
                               instance.parent, outcome.entities.get(iid),
                               outcome.statuses.get(iid, "PENDING"), changed=changed.get(iid))
            for iid, instance in self.instances.items()
        }
        # Only what finished_run reads of a run record: of the plan snapshot, the description.
        run = RunRecord(outcome.run_id, self.plan, self.plan_file, outcome.status, 0.0,
                        self.snapshot, {}, socket.gethostname())
        finished = finished_run(
            run, commands, book,
            exit_code=outcome.exit_code if exit_code is None else exit_code,
            duration=time.monotonic() - self.started,
            leftovers=[{"command": x.command, "entity": x.entity, "status": x.status,
                        "reason": x.reason} for x in outcome.leftovers],
            read_only=self.read_only)
        if self.progress is not None:
            self.progress.close()
        self.listener.finish(finished)
        if self.view == JSON:
            self.stderr.write(summary_text(finished).lstrip("\n"))
        self._files(finished)
        return finished

    def nothing_to_do(self, store: Store, run_id: str, message: str) -> FinishedRun | None:
        """Nothing ran (nothing to undo, or to resume): say so; reports of the run as it is,
        when any is due (the run is read back whole for them: seconds for a big one)."""
        self.close()
        self.say(message)
        if not reports_due(self.view, self.junit, self.environ):
            return None
        finished = read_finished_run(store, run_id, exit_code=0,
                                     duration=time.monotonic() - self.started,
                                     read_only=self.read_only)
        if self.view == JSON:
            self.listener.finish(finished, message)
        self._files(finished, message)
        return finished

    def _files(self, finished: FinishedRun, message: str | None = None) -> None:
        if self.junit is not None:
            from .junit import write_junit

            try:
                write_junit(self.junit, finished, plan=self.plan)
            except OSError as exc:
                self.warn(f"cannot write the JUnit report {self.junit}: "
                           f"{exc.strerror or exc}")
        summary = self.environ.get("GITHUB_STEP_SUMMARY")
        if summary:
            from .ghsummary import append_step_summary

            try:
                append_step_summary(Path(summary), finished, verb=self.verb, plan=self.plan,
                                    message=message)
            except OSError as exc:
                self.warn(f"cannot append to GITHUB_STEP_SUMMARY {summary}: "
                           f"{exc.strerror or exc}")

    def warn(self, text: str) -> None:
        """A warning, on stderr."""
        self.stderr.write(f"planctl: warning: {text}\n")

    def close(self) -> None:
        """Give the terminal back (cursor, line discipline), however the run ended."""
        if self.progress is not None:
            self.progress.close()
        close = getattr(self.listener, "close", None)
        if close is not None:
            close()
        if self.restore_stdout is not None:  # JSON lines from now on on stdout itself
            self.restore_stdout()
            self.restore_stdout = None
            sink = self.listener.sink
            if sink.stream is not None:
                sink.stream = self.stdout
