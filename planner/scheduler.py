"""A passive scheduler over a step DAG: the caller asks what is ready and reports outcomes.

Shaped like ``graphlib.TopologicalSorter``: no threads, no I/O, no clock. Ready steps come
out in plan order (their ``order`` number), so runs are deterministic. A failed step's
dependents never become ready; after ``stop()`` nothing new is handed out.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Mapping

__all__ = ["Scheduler", "SchedulerError"]


class SchedulerError(ValueError):
    """The caller reported an outcome for a step that was not handed out."""


class Scheduler:
    """Hands out steps whose predecessors all succeeded, lowest ``order`` first."""

    def __init__(
        self,
        nodes: Iterable[str],
        predecessors: Callable[[str], Iterable[str]],
        successors: Callable[[str], Iterable[str]],
        order: Mapping[str, int],
        finished: Iterable[str] = (),
    ) -> None:
        self._successors = successors
        self._order = order
        self._waiting: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self._out: set[str] = set()
        self._failed: set[str] = set()
        self._stopped = False
        self.finished: set[str] = set(finished)
        for node in nodes:
            if node in self.finished:
                continue
            count = sum(1 for p in predecessors(node) if p not in self.finished)
            if count:
                self._waiting[node] = count
            else:
                self._heap.append((order[node], node))
        heapq.heapify(self._heap)

    def ready(self, limit: int | None = None) -> list[str]:
        """Up to ``limit`` ready steps, in plan order; each is handed out once."""
        if self._stopped:
            return []
        out: list[str] = []
        heap = self._heap
        while heap and (limit is None or len(out) < limit):
            out.append(heapq.heappop(heap)[1])
        self._out.update(out)
        return out

    def done(self, node: str) -> None:
        """``node`` ended well: what waits only for it becomes ready."""
        self._take(node)
        self.finished.add(node)
        for successor in self._successors(node):
            left = self._waiting.get(successor)
            if left is None:
                continue
            if left == 1:
                del self._waiting[successor]
                heapq.heappush(self._heap, (self._order[successor], successor))
            else:
                self._waiting[successor] = left - 1

    def failed(self, node: str) -> None:
        """``node`` ended badly: its dependents will never be handed out."""
        self._take(node)
        self._failed.add(node)

    def stop(self) -> None:
        """Hand out nothing more; steps already out may still report."""
        self._stopped = True

    def _take(self, node: str) -> None:
        if node not in self._out:
            raise SchedulerError(f"step {node!r} was not handed out (or reported twice)")
        self._out.remove(node)

    @property
    def in_flight(self) -> int:
        return len(self._out)

    @property
    def stopped(self) -> bool:
        return self._stopped

    def has_ready(self) -> bool:
        return bool(self._heap) and not self._stopped

    def is_active(self) -> bool:
        """Whether anything is out, or could still be handed out."""
        return bool(self._out) or self.has_ready()

    def unfinished(self) -> set[str]:
        """Steps that never ended well: failed, out, ready, or waiting."""
        return (self._failed | self._out | set(self._waiting) | {n for _, n in self._heap})
