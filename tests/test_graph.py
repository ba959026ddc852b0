"""Tests of planner.graph: loop expansion and the frozen step DAG."""

from __future__ import annotations

import dataclasses
import itertools
import textwrap

import networkx as nx
import pytest

from planner.errors import Diagnostic, PlanError, Severity
from planner.graph import END, RUN, PlanGraph
from planner.loader import load_text


def graph_of(text: str) -> PlanGraph:
    return load_text(textwrap.dedent(text), "plan.yaml").graph


def edges(graph: PlanGraph) -> set[tuple[str, str]]:
    return set(graph.graph.edges)


def one_error(text: str) -> Diagnostic:
    with pytest.raises(PlanError) as caught:
        load_text(textwrap.dedent(text), "plan.yaml")
    found = [d for d in caught.value.diagnostics if d.severity is Severity.ERROR]
    assert len(found) == 1, [str(d) for d in found]
    return found[0]


LOOPS = """\
name: nested
vars:
  vms: [a, b]
  disks: [x, y]
commands:
  - id: vm
    for_each: "{{ vms }}"
    as: vm
    run: {command: [mk, "{{ vm }}"]}
    inverse: {command: [rm, "{{ vm }}"]}
    children:
      - id: disk
        for_each: "{{ disks }}"
        as: disk
        run: {command: [mk, "{{ vm }}", "{{ disk }}"]}
        inverse: {command: [rm, "{{ vm }}", "{{ disk }}"]}
      - id: attach
        needs: [disk]
        run: {command: [attach, "{{ vm }}"]}
        inverse: {command: [detach, "{{ vm }}"]}
  - id: report
    needs: vm
    run: {command: [report]}
    changes: false
"""


def test_a_plain_command_is_one_run_step() -> None:
    """A command without children is a single RUN step keyed by its id."""
    graph = graph_of("""\
        name: p
        commands:
          - id: only
            run: {command: [x]}
            irreversible: true
        """)
    assert list(graph.steps) == ["only"]
    step = graph.steps["only"]
    assert (step.command, step.kind) == ("only", RUN)
    assert graph.instances["only"].last_step == "only"
    assert len(graph) == 1


def test_a_parent_is_a_run_step_and_an_end_step_around_its_children() -> None:
    """A parent's run step comes before its children and its end step after them."""
    graph = graph_of("""\
        name: p
        commands:
          - id: parent
            run: {command: [p]}
            inverse: {command: [unp]}
            children:
              - id: one
                run: {command: [a]}
                inverse: {command: [una]}
              - id: two
                run: {command: [b]}
                inverse: {command: [unb]}
        """)
    assert list(graph.steps) == ["parent", "one", "two", "parent:end"]
    assert graph.steps["parent:end"].kind == END
    assert graph.steps["parent:end"].command == "parent"
    assert edges(graph) == {
        ("parent", "one"), ("parent", "two"), ("one", "parent:end"), ("two", "parent:end"),
    }
    assert graph.instances["parent"].children == ("one", "two")
    assert [r.id for r in graph.roots()] == ["parent"]


def test_a_parent_without_run_still_brackets_its_children() -> None:
    """A parent that only groups children keeps its begin and end steps."""
    graph = graph_of("""\
        name: p
        commands:
          - id: group
            children:
              - id: a
                run: {command: [a]}
                irreversible: true
        """)
    assert edges(graph) == {("group", "a"), ("a", "group:end")}


def test_loops_expand_to_one_instance_per_item() -> None:
    """`for_each` over a list gives `id[item]` instances with the loop variable bound."""
    graph = graph_of("""\
        name: p
        vars: {disks: [disk0, disk1, disk2]}
        commands:
          - id: clone
            for_each: "{{ disks }}"
            as: disk
            run: {command: [copy, "{{ disk }}"]}
            inverse: {command: [rm, "{{ disk }}"]}
        """)
    assert list(graph.instances) == ["clone[disk0]", "clone[disk1]", "clone[disk2]"]
    assert graph.instances["clone[disk1]"].loop == {"disk": "disk1"}
    assert graph.by_spec["clone"] == ("clone[disk0]", "clone[disk1]", "clone[disk2]")


def test_loop_keys_of_mappings_and_other_items() -> None:
    """Items with an `id`/`name` key use it; a mapping loops over key/value; others by index."""
    graph = graph_of("""\
        name: p
        vars:
          hosts: [{name: web, port: 80}, {name: db, port: 5432}]
          sizes: {small: 1, large: 8}
          flags: [true, [1]]
        commands:
          - id: host
            for_each: "{{ hosts }}"
            run: {command: [x, "{{ item.port }}"]}
            changes: false
          - id: size
            for_each: "{{ sizes }}"
            run: {command: [x, "{{ item.value }}"]}
            changes: false
          - id: flag
            for_each: "{{ flags }}"
            run: {command: [x]}
            changes: false
        """)
    assert graph.by_spec["host"] == ("host[web]", "host[db]")
    assert graph.by_spec["size"] == ("size[small]", "size[large]")
    assert graph.instances["size[large]"].loop == {"item": {"key": "large", "value": 8}}
    assert graph.by_spec["flag"] == ("flag[0]", "flag[1]")


def test_a_literal_list_can_be_looped_over() -> None:
    """`for_each` may be a list written in place."""
    graph = graph_of("""\
        name: p
        commands:
          - id: ping
            for_each: [a, "{{ 'b' }}"]
            run: {command: [ping, "{{ item }}"]}
            changes: false
        """)
    assert graph.by_spec["ping"] == ("ping[a]", "ping[b]")


def test_nested_loops_carry_the_keys_of_every_level() -> None:
    """A looped child of a looped parent is named `child[a][x]` and sees both variables."""
    graph = graph_of(LOOPS)
    assert graph.by_spec["disk"] == ("disk[a][x]", "disk[a][y]", "disk[b][x]", "disk[b][y]")
    instance = graph.instances["disk[b][x]"]
    assert instance.parent == "vm[b]"
    assert instance.loop == {"vm": "b", "disk": "x"}
    assert instance.scope == {"vm": "b", "disk": "x"}
    assert graph.by_spec["attach"] == ("attach[a]", "attach[b]")


def test_siblings_in_a_looped_parent_are_scoped_to_the_same_instance() -> None:
    """`attach[a]` waits for the disks of `vm[a]` only, not for those of `vm[b]`."""
    graph = graph_of(LOOPS)
    waits = {u for u, v in edges(graph) if v == "attach[a]"}
    assert waits == {"vm[a]", "disk[a][x]", "disk[a][y]"}


def test_needs_on_a_looped_command_waits_for_all_instances() -> None:
    """`needs: vm` waits for the end of every `vm[...]` instance."""
    graph = graph_of(LOOPS)
    assert {u for u, v in edges(graph) if v == "report"} == {"vm[a]:end", "vm[b]:end"}


def test_needs_between_two_loops_wait_for_all_instances() -> None:
    """A looped command needing another top-level loop waits for all its instances."""
    graph = graph_of("""\
        name: p
        commands:
          - id: a
            for_each: [x, y]
            run: {command: [a]}
            changes: false
          - id: b
            for_each: [x, y]
            needs: a
            run: {command: [b]}
            changes: false
        """)
    assert {(u, v) for u, v in edges(graph) if v == "b[x]"} == {("a[x]", "b[x]"), ("a[y]", "b[x]")}


def test_the_graph_is_acyclic_and_follows_plan_order() -> None:
    """Steps are numbered in plan order and every edge goes forwards."""
    graph = graph_of(LOOPS)
    assert nx.is_directed_acyclic_graph(graph.graph)
    assert [s.order for s in graph.steps.values()] == list(range(len(graph.steps)))
    assert all(graph.steps[u].order < graph.steps[v].order for u, v in edges(graph))


def test_the_graph_is_frozen() -> None:
    """Neither the networkx graph nor the PlanGraph can be changed after compiling."""
    graph = graph_of(LOOPS)
    with pytest.raises(nx.NetworkXError):
        graph.graph.add_edge("report", "vm[a]")
    with pytest.raises(nx.NetworkXError):
        graph.graph.remove_node("report")
    with pytest.raises(dataclasses.FrozenInstanceError):
        graph.steps = {}  # type: ignore[misc]


# -- errors --------------------------------------------------------------------------------

CYCLE = """\
name: p
commands:
  - id: a
    needs: [c]
    run: {command: [a]}
    irreversible: true
  - id: b
    needs: [a]
    run: {command: [b]}
    irreversible: true
  - id: c
    needs: [b]
    run: {command: [c]}
    irreversible: true
"""


def test_a_cycle_of_two_is_named_and_located() -> None:
    """`a → b → a` is reported once, at one of the needs forming it."""
    found = one_error("""\
        name: p
        commands:
          - id: a
            needs: [b]
            run: {command: [a]}
            irreversible: true
          - id: b
            needs: [a]
            run: {command: [b]}
            irreversible: true
        """)
    assert found.message in ("dependency cycle: a → b → a", "dependency cycle: b → a → b")
    assert found.path in (("commands", 0, "needs", 0), ("commands", 1, "needs", 0))
    assert found.line in (4, 8)
    assert "remove one of these needs" in (found.hint or "")


def test_a_cycle_of_three_names_every_command() -> None:
    """A three-command cycle lists the three commands and closes the loop."""
    found = one_error(CYCLE)
    names = found.message.removeprefix("dependency cycle: ").split(" → ")
    assert len(names) == 4 and names[0] == names[-1]
    assert set(names) == {"a", "b", "c"}
    # Each arrow reads "waits for": consecutive names follow the needs.
    waits = {("a", "c"), ("b", "a"), ("c", "b")}
    assert all(pair in waits for pair in itertools.pairwise(names))
    assert found.path[-2:] == ("needs", 0)


def test_a_cycle_through_a_parent_is_found() -> None:
    """A need from a child's parent to a command that needs the child is a cycle."""
    found = one_error("""\
        name: p
        commands:
          - id: parent
            needs: [other]
            run: {command: [p]}
            irreversible: true
            children:
              - id: child
                run: {command: [c]}
                irreversible: true
          - id: other
            needs: [child]
            run: {command: [o]}
            irreversible: true
        """)
    assert found.message.startswith("dependency cycle: ")
    assert "other" in found.message


def test_a_loop_that_does_not_give_a_list() -> None:
    """`for_each` over a string is an error at the for_each value."""
    found = one_error("""\
        name: p
        vars: {disks: disk0}
        commands:
          - id: clone
            for_each: "{{ disks }}"
            run: {command: [c]}
            changes: false
        """)
    assert found.message == "for_each must give a list, got a string ('disk0')"
    assert (found.line, found.column) == (5, 15)


@pytest.mark.parametrize(("vars_", "for_each", "message", "hint"), [
    ("{hosts: 'web1, web2'}", '"{{ hosts }}"', "got a string ('web1, web2')",
     "write a YAML list: hosts: [web1, web2]; a string is not split into items"),
    ("{}", "web1, web2", "got a string ('web1, web2')",
     "write a YAML list: for_each: [web1, web2]; a string is not split into items"),
    ("{hosts: [web1, web2]}", "hosts", "got a string ('hosts')",
     'to loop over the variable `hosts`, write: for_each: "{{ hosts }}"'),
    ("{n: 3}", '"{{ n }}"', "got a number (3)", "write a YAML list, such as [a, b]"),
    ("{n: null}", '"{{ n }}"', "got null", "write a YAML list, such as [a, b]"),
])
def test_a_loop_that_does_not_give_a_list_says_what_to_write(
    vars_: str, for_each: str, message: str, hint: str
) -> None:
    """A newcomer's `hosts: web1, web2` (a string), or `for_each: hosts` (the name without
    braces): the error says what it got in the plan's words, and the list to write; it
    read `got str` and nothing else."""
    found = one_error(f"""\
        name: p
        vars: {vars_}
        commands:
          - id: ping
            for_each: {for_each}
            run: {{command: [ping]}}
            changes: false
        """)
    assert found.message == f"for_each must give a list, {message}"
    assert found.hint == hint


@pytest.mark.parametrize(("items", "why", "column"),
                         [("[a, b, a, a]", "'a' repeats", 22),
                          ("[a, 'x[1]']", "'x[1]' contains a bracket", 19)])
def test_loop_keys_must_be_unique_and_bracket_free(items: str, why: str, column: int) -> None:
    """Loop keys name instances: a repeat or a bracket is one error, at the first bad item."""
    found = one_error(f"""\
        name: p
        commands:
          - id: clone
            for_each: {items}
            run: {{command: [c]}}
            changes: false
        """)
    assert found.message == f"loop key {why}"
    assert (found.line, found.column) == (4, column)


def test_repeated_keys_of_a_templated_loop_are_reported_once_at_for_each() -> None:
    """Keys repeated by a loop over a variable are reported once each, at `for_each`."""
    found = one_error("""\
        name: p
        vars: {disks: [d0, d0, d0]}
        commands:
          - id: clone
            for_each: "{{ disks }}"
            run: {command: [c]}
            changes: false
        """)
    assert found.message == "loop key 'd0' repeats"
    assert found.path == ("commands", 0, "for_each")


def test_a_loop_that_fails_to_render_is_an_error() -> None:
    """A for_each template that fails at expansion is reported at for_each."""
    found = one_error("""\
        name: p
        vars: {n: 0}
        commands:
          - id: clone
            for_each: "{{ 1 // n }}"
            run: {command: [c]}
            changes: false
        """)
    assert found.message.startswith("cannot expand: ")
    assert found.path == ("commands", 0, "for_each")


def test_graph_json_is_written_as_json_dumps_would_write_it() -> None:
    """`graph -f json` joins the encoder's pieces a few thousand at a time (not in one list
    of millions): the text is still byte for byte json.dumps(..., indent=2) of the whole
    document, non-ASCII escaped, over many batches."""
    import json

    from planner.render_graph import render_graph

    lines = ["name: big", "commands:"]
    for i in range(400):
        lines += [f"  - id: c{i}", f"    name: 'étape {i} ✓'", f"    entity: 'chose/{i}'",
                  "    run: {command: ['true']}", "    inverse: {command: ['true']}"]
        if i:
            lines.append(f"    needs: c{i - 1}")
    loaded = load_text("\n".join(lines) + "\n", "big.yaml")
    text = render_graph(loaded.graph, "json", loaded.plan)
    document = json.loads(text)
    assert text == json.dumps(document, indent=2) + "\n"
    assert len(list(json.JSONEncoder(indent=2).iterencode(document))) > 3 * 4096
    assert document["commands"][7]["name"] == "étape 7 ✓" and "\\u00e9tape 7" in text
    assert document["commands"][7]["entity"] == "chose/7"


def test_graph_edges_are_drawn_without_building_the_networkx_graph(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`planctl graph` lists the edges the PlanGraph keeps, by step order, each once:
    those of its networkx DiGraph, which it no longer builds (1.85 s for 100,000
    commands), for parents, loops and needs."""
    import json

    import planner.graph
    from planner.render_graph import render_graph

    loaded = load_text(textwrap.dedent("""\
        name: edges
        commands:
          - id: box
            run: {command: ['true']}
            children:
              - id: part
                for_each: [a, b]
                as: p
                run: {command: ['true']}
          - id: after
            needs: [box, part]
            run: {command: ['true']}
        """), "edges.yaml")
    graph = loaded.graph
    order = {k: s.order for k, s in graph.steps.items()}
    expected = sorted(graph.graph.edges, key=lambda e: (order[e[0]], order[e[1]]))
    built = dataclasses.replace(graph)  # a copy whose DiGraph is not cached yet

    def refused(*args: object) -> None:
        raise AssertionError("the networkx graph was built")

    monkeypatch.setattr(planner.graph, "_digraph", refused)
    document = json.loads(render_graph(built, "json", loaded.plan))
    assert [tuple(e) for e in document["edges"]] == expected and len(expected) == 7
    mermaid = render_graph(built, "mermaid").splitlines()
    dot = render_graph(built, "dot").splitlines()
    assert len([line for line in mermaid if " --> " in line]) == len(expected)
    assert len([line for line in dot if " -> " in line]) == len(expected)
