"""W1: a chain of N no-op `python` commands, each needing the previous one, durable state.

Measures the engine's cost per step with the store's writes included: the whole process
``python -m planner apply`` (start-up and plan loading included), and in process the time
of ``apply_plan`` alone divided by N (target: at most 100 µs per command). Prints figures;
asserts nothing about time.

    python bench/w1_chain.py                 # N = 10,000, 5 runs of each kind
    python bench/w1_chain.py --n 1000 --runs 9
"""

from __future__ import annotations

import sys
import time

import harness
from workloads import chain


def main(argv: list[str] | None = None) -> int:
    args = harness.parser(__doc__ or "", 10_000).parse_args(argv)
    n, runs = args.n, args.runs
    with harness.plan_dir(chain(n)) as root:
        harness.header("W1 chain", n, root)
        procs: list[harness.Process] = []
        if not args.no_process:
            procs = harness.process_series(root, runs, expect=0)

        start = time.perf_counter()
        loaded = harness.load(root)
        load_s = time.perf_counter() - start
        print(f"in process: load_plan {load_s:.3f}s (not counted), then apply_plan "
              f"({runs} runs)")
        inproc: list[harness.InProcess] = []

        def one_apply(_: int) -> str:
            r = harness.run_in_process(root, loaded, expect="SUCCEEDED")
            inproc.append(r)
            return (f"{r.apply:.3f}s, {r.apply / n * 1e6:.1f} µs/command "
                    f"(CPU {r.cpu / n * 1e6:.1f} µs, waiting for a CPU "
                    f"{r.waited / n * 1e6:.1f} µs), {r.commits} commits")

        harness.series("apply", runs, one_apply)

    per = [r.apply / n for r in inproc]
    cpu = [r.cpu / n for r in inproc]
    commits = int(harness.median([r.commits for r in inproc]))
    print("summary (median, min, max):")
    if procs:
        print(f"  whole process        {harness.spread([p.wall for p in procs])}"
              f"  CPU {harness.spread([p.cpu for p in procs])}")
        print(f"  peak RSS of child    {harness.median([p.max_rss_mb for p in procs]):.0f} MB")
    print(f"  engine per command   {harness.spread(per, 1e6, ' µs', 1)}"
          f"  CPU {harness.spread(cpu, 1e6, ' µs', 1)}")
    print(f"  commits              {commits} ({commits / n:.2f} per command)")
    process = (f"process_median_s={harness.median([p.wall for p in procs]):.3f} "
               f"process_cpu_s={harness.median([p.cpu for p in procs]):.3f} "
               f"process_max_rss_mb={harness.median([p.max_rss_mb for p in procs]):.0f} "
               if procs else "")
    print(f"RESULT workload=W1 n={n} {process}"
          f"engine_us_per_command={harness.median(per) * 1e6:.1f} "
          f"engine_cpu_us_per_command={harness.median(cpu) * 1e6:.1f} commits={commits}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
