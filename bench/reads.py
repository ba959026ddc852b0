"""Reads and recovery on a big state store: every command but `apply`, timed at scale.

Builds one state store in a temporary directory: ``--small`` runs of a 5-command chain
(default 300), a W2 fan-out of ``--fanout`` async tasks (10,000), a W3 chain of ``--w3``
commands whose last fails and is rolled back (10,000), a W1 chain of ``--n`` commands
(100,000), and a chain of ``--killed`` commands with an entity each (20,000) whose
``planctl apply`` is killed with SIGKILL half-way. The runs are applied in a child
process (``planner.apply_plan``, as the W benchmarks' in-process runs: this process stays
small, as a process started from a big one reports that one's peak RSS as its own), the
killed one by a whole ``planctl``. Then each command is timed as a whole process,
``python -m planner ...``: wall time, CPU time and peak RSS from ``os.wait4``, the median
of ``--runs`` runs after one untimed warm-up for those that change nothing, one run for
those that do (the real rollback of the killed run, and what follows it). Prints figures
and ``RESULT`` lines; asserts nothing about time, but stops when a command exits with an
unexpected code.

    python bench/reads.py                      # the sizes above, 3 runs each
    python bench/reads.py --n 10000 --w3 2000 --fanout 1000 --killed 4000 --runs 1
    python bench/reads.py --keep /tmp/reads    # keep the store and plans there
    python bench/reads.py --reuse /tmp/reads --only show --only events   # time reads again
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import harness
from workloads import chain, fanout

import planner
from planner.sqlite_store import SQLiteStore


def entity_chain(n: int) -> str:
    """``chain(n)`` with an entity per command, so that a run holds ``n`` locks."""
    lines = [f"name: entities-{n}", "commands:"]
    for i in range(n):
        lines += [f"  - id: c{i}", f"    entity: thing/{i}", "    run: {python: 'noop:noop'}",
                  "    inverse: {python: 'noop:noop'}"]
        if i:
            lines.append(f"    needs: c{i - 1}")
    return "\n".join(lines) + "\n"


@dataclass
class Built:
    state: Path
    plans: dict[str, Path]
    runs: dict[str, str]  # workload -> run id
    cut: list[str]  # commands the kill left STARTING (no exists probe: leftovers)


def _apply(store: SQLiteStore, path: Path, expect: str) -> str:
    loaded = planner.load_plan(path)
    outcome = planner.apply_plan(loaded, store, handle_signals=False)
    if outcome.status != expect:
        sys.exit(f"{path}: apply ended {outcome.status}, expected {expect}")
    return outcome.run_id


def _events(state: Path, num: int) -> int:
    """How many events run number ``num`` has recorded (0 before it starts)."""
    db = sqlite3.connect(f"file:{state}?mode=ro", uri=True, timeout=5.0)
    try:
        row = db.execute("SELECT COUNT(*) FROM event_log WHERE id BETWEEN ? AND ?",
                         (num << 32, (num + 1) << 32)).fetchone()
        return int(row[0])
    finally:
        db.close()


def build(root: Path, args: argparse.Namespace) -> Built:
    # One directory, one noop.py: a process keeps one module per name.
    harness.write_plan(root, "")
    plans = {}
    for name, text in (("small", chain(5)), ("W2", fanout(args.fanout)),
                       ("W3", chain(args.w3, fail_last=True)), ("W1", chain(args.n)),
                       ("killed", entity_chain(args.killed))):
        plans[name] = root / "plan" / f"{name.lower()}.yaml"
        plans[name].write_text(text)
    state = root / "state.db"
    runs: dict[str, str] = {}
    store = SQLiteStore(state)
    try:
        start = time.perf_counter()
        small = planner.load_plan(plans["small"])
        for _ in range(args.small):
            outcome = planner.apply_plan(small, store, handle_signals=False)
            runs["small"] = outcome.run_id
        print(f"  {args.small} small runs: {time.perf_counter() - start:.1f}s", flush=True)
        for name, expect in (("W2", "SUCCEEDED"), ("W3", "ROLLBACK_FAILED"),
                             ("W1", "SUCCEEDED")):
            start = time.perf_counter()
            runs[name] = _apply(store, plans[name], expect)
            print(f"  {name}: run {runs[name]} {expect} in {time.perf_counter() - start:.1f}s",
                  flush=True)
    finally:
        store.close()
    # The killed run: a real planctl, SIGKILL once half of its commands are recorded
    # (each command writes three events: STARTING, RUNNING, SUCCEEDED).
    argv = [sys.executable, "-m", "planner", "apply", str(plans["killed"]), "--state",
            str(state)]
    with open(root / "killed.log", "w") as log:
        child = subprocess.Popen(argv, cwd=root, env=harness.env(), stdout=log,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 start_new_session=True)
        target = 3 * args.killed // 2
        while child.poll() is None and _events(state, args.small + 4) < target:
            time.sleep(0.01)
        with contextlib.suppress(ProcessLookupError):  # it may have finished first
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()
    store = SQLiteStore(state)
    try:
        runs["killed"] = killed = store.last_run_id() or "?"
        record = store.get_run(killed)
        commands = store.get_commands(killed).values()
        done = sum(c.status == "SUCCEEDED" for c in commands)
        cut = [c.id for c in commands if c.status == "STARTING"]
    finally:
        store.close()
    print(f"  killed: run {killed} left {record.status if record else '?'} with {done} of "
          f"{args.killed} commands SUCCEEDED, {cut or 'none'} STARTING", flush=True)
    size = sum(Path(f"{state}{s}").stat().st_size for s in ("", "-wal")
               if Path(f"{state}{s}").exists())
    print(f"  state store: {size / 2**20:.0f} MiB", flush=True)
    return Built(state, plans, runs, cut)


@dataclass(frozen=True)
class Case:
    key: str  # for the RESULT line
    label: str
    argv: list[str]
    expect: int
    once: bool = False  # it changes the store: timed once, no warm-up
    state: bool = True  # takes --state


def cases(b: Built, args: argparse.Namespace) -> list[Case]:
    w1, w2, w3 = (b.runs[k] for k in ("W1", "W2", "W3"))
    mid = f"c{args.n // 2}"
    return [
        Case("runs", "runs", ["runs"], 0),
        Case("runs_1000", "runs -n 1000", ["runs", "-n", "1000"], 0),
        Case("show_last", "show --last (the killed run)", ["show", "--last"], 0),
        Case("show_w1", "show W1", ["show", w1], 0),
        Case("show_w1_prefix", "show W1-PREFIX", ["show", w1[:-2]], 0),
        Case("show_w1_command", "show W1 COMMAND", ["show", w1, mid], 0),
        Case("show_w2_command", "show W2 COMMAND", ["show", w2, f"job[{args.fanout // 2}]"], 0),
        Case("show_w3", "show W3", ["show", w3], 0),
        Case("events_w1", "events W1", ["events", w1], 0),
        Case("events_w1_command", "events W1 --command", ["events", w1, "--command", mid], 0),
        Case("events_w3", "events W3", ["events", w3], 0),
        Case("locks", "locks", ["locks"], 0),
        Case("dry_run_w1", "rollback W1 --dry-run", ["rollback", w1, "--dry-run"], 0),
        Case("dry_run_w3", "rollback W3 --dry-run", ["rollback", w3, "--dry-run"], 0),
        Case("dry_run_killed", "rollback --last --dry-run (killed)",
             ["rollback", "--last", "--dry-run"], 0),
        Case("resume_ended", "resume W1 (ended)", ["resume", w1], 0),
        Case("resume_ended_json", "resume W1 (ended) -o json", ["resume", w1, "-o", "json"], 0),
        Case("rollback_again_w3", "rollback W3 (again: leftover stays)", ["rollback", w3], 2),
        Case("rollback_again_w3_json", "rollback W3 (again) -o json",
             ["rollback", w3, "-o", "json"], 2),
        Case("validate", "validate W1's plan", ["validate", str(b.plans["W1"])], 0,
             state=False),
        Case("plan", "plan W1's plan", ["plan", str(b.plans["W1"])], 0, state=False),
        Case("graph", "graph W1's plan -f json", ["graph", str(b.plans["W1"]), "-f", "json"], 0,
             state=False),
        # A command cut short has no exists probe: a leftover until --gone says it is gone.
        Case("rollback_killed", "rollback --last (killed: real)", ["rollback", "--last"],
             2 if b.cut else 0, once=True),
        Case("resume_killed", "resume --last (killed, ended)", ["resume", "--last"], 0,
             once=True),
        *([Case("rollback_gone", "rollback --last --gone CUT", ["rollback", "--last",
                *(a for c in b.cut for a in ("--gone", c))], 0, once=True)] if b.cut else []),
        Case("rollback_done", "rollback --last (rolled back already)", ["rollback", "--last"], 0,
             once=True),
    ]


def build_apart(root: Path, args: argparse.Namespace) -> Built:
    """``build`` in a child process, so that this one stays small: a process started from
    a big one reports the big one's peak RSS as its own (Linux keeps it across exec)."""
    sizes = [f"--{k}={getattr(args, k)}" for k in ("n", "w3", "fanout", "killed", "small")]
    done = subprocess.run([sys.executable, __file__, "--build-into", str(root), *sizes],
                          env=harness.env(), check=False)
    if done.returncode:
        sys.exit(f"building the state store failed (exit {done.returncode})")
    return _built(root)


def _built(root: Path) -> Built:
    data = json.loads((root / "built.json").read_text())
    return Built(Path(data["state"]), {k: Path(v) for k, v in data["plans"].items()},
                 data["runs"], data["cut"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--n", type=int, default=100_000, help="W1 chain (default 100,000)")
    p.add_argument("--w3", type=int, default=10_000, help="W3 chain (default 10,000)")
    p.add_argument("--fanout", type=int, default=10_000, help="W2 fan-out (default 10,000)")
    p.add_argument("--killed", type=int, default=20_000,
                   help="chain with entities, killed half-way (default 20,000)")
    p.add_argument("--small", type=int, default=300, help="small runs (default 300)")
    p.add_argument("--runs", type=int, default=3, help="timed runs of each read (default 3)")
    p.add_argument("--only", action="append", metavar="LABEL",
                   help="time only the cases whose label starts with this (repeatable)")
    p.add_argument("--keep", type=Path, metavar="DIR",
                   help="build in DIR (emptied first) and keep it, instead of a temp dir")
    p.add_argument("--reuse", type=Path, metavar="DIR",
                   help="time the store --keep DIR built (with --only, to time reads again "
                        "after a change: the last cases change the store)")
    p.add_argument("--build-into", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.build_into:
        built = build(args.build_into, args)
        (args.build_into / "built.json").write_text(json.dumps({
            "state": str(built.state), "plans": {k: str(v) for k, v in built.plans.items()},
            "runs": built.runs, "cut": built.cut}))
        return 0
    if args.reuse:
        return run(args.reuse, args)
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        harness.fresh_state(args.keep / "state.db")
        return run(args.keep, args)
    with tempfile.TemporaryDirectory(prefix="planctl-reads-") as tmp:
        return run(Path(tmp), args)


def run(root: Path, args: argparse.Namespace) -> int:
    print(f"reads: W1 n={args.n}, W3 n={args.w3}, W2 n={args.fanout}, killed "
          f"n={args.killed}, {args.small} small runs ({root})")
    print(f"python {sys.version.split()[0]}; planner from {harness.REPO}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    if args.reuse:
        built = _built(root)
    else:
        print("building the state store (in a child process):", flush=True)
        built = build_apart(root, args)
    base = [sys.executable, "-m", "planner"]
    env = harness.env()
    log = root / "command.log"
    print(f"whole process, median of {args.runs} after a warm-up (once: one run): "
          "wall, CPU, peak RSS")
    for case in cases(built, args):
        if args.only and not any(case.label.startswith(o) for o in args.only):
            continue
        argv = [*base, *case.argv, *(["--state", str(built.state)] if case.state else [])]
        times: list[harness.Process] = []
        for i in range(1 if case.once else args.runs + 1):
            done = harness.measure(argv, root, env, log)
            if done.code != case.expect:
                sys.exit(f"{' '.join(argv)} exited {done.code}, expected {case.expect}:\n"
                         + log.read_text()[-3000:])
            if case.once or i:
                times.append(done)
        out = log.stat().st_size
        wall = harness.median([t.wall for t in times])
        cpu = harness.median([t.cpu for t in times])
        rss = harness.median([t.max_rss_mb for t in times])
        print(f"  {case.label:<40} {wall:7.3f}s  CPU {cpu:7.3f}s  {rss:5.0f} MiB  "
              f"output {out / 1024:,.0f} KiB", flush=True)
        print(f"RESULT case={case.key} wall_s={wall:.3f} cpu_s={cpu:.3f} max_rss_mb={rss:.0f}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
