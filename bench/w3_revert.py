"""W3: rollback of a chain of N no-op `python` commands whose last command fails.

``chain(N, fail_last=True)``: N - 1 commands succeed, the last one fails, and the rollback
runs the N - 1 inverses (each a no-op `python` call) in reverse order. The rollback phase,
from the ``ROLLING_BACK`` event to the run's last event, divided by N - 1, is the cost per
inverse (target: at most 100 µs); the forward phase is shown beside it for comparison.
Also times the whole process ``python -m planner apply``. The run ends ROLLBACK_FAILED
(exit 2), by design: the failed command has no ``exists`` probe, so nothing can tell
whether it left something, and it is reported as a leftover rather than undone.
Prints figures; asserts nothing about time.

    python bench/w3_revert.py                # N = 10,000, 5 runs of each kind
    python bench/w3_revert.py --n 1000 --runs 9
"""

from __future__ import annotations

import sys
import time

import harness
from workloads import chain

from planner.store import EventRecord


def phases(events: list[EventRecord]) -> tuple[float, float]:
    """Seconds of the forward phase and of the rollback phase, from the events' clock."""
    start = events[0].ts
    turn = next(e.ts for e in events if e.kind == "run" and e.data.get("status") == "ROLLING_BACK")
    return turn - start, events[-1].ts - turn


def main(argv: list[str] | None = None) -> int:
    args = harness.parser(__doc__ or "", 10_000).parse_args(argv)
    n, runs = args.n, args.runs
    if n < 2:
        sys.exit("--n must be at least 2")
    undone = n - 1
    with harness.plan_dir(chain(n, fail_last=True)) as root:
        harness.header("W3 revert", n, root)
        procs: list[harness.Process] = []
        if not args.no_process:
            procs = harness.process_series(root, runs, expect=2)

        start = time.perf_counter()
        loaded = harness.load(root)
        print(f"in process: load_plan {time.perf_counter() - start:.3f}s (not counted), "
              f"then apply_plan ({runs} runs)")
        forward: list[float] = []
        backward: list[float] = []
        inproc: list[harness.InProcess] = []

        def one_apply(_: int) -> str:
            r = harness.run_in_process(root, loaded, expect="ROLLBACK_FAILED", keep_events=True)
            reverted = sum(e.kind == "command" and e.data.get("status") == "REVERTED"
                           for e in r.events)
            if reverted != undone:  # timings of a rollback that undid less mean nothing
                sys.exit(f"the rollback reverted {reverted} commands, expected {undone}")
            inproc.append(r)
            fwd, back = phases(r.events)
            forward.append(fwd / n)
            backward.append(back / undone)
            return (f"{r.apply:.3f}s (CPU {r.cpu:.3f}s, waiting for a CPU {r.waited:.3f}s): "
                    f"forward {fwd:.3f}s, {fwd / n * 1e6:.1f} µs/command; rollback "
                    f"{back:.3f}s, {back / undone * 1e6:.1f} µs/inverse; {r.commits} commits")

        harness.series("apply", runs, one_apply)

    commits = int(harness.median([r.commits for r in inproc]))
    print("summary (median, min, max):")
    fields = ""
    if procs:
        print(f"  whole process        {harness.spread([p.wall for p in procs])}"
              f"  CPU {harness.spread([p.cpu for p in procs])}")
        fields = (f"process_median_s={harness.median([p.wall for p in procs]):.3f} "
                  f"process_max_rss_mb={harness.median([p.max_rss_mb for p in procs]):.0f} ")
    print(f"  rollback per inverse {harness.spread(backward, 1e6, ' µs', 1)}")
    print(f"  forward per command  {harness.spread(forward, 1e6, ' µs', 1)}")
    per_step = harness.median([r.cpu for r in inproc]) / (n + undone)
    print(f"  apply CPU per step   {per_step * 1e6:.1f} µs ({n} forward + {undone} inverse steps)")
    print(f"  commits              {commits}")
    print(f"RESULT workload=W3 n={n} {fields}"
          f"rollback_us_per_inverse={harness.median(backward) * 1e6:.1f} "
          f"forward_us_per_command={harness.median(forward) * 1e6:.1f} commits={commits}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
