"""The floor under W2 with no durability at all: bare asyncio, the same jobs, the same polls.

N jobs are started at once, each done ``seconds`` after it starts (a plain function
records its deadline, as ``noop:start_job`` does); each is polled by an ``async`` status
function that yields to the loop once (as ``noop:job_status`` does) on planctl's grid: the
first poll one interval ±10% (drawn once) after the start, then one every interval, the
next at once when a poll is late. No state, no templates, no events, one task per job.
planctl's engine time over ``inner`` is what durability and the engine cost on top of the
event loop itself. Prints JSON: ``inner`` (seconds from the first start to the last end)
and ``polls``.

    python bench/asyncio_limit.py 10000
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time


def main(argv: list[str]) -> int:
    n = int(argv[1])
    seconds = float(argv[2]) if len(argv) > 2 else 0.5
    interval = float(argv[3]) if len(argv) > 3 else 0.05
    deadlines: dict[str, float] = {}

    def start_job(name: str) -> str:
        deadlines[name] = time.monotonic() + seconds
        return name

    async def job_status(handle: str) -> bool:
        await asyncio.sleep(0)
        return time.monotonic() >= deadlines[handle]

    async def follow(i: int) -> int:
        loop = asyncio.get_running_loop()
        handle = start_job(f"j{i}")
        due = loop.time() + interval * random.uniform(0.9, 1.1)
        polls = 0
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            polls += 1
            if await job_status(handle):
                return polls
            due = max(due + interval, loop.time())

    async def run() -> tuple[float, int]:
        start = time.perf_counter()
        polls = await asyncio.gather(*(follow(i) for i in range(n)))
        return time.perf_counter() - start, sum(polls)

    inner, polls = asyncio.run(run())
    print(json.dumps({"inner": inner, "polls": polls}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
