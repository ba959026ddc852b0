"""planctl beside its peers (TaskFlow, ansible-playbook, bare sqlite3), in one run (issue 6).

Each workload (W1 chain, W2 fan-out, W3 fail and revert, L load) runs on each selected
tool as a whole process timed by ``os.wait4`` (wall, CPU, peak RSS: ``harness.measure``),
several times, the tools taking turns within each round so that the machine's noise
falls on all of them alike. Each tool's own record of its work gives a second figure,
*engine*: planctl's run from start to end as its state store recorded it, TaskFlow's time in
process from building the flow to the end of ``engine.run()``, the bare-sqlite3 replay's
time for its transactions. Prints medians and the ratio planctl/tool, and writes
``compare.json`` (every run), ``compare.md`` (the table and the targets) and
``compare.png`` (time against N, drawn by the peers venv's matplotlib) to ``--out``.

The peers are installed by this script into their own virtualenv (``--peers-venv``,
default ``bench/.peers-venv``), never into the project's environment. See bench/README.md.

    python bench/compare.py --quick                 # small N, one run each: a few minutes
    python bench/compare.py                         # the default sizes, 3 runs each
    python bench/compare.py --workloads W1,W3 --tools planctl,sqlite-limit --runs 5
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness
import peers
from workloads import big_plan, chain, fanout

HERE = harness.HERE
WORKLOADS = ("W1", "W2", "W3", "L")
SECONDS = 0.5  # how long each W2 job takes: the critical path
W2_TARGETS = {1000: 1.2, 10000: 1.5}  # N: most engine time, in critical paths (issue 6)
WARMUP_N = 10  # size of the untimed first run of each tool on each workload
BASELINE = "planctl"
LIMIT = "sqlite-limit"
ASYNC_LIMIT = "asyncio-limit"
DURABLE_LIMIT = "asyncio-sqlite-limit"
LIMITS = (LIMIT, ASYNC_LIMIT, DURABLE_LIMIT)  # floors, not peers: no whole-process ratio

Sizes = dict[str, tuple[int, ...]]


@dataclass(frozen=True)
class Tool:
    name: str
    what: str  # one line for the legend
    sizes: Sizes  # the N of each workload it runs by default
    quick: Sizes  # and with --quick
    peer: bool = False  # runs from the peers' virtualenv


_K, _10K, _100K = 1_000, 10_000, 100_000
_TASKFLOW_WHAT = ("TaskFlow, {engine} engine, {store} persistence: a linear flow of no-op "
                  "tasks (W1, W3: the last raises, all are reverted), an unordered flow of "
                  "sleep-polling tasks (W2)")

TOOLS: tuple[Tool, ...] = (
    Tool("planctl", "planctl apply (validate for L): SQLite store, WAL, synchronous=NORMAL",
         {"W1": (100, _K, _10K, _100K), "W2": (100, _K, _10K), "W3": (100, _K, _10K, _100K),
          "L": (100, _K, _10K, _100K)},
         {"W1": (100, _K), "W2": (10, 100), "W3": (100, _K), "L": (100, _K)}),
    Tool("planctl-fsync", "planctl apply with PLANCTL_SYNC=FULL: an fsync per commit",
         {"W1": (100, _K)}, {"W1": (100,)}),
    Tool(LIMIT, "bare sqlite3 replaying planctl's transactions of the same run (engine only)",
         {"W1": (100, _K, _10K, _100K), "W3": (100, _K, _10K, _100K)},
         {"W1": (100, _K), "W3": (100, _K)}),
    Tool(ASYNC_LIMIT, "bare asyncio running W2's jobs with planctl's polling (the same "
         "grid, status function and interval), no state: the floor without durability",
         {"W2": (100, _K, _10K)}, {"W2": (10, 100)}),
    Tool(DURABLE_LIMIT, "the same bare asyncio run, with planctl's transactions of the same "
         "run replayed by bare sqlite3 where planctl makes them (intents before the starts, "
         "handles before the polls, outcomes at the end): the floor with durability",
         {"W2": (100, _K, _10K)}, {"W2": (10, 100)}),
    Tool("taskflow-serial-memory", _TASKFLOW_WHAT.format(engine="serial", store="memory"),
         {"W1": (100, _K, _10K), "W3": (100, _K), "L": (100, _K, _10K)},
         {"W1": (100,), "W3": (100,), "L": (100,)}, peer=True),
    Tool("taskflow-parallel-memory", _TASKFLOW_WHAT.format(engine="parallel", store="memory"),
         {"W1": (100, _K), "W2": (100, _K), "W3": (100, _K)},
         {"W1": (100,), "W2": (10, 100), "W3": (100,)}, peer=True),
    Tool("taskflow-serial-sqlite", _TASKFLOW_WHAT.format(engine="serial", store="SQLite"),
         {"W1": (100, _K), "W3": (100, _K)}, {"W1": (100,), "W3": (100,)}, peer=True),
    Tool("taskflow-parallel-sqlite", _TASKFLOW_WHAT.format(engine="parallel", store="SQLite"),
         {"W1": (100, _K), "W2": (100, _K), "W3": (100, _K)},
         {"W1": (100,), "W2": (10,), "W3": (100,)}, peer=True),
    Tool("ansible", "ansible-playbook -c local on localhost: debug tasks (W1), async + "
         "async_status (W2), block/rescue (W3), --syntax-check (L)",
         {"W1": (100, _K), "W2": (100,), "W3": (100, _K), "L": (100, _K, _10K)},
         {"W1": (100,), "W2": (10,), "W3": (100,), "L": (100,)}, peer=True),
)
TOOL_NAMES = tuple(t.name for t in TOOLS)


class Stop(Exception):
    """A case that cannot run, or a run that failed or went over budget."""


# -- cases: one tool on one workload and N, ready to run any number of times -----------

Figures = dict[str, float]


def _no_figures(case: Case) -> Figures:
    return {}


@dataclass
class Case:
    tool: str
    workload: str
    n: int
    work: Path
    argv: list[str]
    env: dict[str, str]
    expect: int = 0
    state: Path | None = None  # an SQLite file made fresh before each run
    check: str | None = None  # text the run's output must contain
    figures: Callable[[Case], Figures] = _no_figures

    @property
    def log(self) -> Path:
        return self.work / "run.log"


def _planctl_figures(case: Case) -> Figures:
    """The run as planctl recorded it: first to last write; W3 split at ROLLING_BACK."""
    assert case.state is not None
    db = sqlite3.connect(f"file:{case.state}?mode=ro", uri=True)
    try:
        started, ended = db.execute("SELECT started_at, ended_at FROM runs").fetchone()
        out = {"engine": ended - started}
        turn = db.execute("SELECT ts FROM events WHERE kind = 'run' AND data LIKE"
                          " '%\"ROLLING_BACK\"%' ORDER BY seq LIMIT 1").fetchone()
        if turn:
            out["forward_per_command"] = (turn[0] - started) / case.n
            out["rollback_per_inverse"] = (ended - turn[0]) / max(case.n - 1, 1)
        return out
    finally:
        db.close()


def _json_figures(case: Case) -> Figures:
    """The last line of the run's output, JSON; its ``inner`` is the engine time."""
    lines = case.log.read_text().strip().splitlines()
    try:
        data = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        raise Stop(f"no figures in the output: {lines[-1:]}") from None
    out = {k: float(v) for k, v in data.items() if isinstance(v, (int, float))}
    out["engine"] = out.pop("inner")
    return out


@dataclass
class Context:
    peers_python: Path | None = None
    peers_error: str = ""


def make_case(tool: str, workload: str, n: int, work: Path, ctx: Context) -> Case:
    """Write what ``tool`` needs to run ``workload`` at size ``n`` into ``work``."""
    work.mkdir(parents=True)
    if tool.startswith("planctl"):
        return _planctl_case(tool, workload, n, work)
    if tool == LIMIT:
        return _limit_case(workload, n, work)
    if tool == ASYNC_LIMIT:
        return Case(tool, workload, n, work,
                    [sys.executable, str(HERE / "asyncio_limit.py"), str(n), str(SECONDS)],
                    harness.env(), figures=_json_figures)
    if tool == DURABLE_LIMIT:
        trace, state = _record(workload, n, work)
        return Case(tool, workload, n, work,
                    [sys.executable, str(HERE / "asyncio_limit.py"), str(n), str(SECONDS),
                     "--trace", str(trace), "--db", str(state)],
                    harness.env(), state=state, figures=_json_figures)
    if ctx.peers_python is None:
        raise Stop(f"peers unavailable: {ctx.peers_error}")
    if tool.startswith("taskflow-"):
        return _taskflow_case(tool, workload, n, work, ctx.peers_python)
    if tool == "ansible":
        return _ansible_case(workload, n, work, ctx.peers_python)
    raise ValueError(f"unknown tool {tool!r}")


def _planctl_case(tool: str, workload: str, n: int, work: Path) -> Case:
    env = harness.env()
    env.pop("PLANCTL_SYNC", None)
    if tool == "planctl-fsync":
        env["PLANCTL_SYNC"] = "FULL"
    planner = [sys.executable, "-m", "planner"]
    if workload == "L":
        plan = work / "plan.yaml"
        plan.write_text(big_plan(n))
        return Case(tool, workload, n, work, [*planner, "validate", str(plan)], env)
    text = fanout(n, SECONDS) if workload == "W2" else chain(n, fail_last=workload == "W3")
    plan = harness.write_plan(work, text)
    state = work / "state.db"
    return Case(tool, workload, n, work, [*planner, "apply", str(plan), "--state", str(state)],
                env, expect=2 if workload == "W3" else 0, state=state,
                figures=_planctl_figures)


def _record(workload: str, n: int, work: Path) -> tuple[Path, Path]:
    """Records planctl's transactions of this run (untimed), to be replayed by each run;
    returns the trace and the file to replay it into."""
    script, trace = HERE / "sqlite_limit.py", work / "trace.pickle"
    done = subprocess.run([sys.executable, str(script), "record", workload, str(n), str(trace)],
                          env=harness.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=False)
    if done.returncode != 0:
        raise Stop(f"recording planctl's transactions failed: {done.stdout[-500:]}")
    return trace, work / "limit.db"


def _limit_case(workload: str, n: int, work: Path) -> Case:
    trace, state = _record(workload, n, work)
    return Case(LIMIT, workload, n, work,
                [sys.executable, str(HERE / "sqlite_limit.py"), "replay", str(trace),
                 str(state)], harness.env(), state=state, figures=_json_figures)


def _taskflow_case(tool: str, workload: str, n: int, work: Path, python: Path) -> Case:
    _, engine, store = tool.split("-")
    argv = [str(python), str(HERE / "peer_taskflow.py"), workload, str(n),
            "--engine", engine, "--store", store, "--seconds", str(SECONDS)]
    state = None
    if store == "sqlite":
        state = work / "taskflow.db"
        argv += ["--db", str(state)]
    return Case(tool, workload, n, work, argv, peers.clean_env(), state=state,
                figures=_json_figures)


def _ansible_case(workload: str, n: int, work: Path, python: Path) -> Case:
    book = work / "playbook.yml"
    book.write_text(peers.playbook(workload, n, SECONDS))
    argv = [str(python.parent / "ansible-playbook"), "-i", "localhost,", "-c", "local",
            "-e", f"ansible_python_interpreter={python}", str(book)]
    if workload == "L":
        argv.insert(-1, "--syntax-check")
    check = {"W1": f"ok={n} ", "W2": "failed=0", "W3": "rescued=1"}.get(workload)
    return Case("ansible", workload, n, work, argv, peers.ansible_env(work), check=check)


# -- runs and series -------------------------------------------------------------------

@dataclass
class Sample:
    wall: float
    cpu: float
    rss: float  # MiB
    threads: int
    figures: Figures


@dataclass
class Series:
    tool: str
    workload: str
    n: int
    samples: list[Sample] = field(default_factory=list)
    stopped: str | None = None  # why it was skipped, or why a run failed
    failed: bool = False  # a run failed or went over budget (else: skipped before running)

    def median(self, key: str) -> float | None:
        if key in ("wall", "cpu", "rss", "threads"):
            values = [float(getattr(s, key)) for s in self.samples]
        else:
            values = [s.figures[key] for s in self.samples if key in s.figures]
        return statistics.median(values) if values else None


def run_once(case: Case, budget: float) -> Sample:
    if case.state is not None:
        harness.fresh_state(case.state)
    done = harness.measure(case.argv, case.work, case.env, case.log, timeout=budget)
    if done.timed_out:
        raise Stop(f"killed after {budget:g} s (--budget)")
    if done.code != case.expect or (case.check and case.check not in case.log.read_text()):
        tail = case.log.read_text().strip().splitlines()[-3:]
        raise Stop(f"exit {done.code} (expected {case.expect}"
                   + (f", output with {case.check!r}" if case.check else "")
                   + f"): {' | '.join(tail)[-400:]}")
    return Sample(done.wall, done.cpu, done.max_rss_mb, done.threads, case.figures(case))


def estimate(done: Sequence[Series], n: int) -> tuple[float, int] | None:
    """Seconds of one run at ``n``, from the same tool's medians at smaller N.

    Grows like the last two points did (at least linearly, at most quadratically).
    """
    points = sorted((s.n, t) for s in done if s.n < n and (t := s.median("wall")))
    if not points:
        return None
    n1, t1 = points[-1]
    power = 1.0
    if len(points) > 1:
        n0, t0 = points[-2]
        if t1 > t0 > 0:
            power = min(2.0, max(1.0, math.log(t1 / t0) / math.log(n1 / n0)))
    return t1 * (n / n1) ** power, n1


def why_skip(before: Sequence[Series], n: int, budget: float) -> str | None:
    """Why a tool should not run a workload at ``n``, given its series at smaller N."""
    for s in before:
        if s.n < n and s.stopped:
            return f"N={s.n:,} stopped ({s.stopped})"
    guess = estimate(before, n)
    if guess and guess[0] > budget:
        return (f"estimated {guess[0]:.0f} s a run from N={guess[1]:,}, over the budget "
                f"of {budget:g} s")
    return None


def _progress(series: Series, run: int, runs: int) -> str:
    s = series.samples[-1]
    engine = f", engine {s.figures['engine']:.3f}s" if "engine" in s.figures else ""
    return (f"  {series.workload} N={series.n:,} run {run}/{runs} {series.tool}: "
            f"{s.wall:.3f}s wall, {s.cpu:.3f}s CPU{engine}, {s.rss:.0f} MiB, "
            f"{s.threads} threads")


def compare(tools: Sequence[Tool], workloads: Sequence[str], quick: bool, runs: int,
            budget: float, warmup: bool, ctx: Context, scratch: Path) -> list[Series]:
    """Every tool on every workload and N, the tools taking turns in each round."""
    out: list[Series] = []
    for workload in workloads:
        sizes = {t.name: (t.quick if quick else t.sizes).get(workload, ()) for t in tools}
        chosen = [t.name for t in tools if sizes[t.name]]
        if not chosen:
            continue
        broken: dict[str, str] = {}
        if warmup:
            print(f"{workload}: warm-up, one untimed run of each tool at N={WARMUP_N}",
                  flush=True)
            for tool in chosen:
                try:
                    run_once(make_case(tool, workload, WARMUP_N,
                                       scratch / f"warmup-{workload}-{tool}", ctx), budget)
                except Stop as exc:
                    broken[tool] = f"warm-up failed: {exc}"
                    print(f"  {tool}: {broken[tool]}", flush=True)
        for n in sorted({n for tool in chosen for n in sizes[tool]}):
            cases: list[tuple[Case, Series]] = []
            for tool in chosen:
                if n not in sizes[tool]:
                    continue
                series = Series(tool, workload, n)
                before = [s for s in out if s.tool == tool and s.workload == workload]
                out.append(series)
                series.stopped = broken.get(tool) or why_skip(before, n, budget)
                if series.stopped is None:
                    try:
                        cases.append((make_case(tool, workload, n,
                                                scratch / f"{workload}-{n}-{tool}", ctx),
                                      series))
                    except Stop as exc:
                        series.stopped = str(exc)
                if series.stopped:
                    print(f"  {workload} N={n:,} {tool}: skipped: {series.stopped}", flush=True)
            for run in range(runs):
                turn = cases[run % len(cases):] + cases[:run % len(cases)] if cases else []
                for case, series in turn:
                    if series.stopped:
                        continue
                    try:
                        series.samples.append(run_once(case, budget))
                    except Stop as exc:
                        series.stopped, series.failed = f"run {run + 1}: {exc}", True
                        print(f"  {workload} N={n:,} {case.tool}: stopped: {series.stopped}",
                              flush=True)
                        continue
                    print(_progress(series, run + 1, runs), flush=True)
            for case, _ in cases:
                shutil.rmtree(case.work, ignore_errors=True)
    return out


# -- the table -------------------------------------------------------------------------

def duration(seconds: float | None) -> str:
    """A short duration with a unit that fits: µs, ms or s."""
    if seconds is None:
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def ratio(mine: float | None, theirs: float | None) -> str:
    """``mine / theirs``, and as 1/x when it is below one."""
    if mine is None or not theirs:
        return "—"
    r = mine / theirs
    return f"{r:.3g}" if r >= 0.5 else f"{r:.3g} (1/{1 / r:,.0f})"


def _per(workload: str, n: int, seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if workload == "W2":
        return f"×{seconds / SECONDS:.2f}"
    return duration(seconds / n)


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


HEADER = ("workload", "N", "tool", "runs", "wall s", "CPU s", "engine s",
          "per command: wall / engine", "peak RSS MiB", "planctl/tool: wall",
          "planctl/tool: engine", "note")


def table_rows(series: Sequence[Series]) -> list[tuple[str, ...]]:
    """One row per series; ratios against planctl's series of the same workload and N."""
    base = {(s.workload, s.n): s for s in series if s.tool == BASELINE}
    rows: list[tuple[str, ...]] = []
    for s in series:
        wall, engine = s.median("wall"), s.median("engine")
        b = base.get((s.workload, s.n))
        notes = []
        if s.workload == "W3" and s.median("rollback_per_inverse") is not None:
            notes.append(f"rollback {duration(s.median('rollback_per_inverse'))}/inverse, "
                         f"forward {duration(s.median('forward_per_command'))}/command")
        if s.tool == LIMIT and s.samples:
            notes.append(f"{s.median('transactions'):,.0f} transactions replayed")
        if s.tool in (ASYNC_LIMIT, DURABLE_LIMIT) and s.samples:
            notes.append(f"{s.median('polls'):,.0f} polls")
        if s.median("threads") and (s.median("threads") or 0) > 1:
            notes.append(f"{s.median('threads'):,.0f} threads")
        if s.stopped:
            notes.append(("failed: " if s.failed else "skipped: ") + s.stopped)
        rows.append((
            s.workload, f"{s.n:,}", s.tool, str(len(s.samples)),
            _seconds(wall), _seconds(s.median("cpu")), _seconds(engine),
            f"{_per(s.workload, s.n, wall)} / {_per(s.workload, s.n, engine)}"
            if s.samples else "—",
            "—" if s.median("rss") is None else f"{s.median('rss'):.0f}",
            "—" if s.tool in LIMITS or b is None else ratio(b.median("wall"), wall),
            "—" if b is None else ratio(b.median("engine"), engine),
            "; ".join(notes).replace("|", "/"),
        ))
    return rows


def markdown(rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _find(series: Sequence[Series], tool: str, workload: str, n: int | None = None
          ) -> list[Series]:
    return sorted((s for s in series if s.tool == tool and s.workload == workload
                   and s.samples and (n is None or s.n == n)), key=lambda s: s.n)


def _slope(series: Sequence[Series], tool: str, workload: str, ns: Sequence[int]
           ) -> float | None:
    """Seconds per command added between the two largest ``ns`` (start-up cancels out)."""
    found = {s.n: s.median("wall") for s in _find(series, tool, workload) if s.n in ns}
    pair = sorted(found)[-2:]
    if len(pair) < 2:
        return None
    (n0, n1) = pair
    t0, t1 = found[n0], found[n1]
    return None if t0 is None or t1 is None else (t1 - t0) / (n1 - n0)


def targets(series: Sequence[Series]) -> list[str]:
    """Issue 6's targets for planctl, each with the measured figure and met / not met."""
    out: list[str] = []

    def say(what: str, value: str, ok: bool | None, target: str) -> None:
        if ok is None:
            out.append(f"- {what}: {value} (for information)")
        else:
            out.append(f"- {what}: {value}; target {target}: {'met' if ok else 'NOT met'}")

    w1 = _find(series, BASELINE, "W1")
    # From N = 1,000 where measured: below it, the run's fixed costs weigh on each command.
    large = [s for s in w1 if s.n >= 1000] or w1[-1:]
    for s in large:
        per = (s.median("engine") or 0) / s.n
        say(f"W1 engine per command, N={s.n:,}", duration(per), per <= 100e-6, "≤ 100 µs")
    if len(large) > 1:
        first, last = large[0], large[-1]
        grow = ((last.median("engine") or 0) / last.n) / ((first.median("engine") or 1) / first.n)
        say(f"W1 linear in N: per command at N={last.n:,} over N={first.n:,}", f"{grow:.2f}×",
            grow <= 1.5, "≤ 1.5×")
    for peer, factor in (("taskflow-serial-sqlite", 500), ("taskflow-serial-memory", 0),
                         ("ansible", 200)):
        common = sorted({s.n for s in _find(series, peer, "W1")} & {s.n for s in w1})
        if not common:
            continue
        n = common[-1]
        theirs_s, mine_s = _find(series, peer, "W1", n)[0], _find(series, BASELINE, "W1", n)[0]
        # The peer's cost per command as its own clock has it where it has one, else its
        # whole process (Ansible); planctl's engine time per command.
        theirs = (theirs_s.median("engine") or theirs_s.median("wall") or 0) / n
        mine = (mine_s.median("engine") or 0) / n
        if not mine:
            continue
        ns = common[-2:]
        slopes = (_slope(series, peer, "W1", ns), _slope(series, BASELINE, "W1", ns))
        aside = (f"; whole process, per command added from N={ns[0]:,} to N={ns[1]:,}: "
                 f"{slopes[0] / slopes[1]:,.0f}×" if len(ns) == 2 and slopes[0] and slopes[1]
                 else "")
        say(f"W1 per command at N={n:,}, {peer} over planctl",
            f"{theirs / mine:,.0f}× ({duration(theirs)} vs {duration(mine)}{aside})",
            theirs / mine >= factor if factor else None, f"≥ {factor}×")
    for s in w1:
        limit = _find(series, LIMIT, "W1", s.n)
        if limit and limit[0].median("engine"):
            r = (s.median("engine") or 0) / (limit[0].median("engine") or 1)
            say(f"W1 planctl engine over bare sqlite3, N={s.n:,}", f"{r:.2f}×", r <= 3, "≤ 3×")
    for n, limit_x in W2_TARGETS.items():
        for s in _find(series, BASELINE, "W2", n):
            engine, wall = s.median("engine") or 0, s.median("wall") or 0
            say(f"W2 N={n:,} over the {SECONDS:g} s critical path",
                f"engine ×{engine / SECONDS:.2f}, whole process ×{wall / SECONDS:.2f}",
                engine / SECONDS <= limit_x, f"engine ≤ {limit_x}×")
    for s in _find(series, BASELINE, "W2"):
        for tool, what in ((ASYNC_LIMIT, "bare asyncio (no durability)"),
                           (DURABLE_LIMIT, "bare asyncio with the same SQLite writes")):
            floor = _find(series, tool, "W2", s.n)
            if floor and floor[0].median("engine"):
                mine, bare = s.median("engine") or 0, floor[0].median("engine") or 1
                say(f"W2 N={s.n:,}, planctl engine over {what}",
                    f"{mine / bare:.2f}× ({mine:.3f} s vs {bare:.3f} s: ×{bare / SECONDS:.2f} "
                    f"of the critical path)", None, "")
        floor = _find(series, DURABLE_LIMIT, "W2", s.n)
        limit_x = W2_TARGETS.get(s.n)
        if floor and limit_x and floor[0].median("engine"):
            room = (limit_x * SECONDS - (floor[0].median("engine") or 0)) / s.n
            say(f"W2 N={s.n:,}, what the target leaves for planctl's engine above the floor "
                "with durability", f"{duration(room)} per task" if room > 0
                else f"nothing (the floor is over the target by {duration(-room)} per task)",
                None, "")
    for s in _find(series, BASELINE, "W3"):
        w1n = _find(series, BASELINE, "W1", s.n)
        back = s.median("rollback_per_inverse")
        if w1n and back is not None:
            fwd = (w1n[0].median("engine") or 0) / s.n
            say(f"W3 rollback per inverse vs W1 per command, N={s.n:,}",
                f"{duration(back)} vs {duration(fwd)}", back <= fwd * 1.1,
                "no slower (10% noise allowed)")
    for s in w1:
        if s.n >= 100_000:
            rss = s.median("rss") or 0
            say(f"W1 peak RSS, N={s.n:,}", f"{rss:.0f} MiB", rss < 500, "< 500 MiB")
    return out


# -- output ----------------------------------------------------------------------------

def _series_json(s: Series) -> dict[str, Any]:
    keys = ("wall", "cpu", "rss", "threads", "engine")
    return {"tool": s.tool, "workload": s.workload, "n": s.n, "stopped": s.stopped,
            "failed": s.failed,
            "median": {k: s.median(k) for k in keys},
            "runs": [{"wall": x.wall, "cpu": x.cpu, "rss_mib": x.rss, "threads": x.threads,
                      **x.figures} for x in s.samples]}


def write_results(out: Path, stem: str, series: Sequence[Series], meta: dict[str, Any],
                  rows: Sequence[Sequence[str]], goals: Sequence[str], ctx: Context) -> None:
    out.mkdir(parents=True, exist_ok=True)
    data = {**meta, "series": [_series_json(s) for s in series]}
    (out / f"{stem}.json").write_text(json.dumps(data, indent=1) + "\n")
    legend = "\n".join(f"- `{t.name}`: {t.what}" for t in TOOLS
                       if any(s.tool == t.name for s in series))
    (out / f"{stem}.md").write_text(
        f"# planctl and its peers ({meta['date']})\n\n"
        f"`{meta['command']}` on {meta['machine']}; {meta['runs']} run(s) each, medians.\n"
        f"Peers: {', '.join(f'{k} {v}' for k, v in meta['versions'].items()) or 'none'}.\n\n"
        f"{markdown(rows)}\n\n"
        "Per command is the median divided by N (W2: as a multiple of the 0.5 s critical "
        "path). Ratios below 1 mean planctl took less time.\n\n"
        f"{legend}\n\n## Targets (issue 6)\n\n" + "\n".join(goals) + "\n")
    (out / f"{stem}.png").unlink(missing_ok=True)  # an earlier run's, not this one's
    if ctx.peers_python is None:
        print(f"no plot: {ctx.peers_error}")
        return
    plot = subprocess.run([str(ctx.peers_python), str(HERE / "compare_plot.py"),
                           str(out / f"{stem}.json"), str(out / f"{stem}.png")],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          check=False, env=peers.clean_env())
    if plot.returncode != 0:
        print(f"plot failed: {plot.stdout[-1000:]}")


def _list(text: str, known: Sequence[str], what: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in names if x not in known]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what}: {', '.join(unknown)} "
                                         f"(known: {', '.join(known)})")
    return names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="small N, one run each: a smoke test of a few minutes")
    p.add_argument("--runs", type=int, help="timed runs of each case (default 3; --quick 1)")
    p.add_argument("--workloads", type=lambda t: _list(t, WORKLOADS, "workload"),
                   default=list(WORKLOADS), help="comma-separated, of W1,W2,W3,L (default all)")
    p.add_argument("--tools", type=lambda t: _list(t, TOOL_NAMES, "tool"),
                   default=list(TOOL_NAMES), help=f"comma-separated, of {','.join(TOOL_NAMES)}")
    p.add_argument("--budget", type=float, default=120.0, metavar="SECONDS",
                   help="longest one run may take: a case estimated over it is skipped, a "
                        "run over it is killed (default 120)")
    p.add_argument("--peers-venv", type=Path, default=peers.DEFAULT_VENV, metavar="PATH",
                   help="virtualenv for the peers, made if missing (default bench/.peers-venv)")
    p.add_argument("--out", type=Path, default=HERE / "results", metavar="DIR",
                   help="where compare.json, .md and .png go (default bench/results)")
    p.add_argument("--no-warmup", action="store_true", help="no untimed first runs")
    p.add_argument("--report", type=Path, metavar="JSON",
                   help="run nothing: print and rewrite the table, targets and plot of an "
                        "earlier run's compare.json (beside it)")
    args = p.parse_args(argv)
    if args.report:
        return report_again(args.report, args.peers_venv)
    runs = args.runs or (1 if args.quick else 3)
    if runs < 1 or args.budget <= 0:
        p.error("--runs and --budget must be positive")
    tools = [t for t in TOOLS if t.name in args.tools]
    if BASELINE not in args.tools:
        print("note: planctl is not among --tools: no ratios")

    ctx = Context()
    if any(t.peer for t in tools):
        try:
            ctx.peers_python = peers.ensure_venv(args.peers_venv.resolve())
        except peers.PeersUnavailable as exc:
            ctx.peers_error = str(exc)
            print(f"peers: {exc}; their cases are skipped", flush=True)
    else:
        ctx.peers_error = "no peer among --tools"
    versions = peers.versions(ctx.peers_python) if ctx.peers_python else {}
    machine = (f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
               f"{platform.python_version()}, SQLite {sqlite3.sqlite_version}")
    print(f"compare: {machine}; load average {os.getloadavg()[0]:.2f}; {runs} run(s) each; "
          f"budget {args.budget:g} s a run; peers {versions or ctx.peers_error}", flush=True)

    start = time.time()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="planctl-compare-") as tmp:
        series = compare(tools, args.workloads, args.quick, runs, args.budget,
                         not args.no_warmup, ctx, Path(tmp))
    meta = {"command": "python bench/compare.py " + " ".join(argv or sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d %H:%M", time.localtime(start)),
            "seconds": round(time.time() - start, 1), "machine": machine,
            "load_average": [load_before, os.getloadavg()[0]], "runs": runs,
            "budget_s": args.budget, "versions": versions,
            "tools": {t.name: t.what for t in tools}}
    stem = "compare-quick" if args.quick else "compare"
    publish(args.out, stem, series, meta, ctx)
    kinds = ".json, .md" + (", .png" if (args.out / f"{stem}.png").exists() else "")
    print(f"\nwrote {args.out / stem}{kinds} in {time.time() - start:.0f} s")
    return 0


def publish(out: Path, stem: str, series: Sequence[Series], meta: dict[str, Any],
            ctx: Context) -> None:
    """Print the table and the targets; write them, the raw figures and the plot."""
    rows = table_rows(series)
    goals = targets(series)
    print()
    print(markdown(rows))
    print()
    print("\n".join(goals))
    write_results(out, stem, series, meta, rows, goals, ctx)


def report_again(source: Path, venv: Path) -> int:
    """The table, targets and plot of an earlier run, from its JSON."""
    data = json.loads(source.read_text())
    series = []
    for item in data.pop("series"):
        samples = []
        for run in item["runs"]:
            run = dict(run)
            samples.append(Sample(run.pop("wall"), run.pop("cpu"), run.pop("rss_mib"),
                                  run.pop("threads"), run))
        series.append(Series(item["tool"], item["workload"], item["n"], samples,
                             item["stopped"], item.get("failed", bool(samples))))
    ctx = Context(peers_error="no peers venv at " + str(venv))
    if (venv / "bin" / "python").exists():
        ctx.peers_python = venv / "bin" / "python"
    publish(source.parent, source.stem, series, data, ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
