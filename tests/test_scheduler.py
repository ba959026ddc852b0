"""Tests of planner.scheduler: the passive, graphlib-shaped scheduler over a step DAG."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.scheduler import Scheduler, SchedulerError


def make(edges: Iterable[tuple[str, str]], nodes: Iterable[str] = (),
         order: Mapping[str, int] | None = None, finished: Iterable[str] = ()) -> Scheduler:
    """A scheduler over a DiGraph; plan order is the given one, else alphabetical."""
    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    graph.add_edges_from(edges)
    if order is None:
        order = {n: i for i, n in enumerate(sorted(graph))}
    return Scheduler(list(graph), graph.predecessors, graph.successors, order,
                     finished=finished)


def drain(scheduler: Scheduler) -> list[str]:
    """Hand out everything, report each done at once; the order in which steps came out."""
    seen: list[str] = []
    while batch := scheduler.ready():
        for node in batch:
            seen.append(node)
            scheduler.done(node)
    return seen


def test_ready_steps_come_out_in_plan_order_not_insertion_order() -> None:
    """Independent steps are handed out by their order number, lowest first."""
    order = {"z": 0, "a": 2, "m": 1}
    scheduler = make([], nodes=["a", "m", "z"], order=order)
    assert scheduler.ready() == ["z", "m", "a"]


def test_steps_unlocked_later_still_come_out_in_plan_order() -> None:
    """Successors made ready by one done() come out sorted by order, mixed with earlier ones."""
    order = {"root": 0, "c": 1, "b": 2, "a": 3, "late": 4}
    scheduler = make([("root", "a"), ("root", "b"), ("root", "c")], nodes=["late"],
                     order=order)
    assert scheduler.ready(1) == ["root"]
    scheduler.done("root")
    assert scheduler.ready() == ["c", "b", "a", "late"]


def test_limit_caps_a_batch_and_the_rest_stays_ready() -> None:
    """ready(limit) hands out at most ``limit`` steps; the others come out on later calls."""
    scheduler = make([], nodes=["a", "b", "c", "d", "e"])
    assert scheduler.ready(2) == ["a", "b"]
    assert scheduler.in_flight == 2
    assert scheduler.ready(0) == []
    assert scheduler.ready(2) == ["c", "d"]
    assert scheduler.ready(10) == ["e"]
    assert scheduler.ready() == []
    assert scheduler.in_flight == 5


def test_each_step_is_handed_out_once() -> None:
    """A step already handed out is never handed out again, even before it reports."""
    scheduler = make([], nodes=["a", "b"])
    assert scheduler.ready() == ["a", "b"]
    assert scheduler.ready() == []


def test_done_unlocks_a_successor_only_when_all_its_predecessors_are_done() -> None:
    """A join step becomes ready after its last predecessor is done, not before."""
    scheduler = make([("a", "c"), ("b", "c")])
    assert scheduler.ready() == ["a", "b"]
    scheduler.done("a")
    assert scheduler.ready() == []
    assert scheduler.has_ready() is False
    scheduler.done("b")
    assert scheduler.has_ready() is True
    assert scheduler.ready() == ["c"]


def test_failed_blocks_its_dependents_and_only_them() -> None:
    """After failed(a), everything downstream of a is never handed out; other branches go on."""
    edges = [("a", "a1"), ("a1", "a2"), ("b", "b1"), ("a", "join"), ("b", "join")]
    scheduler = make(edges)
    assert scheduler.ready() == ["a", "b"]
    scheduler.failed("a")
    scheduler.done("b")
    assert scheduler.ready() == ["b1"]
    scheduler.done("b1")
    assert scheduler.ready() == []
    assert not scheduler.is_active()
    assert scheduler.unfinished() == {"a", "a1", "a2", "join"}
    assert scheduler.finished == {"b", "b1"}


def test_stop_hands_out_nothing_more_but_accepts_reports_of_steps_out() -> None:
    """After stop(), ready() is empty; steps already out may still report done or failed."""
    scheduler = make([("a", "c"), ("b", "d")], nodes=["e"])
    assert scheduler.ready(2) == ["a", "b"]
    scheduler.stop()
    assert scheduler.stopped
    scheduler.done("a")
    scheduler.failed("b")
    assert scheduler.ready() == []
    assert not scheduler.has_ready()
    assert not scheduler.is_active()
    assert scheduler.unfinished() == {"b", "c", "d", "e"}


def test_is_active_while_steps_are_out() -> None:
    """is_active() is true while a step is out, even when nothing else can become ready."""
    scheduler = make([], nodes=["a"])
    assert scheduler.is_active()
    scheduler.ready()
    assert scheduler.is_active()
    assert not scheduler.has_ready()
    scheduler.done("a")
    assert not scheduler.is_active()


def test_reporting_a_step_that_was_never_handed_out_raises() -> None:
    """done() or failed() of a step not handed out is a SchedulerError naming the step."""
    scheduler = make([("a", "b")])
    with pytest.raises(SchedulerError, match="'b'"):
        scheduler.done("b")
    with pytest.raises(SchedulerError, match="'a'"):
        scheduler.failed("a")


def test_reporting_a_step_twice_raises() -> None:
    """A second report for the same step, in either direction, is a SchedulerError."""
    scheduler = make([], nodes=["a", "b"])
    scheduler.ready()
    scheduler.done("a")
    with pytest.raises(SchedulerError):
        scheduler.done("a")
    with pytest.raises(SchedulerError):
        scheduler.failed("a")
    scheduler.failed("b")
    with pytest.raises(SchedulerError):
        scheduler.done("b")


def test_an_unknown_step_cannot_be_reported() -> None:
    """A step that is not in the graph at all is refused with SchedulerError."""
    scheduler = make([], nodes=["a"])
    with pytest.raises(SchedulerError):
        scheduler.done("nope")


def test_scheduler_error_is_a_value_error() -> None:
    """Like graphlib's misuse errors, SchedulerError is a ValueError."""
    assert issubclass(SchedulerError, ValueError)


def test_finished_preseeds_a_resumed_run() -> None:
    """Steps given as finished are never handed out, and their successors start ready."""
    edges = [("a", "b"), ("b", "c"), ("a", "d"), ("x", "d")]
    scheduler = make(edges, finished={"a", "b"})
    assert scheduler.ready() == ["c", "x"]
    assert scheduler.unfinished() == {"c", "x", "d"}
    scheduler.done("x")
    assert scheduler.ready() == ["d"]
    scheduler.done("c")
    scheduler.done("d")
    assert scheduler.unfinished() == set()
    assert scheduler.finished == {"a", "b", "c", "d", "x"}


def test_finished_everything_leaves_nothing_to_do() -> None:
    """A run resumed with every step finished hands out nothing and is not active."""
    scheduler = make([("a", "b")], finished={"a", "b"})
    assert scheduler.ready() == []
    assert not scheduler.is_active()
    assert scheduler.unfinished() == set()


def test_unfinished_counts_out_ready_and_waiting_steps() -> None:
    """unfinished() holds steps out, ready but not handed out, waiting, and failed."""
    scheduler = make([("a", "b"), ("b", "c")], nodes=["d", "e"])
    assert scheduler.unfinished() == {"a", "b", "c", "d", "e"}
    assert scheduler.ready(2) == ["a", "d"]  # b waits for a
    assert scheduler.unfinished() == {"a", "b", "c", "d", "e"}
    scheduler.done("a")
    scheduler.failed("d")
    assert scheduler.unfinished() == {"b", "c", "d", "e"}


def test_a_reversed_graph_hands_out_dependents_first() -> None:
    """Swapping predecessors and successors drives the same scheduler backwards (rollback)."""
    graph = nx.DiGraph([("vm", "disk0"), ("vm", "disk1"), ("disk0", "end"), ("disk1", "end")])
    order = {"vm": 0, "disk0": 1, "disk1": 2, "end": 3}
    scheduler = Scheduler(list(graph), graph.successors, graph.predecessors,
                          {k: len(order) - v for k, v in order.items()})
    assert scheduler.ready() == ["end"]
    scheduler.done("end")
    assert scheduler.ready() == ["disk1", "disk0"]
    scheduler.done("disk0")
    assert scheduler.ready() == []
    scheduler.done("disk1")
    assert scheduler.ready() == ["vm"]


@st.composite
def random_dags(draw: st.DrawFn) -> tuple[nx.DiGraph, dict[int, int]]:
    """A gnp random DAG (edges of a random digraph kept only from lower to higher node)
    and a random plan order."""
    n = draw(st.integers(min_value=0, max_value=40))
    p = draw(st.floats(min_value=0.0, max_value=0.5))
    seed = draw(st.integers(min_value=0, max_value=2**32 - 1))
    random_graph = nx.gnp_random_graph(n, p, seed=seed, directed=True)
    dag = nx.DiGraph()
    dag.add_nodes_from(random_graph)
    dag.add_edges_from((u, v) for u, v in random_graph.edges if u < v)
    ranks = draw(st.permutations(list(range(n))))
    return dag, {node: ranks[node] for node in dag}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_dags(), st.integers(min_value=1, max_value=8))
def test_handing_out_everything_visits_each_node_once_in_topological_order(
        case: tuple[nx.DiGraph, dict[int, int]], limit: int) -> None:
    """On random DAGs, drawing batches and reporting done visits every node exactly once,
    each after all its predecessors, each batch in plan order."""
    dag, order = case
    scheduler = Scheduler(list(dag), dag.predecessors, dag.successors, order)
    seen: list[int] = []
    position: dict[int, int] = {}
    while batch := scheduler.ready(limit):
        assert len(batch) <= limit
        assert [order[n] for n in batch] == sorted(order[n] for n in batch)
        for node in batch:
            assert all(p in position for p in dag.predecessors(node)), node
            position[node] = len(seen)
            seen.append(node)
            scheduler.done(node)
    assert sorted(seen) == sorted(dag)
    assert len(seen) == len(set(seen))
    assert all(position[u] < position[v] for u, v in dag.edges)
    assert not scheduler.is_active()
    assert scheduler.unfinished() == set()


@settings(max_examples=100, deadline=None)
@given(random_dags(), st.data())
def test_a_failed_node_blocks_exactly_its_descendants(
        case: tuple[nx.DiGraph, dict[int, int]], data: st.DataObject) -> None:
    """On random DAGs, failing one node hands out everything except its descendants."""
    dag, order = case
    if not dag:
        return
    victim = data.draw(st.sampled_from(sorted(dag)))
    scheduler = Scheduler(list(dag), dag.predecessors, dag.successors, order)
    seen: set[int] = set()
    while batch := scheduler.ready():
        for node in batch:
            seen.add(node)
            if node == victim:
                scheduler.failed(node)
            else:
                scheduler.done(node)
    blocked = nx.descendants(dag, victim)
    assert seen == set(dag) - blocked
    assert scheduler.unfinished() == blocked | {victim}


def test_drain_helper_matches_a_topological_sort() -> None:
    """A plain chain drains in its only topological order."""
    assert drain(make([("a", "b"), ("b", "c")])) == ["a", "b", "c"]
