"""Compiles a plan into its frozen step DAG: loops expanded, parents split into run and end.

A command instance has a *run* step (its ``run``, if any); a parent also has an *end*
step, and its children sit between the two. ``needs`` joins the last step of the needed
command (its end, for a parent) to the run step of the command that needs it. Edges point
from what must finish first to what waits for it.

The DAG is a networkx ``DiGraph`` (``PlanGraph.graph``), built the first time something
asks for it (``planctl graph``, a cycle to report, an embedding program): the engine walks
the same edges as plain tuples, so ``validate`` and ``apply`` of an acyclic plan never pay
networkx's import (~0.1 s) or its per-edge bookkeeping.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from .errors import Diagnostic, Path
from .model import CommandSpec, Plan
from .templates import TemplateError, is_template, render_value

__all__ = ["END", "RUN", "CommandInstance", "PlanGraph", "Step", "before_run", "command_names",
           "compile_graph"]

RUN = "run"
END = "end"


@dataclass(frozen=True, slots=True)
class CommandInstance:
    """One command after loop expansion, e.g. ``clone[disk0]``."""

    id: str
    spec: CommandSpec
    parent: str | None
    loop: Mapping[str, Any]  # loop variables in scope: its own and its ancestors'
    scope: Mapping[str, str]  # looped spec id -> loop key, for itself and its ancestors
    children: tuple[str, ...] = ()
    order: int = 0

    @property
    def first_step(self) -> str:
        return self.id

    @property
    def last_step(self) -> str:
        return f"{self.id}:end" if self.children else self.id


@dataclass(frozen=True, slots=True)
class Step:
    """A node of the DAG: the run or the end of a command instance."""

    key: str
    command: str  # instance id
    kind: str  # RUN or END
    order: int


@dataclass(frozen=True)
class PlanGraph:
    """The frozen DAG of a plan and the instances and steps its nodes stand for."""

    steps: Mapping[str, Step]
    instances: Mapping[str, CommandInstance]
    by_spec: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # The edges, both ways, in the order they were added; every step is a key of both.
    successors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    predecessors: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @cached_property
    def graph(self) -> Any:
        """The DAG as a frozen ``networkx.DiGraph`` of step keys."""
        return _digraph(self.steps, self.successors)

    def __len__(self) -> int:
        return len(self.steps)

    def ancestors(self, step: str) -> set[str]:
        """The steps ``step`` waits for, directly or not: ``networkx.ancestors`` of
        ``graph``, without building that DiGraph (seconds for 100,000 commands)."""
        seen: set[str] = set()
        todo = [step]
        while todo:
            for before in self.predecessors.get(todo.pop(), ()):
                if before not in seen:
                    seen.add(before)
                    todo.append(before)
        return seen

    def roots(self) -> Iterator[CommandInstance]:
        return (i for i in self.instances.values() if i.parent is None)


def _loop_key(item: Any, index: int) -> str:
    if isinstance(item, str | int | float) and not isinstance(item, bool):
        return str(item)
    if isinstance(item, dict):
        for name in ("id", "name", "key"):
            if isinstance(item.get(name), str | int):
                return str(item[name])
    return str(index)


class _Compiler:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.problems: list[Diagnostic] = []
        self.instances: dict[str, CommandInstance] = {}
        self.by_spec: dict[str, list[str]] = {}
        self.context_base: dict[str, Any] = {**plan.vars, "env": public_env(plan)}
        self.order = 0

    def expand(
        self, spec: CommandSpec, parent: CommandInstance | None, loop: dict[str, Any],
        scope: dict[str, str], suffix: str,
    ) -> list[CommandInstance]:
        if spec.for_each is None:
            return [self.instance(spec, parent, loop, scope, suffix)]
        try:
            items = render_value(spec.for_each, {**self.context_base, **loop})
        except TemplateError as exc:
            self.problems.append(Diagnostic((*spec.path, "for_each"), f"cannot expand: {exc}"))
            return []
        if isinstance(items, dict):
            items = [{"key": k, "value": v} for k, v in items.items()]
        if not isinstance(items, list | tuple):
            self.problems.append(_not_a_list(spec, items, self.context_base))
            return []
        out: list[CommandInstance] = []
        seen: set[str] = set()
        reported: set[str] = set()
        for index, item in enumerate(items):
            key = _loop_key(item, index)
            if key in seen or "[" in key or "]" in key:
                why = "repeats" if key in seen else "contains a bracket"
                # A list written in place is located at the item itself.
                where = (*spec.path, "for_each") if isinstance(spec.for_each, str) \
                    else (*spec.path, "for_each", index)
                if key not in reported:
                    reported.add(key)
                    self.problems.append(Diagnostic(
                        where, f"loop key {key!r} {why}",
                        hint="loop keys name instances (`id[key]`) and must be unique",
                    ))
                continue
            seen.add(key)
            out.append(self.instance(
                spec, parent, {**loop, spec.loop_var: item}, {**scope, spec.id: key},
                f"{suffix}[{key}]",
            ))
        return out

    def instance(
        self, spec: CommandSpec, parent: CommandInstance | None, loop: dict[str, Any],
        scope: dict[str, str], suffix: str,
    ) -> CommandInstance:
        iid = spec.id + suffix
        order = self.order
        self.order += 1
        children: list[str] = []
        # Children of a looped command carry the parent's keys: clone[vm1][disk0].
        child_suffix = suffix
        placeholder = CommandInstance(iid, spec, parent.id if parent else None, loop, scope,
                                      order=order)
        for child in spec.children:
            children.extend(c.id for c in self.expand(child, placeholder, loop, scope,
                                                      child_suffix))
        made = CommandInstance(iid, spec, placeholder.parent, loop, scope, tuple(children), order)
        self.instances[iid] = made
        self.by_spec.setdefault(spec.id, []).append(iid)
        return made

    def targets(self, source: CommandInstance, target_spec: str) -> list[CommandInstance]:
        """Instances of ``target_spec`` that ``source`` waits for (same enclosing loop keys)."""
        found = [self.instances[i] for i in self.by_spec.get(target_spec, ())]
        if not source.scope:
            return found
        return [
            t for t in found
            if all(t.scope.get(s, k) == k for s, k in source.scope.items() if s in t.scope)
        ]


def compile_graph(plan: Plan) -> tuple[PlanGraph, list[Diagnostic]]:
    """Expand loops and build the frozen step DAG; diagnostics for cycles and bad loops."""
    compiler = _Compiler(plan)
    for spec in plan.commands:
        compiler.expand(spec, None, {}, {}, "")
    instances = dict(sorted(compiler.instances.items(), key=lambda kv: kv[1].order))
    steps: dict[str, Step] = {}
    needs_at: dict[tuple[str, str], Path] = {}
    order = 0

    def add_steps(instance: CommandInstance) -> None:
        nonlocal order
        steps[instance.id] = Step(instance.id, instance.id, RUN, order)
        order += 1
        for child_id in instance.children:
            add_steps(instances[child_id])
        if instance.children:
            steps[instance.last_step] = Step(instance.last_step, instance.id, END, order)
            order += 1

    for instance in instances.values():
        if instance.parent is None:
            add_steps(instance)
    # Dicts as ordered sets: an edge given twice (a child that is also needed) counts once.
    succ: dict[str, dict[str, None]] = {key: {} for key in steps}
    pred: dict[str, dict[str, None]] = {key: {} for key in steps}

    def add_edge(u: str, v: str) -> None:
        succ[u][v] = None
        pred[v][u] = None

    for instance in instances.values():
        for child_id in instance.children:
            child = instances[child_id]
            add_edge(instance.first_step, child.first_step)
            add_edge(child.last_step, instance.last_step)
        spec = instance.spec
        for index, need in enumerate(spec.needs):
            for target in compiler.targets(instance, need):
                edge = (target.last_step, instance.first_step)
                add_edge(*edge)
                # A lone `needs: x` has no index; locating falls back to `needs` itself.
                needs_at.setdefault(edge, (*spec.path, "needs", index))
    by_spec = {k: tuple(v) for k, v in compiler.by_spec.items()}
    graph = PlanGraph(steps, instances, by_spec, {k: tuple(v) for k, v in succ.items()},
                      {k: tuple(v) for k, v in pred.items()})
    problems = compiler.problems
    if not _acyclic(graph.successors, graph.predecessors):
        problems.append(_cycle(graph.graph, steps, needs_at))
    return graph, problems


def public_env(plan: Plan) -> dict[str, str]:
    """The environment as `for_each`, `entity` and `name` see it: without the variables the
    plan's secrets are read from, whose values loop keys, entities and names would carry,
    unmasked, into what planctl stores and prints (a secret cannot be used there)."""
    hidden = {spec.env for spec in plan.secrets.values() if spec.env is not None}
    return {k: v for k, v in os.environ.items() if k not in hidden}


def before_run(plan: Plan, graph: PlanGraph, attribute: str, run_id: str | None = None
               ) -> dict[str, str | None]:
    """Each instance's `name` or `entity` (``attribute`` of its spec) rendered with what is
    known before a run: vars, `env`, loop variables, and ``run_id`` when given. None where
    it has none, or needs more (a secret, another command's outputs)."""
    base: dict[str, Any] = {**plan.vars, "env": public_env(plan),
                            "execution_reason": "REGULAR_FLOW"}
    if run_id is not None:
        base["run_id"] = run_id
    out: dict[str, str | None] = {}
    for iid, instance in graph.instances.items():
        template = getattr(instance.spec, attribute)
        if template is None:
            out[iid] = None
            continue
        try:
            out[iid] = str(render_value(template, {**base, **instance.loop}))
        except TemplateError:
            out[iid] = None
    return out


def command_names(plan: Plan, graph: PlanGraph, run_id: str | None = None) -> dict[str, str]:
    """The `name` of each instance that has one, as shown: rendered as ``before_run`` does,
    else as written."""
    rendered = before_run(plan, graph, "name", run_id)
    return {iid: rendered[iid] or str(instance.spec.name)
            for iid, instance in graph.instances.items() if instance.spec.name is not None}


def _acyclic(successors: Mapping[str, tuple[str, ...]],
             predecessors: Mapping[str, tuple[str, ...]]) -> bool:
    """Kahn's algorithm: every step can be taken once all its predecessors were."""
    waiting = {key: len(before) for key, before in predecessors.items()}
    free = [key for key, count in waiting.items() if not count]
    taken = 0
    while free:
        key = free.pop()
        taken += 1
        for after in successors[key]:
            waiting[after] -= 1
            if not waiting[after]:
                free.append(after)
    return taken == len(waiting)


def _digraph(steps: Mapping[str, Step], successors: Mapping[str, tuple[str, ...]]) -> Any:
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_nodes_from(steps)
    graph.add_edges_from((u, v) for u, after in successors.items() for v in after)
    return nx.freeze(graph)


def _cycle(graph: Any, steps: Mapping[str, Step], needs_at: Mapping[tuple[str, str], Path]
           ) -> Diagnostic:
    import networkx as nx

    edges = nx.find_cycle(graph)
    names: list[str] = []
    for u, _v in reversed(edges):
        command = steps[u].command
        if not names or names[-1] != command:
            names.append(command)
    if len(names) > 1 and names[0] == names[-1]:
        names.pop()
    names.append(names[0])
    where = next((needs_at[(u, v)] for u, v in edges if (u, v) in needs_at), ())
    return Diagnostic(
        where, f"dependency cycle: {' → '.join(names)}",
        hint="each arrow reads 'waits for'; remove one of these needs",
    )


def _not_a_list(spec: CommandSpec, items: Any, names: Mapping[str, Any]) -> Diagnostic:
    """for_each gave a string (`hosts: web1, web2` is one), a number, a boolean or null."""
    hint = "write a YAML list, such as [a, b]"
    source = spec.for_each
    named = re.fullmatch(r"\{\{\s*([A-Za-z_]\w*)\s*\}\}", source.strip()) \
        if isinstance(source, str) else None
    if isinstance(items, str):
        got = f"a string ({items!r})" if len(items) < 40 else "a string"
        parts = [p.strip() for p in items.split(",") if p.strip()] if "," in items else []
        if isinstance(source, str) and not is_template(source) and source.strip() in names:
            hint = f"to loop over the variable `{source.strip()}`, write: " \
                f"for_each: \"{{{{ {source.strip()} }}}}\""
        elif 1 < len(parts) <= 10:
            where = named.group(1) if named else "for_each"
            hint = f"write a YAML list: {where}: [{', '.join(parts)}]; a string is not split " \
                "into items"
    else:
        got = "null" if items is None else "a boolean" if isinstance(items, bool) \
            else f"a number ({items!r})" if isinstance(items, int | float) \
            else f"a {type(items).__name__}"
    return Diagnostic((*spec.path, "for_each"), f"for_each must give a list, got {got}", hint)
