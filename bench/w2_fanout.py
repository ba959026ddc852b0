"""W2: N independent async tasks, each done 0.5 s after it starts, polled on one event loop.

Every task is started by a sync `python` function and polled every 0.05 s by an async one
(``noop:start_job`` / ``noop:job_status``), all at once (``max_parallel: N``). The critical
path is 0.5 s, so the in-process time of ``apply_plan`` minus 0.5 s is what the engine adds
(target: apply at most 0.6 s for N = 1,000). Also prints the peak thread count (the loop
must not use a thread per task), the whole process ``python -m planner apply``, and the
same figures for a larger N, for information. Prints figures; asserts nothing about time.

    python bench/w2_fanout.py                    # N = 1,000 then 10,000, 5 and 3 runs
    python bench/w2_fanout.py --n 1000 --runs 9 --info-n 0
"""

from __future__ import annotations

import sys
import time

import harness
from workloads import fanout

SECONDS = 0.5  # how long each task takes


def measure(n: int, runs: int, process: bool) -> str:
    """Print the figures of one N; returns the RESULT line's fields."""
    with harness.plan_dir(fanout(n, SECONDS)) as root:
        harness.header("W2 fanout", n, root)
        procs: list[harness.Process] = []
        if process:
            procs = harness.process_series(root, runs, expect=0)

        start = time.perf_counter()
        loaded = harness.load(root)
        print(f"in process: load_plan {time.perf_counter() - start:.3f}s (not counted), "
              f"then apply_plan ({runs} runs)")
        inproc: list[harness.InProcess] = []

        def one_apply(_: int) -> str:
            r = harness.run_in_process(root, loaded, expect="SUCCEEDED")
            inproc.append(r)
            return (f"{r.apply:.3f}s ({(r.apply - SECONDS) * 1e3:.0f} ms over the "
                    f"{SECONDS:g}s critical path; CPU {r.cpu:.3f}s, waiting for a CPU "
                    f"{r.waited:.3f}s), {r.commits} commits, peak {r.threads} threads")

        harness.series("apply", runs, one_apply)

    applies = [r.apply for r in inproc]
    threads = max(r.threads for r in inproc)
    commits = int(harness.median([r.commits for r in inproc]))
    print(f"summary for n={n} (median, min, max):")
    fields = ""
    if procs:
        print(f"  whole process        {harness.spread([p.wall for p in procs])}"
              f"  CPU {harness.spread([p.cpu for p in procs])}")
        print(f"  peak RSS of child    {harness.median([p.max_rss_mb for p in procs]):.0f} MB;"
              f" peak threads of child {max(p.threads for p in procs)}")
        fields = (f"process_median_s={harness.median([p.wall for p in procs]):.3f} "
                  f"process_max_rss_mb={harness.median([p.max_rss_mb for p in procs]):.0f} ")
    print(f"  apply (in process)   {harness.spread(applies)}"
          f"  CPU {harness.spread([r.cpu for r in inproc])}")
    print(f"  over critical path   {(harness.median(applies) - SECONDS) * 1e3:.0f} ms")
    print(f"  peak threads         {threads} (threading.active_count())")
    print(f"  commits              {commits}")
    return (f"n={n} {fields}apply_median_s={harness.median(applies):.3f} "
            f"apply_cpu_s={harness.median([r.cpu for r in inproc]):.3f} "
            f"peak_threads={threads} commits={commits}")


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__ or "", 1_000)
    parser.add_argument("--info-n", type=int, default=10_000,
                        help="a second, larger N measured for information (0: none)")
    parser.add_argument("--info-runs", type=int, default=3, help="runs for --info-n")
    args = parser.parse_args(argv)
    results = [measure(args.n, args.runs, not args.no_process)]
    if args.info_n:
        print()
        results.append(measure(args.info_n, args.info_runs, not args.no_process))
    for fields in results:
        print(f"RESULT workload=W2 {fields}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
