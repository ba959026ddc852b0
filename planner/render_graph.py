"""Writes a compiled plan graph as Mermaid, Graphviz dot or JSON; parents become clusters."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

from .graph import PlanGraph, before_run, command_names
from .model import Plan

__all__ = ["FORMATS", "render_graph"]

FORMATS = ("mermaid", "dot", "json")


def _node_ids(graph: PlanGraph) -> dict[str, str]:
    return {key: f"s{step.order}" for key, step in graph.steps.items()}


def _mermaid(graph: PlanGraph) -> Iterator[str]:
    ids = _node_ids(graph)
    yield "flowchart TD"

    def block(iid: str, depth: int) -> Iterator[str]:
        instance = graph.instances[iid]
        pad = "    " * depth
        if not instance.children:
            yield f'{pad}{ids[iid]}["{_escape(iid)}"]'
            return
        yield f'{pad}subgraph c{instance.order}["{_escape(iid)}"]'
        yield f'{pad}    {ids[iid]}(["{_escape(iid)}"])'
        for child in instance.children:
            yield from block(child, depth + 1)
        yield f'{pad}    {ids[instance.last_step]}(["end {_escape(iid)}"])'
        yield f"{pad}end"

    for root in graph.roots():
        yield from block(root.id, 1)
    for u, v in _edges(graph):
        yield f"    {ids[u]} --> {ids[v]}"


def _edges(graph: PlanGraph) -> list[tuple[str, str]]:
    """The DAG's edges by the order of their steps, from the edges the graph keeps (each
    once), not from ``graph.graph``: that networkx DiGraph is built on first use, 1.85 s
    for 100,000 commands."""
    steps = graph.steps
    return sorted(((u, v) for u, after in graph.successors.items() for v in after),
                  key=lambda e: (steps[e[0]].order, steps[e[1]].order))


def _escape(text: str) -> str:
    return text.replace('"', "#quot;")


def _dot(graph: PlanGraph) -> Iterator[str]:
    ids = _node_ids(graph)
    yield "digraph plan {"
    yield "    rankdir=TB;"
    yield '    node [shape=box, fontname="Helvetica"];'

    def block(iid: str, depth: int) -> Iterator[str]:
        instance = graph.instances[iid]
        pad = "    " * depth
        if not instance.children:
            yield f"{pad}{ids[iid]} [label={json.dumps(iid)}];"
            return
        yield f"{pad}subgraph cluster_{instance.order} {{"
        yield f"{pad}    label={json.dumps(iid)};"
        yield f"{pad}    {ids[iid]} [label={json.dumps(iid)}, shape=oval];"
        for child in instance.children:
            yield from block(child, depth + 1)
        yield f"{pad}    {ids[instance.last_step]} [label={json.dumps('end ' + iid)}, shape=oval];"
        yield f"{pad}}}"

    for root in graph.roots():
        yield from block(root.id, 1)
    for u, v in _edges(graph):
        yield f"    {ids[u]} -> {ids[v]};"
    yield "}"


def _json(graph: PlanGraph, plan: Plan | None) -> Iterator[str]:
    # Entities as a run would lock them; one that needs the run (its id) is null there,
    # and `entity_template` says how it is written.
    entities = before_run(plan, graph, "entity") if plan is not None else {}
    names = command_names(plan, graph) if plan is not None else {}
    document = {
        "version": 1,
        "commands": [
            {
                "id": i.id,
                "spec": i.spec.id,
                "parent": i.parent,
                "children": list(i.children),
                "name": names.get(i.id),
                "entity": entities.get(i.id),
                "entity_template": i.spec.entity,
            }
            for i in graph.instances.values()
        ],
        "steps": [
            {"key": s.key, "command": s.command, "kind": s.kind} for s in graph.steps.values()
        ],
        "edges": [list(e) for e in _edges(graph)],
    }
    # json.dumps(document, indent=2), without the list of millions of small pieces it
    # joins at the end (275 MiB for 100,000 commands): joined a few thousand at a time.
    out = io.StringIO()
    pieces: list[str] = []
    for piece in json.JSONEncoder(indent=2).iterencode(document):
        pieces.append(piece)
        if len(pieces) >= 4096:
            out.write("".join(pieces))
            pieces.clear()
    out.write("".join(pieces))
    yield out.getvalue()


def render_graph(graph: PlanGraph, fmt: str, plan: Plan | None = None) -> str:
    """The graph in ``fmt`` (one of FORMATS), ending with a newline; with its ``plan``,
    `-f json` gives names and entities rendered as a run would."""
    if fmt == "json":
        return "\n".join(_json(graph, plan)) + "\n"
    writers = {"mermaid": _mermaid, "dot": _dot}
    return "\n".join(writers[fmt](graph)) + "\n"
