"""The floors under W2: bare asyncio, the same jobs, the same polls; with or without the
same SQLite writes as planctl.

N jobs are started at once, each done ``seconds`` after it starts (a plain function
records its deadline, as ``noop:start_job`` does); each is polled by an ``async`` status
function that yields to the loop once (as ``noop:job_status`` does) on planctl's grid: the
first poll one interval ±10% (drawn once) after the start, then one every interval, the
next at once when a poll is late. No templates, no events, one task per job.

Without ``--trace``: no state at all, the floor without durability. With ``--trace``
(written by ``sqlite_limit.py record W2 N TRACE``: planctl's own transactions of the same
run), the same writes are replayed with bare sqlite3 (statements prepared, values
encoded already) where planctl must make them, on the loop's thread: creating the run and
the commit of the intents before any job starts, the commit of the handles after they
started and before any poll, the commit of the outcomes after the last job ended (all of
them at once: the most favourable grouping). That is the floor with durability.

planctl's engine time over ``inner`` is what its engine costs on top of the event loop
(and of SQLite). Prints JSON: ``inner`` (seconds from the first write, or the first start
without a trace, to the last end or write), ``polls``, and with a trace the seconds of
each phase (``before``, ``handles``, ``wait``, ``after``).

    python bench/asyncio_limit.py 10000
    python bench/sqlite_limit.py record W2 10000 /tmp/w2.trace
    python bench/asyncio_limit.py 10000 --trace /tmp/w2.trace --db /tmp/floor.db
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import sqlite_limit


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("n", type=int, help="number of jobs")
    p.add_argument("seconds", type=float, nargs="?", default=0.5, help="each job's length")
    p.add_argument("interval", type=float, nargs="?", default=0.05, help="poll interval")
    p.add_argument("--trace", type=Path, help="planctl's transactions of the same W2 run")
    p.add_argument("--db", type=Path, help="the SQLite file to replay them into")
    args = p.parse_args(argv)
    if (args.trace is None) != (args.db is None):
        p.error("--trace and --db go together")
    n, seconds, interval = args.n, args.seconds, args.interval
    deadlines: dict[str, float] = {}
    replayer = None if args.trace is None else sqlite_limit.Replayer(args.trace, args.db)

    def start_job(name: str) -> str:
        deadlines[name] = time.monotonic() + seconds
        return name

    async def job_status(handle: str) -> bool:
        await asyncio.sleep(0)
        return time.monotonic() >= deadlines[handle]

    async def follow(handle: str, started: float) -> int:
        loop = asyncio.get_running_loop()
        due = started + interval * random.uniform(0.9, 1.1)  # counted from the start
        polls = 0
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            polls += 1
            if await job_status(handle):
                return polls
            due = max(due + interval, loop.time())

    async def run() -> dict[str, Any]:
        marks = [time.perf_counter()]
        if replayer is not None:
            replayer.until_step_commit(1)  # the run created, the intents committed
            marks.append(time.perf_counter())
        clock = asyncio.get_running_loop().time
        followers = [asyncio.ensure_future(follow(start_job(f"j{i}"), clock()))
                     for i in range(n)]
        if replayer is not None:
            replayer.until_step_commit(2)  # the handles, before the first poll
            marks.append(time.perf_counter())
        polls = await asyncio.gather(*followers)
        marks.append(time.perf_counter())
        if replayer is not None:
            replayer.rest()  # the outcomes, the run's end, its locks released
            marks.append(time.perf_counter())
        out: dict[str, Any] = {"inner": marks[-1] - marks[0], "polls": sum(polls)}
        if replayer is not None:
            phases = ("before", "handles", "wait", "after")
            out.update(zip(phases, (b - a for a, b in itertools.pairwise(marks)), strict=True))
        return out

    try:
        print(json.dumps(asyncio.run(run())))
    finally:
        if replayer is not None:
            replayer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
