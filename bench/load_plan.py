"""L: how long `planctl validate` takes on a large plan, as a whole process.

Writes ``big_plan(N)`` from workloads.py (six lines per command: templated argv, entity,
inverse, exists, needs) to a temporary directory, then times ``python -m planner validate
FILE`` end to end. For the split it also times ``python -m planner --version`` (Python
start-up plus the CLI's own imports) and ``validate`` of a one-command plan (start-up plus
every import and fixed cost of validating). Prints figures; asserts nothing about time.

    python bench/load_plan.py                      # 10,000 commands, 5 runs
    python bench/load_plan.py --commands 1000 --runs 9
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from workloads import big_plan

REPO = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    """The environment of the timed processes: this checkout's planner first on sys.path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["NO_COLOR"] = "1"
    return env


def _time(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    """Wall-clock seconds of one process; exits with its output if it fails."""
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return elapsed


def _series(label: str, argv: list[str], runs: int, cwd: Path, env: dict[str, str]) -> float:
    _time(argv, cwd, env)  # warm-up, not counted: writes bytecode caches, fills the page cache
    times = []
    for i in range(runs):
        times.append(_time(argv, cwd, env))
        print(f"  {label} run {i + 1}: {times[-1]:.3f}s", flush=True)
    median = statistics.median(times)
    print(f"  {label} median: {median:.3f}s  (min {min(times):.3f}s, max {max(times):.3f}s)")
    return median


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=10_000, metavar="N",
                        help="commands in the generated plan (default 10000)")
    parser.add_argument("--runs", type=int, default=5, metavar="K",
                        help="timed runs of each process (default 5)")
    args = parser.parse_args(argv)
    if args.commands < 1 or args.runs < 1:
        parser.error("--commands and --runs must be at least 1")

    env = _env()
    python = [sys.executable, "-m", "planner"]
    with tempfile.TemporaryDirectory(prefix="planctl-bench-") as tmp:
        work = Path(tmp)
        plan = work / "plan.yaml"
        plan.write_text(big_plan(args.commands))
        tiny = work / "tiny.yaml"
        tiny.write_text(big_plan(1))
        text = plan.read_text()
        print(f"plan: {args.commands} commands, {text.count(chr(10))} lines, "
              f"{len(text.encode()) / 1e6:.1f} MB ({plan})")
        print(f"python: {sys.executable} {sys.version.split()[0]}; planner from {REPO}")

        print(f"planctl validate FILE ({args.runs} runs, after one warm-up run):")
        whole = _series("validate", [*python, "validate", str(plan)], args.runs, work, env)
        print("planctl --version: python start-up + the CLI's imports")
        startup = _series("version", [*python, "--version"], args.runs, work, env)
        print("planctl validate on a one-command plan: start-up + all imports + fixed costs")
        fixed = _series("validate-1", [*python, "validate", str(tiny)], args.runs, work, env)

    def share(part: float) -> str:
        return f"{part:.3f}s ({part / whole:.0%})"

    plan_time = max(whole - fixed, 0.0)
    print(f"split of the {args.commands}-command median {whole:.3f}s:")
    print(f"  python start-up + CLI imports (--version)    {share(startup)}")
    print(f"  rest                                         {share(max(whole - startup, 0.0))}")
    print(f"    of which validate's imports, fixed costs   {share(max(fixed - startup, 0.0))}")
    print(f"    of which this plan's size                  {share(plan_time)}, "
          f"{plan_time / args.commands * 1e6:.0f} µs per command")
    print(f"RESULT commands={args.commands} validate_median_s={whole:.3f} "
          f"version_median_s={startup:.3f} validate_one_median_s={fixed:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
