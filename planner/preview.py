"""`planctl plan`: what apply would do and what its rollback would undo, asking only `exists`.

A preview walks the plan's DAG as apply would, with the same templates, secrets and
`exists` probes, but runs no `run` and writes nothing: no state store, no run, no lock.
What only apply produces (``run_id``, the outputs of a command that would run) is
*known after apply*: shown as such, and a probe or a `when` that needs it is not asked.
So is the answer of a probe that apply asks only after a command that would change
something (the world it probes may differ by then), and whatever an unknown `when`
may skip. What waits for a command that would fail is *not reached*.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shlex
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

from . import actions
from .executor import (
    ApplyOptions,
    Runner,
    _close_clients,
    _CommandsView,
    _locked_message,
    _StepFailed,
    _truthy,
    _watch_children,
    lock_freed,
    lock_lease,
    lock_state,
    off_loop,
    resolve_secrets,
)
from .graph import END, CommandInstance
from .loader import LoadedPlan
from .model import Operation
from .status import REGULAR_FLOW, ROLLBACK_FLOW
from .store import LockRecord, MemoryStore
from .templates import TemplateError, render, render_value

__all__ = [
    "EXIT_CHANGES",
    "EXIT_WOULD_FAIL",
    "KNOWN_AFTER_APPLY",
    "PREVIEW_VERSION",
    "KnownAfterApply",
    "LockedEntity",
    "PlanPreview",
    "PlannedCommand",
    "Undo",
    "Verdict",
    "format_preview",
    "preview_plan",
]

# Exit codes of `planctl plan`, apart from those of runs (1, 2, 4) so that one `case $?`
# serves every planctl command: see ``PlanPreview.exit_code``.
EXIT_CHANGES = 10
EXIT_WOULD_FAIL = 11
KNOWN_AFTER_APPLY = "(known after apply)"
_DOES_NOT_RENDER = "(does not render)"  # an operation shown so: it would fail if called
PREVIEW_VERSION = 1  # of the JSON document `planctl plan --output json` prints


class KnownAfterApply(Exception):
    """A template needs a value that only apply produces."""


class _Unknown(Mapping[str, Any]):
    """A value only apply produces: any use of it raises KnownAfterApply."""

    def _raise(self, *_: Any) -> Any:
        raise KnownAfterApply(KNOWN_AFTER_APPLY)

    __getitem__ = __contains__ = __iter__ = __len__ = __str__ = __bool__ = __eq__ = _raise
    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return KNOWN_AFTER_APPLY


class _Placeholder(Mapping[str, Any]):
    """The same value for display: every key of it, and its text, say "(known after apply)"."""

    def __getitem__(self, key: str) -> Any:
        return self

    def __contains__(self, key: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __str__(self) -> str:
        return KNOWN_AFTER_APPLY

    __repr__ = __str__


_UNKNOWN = _Unknown()
_PLACEHOLDER = _Placeholder()
# A secret's place in an operation being described, as shlex and JSON leave it; then ***.
_HIDDEN = "PLANCTL_SECRET_HIDDEN"


class Verdict(StrEnum):
    """What apply would do with one command."""

    RUN = "run"  # its `exists` probe says absent
    RUN_UNPROBED = "run-unprobed"  # it has no `exists` probe
    UNCHANGED = "unchanged"  # its `exists` probe says present
    SKIPPED = "skipped"  # its `when` is false, or an ancestor's
    NO_RUN = "no-run"  # a parent without `run`: only its children act
    UNKNOWN = "unknown"  # its `when` or `exists` needs values known after apply
    FAIL = "fail"  # its probe cannot answer, or a template does not render
    NOT_REACHED = "not-reached"  # it waits for a command that would fail: apply stops first

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    Verdict.RUN: "would run",
    Verdict.RUN_UNPROBED: "would run (no exists probe)",
    Verdict.UNCHANGED: "UNCHANGED (exists)",
    Verdict.SKIPPED: "SKIPPED",
    Verdict.NO_RUN: "-",
    Verdict.UNKNOWN: "known after apply",
    Verdict.FAIL: "would fail",
    Verdict.NOT_REACHED: "not reached",
}
_MAY_RUN = frozenset({Verdict.RUN, Verdict.RUN_UNPROBED, Verdict.UNKNOWN})


class Undo(StrEnum):
    """How the rollback of a failed apply would treat one command."""

    INVERSE = "inverse"  # its inverse would run
    IRREVERSIBLE = "irreversible"  # declared so: left as it is
    READ_ONLY = "read-only"  # `changes: false`: nothing to undo
    LEFTOVER = "leftover"  # changes something, no inverse: it would be left behind
    NOTHING = "nothing"  # apply would not run it: nothing to undo


@dataclass(frozen=True, slots=True)
class PlannedCommand:
    """One command instance of a preview: what apply would do, and how it would be undone.

    ``run`` and ``inverse`` are the operations as they would be called (secrets masked as
    ``***``, values only apply knows shown as ``(known after apply)``).
    """

    id: str
    parent: str | None
    depth: int
    entity: str | None
    verdict: Verdict
    reason: str
    run: str
    inverse: str
    undo: Undo
    changes: bool  # whether apply would (or might) change something with it

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "parent": self.parent, "entity": self.entity,
                "verdict": self.verdict.value, "reason": self.reason, "run": self.run,
                "inverse": self.inverse, "undo": self.undo.value, "changes": self.changes}


@dataclass(frozen=True, slots=True)
class LockedEntity:
    """An entity of the plan that another run holds: apply would wait for it (up to its
    lock timeout) or exit 4."""

    entity: str
    run_id: str
    holder: str  # "alive", "dead (…s ago)", "kept for leftovers", "kept until resumed"
    message: str  # what apply would say, with what to do about it


@dataclass(frozen=True)
class PlanPreview:
    """What applying a plan would do, and what the rollback of a failed apply would undo."""

    plan: str
    file: str
    commands: tuple[PlannedCommand, ...]
    rollback: tuple[str, ...]  # commands whose inverse would run, in rollback order
    leftovers: tuple[str, ...]  # commands that would change what no inverse undoes
    description: str | None = None  # the plan's own
    locked: tuple[LockedEntity, ...] = ()  # entities of the plan another run holds now
    on_failure: str = "rollback"  # the plan's: "stop" leaves the rollback to the user

    @property
    def changes(self) -> tuple[PlannedCommand, ...]:
        """Commands with which apply would (or, if known after apply, might) change things."""
        return tuple(c for c in self.commands if c.changes)

    @property
    def failures(self) -> tuple[PlannedCommand, ...]:
        """Commands that would fail: a probe cannot answer, a template does not render."""
        return tuple(c for c in self.commands if c.verdict is Verdict.FAIL)

    def exit_code(self, detailed: bool = False) -> int:
        """11 when apply would fail; else, with ``detailed``, 10 when it would change
        something and 0 when not; without ``detailed``, 0."""
        if self.failures:
            return EXIT_WOULD_FAIL
        if detailed and self.changes:
            return EXIT_CHANGES
        return 0

    def to_dict(self) -> dict[str, Any]:
        """The preview as JSON-ready data (``version`` is PREVIEW_VERSION)."""
        return {
            "version": PREVIEW_VERSION, "plan": self.plan, "file": self.file,
            "description": self.description,
            "changes": len(self.changes), "failures": len(self.failures),
            "commands": [c.to_dict() for c in self.commands],
            "rollback": list(self.rollback), "leftovers": list(self.leftovers),
            "locked": [dataclasses.asdict(lock) for lock in self.locked],
            "on_failure": self.on_failure,
        }


def preview_plan(loaded: LoadedPlan, *, secrets: Mapping[str, str] | None = None,
                 max_parallel: int | None = None,
                 locks: Iterable[tuple[LockRecord, str | None]] = ()) -> PlanPreview:
    """What applying ``loaded`` would do, asking only its `exists` probes; writes nothing.

    ``secrets`` default to the plan's, resolved as apply resolves them (UsageError when a
    required one is missing). Probes run concurrently, up to ``max_parallel`` (default: the
    plan's), on a fresh event loop. ``locks`` are the locks of a state store with their
    runs' statuses (``read_locks(path)``, or ``store.list_locks()`` and the runs): those on
    the plan's entities are reported in ``locked``.
    """
    off_loop("preview_plan")
    if secrets is None:
        secrets = resolve_secrets(loaded)
    runner = Runner(loaded, MemoryStore(), options=ApplyOptions(max_parallel=max_parallel),
                    secrets=secrets)
    previewer = _Previewer(runner)

    async def main() -> None:
        _watch_children()
        try:
            await previewer.walk()
        finally:
            await _close_clients()

    with runner.importable():
        asyncio.run(main())
    preview = previewer.result()
    entities = {c.entity for c in preview.commands if c.entity}
    now, lease = time.time(), lock_lease()
    locked = tuple(
        LockedEntity(lock.entity, lock.run_id, lock_state(lock, now, lease, status),
                     _locked_message(lock, now, lease, status))
        for lock, status in locks
        if lock.entity in entities and not lock_freed(lock, status, now, lease))
    return dataclasses.replace(preview, locked=locked) if locked else preview


@dataclass(frozen=True)
class _Known:
    """What templates see as ``commands.<id>``: the predicted statuses and outputs (the
    attributes `_CommandsView` reads), with values only apply knows as ``unknown``."""

    graph: Any
    unknown: Any
    status: dict[str, Any]
    outputs: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Found:
    verdict: Verdict
    reason: str = ""
    run: str = ""
    when_unknown: bool = False  # its own `when` needs values known after apply


@dataclass(frozen=True, slots=True)
class _Upstream:
    """What the steps before one step (in the DAG, transitively) would have done by then."""

    fails: str | None = None  # a command that would fail: apply would start nothing after it
    changes: str | None = None  # a command that would (or might) change something


_NOTHING_BEFORE = _Upstream()


class _Previewer:
    """Walks the DAG like apply, predicting each command's outcome instead of acting."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.graph = runner.graph
        ids = list(self.graph.instances)
        self.strict = _Known(self.graph, _UNKNOWN, dict.fromkeys(ids, "PENDING"), {})
        self.shown = _Known(self.graph, _PLACEHOLDER, dict.fromkeys(ids, "PENDING"), {})
        self.found: dict[str, _Found] = {}
        self.after: dict[str, _Upstream] = {}  # step key -> what its steps and itself did

    # -- templates -------------------------------------------------------------------------

    def _context(self, instance: CommandInstance, display: bool = False,
                 reason: str = REGULAR_FLOW) -> dict[str, Any]:
        known = self.shown if display else self.strict
        return {
            **self.runner.base_context,
            "run_id": known.unknown,
            **instance.loop,
            "commands": _CommandsView(cast(Any, known), instance),
            "execution_reason": reason,
        }

    def _predict(self, iid: str, status: str | None, outputs: Any = None) -> None:
        """Record what templates downstream will see; None: known after apply."""
        for known in (self.strict, self.shown):
            known.status[iid] = known.unknown if status is None else status
            known.outputs[iid] = known.unknown if outputs is None else outputs

    def _show(self, op: Operation | None, instance: CommandInstance,
              reason: str = REGULAR_FLOW) -> str:
        """``op`` as it would be called, for display: secrets masked, unknowns marked."""
        if op is None:
            return ""
        text: str | None = None
        for display in (False, True):
            context = self._context(instance, display, reason)
            if reason == ROLLBACK_FLOW:  # what the forward run returns, for the inverse
                unknown = _PLACEHOLDER if display else _UNKNOWN
                context.update(result=unknown, outputs=unknown, handle=unknown)
            try:
                # Masked before it is quoted or joined: a secret quoted for display (or
                # twice, by the `quote` filter first) would no longer be recognised.
                args = self.runner.redact.hidden(self._args(op, context), _HIDDEN)
                text = _describe(op.action, args).replace(_HIDDEN, "***")
                break
            except KnownAfterApply:
                continue
            except TemplateError:
                text = KNOWN_AFTER_APPLY if display else _DOES_NOT_RENDER
                break
        return str(self.runner.redact(text or KNOWN_AFTER_APPLY))

    @staticmethod
    def _args(op: Operation, context: Mapping[str, Any]) -> Any:
        """The operation's arguments rendered as the executor renders them."""
        action = actions.get(op.action)
        if action is not None and actions.SHELL_QUOTE in action.capabilities \
                and isinstance(op.args, str):
            return render(op.args, context, shell=True)
        return render_value(op.args, context)

    # -- the walk --------------------------------------------------------------------------

    async def walk(self) -> None:
        """Every step in dependency order, up to max_parallel probes at once."""
        scheduler = self.runner._scheduler()
        limit = max(1, self.runner.max_parallel)
        steps, instances = self.graph.steps, self.graph.instances
        running: dict[asyncio.Task[None], str] = {}
        try:
            while True:
                for key in scheduler.ready(limit - len(running)):
                    instance = instances[steps[key].command]
                    if steps[key].kind == END:
                        self._end(instance)
                        scheduler.done(key)
                    else:
                        running[asyncio.create_task(self._begin(instance))] = key
                if scheduler.has_ready() and len(running) < limit:
                    continue
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    key = running.pop(task)
                    task.result()  # a bug in the preview is raised, not hidden
                    scheduler.done(key)
        finally:
            for task in running:
                task.cancel()

    def _before(self, key: str) -> _Upstream:
        """What the steps before step ``key`` would have done (they are all decided)."""
        fails = changes = None
        for pred in self.graph.predecessors[key]:
            after = self.after[pred]
            fails = fails or after.fails
            changes = changes or after.changes
        return _Upstream(fails, changes) if fails or changes else _NOTHING_BEFORE

    async def _begin(self, instance: CommandInstance) -> None:
        iid, spec = instance.id, instance.spec
        before = self._before(instance.first_step)
        found = await self._decide(instance, before)
        self.found[iid] = found
        fails = iid if found.verdict is Verdict.FAIL else before.fails
        changes = before.changes
        if found.verdict in _MAY_RUN and spec.run is not None and spec.changes:
            changes = changes or iid
        self.after[instance.first_step] = _Upstream(fails, changes)
        parent = bool(instance.children)
        if found.verdict is Verdict.SKIPPED:
            self._predict(iid, "SKIPPED", {})
        elif found.verdict is Verdict.NO_RUN:
            self._predict(iid, "RUNNING" if parent else "UNCHANGED", {})
        elif found.verdict in (Verdict.RUN, Verdict.RUN_UNPROBED):
            self._predict(iid, "RUNNING" if parent else "SUCCEEDED",
                          None if spec.outputs else {})
        elif found.verdict is not Verdict.UNCHANGED:  # UNCHANGED predicted its outputs
            self._predict(iid, None)

    async def _decide(self, instance: CommandInstance, before: _Upstream) -> _Found:
        """Apply's decisions (`Runner._begin`, `_probe_then_act`), short of acting."""
        runner, iid, spec = self.runner, instance.id, instance.spec
        if before.fails is not None:
            # Apply starts no step once one failed: nothing that waits for it ever runs.
            return _Found(Verdict.NOT_REACHED, f"it waits for `{before.fails}`, which would "
                          "fail: apply would start nothing after that",
                          self._show(spec.run, instance))
        parent = instance.parent
        while parent is not None:
            status = self.strict.status[parent]
            if isinstance(status, str) and status == "SKIPPED":
                return _Found(Verdict.SKIPPED, "an ancestor is skipped")
            if self.found[parent].when_unknown:
                return _Found(Verdict.UNKNOWN, f"whether its ancestor `{parent}` is skipped "
                              "(its `when`) is known after apply",
                              self._show(spec.run, instance))
            parent = self.graph.instances[parent].parent
        context = self._context(instance)
        try:
            if spec.when is not None and not _truthy(render_value(spec.when, context)):
                return _Found(Verdict.SKIPPED, "`when` is false")
        except KnownAfterApply:
            return _Found(Verdict.UNKNOWN, "`when` needs values known after apply",
                          self._show(spec.run, instance), when_unknown=True)
        except TemplateError as exc:
            return _Found(Verdict.FAIL, str(runner.redact(f"when: {exc}")))
        if spec.run is None:
            return _Found(Verdict.NO_RUN, "no `run`: only its children act")
        shown = self._show(spec.run, instance)
        if spec.exists is not None:
            try:
                probe = await runner._ask(spec.exists, context, iid, REGULAR_FLOW)
            except KnownAfterApply:
                return _Found(Verdict.UNKNOWN, "`exists` needs values known after apply", shown)
            except _StepFailed as failure:
                return _Found(Verdict.FAIL, str(runner.redact(str(failure))), shown)
            if before.changes is not None:
                # Apply asks the probe after that command acted, which may change its answer.
                now = "present" if probe.ok else "absent"
                return _Found(Verdict.UNKNOWN, f"`exists` says {now} now, but apply would ask "
                              f"it after `{before.changes}` changed things", shown)
            if probe.ok:
                self._unchanged(instance, {**context, "result": dict(probe.data)})
                return _Found(Verdict.UNCHANGED, "`exists` says present", shown)
        # Apply renders `run` only now: a `run` that does not render fails the command.
        try:
            runner._prepare(spec.run, context, iid, REGULAR_FLOW)
        except KnownAfterApply:
            pass  # the values come from upstream commands that would run first
        except _StepFailed as failure:
            return _Found(Verdict.FAIL, str(runner.redact(str(failure))), shown)
        if spec.exists is None:
            return _Found(Verdict.RUN_UNPROBED, "no `exists` probe to ask", shown)
        return _Found(Verdict.RUN, "`exists` says absent", shown)

    def _unchanged(self, instance: CommandInstance, context: dict[str, Any]) -> None:
        """Present: like apply, its outputs come from the probe's answer."""
        outputs: Any = {}
        for name, template in instance.spec.outputs.items():
            try:
                outputs[name] = render_value(template, context)
            except KnownAfterApply:
                outputs = None
                break
            except TemplateError:
                pass  # apply warns and goes on without this one (`_probe_outputs`)
        self._predict(instance.id, "RUNNING" if instance.children else "UNCHANGED", outputs)

    def _end(self, instance: CommandInstance) -> None:
        """A parent ends: SUCCEEDED if it or a child would change something, else UNCHANGED
        (as `Runner._end`: its own `run`, done or found present, decides alone)."""
        iid = instance.id
        before = self._before(instance.last_step)
        self.after[instance.last_step] = before
        own = self.found[iid].verdict
        if own is Verdict.SKIPPED:
            return
        kids = [self.strict.status[c] for c in instance.children]
        if own in (Verdict.UNKNOWN, Verdict.FAIL, Verdict.NOT_REACHED) or before.fails or (
                own is Verdict.NO_RUN and any(k is _UNKNOWN for k in kids)):
            self._predict(iid, None)
            return
        quiet = own is Verdict.UNCHANGED or (
            own is Verdict.NO_RUN and all(k in ("UNCHANGED", "SKIPPED") for k in kids))
        status = "UNCHANGED" if quiet else "SUCCEEDED"
        outputs = self.strict.outputs.get(iid, {})
        self._predict(iid, status, None if outputs is _UNKNOWN else outputs)

    # -- the result ------------------------------------------------------------------------

    def _stopped_first(self) -> dict[str, str]:
        """Commands that would run but that apply may never start, each with the command
        that would fail first: once one fails, apply starts no step at all, not only those
        that wait for it. Sure to start are the steps of its first round (the first
        ``max_parallel`` steps that wait for nothing, all started before any outcome is
        known) and those every failing command waits for."""
        graph = self.graph
        fails = [iid for iid, f in self.found.items() if f.verdict is Verdict.FAIL]
        if not fails:
            return {}
        roots = sorted((s.order, k) for k, s in graph.steps.items()
                       if not graph.predecessors[k])
        first = {k for _, k in roots[:max(1, self.runner.max_parallel)]}
        upstream = [graph.ancestors(graph.instances[iid].first_step) for iid in fails]
        stopped = {}
        for iid, found in self.found.items():
            step = graph.instances[iid].first_step
            if found.verdict not in (Verdict.RUN, Verdict.RUN_UNPROBED) or step in first:
                continue
            culprit = next((f for f, up in zip(fails, upstream, strict=True)
                            if step not in up), None)
            if culprit is not None:
                stopped[iid] = culprit
        return stopped

    def result(self) -> PlanPreview:
        runner, graph = self.runner, self.graph
        planned: dict[str, PlannedCommand] = {}
        stopped = self._stopped_first()
        for iid, instance in graph.instances.items():
            spec, found = instance.spec, self.found[iid]
            if iid in stopped:
                found = _Found(Verdict.UNKNOWN, f"apply starts nothing once `{stopped[iid]}` "
                               "fails, and that does not wait for it: whether it starts "
                               "this one first is known after apply", found.run)
            may_run = found.verdict in _MAY_RUN and spec.run is not None
            if not may_run:
                undo = Undo.NOTHING
            elif not spec.changes:
                undo = Undo.READ_ONLY
            elif spec.irreversible:
                undo = Undo.IRREVERSIBLE
            else:
                undo = Undo.INVERSE if spec.inverse is not None else Undo.LEFTOVER
            inverse = ""
            if undo is Undo.INVERSE:
                inverse = self._show(spec.inverse, instance, ROLLBACK_FLOW)
            depth, parent = 0, instance.parent
            while parent is not None:
                depth, parent = depth + 1, graph.instances[parent].parent
            planned[iid] = PlannedCommand(
                iid, instance.parent, depth, self._entity(instance), found.verdict,
                found.reason, found.run, inverse, undo,
                may_run and spec.changes)
        # The rollback's own order: the reversed DAG, one step at a time. A command it
        # cannot undo (no inverse, or one that does not render) fails its step, as in the
        # Reverter: what it depends on is not undone either, and is left behind with it.
        order: list[str] = []
        scheduler = runner._scheduler(reverse=True)
        while scheduler.has_ready():
            for key in scheduler.ready(1):
                step = graph.steps[key]
                command = None if step.kind == END else planned[step.command]
                if command is not None and _stuck(command):
                    scheduler.failed(key)
                    continue
                if command is not None and command.undo is Undo.INVERSE:
                    order.append(step.command)
                scheduler.done(key)
        undone = set(order)
        leftovers = tuple(i for i, p in planned.items() if _stuck(p) or (
            p.undo is Undo.INVERSE and i not in undone))
        return PlanPreview(runner.plan.name, runner.plan.file, tuple(planned.values()),
                           tuple(order), leftovers, runner.plan.description,
                           on_failure=runner.on_failure)

    def _entity(self, instance: CommandInstance) -> str | None:
        if instance.spec.entity is None:
            return None
        try:
            return str(render_value(instance.spec.entity, {**self._context(instance, True),
                                                           "env": self.runner.entity_env}))
        except KnownAfterApply:
            return KNOWN_AFTER_APPLY
        except TemplateError as exc:  # apply would not start: the same error
            raise self.runner.unrenderable_entity(instance, exc) from None


def _stuck(command: PlannedCommand) -> bool:
    """Whether a rollback would try to undo ``command`` and fail: it has no inverse, or its
    inverse does not render."""
    return command.undo is Undo.LEFTOVER or (
        command.undo is Undo.INVERSE and command.inverse == _DOES_NOT_RENDER)


def _describe(action: str, args: Any) -> str:
    """An operation's rendered arguments on one line (runs of white space made one space):
    argv, script, request or function."""
    if action == "command" and isinstance(args, list):
        text = shlex.join(str(a) for a in args)
    elif isinstance(args, str):
        text = args
    elif action == "http" and isinstance(args, Mapping):
        text = f"{str(args.get('method', 'GET')).upper()} {args.get('url', '')}"
    elif action == "python" and isinstance(args, Mapping):
        text = str(args.get("function", ""))
    else:
        text = f"{action} {json.dumps(args, default=str, sort_keys=True)}"
    return " ".join(text.split())


_UNDO_LABELS = {
    Undo.INVERSE: "inverse", Undo.IRREVERSIBLE: "irreversible", Undo.READ_ONLY: "-",
    Undo.LEFTOVER: "LEFTOVER (no inverse)", Undo.NOTHING: "-",
}
_WIDTH = 60  # longest operation shown in the table; the JSON output has them whole


def _cut(text: str, width: int = _WIDTH) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


_NAMED = 5  # commands named on a line of reasons shared by several


def format_preview(preview: PlanPreview) -> str:
    """The preview as text: a table of commands, then what a rollback would undo."""
    from .report import _table

    rows = []
    for c in preview.commands:
        label = c.verdict.label
        if c.verdict in (Verdict.RUN, Verdict.RUN_UNPROBED) and c.undo is Undo.READ_ONLY:
            label = "would run (read-only)"
        rows.append(["  " * c.depth + c.id, label, c.entity or "", _cut(c.run),
                     _UNDO_LABELS[c.undo]])
    about = f"{preview.description.strip()}\n" if preview.description else ""
    lines = [f"plan {preview.plan} ({preview.file})\n{about}\n",
             _table(["COMMAND", "APPLY", "ENTITY", "RUN", "ROLLBACK"], rows), "\n"]
    failures, unknown = preview.failures, [c for c in preview.commands
                                           if c.verdict is Verdict.UNKNOWN]
    for c in failures:
        lines.append(f"would fail: {c.id}: {c.reason}\n")
    # One line per reason: the instances of a loop share theirs (a thousand clones after
    # the VM they go into would be a thousand lines saying the same).
    reasons: dict[str, list[str]] = {}
    for c in unknown:
        reasons.setdefault(c.reason, []).append(c.id)
    for reason, ids in reasons.items():
        named = ", ".join(ids[:_NAMED]) + (f" and {len(ids) - _NAMED} more"
                                           if len(ids) > _NAMED else "")
        lines.append(f"known after apply: {named}: {reason}\n")
    counts = {v: sum(c.verdict is v for c in preview.commands) for v in Verdict}
    changes = len(preview.changes)
    summary = (f"apply would change {changes} command{'s' if changes != 1 else ''}"
               if changes else "nothing would change")
    if counts[Verdict.UNKNOWN]:
        summary += f" ({counts[Verdict.UNKNOWN]} known only after apply)"
    read_only = sum(c.undo is Undo.READ_ONLY for c in preview.commands)
    summary += (f"; {counts[Verdict.UNCHANGED]} unchanged, {read_only} read-only, "
                f"{counts[Verdict.SKIPPED]} skipped")
    if failures:
        summary += f", {len(failures)} would fail"
    if counts[Verdict.NOT_REACHED]:
        summary += f", {counts[Verdict.NOT_REACHED]} not reached"
    lines.append(f"{summary}\n")
    if preview.rollback:
        lines.append("\nif apply fails, its rollback would undo, in this order:\n"
                     if preview.on_failure == "rollback" else
                     f"\nif apply fails, it stops there (on_failure: {preview.on_failure}); "
                     "`planctl rollback` of its run would undo, in this order:\n")
        by_id = {c.id: c for c in preview.commands}
        lines.append(_table(["#", "COMMAND", "ENTITY", "INVERSE"], [
            [str(n), iid, by_id[iid].entity or "", _cut(by_id[iid].inverse)]
            for n, iid in enumerate(preview.rollback, 1)]))
    if preview.leftovers:
        by_id = {c.id: c for c in preview.commands}
        no_inverse: list[str] = []
        bad_inverse: list[str] = []
        kept: list[str] = []  # what a command left behind depends on
        for iid in preview.leftovers:
            c = by_id[iid]
            (no_inverse if c.undo is Undo.LEFTOVER else bad_inverse if _stuck(c)
             else kept).append(iid)
        lines.append("\n")
        lines.extend(f"left behind by a rollback ({kind}): {', '.join(ids)}\n" for kind, ids in (
            ("no inverse, not irreversible", no_inverse),
            ("its inverse does not render", bad_inverse),
            ("something that depends on it is left behind", kept)) if ids)
    elif preview.changes:
        lines.append("\na rollback would leave nothing behind\n")
    if preview.locked:
        lines.append("\nlocked now by other runs (apply would wait up to its lock timeout, "
                     "then exit 4):\n")
        lines.extend(f"  - {lock.message}\n" for lock in preview.locked)
    return "".join(lines)
