"""compare.py's TaskFlow side: one workload on one engine, run by the peers venv's python.

Not a project module: it imports ``taskflow``, which only the bench virtualenv has
(``compare.py`` creates it). The workloads mirror planctl's (see workloads.py):

- ``W1``: a linear flow of N no-op tasks (each runs after the previous one);
- ``W2``: an unordered flow of N tasks, each sleeping in 0.05 s steps until 0.5 s after
  it started (a polled job; the parallel engine gets one worker thread per task);
- ``W3``: the W1 flow whose last task raises, so the engine reverts the N - 1 others;
- ``L``: build the W1 flow, load it into an engine, compile, prepare and validate it,
  without running it.

Persistence is ``memory`` or a fresh SQLite file through TaskFlow's SQLAlchemy backend
(its defaults: a connection per operation, the file's default journal). The last line
on stdout is JSON: ``inner`` (seconds from building the flow to the end of the engine's
work, in process) and ``reverted`` (tasks whose revert ran).

    PEERS/bin/python bench/peer_taskflow.py W1 1000 --engine serial --store memory
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

from taskflow import engines, task
from taskflow.patterns import linear_flow, unordered_flow
from taskflow.persistence import backends, models

POLL_INTERVAL = 0.05


class Noop(task.Task):  # type: ignore[misc]
    """Does nothing; counts its reverts."""

    reverted = 0

    def execute(self) -> None:
        pass

    def revert(self, *args: Any, **kwargs: Any) -> None:
        Noop.reverted += 1


class Fail(Noop):
    """The W3 chain's last task."""

    def execute(self) -> None:
        raise RuntimeError("planned failure")


class Job(Noop):
    """A job that is done ``seconds`` after it starts, checked every POLL_INTERVAL."""

    def __init__(self, name: str, seconds: float) -> None:
        super().__init__(name=name)
        self.seconds = seconds

    def execute(self) -> None:
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL)


def build(workload: str, n: int, seconds: float) -> Any:
    if workload == "W2":
        fan = unordered_flow.Flow(f"fanout-{n}")
        fan.add(*(Job(f"job{i}", seconds) for i in range(n)))
        return fan
    chain = linear_flow.Flow(f"chain-{n}")
    chain.add(*(Noop(name=f"c{i}") for i in range(n - 1)))
    chain.add((Fail if workload == "W3" else Noop)(name=f"c{n - 1}"))
    return chain


@contextlib.contextmanager
def backend(store: str, db: str | None) -> Iterator[Any]:
    """A connected persistence backend with its schema in place."""
    if store == "memory":
        conf = {"connection": "memory://"}
    elif db:
        conf = {"connection": f"sqlite:///{db}"}
    else:
        sys.exit("--store sqlite needs --db FILE")
    with backends.backend(conf) as found:
        yield found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workload", choices=["W1", "W2", "W3", "L"])
    p.add_argument("n", type=int)
    p.add_argument("--engine", choices=["serial", "parallel"], default="serial")
    p.add_argument("--store", choices=["memory", "sqlite"], default="memory")
    p.add_argument("--db", help="SQLite file for --store sqlite (must not exist)")
    p.add_argument("--seconds", type=float, default=0.5, help="W2: how long each job takes")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)

    with backend(args.store, args.db) as found:
        start = time.perf_counter()
        flow = build(args.workload, args.n, args.seconds)
        options: dict[str, Any] = {}
        if args.engine == "parallel" and args.workload == "W2":
            options["max_workers"] = args.n  # all jobs in flight, as planctl's max_parallel
        engine = engines.load(flow, engine=args.engine, backend=found,
                              book=models.LogBook("bench"), **options)
        if args.workload == "L":
            engine.compile()
            engine.prepare()
            engine.validate()
        else:
            try:
                engine.run()
            except RuntimeError as exc:
                if args.workload != "W3" or "planned failure" not in str(exc):
                    raise
            else:
                if args.workload == "W3":
                    sys.exit("W3: the flow did not fail")
        inner = time.perf_counter() - start
    expected = args.n if args.workload == "W3" else 0  # the failed task is reverted too
    if Noop.reverted != expected:
        sys.exit(f"{args.workload}: {Noop.reverted} tasks reverted, expected {expected}")
    print(json.dumps({"inner": inner, "reverted": Noop.reverted}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
