"""Loads a plan file: safe YAML, schema, model, static checks and the compiled DAG, all located."""

from __future__ import annotations

import gc
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from . import actions, schema
from .errors import Diagnostic, Path, PlanError, Severity, UsageError
from .graph import PlanGraph, compile_graph
from .model import (
    OPERATION_OPTIONS,
    AsyncSpec,
    CommandSpec,
    Operation,
    Plan,
    SecretSpec,
    Settings,
    parse_duration,
)
from .source import MAX_PLAN_BYTES, Document, read_document
from .templates import TemplateError, analyze, is_template

__all__ = ["LoadedPlan", "TooLarge", "load_plan", "load_snapshot", "load_text", "parse_var",
           "read_bounded"]

# Names the engine defines in templates; plan vars and secrets may not take them.
RESERVED = frozenset(
    {"env", "commands", "result", "outputs", "handle", "poll", "execution_reason", "run_id"}
)
_BASE_NAMES = frozenset({"env", "commands", "execution_reason", "run_id"})
# Undefined names a newcomer uses, with what they mean in a plan.
_HINTS = {
    "item": "`item` is the loop variable of `for_each`, and no loop here names it",
    "var": "vars are read by their own names: `{{ NAME }}`, not `{{ var.NAME }}`",
    "vars": "vars are read by their own names: `{{ NAME }}`, not `{{ vars.NAME }}`",
    "lookup": "templates have no lookup(): read the environment as `env.NAME`, a file "
              "with a `file:` secret",
}
_ASYNC_KEYS = frozenset({"handle", "poll", "until", "interval", "max_interval", "cancel"})
# What a condition written as plain text may say: the words it is read as true or false by.
_CONDITION_WORDS = frozenset(
    {"", "true", "false", "yes", "no", "on", "off", "1", "0", "none"})
# Where each engine-defined name becomes available, for "not available here" messages.
_WHERE = {
    "result": "after the operation ran: in failed_when, outputs, async and inverse",
    "handle": "once an async task started: in poll, until, cancel, outputs and inverse",
    "poll": "in async.until and async.failed_when, and in outputs",
    "outputs": "in inverse",
}


@dataclass(frozen=True)
class LoadedPlan:
    """A checked plan, its compiled DAG, and the warnings found while checking it."""

    plan: Plan
    graph: PlanGraph
    warnings: tuple[Diagnostic, ...] = ()
    document: Document | None = field(default=None, repr=False, compare=False)


def parse_var(assignment: str) -> tuple[str, Any]:
    """``k=v`` from --var; the value is read as YAML (``n=3`` is a number, ``l=[a,b]`` a list).

    A value that is not YAML is taken as text, unless it starts like a YAML list or mapping
    (``[`` or ``{``, but not ``{{``, which reads as a template): then it was meant as one,
    and its mistake is a usage error rather than a string that fails later, far from the
    command line.
    """
    name, sep, raw = assignment.partition("=")
    name = name.strip()
    if not sep or not name:
        raise UsageError(f"--var {assignment!r}: expected NAME=VALUE")
    try:
        value = read_document(raw, "--var").data if raw.strip() else ""
    except PlanError as error:
        start = raw.lstrip()
        if start.startswith(("[", "{")) and not start.startswith("{{"):
            reason = error.diagnostics[0].message if error.diagnostics else str(error)
            raise UsageError(
                f"--var {name}: not valid YAML: {reason.removeprefix('YAML syntax: ')} "
                f"""(to pass it as text, quote it: --var '{name}="..."')""") from None
        value = raw
    return name, value


class _Checker:
    """Builds the model from schema-valid data and collects every semantic problem."""

    def __init__(self, document: Document, var_names: set[str], secret_names: set[str],
                 recorded: bool = False):
        self.document = document
        self.recorded = recorded
        data: Mapping[str, Any] = document.data
        self.defaults: Mapping[str, Any] = data.get("defaults", {})
        self.problems: list[Diagnostic] = []
        self.names = frozenset(var_names | secret_names | _BASE_NAMES)
        self.secret_names = secret_names
        self.not_in_entity = frozenset(secret_names | {"commands"})
        self.first_seen: dict[str, Path] = {}
        self.specs: dict[str, CommandSpec] = {}
        self.refs: list[tuple[str, Any, Path]] = []  # (command id, CommandRef, where)
        self.own_outputs: list[tuple[str, frozenset[str], Path]] = []  # `outputs.x` in inverse
        self.compared: list[tuple[str, str, Path]] = []  # commands.<id>.status == '...'
        self.duplicates = False
        self.bad_needs = False  # a need on itself, an ancestor or a descendant

    def error(self, path: Path, message: str, hint: str | None = None, **kw: Any) -> None:
        self.problems.append(Diagnostic(path, message, hint, **kw))

    def warn(self, path: Path, message: str, hint: str | None = None, **kw: Any) -> None:
        self.problems.append(Diagnostic(path, message, hint, Severity.WARNING, **kw))

    def stricter(self, path: Path, message: str, hint: str | None = None) -> None:
        """A rule planctl gained after runs may have been recorded: an error in a plan, a
        warning in a recorded run's snapshot. The planctl that began the run accepted the
        plan, and refusing it now would make the run's rollback and resume impossible; the
        engine still does with it what that planctl did."""
        (self.warn if self.recorded else self.error)(path, message, hint)

    # -- templates -----------------------------------------------------------------------

    def template(self, value: Any, path: Path, allowed: frozenset[str], owner: str,
                 early: str | None = None) -> None:
        """Check every template inside ``value`` (strings, lists, mappings); ``early`` is
        the hint for engine names refused because the value is rendered before the run."""
        # Hot on large plans: paths are built only for strings that are templates.
        if isinstance(value, str):
            if "{" in value and is_template(value):
                self._one_template(value, path, allowed, owner, early)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, str):
                    if "{" in item and is_template(item):
                        self._one_template(item, (*path, index), allowed, owner, early)
                elif isinstance(item, list | dict):
                    self.template(item, (*path, index), allowed, owner, early)
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, str):
                    if "{" in item and is_template(item):
                        self._one_template(item, (*path, key), allowed, owner, early)
                elif isinstance(item, list | dict):
                    self.template(item, (*path, key), allowed, owner, early)

    def _one_template(self, source: str, path: Path, allowed: frozenset[str], owner: str,
                      early: str | None = None) -> None:
        try:
            info = analyze(source)
        except TemplateError as exc:
            where = f" (template line {exc.lineno})" if exc.lineno and exc.lineno > 1 else ""
            self.error(path, f"template syntax: {exc}{where}")
            return
        if info.output_keys and "outputs" in allowed:
            self.own_outputs.append((owner, info.output_keys, path))
        if "commands" in allowed:
            for target in info.status_compared:
                self.compared.append((owner, target, path))
        if info.names <= allowed:
            if info.command_refs:
                for ref in info.command_refs:
                    self.refs.append((owner, ref, path))
            return
        for name in sorted(info.names - allowed):
            if name in _WHERE:
                self.error(path, f"`{name}` is not available here",
                           hint=f"it exists {_WHERE[name]}")
            elif name in _BASE_NAMES:
                self.error(path, f"`{name}` is not available here", hint=early)
            elif name in self.secret_names:
                self.error(path, f"secret `{name}` cannot be used here",
                           hint="`for_each` and `entity` are expanded before the run, "
                           "stored and printed; secrets never are")
            else:
                hint = schema.did_you_mean(name, allowed - _BASE_NAMES) or _HINTS.get(name)
                if hint is None and (name.isupper() or name in os.environ):
                    hint = f"environment variables are read as `env.{name}`"
                self.error(path, f"undefined name `{name}`",
                           hint=hint or "declare it under `vars:` or `secrets:`")
        if "commands" in info.names and "commands" in allowed:
            for ref in info.command_refs:
                self.refs.append((owner, ref, path))

    def condition(self, value: Any, path: Path, allowed: frozenset[str], owner: str) -> None:
        """Check a condition (``when``, ``failed_when``, ``until``): a boolean, a template,
        or one of the words conditions read as true or false. Any other text is a condition
        written without ``{{ }}`` (as Ansible's ``when: enabled`` is), which would always be
        true: ``until: poll.json.done`` would end a task at its first poll."""
        if not isinstance(value, str):
            return
        if is_template(value):
            self.template(value, path, allowed, owner)
        elif value.strip().lower() not in _CONDITION_WORDS:
            key = next((p for p in reversed(path) if isinstance(p, str)), "condition")
            self.stricter(
                path, f"`{key}: {value}` is text, not a template, so it is always true",
                hint=f"write the condition as a template: \"{{{{ {value.strip()} }}}}\"")

    # -- operations ----------------------------------------------------------------------

    def operation(
        self, raw: Mapping[str, Any], path: Path, role: str, allowed: frozenset[str], owner: str
    ) -> Operation | None:
        action_keys = [k for k in raw if k not in OPERATION_OPTIONS]
        if not action_keys:
            self.error(path, "no action given",
                       hint=f"add one of: {', '.join(actions.names())}", at_key=True)
            return None
        if len(action_keys) > 1:
            known = [k for k in action_keys if actions.get(k) is not None]
            if len(known) > 1:
                self.error((*path, known[1]),
                           f"one action per operation, found {', '.join(known)}",
                           hint="split it into commands joined by `needs`", at_key=True)
                return None
        name = next((k for k in action_keys if actions.get(k) is not None), None)
        for key in action_keys:
            if key != name:
                choices = [*actions.names(), *OPERATION_OPTIONS]
                hint = f"`{key}` belongs under `async:`, which follows a task the action " \
                    "started" if key in _ASYNC_KEYS and role in ("run", "inverse") \
                    else schema.did_you_mean(key, choices)
                self.error((*path, key), f"unknown action or option `{key}`", hint=hint,
                           at_key=True)
        if name is None:
            return None
        action = actions.get(name)
        assert action is not None
        if name not in actions.BUILTIN:  # built-ins were checked with the plan schema
            self.problems.extend(schema.validate_value(raw[name], action.schema, (*path, name)))
        subprocess = actions.SUBPROCESS in action.capabilities
        for option in ("env", "cwd", "stdin"):
            if option in raw and not subprocess:
                self.error((*path, option), f"`{option}` does not apply to the `{name}` action",
                           at_key=True)
        if "async" in raw and role in ("exists", "poll", "cancel"):
            self.error((*path, "async"), f"`{role}` cannot be async; it must answer at once",
                       at_key=True)
        merged = {**self.defaults, **raw}
        env = {**self.defaults.get("env", {}), **raw.get("env", {})} if subprocess else {}
        after = _plus(allowed, "result")
        self.template(raw[name], (*path, name), allowed, owner)
        for option in ("cwd", "stdin"):
            if option in raw:
                self.template(raw[option], (*path, option), allowed, owner)
        if "env" in raw:
            self.template(raw["env"], (*path, "env"), allowed, owner)
        if "failed_when" in raw:
            self.condition(raw["failed_when"], (*path, "failed_when"), after, owner)
        async_spec = None
        if "async" in raw and role in ("run", "inverse"):
            async_spec = self.async_spec(raw["async"], (*path, "async"), after, owner)
        return Operation(
            action=name,
            args=raw[name],
            path=path,
            async_=async_spec,
            timeout=parse_duration(merged["timeout"]) if "timeout" in merged else None,
            # A poll tolerates a few errors in a row unless told otherwise.
            retries=merged.get("retries", 3 if role == "poll" else 0),
            delay=parse_duration(merged.get("delay", 1.0)),
            backoff=float(merged.get("backoff", 2.0)),
            failed_when=raw.get("failed_when"),
            env={k: v if isinstance(v, str) else _scalar_text(v) for k, v in env.items()},
            cwd=merged.get("cwd") if subprocess else None,
            stdin=raw.get("stdin"),
        )

    def async_spec(
        self, raw: Mapping[str, Any], path: Path, allowed: frozenset[str], owner: str
    ) -> AsyncSpec | None:
        self.template(raw["handle"], (*path, "handle"), allowed, owner)
        with_handle = _plus(allowed, "handle")
        poll = self.operation(raw["poll"], (*path, "poll"), "poll", with_handle, owner)
        cancel = None
        if "cancel" in raw:
            cancel = self.operation(raw["cancel"], (*path, "cancel"), "cancel", with_handle, owner)
        for key in ("until", "failed_when"):
            if key in raw:
                self.condition(raw[key], (*path, key), _plus(with_handle, "poll"), owner)
        until = raw.get("until")
        if isinstance(until, str) and is_template(until):
            try:
                reads_poll = "poll" in analyze(until).names
            except TemplateError:  # reported above
                reads_poll = True
            if not reads_poll:
                self.warn((*path, "until"), "`until` does not read `poll`, so every poll gives "
                          "it the same answer: the task ends at its first poll or never",
                          hint="test the poll's result, e.g. \"{{ poll.json.state == 'done' "
                          "}}\"; `result` is what started the task")
        if poll is None:
            return None
        return AsyncSpec(
            handle=raw["handle"],
            poll=poll,
            until=raw["until"],
            failed_when=raw.get("failed_when"),
            interval=parse_duration(raw.get("interval", 1.0)),
            max_interval=parse_duration(raw.get("max_interval", 30.0)),
            backoff=float(raw.get("backoff", 1.5)),
            timeout=parse_duration(raw.get("timeout", 3600.0)),
            cancel=cancel,
        )

    # -- commands ------------------------------------------------------------------------

    def commands(
        self, raws: list[Mapping[str, Any]], path: Path, parent: str | None,
        loop_names: frozenset[str],
    ) -> tuple[CommandSpec, ...]:
        return tuple(
            spec
            for index, raw in enumerate(raws)
            if (spec := self.command(raw, (*path, index), parent, loop_names)) is not None
        )

    def command(
        self, raw: Mapping[str, Any], path: Path, parent: str | None, outer: frozenset[str]
    ) -> CommandSpec | None:
        cid: str = raw["id"]
        if cid in self.first_seen:
            line, _ = self.document.position((*self.first_seen[cid], "id"))
            self.duplicates = True
            self.error((*path, "id"), f"duplicate command id `{cid}`",
                       hint=f"first used on line {line}; ids are unique in the whole plan")
        else:
            self.first_seen[cid] = path
        loop_var = raw.get("as", "item")
        loop_names = outer
        if "for_each" in raw:
            if loop_var in RESERVED:
                self.error((*path, "as"), f"`{loop_var}` is a reserved name")
            self.template(raw["for_each"], (*path, "for_each"),
                          (self.names - _BASE_NAMES - self.secret_names) | {"env"} | outer, cid,
                          early="`for_each` is expanded when the plan is loaded: it may use "
                          "vars, `env` and the loop variables of enclosing commands")
            loop_names = outer | {loop_var}
        elif "as" in raw:
            self.error((*path, "as"), "`as` names the loop variable of `for_each`, which is "
                       "missing", at_key=True)
        base = _plus(self.names, *loop_names)
        if isinstance(raw.get("name"), str):
            self.template(raw["name"], (*path, "name"), base, cid)
        if "when" in raw:
            self.condition(raw["when"], (*path, "when"), base, cid)
        if isinstance(raw.get("entity"), str):
            # Entities are stored, printed and used as lock keys: no secret in them. They
            # are rendered before the first step, when no command has outputs yet.
            self.template(raw["entity"], (*path, "entity"),
                          base - self.not_in_entity, cid,
                          early="entities are lock keys, taken before the run starts: they "
                          "may use vars, loop variables, `env` and `run_id`, not outputs "
                          "of other commands")
        ops: dict[str, Operation | None] = {}
        for role, allowed in (("exists", base), ("run", base),
                              ("inverse", _plus(base, "result", "outputs", "handle"))):
            if role in raw:
                ops[role] = self.operation(raw[role], (*path, role), role, allowed, cid)
        outputs = raw.get("outputs", {})
        self.template(outputs, (*path, "outputs"), _plus(base, "result", "handle", "poll"), cid)
        if "exists" in raw and "run" in raw:
            self._outputs_after_probe(outputs, (*path, "outputs"))
        self._shape_checks(raw, path)
        children = self.commands(raw.get("children", []), (*path, "children"), cid, loop_names)
        needs = raw.get("needs", ())
        spec = CommandSpec(
            id=cid,
            path=path,
            parent=parent,
            name=raw.get("name"),
            description=raw.get("description"),
            entity=raw.get("entity"),
            needs=(needs,) if isinstance(needs, str) else tuple(needs),
            for_each=raw.get("for_each"),
            loop_var=loop_var,
            when=raw.get("when"),
            exists=ops.get("exists"),
            run=ops.get("run"),
            inverse=ops.get("inverse"),
            irreversible=raw.get("irreversible", False),
            changes=raw.get("changes", True),
            outputs=outputs,
            children=children,
        )
        self.specs.setdefault(cid, spec)
        return spec

    def _outputs_after_probe(self, outputs: Mapping[str, Any], path: Path) -> None:
        """Outputs are rendered from the `exists` probe's `result` when it finds the
        resource present: one that reads `poll` or `handle` then cannot be."""
        for key, value in outputs.items():
            if not (isinstance(value, str) and is_template(value)):
                continue
            try:
                names = analyze(value).names
            except TemplateError:  # reported by template()
                continue
            if "defined" in value or "default" in value:
                continue  # `poll.json.x if poll is defined else result.x`: written for both
            for name in sorted(names & {"poll", "handle"}):
                self.warn((*path, key), f"output `{key}` reads `{name}`, which a command "
                          "found present by `exists` (UNCHANGED) does not have: its outputs "
                          "are then rendered from the probe's `result`",
                          hint=f"read the probe's answer when `{name}` is not there, e.g. "
                          f"\"{{{{ {name}.json.x if {name} is defined else result.json.x }}}}\"")
                break

    def _shape_checks(self, raw: Mapping[str, Any], path: Path) -> None:
        has_run, has_inverse = "run" in raw, "inverse" in raw
        if has_inverse and not has_run:
            self.error((*path, "inverse"), "`inverse` without `run`: there is nothing to undo",
                       at_key=True)
        if has_inverse and raw.get("irreversible"):
            self.error((*path, "irreversible"), "a command with an `inverse` is not irreversible",
                       hint="remove one of them", at_key=True)
        if has_inverse and raw.get("changes") is False:
            self.error((*path, "changes"), "`changes: false` contradicts the `inverse`",
                       at_key=True)
        if "exists" in raw and not has_run:
            self.warn((*path, "exists"), "`exists` without `run` is never asked", at_key=True)
        if has_run and not has_inverse and not raw.get("irreversible") \
                and raw.get("changes", True):
            self.warn((*path, "run"), f"command `{raw['id']}` changes something but has no "
                      "`inverse`; a rollback would leave it behind",
                      hint="add `inverse:`, or `irreversible: true`, or `changes: false` "
                      "if it only reads", at_key=True)

    # -- cross references ----------------------------------------------------------------

    def ancestors(self, cid: str) -> list[str]:
        out: list[str] = []
        parent = self.specs[cid].parent
        # With duplicate ids, `specs` may hold a nested namesake: the chain can loop.
        while parent is not None and parent not in out and parent != cid:
            out.append(parent)
            parent = self.specs[parent].parent
        return out

    def descendants(self, cid: str) -> Iterable[str]:
        stack = list(self.specs[cid].children)
        while stack:
            child = stack.pop()
            yield child.id
            stack.extend(child.children)

    def check_needs(self) -> None:
        for cid, spec in self.specs.items():
            for index, target in enumerate(spec.needs):
                where: Path = (*spec.path, "needs", index)
                if target not in self.specs:
                    self.error(where, f"unknown command `{target}`",
                               hint=schema.did_you_mean(target, self.specs))
                elif target == cid:
                    self.bad_needs = True
                    self.error(where, f"`{cid}` cannot need itself")
                elif target in self.ancestors(cid):
                    self.bad_needs = True
                    self.error(where, f"`{target}` is an ancestor of `{cid}`",
                               hint="a child always runs after its parent's run and before "
                               "its end; drop this need")
                elif target in set(self.descendants(cid)):
                    self.bad_needs = True
                    self.error(where, f"`{target}` is a descendant of `{cid}`",
                               hint="a parent ends after all its children; drop this need")

    def loops(self, cid: str) -> set[str]:
        """The looped commands among ``cid`` and its ancestors: the loops it is in."""
        return {c for c in (cid, *self.ancestors(cid)) if self.specs[c].for_each is not None}

    def upstream(self, cid: str, target: str) -> bool:
        """Whether ``target`` has ended (or, for an ancestor, run) before ``cid`` starts."""
        seen: set[str] = set()
        stack = [cid]
        while stack:
            current = stack.pop()
            if current in seen or current not in self.specs:
                continue
            seen.add(current)
            spec = self.specs[current]
            waits = list(spec.needs)
            if spec.parent is not None:
                waits.append(spec.parent)
            if target in waits:
                return True
            for need in spec.needs:
                if need in self.specs and target in set(self.descendants(need)):
                    return True
            stack.extend(waits)
        return False

    def check_refs(self) -> None:
        for owner, keys, path in self.own_outputs:
            own = self.specs[owner].outputs if owner in self.specs else {}
            for key in sorted(keys - set(own)):
                self.stricter(
                    path, f"`outputs.{key}`: `{owner}` declares no output `{key}`",
                    hint=schema.did_you_mean(key, own)
                    or f"declared: {', '.join(own) or 'none'}")
        for owner, target_id, path in self.compared:
            if target_id in self.specs and owner in self.specs \
                    and not self.loops(target_id) <= self.loops(owner):
                self.stricter(
                    path, f"`commands.{target_id}.status` is a list here, one status per "
                    f"instance of looped `{target_id}`: comparing it with a string (== "
                    "or !=) always gives the same answer",
                    hint=f"test the list, e.g. \"{{{{ 'FAILED' not in commands."
                    f"{target_id}.status }}}}\"")
        for owner, ref, path in self.refs:
            if ref.id not in self.specs:
                self.error(path, f"`commands.{ref.id}`: unknown command",
                           hint=schema.did_you_mean(ref.id, self.specs))
                continue
            target = self.specs[ref.id]
            looped = target.for_each is not None or any(
                self.specs[a].for_each is not None for a in self.ancestors(ref.id))
            if ref.attr == "instances" and not looped:
                self.error(path, f"`commands.{ref.id}.instances`: `{ref.id}` is in no loop "
                           "(read its `outputs` and `status`)")
                continue
            if ref.attr not in (None, "outputs", "status", "instances"):
                attrs = ["outputs", "status", *(["instances"] if looped else [])]
                named = [f"`{a}`" for a in attrs]
                self.error(path, f"`commands.{ref.id}.{ref.attr}`: a command has "
                           f"{', '.join(named[:-1])} and {named[-1]}",
                           hint=schema.did_you_mean(ref.attr or "", attrs))
                continue
            if ref.attr == "outputs" and ref.key is not None and not ref.key.isdigit() \
                    and not self.loops(ref.id) <= self.loops(owner):
                # Outside the target's loop, its outputs are a list: one item per instance.
                self.stricter(
                    path, f"`commands.{ref.id}.outputs.{ref.key}`: `{ref.id}` is in a "
                    "loop, so here its outputs are a list, one item per instance",
                    hint=f"for every instance's `{ref.key}`: {{{{ commands.{ref.id}."
                    f"outputs | map(attribute='{ref.key}') | list }}}}")
                continue
            if ref.attr == "outputs" and ref.key is not None and not ref.key.isdigit() \
                    and ref.key not in target.outputs:
                declared = ", ".join(target.outputs) or "none"
                self.error(path, f"`commands.{ref.id}.outputs.{ref.key}`: `{ref.id}` declares "
                           f"no output `{ref.key}`",
                           hint=schema.did_you_mean(ref.key, target.outputs)
                           or f"declared: {declared}")
                continue
            # With duplicate ids, ``target`` may be a namesake elsewhere: no index past
            # the end of ``path``.
            if ref.id == owner and ref.attr in (None, "outputs") \
                    and path[len(target.path):][:1] != ("inverse",):
                self.stricter(
                    path, f"`commands.{ref.id}.outputs` is read by `{ref.id}` itself, "
                    "before its outputs exist",
                    hint="a command's outputs are known once its `run` ended: read them "
                    "in its `inverse`, as `outputs.<name>`")
                continue
            if ref.id != owner and not self.upstream(owner, ref.id):
                self.error(path, f"`commands.{ref.id}` is read before `{ref.id}` has run",
                           hint=f"add `{ref.id}` to the needs of `{owner}`")


@lru_cache(maxsize=1024)
def _plus(names: frozenset[str], *more: str) -> frozenset[str]:
    """``names`` with ``more`` added; cached, as every command asks for the same few sets."""
    return names | frozenset(more)


def _holds_template(value: Any) -> bool:
    if isinstance(value, str):
        return is_template(value)
    if isinstance(value, list):
        return any(_holds_template(item) for item in value)
    if isinstance(value, dict):
        return any(_holds_template(item) for item in value.values())
    return False


def _scalar_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class GivenVars(dict[str, Any]):
    """Variables given to a plan, with where each came from (``--vars-file FILE``), for
    the message naming one the plan does not declare; ``--var`` when not said."""

    def __init__(self) -> None:
        super().__init__()
        self.origins: dict[str, str] = {}


def _override_vars(
    declared: Mapping[str, Any], overrides: Mapping[str, Any], recorded: bool = False
) -> dict[str, Any]:
    origins = overrides.origins if isinstance(overrides, GivenVars) else {}
    unknown = [k for k in overrides if k not in declared]
    if unknown:
        name = unknown[0]
        hint = schema.did_you_mean(name, declared)
        raise UsageError(
            f"{origins.get(name, '--var')} {name}: the plan declares no variable `{name}`"
            + (f"; {hint}" if hint else f" (declared: {', '.join(declared) or 'none'})")
        )
    # A run's vars were taken by the planctl that began it: not checked again.
    for name, value in () if recorded else overrides.items():
        want, got = _shape(declared[name]), _shape(value)
        if want is not None and got != want:
            origin = origins.get(name, "--var")
            raise UsageError(f"{origin} {name}: {_shape_mismatch(name, want, value, origin)}")
    return {**declared, **overrides}


def _shape(value: Any) -> str | None:
    """``list`` or ``mapping`` for a container value, None for a scalar."""
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, (list, tuple)):
        return "list"
    return None


def _shape_mismatch(name: str, want: str, value: Any, origin: str) -> str:
    """Why a value given for a list or mapping var is refused, and how to write it."""
    shape = _shape(value)
    given = f"a {shape}" if shape else \
        f"{'the text' if isinstance(value, str) else 'the value'} {value!r}"
    why = f"the plan's default is a {want}, so the value must be one; got {given}"
    if origin != "--var":
        return why
    if want == "list":
        items = [] if shape else [p.strip() for p in str(value).split(",")]
        plain = all(re.fullmatch(r"[\w./@+-]*", p) for p in items)
        example = f"[{', '.join(p for p in items if p)}]" if items and plain else "[a, b]"
    else:
        example = "{key: value}"
    return f"{why} (write it as YAML: --var '{name}={example}')"


def load_text(
    text: bytes | str, file: str, *, variables: Mapping[str, Any] | None = None
) -> LoadedPlan:
    """Load a plan from text; ``file`` names it in diagnostics and anchors relative paths."""
    return _uncollected(_load_text, text, file, variables)


def load_snapshot(
    snapshot: Mapping[str, Any], file: str, *, variables: Mapping[str, Any] | None = None
) -> LoadedPlan:
    """Load the plan a run recorded (``RunRecord.snapshot``, the plan's data as JSON kept it),
    checked again as a plan file is, but for the rules planctl gained since (conditions
    written as text, ...) and the shapes of its vars: the planctl that began the run took
    them, so they are warnings here, not errors that would leave the run impossible to roll
    back or resume.

    Not through the YAML reader: YAML 1.1 reads JSON's ``1e-05`` or ``1e+20`` as text, so a
    plan's float became a string in every later rollback and resume, and that reader costs
    a third of a big run's `rollback`. Diagnostics point into the snapshot's JSON text."""
    return _uncollected(_load_snapshot, snapshot, file, variables)


def _load_snapshot(snapshot: Mapping[str, Any], file: str,
                   variables: Mapping[str, Any] | None) -> LoadedPlan:
    text = json.dumps(snapshot)
    # A copy of its own: the store keeps the snapshot it handed out for later reads.
    return _check_guarded(Document(file, text, json.loads(text)), file, variables,
                          recorded=True)


def _uncollected(load: Callable[[Any, str, Mapping[str, Any] | None], LoadedPlan],
                 source: Any, file: str, variables: Mapping[str, Any] | None) -> LoadedPlan:
    # Loading allocates hundreds of thousands of containers and frees none of them: the
    # cyclic collector would scan them all, again and again, for nothing.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return load(source, file, variables)
    finally:
        if not gc.get_freeze_count():
            # All of that would sit in the youngest generation, and the first collection
            # after loading would scan it (~40 ms for 10,000 commands): move it to the
            # oldest generation at once, unscanned (freeze, then unfreeze into gen 2).
            gc.freeze()
            gc.unfreeze()
        if enabled:
            gc.enable()


def _load_text(
    text: bytes | str, file: str, variables: Mapping[str, Any] | None
) -> LoadedPlan:
    return _check_guarded(read_document(text, file), file, variables)


def _check_guarded(document: Document, file: str, variables: Mapping[str, Any] | None,
                   recorded: bool = False) -> LoadedPlan:
    try:
        return _check(document, file, variables, recorded)
    except RecursionError:  # the schema validator and the checks recurse along the plan
        raise PlanError([Diagnostic((), "the plan is nested too deeply to check",
                                    hint="flatten its children or values", file=file, line=1,
                                    column=1)]) from None


def _check(document: Document, file: str, variables: Mapping[str, Any] | None,
           recorded: bool = False) -> LoadedPlan:
    data = document.data
    problems = schema.check(data)
    if problems:
        raise PlanError([document.locate(d) for d in problems])
    plan_vars = _override_vars(data.get("vars", {}), variables or {}, recorded)
    secrets = {
        name: SecretSpec(name, s.get("env"), s.get("file"), s.get("optional", False))
        for name, s in data.get("secrets", {}).items()
    }
    checker = _Checker(document, set(plan_vars), set(secrets), recorded)
    for name in sorted(RESERVED & (set(plan_vars) | set(secrets))):
        section = "vars" if name in plan_vars else "secrets"
        checker.error((section, name), f"`{name}` is a reserved name", at_key=True)
    for name in sorted(set(plan_vars) & set(secrets)):
        checker.error(("secrets", name), f"`{name}` is both a var and a secret", at_key=True)
    for name, value in data.get("vars", {}).items():
        if name not in (variables or {}) and _holds_template(value):
            checker.warn(("vars", name), f"`{name}` holds a template, but vars are values, "
                         "not templates: it is used as written, braces included",
                         hint="write the template where the value is used, in the command "
                         "or the entity: there it is rendered")
    commands = checker.commands(data["commands"], ("commands",), None, frozenset())
    checker.check_needs()
    checker.check_refs()
    settings_raw = data.get("settings", {})
    plan = Plan(
        name=data["name"],
        file=file,
        base_dir=os.path.dirname(os.path.abspath(file)),
        commands=commands,
        vars=plan_vars,
        secrets=secrets,
        settings=Settings(
            max_parallel=settings_raw.get("max_parallel", 16),
            on_failure=settings_raw.get("on_failure", "rollback"),
            lock_timeout=parse_duration(settings_raw.get("lock_timeout", 0)),
        ),
        description=data.get("description"),
        source=data,
    )
    problems = checker.problems
    # Instances are keyed by id: duplicates would merge them. A need on itself, an
    # ancestor or a descendant is a cycle already reported in plainer words.
    if not checker.duplicates and not checker.bad_needs:
        graph, graph_problems = compile_graph(plan)
        # One problem per place: a loop the checker found undefined cannot expand either.
        reported = {d.path for d in problems if d.severity is Severity.ERROR}
        problems = [*problems, *(d for d in graph_problems if d.path not in reported)]
    if checker.duplicates or checker.bad_needs \
            or any(d.severity is Severity.ERROR for d in problems):
        raise PlanError([document.locate(d) for d in problems])
    warnings = tuple(document.locate(d) for d in checker.problems)
    return LoadedPlan(plan, graph, warnings, document)


def load_plan(
    path: str | os.PathLike[str], *, variables: Mapping[str, Any] | None = None
) -> LoadedPlan:
    """Read and check the plan at ``path``; raise PlanError with every problem, located."""
    file = os.fspath(path)
    try:
        text = read_bounded(file, MAX_PLAN_BYTES)
    except OSError as exc:
        raise PlanError([Diagnostic((), f"cannot read plan: {exc.strerror}",
                                    _unreadable_hint(file, exc), file=file)]) from None
    except TooLarge as exc:
        raise PlanError([Diagnostic((), f"the plan file is {exc}", file=file, line=1,
                                    column=1)]) from None
    return load_text(text, file, variables=variables)


def _unreadable_hint(file: str, exc: OSError) -> str | None:
    """What to type instead of a plan path that is a directory (a plan is one YAML file in
    it) or names no file (a near name beside it: plan.yml for plan.yaml)."""
    if isinstance(exc, IsADirectoryError):
        folder, wanted = file, ""
    elif isinstance(exc, FileNotFoundError):
        folder, wanted = os.path.dirname(file), os.path.basename(file)
    else:
        return None
    try:
        names = sorted(entry.name for entry in os.scandir(folder or ".")
                       if entry.name.endswith((".yaml", ".yml")) and entry.is_file())
    except OSError:
        return None
    if wanted:
        import difflib

        names = difflib.get_close_matches(wanted, names, n=3, cutoff=0.6)
    if not names:
        return None if wanted else "a plan is a YAML file, and there is none in this directory"
    shown = " or ".join(f"`{os.path.join(folder, name)}`" for name in names[:3])
    if len(names) > 3:
        shown += f" ({len(names) - 3} more .yaml files there)"
    return f"did you mean {shown}?"


class TooLarge(Exception):
    """A file holds more than planctl reads of it; the message says the limit."""


def read_bounded(file: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of ``file``, or TooLarge past ``limit``: a plan, vars or secret file that
    is a device (/dev/zero) or huge must not be read until memory runs out."""
    with open(file, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"larger than {limit // 1024**2} MiB")
    return data
