"""What the W1/W2/W3 benchmarks share: a plan in a temporary directory, timed two ways.

*Whole process*: ``python -m planner apply PLAN --state DIR/state.db`` as a subprocess,
from a working directory that is not the plan's (so the plan's own directory must reach
``sys.path`` through the Runner, as for any user). Wall time, CPU time and peak RSS come
from ``os.wait4``; the child's threads are sampled from ``/proc``.

*In process*: ``planner.load_plan`` once (not timed), then per run a fresh
``SQLiteStore`` and ``planner.apply_plan``; only ``apply_plan`` is timed. The store counts
its commits, and a listener notes the peak of ``threading.active_count()``.

Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))  # time this checkout's planner, whatever is installed

import planner  # noqa: E402
from planner.sqlite_store import SQLiteStore  # noqa: E402
from planner.store import Batch, EventRecord  # noqa: E402


def parser(doc: str, n: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--n", type=int, default=n, help=f"size of the workload (default {n})")
    p.add_argument("--runs", type=int, default=5, help="timed runs of each kind (default 5)")
    p.add_argument("--no-process", action="store_true",
                   help="skip the whole-process runs (in-process figures only)")
    return p


def env() -> dict[str, str]:
    """The timed child's environment: this checkout's planner first on sys.path."""
    out = dict(os.environ)
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), out.get("PYTHONPATH")]))
    out["NO_COLOR"] = "1"
    out.pop("PLANCTL_CRASH_AT", None)
    return out


@contextmanager
def plan_dir(text: str) -> Iterator[Path]:
    """A temporary directory holding ``plan/plan.yaml`` and ``plan/noop.py``.

    On the way out the process forgets that ``noop``: Python keeps one module per name,
    and planctl refuses to call the next directory's ``noop`` while another one is
    imported (see docs/embedding.md), so a script timing several sizes in one process
    would fail from the second."""
    with tempfile.TemporaryDirectory(prefix="planctl-bench-") as tmp:
        root = Path(tmp)
        write_plan(root, text)
        try:
            yield root
        finally:
            sys.modules.pop("noop", None)


def write_plan(root: Path, text: str) -> Path:
    """``root/plan/plan.yaml`` holding ``text``, with ``noop.py`` beside it; returns it."""
    (root / "plan").mkdir(parents=True, exist_ok=True)
    (root / "plan" / "plan.yaml").write_text(text)
    shutil.copy(HERE / "plan_code" / "noop.py", root / "plan" / "noop.py")
    return root / "plan" / "plan.yaml"


def fresh_state(path: Path) -> None:
    """Remove an SQLite file and its companions (WAL, shared memory, rollback journal)."""
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


@dataclass
class Process:
    wall: float
    cpu: float
    max_rss_mb: float
    threads: int  # peak sampled from /proc/PID/status (0 if unavailable)
    code: int
    timed_out: bool = False


def _sample_threads(pid: int, peak: list[int], stop: threading.Event) -> None:
    path = f"/proc/{pid}/status"
    while not stop.is_set():
        try:
            with open(path) as handle:
                for line in handle:
                    if line.startswith("Threads:"):
                        peak[0] = max(peak[0], int(line.split()[1]))
                        break
        except OSError:
            return
        stop.wait(0.005)


def measure(argv: list[str], cwd: Path, env: dict[str, str], log: Path,
            timeout: float | None = None) -> Process:
    """One process, its output to ``log``: wall, CPU and peak RSS from ``os.wait4``.

    Peak RSS is the largest of the process and the descendants it waited for (one
    process's, not their sum). After ``timeout`` seconds its process group is killed and
    ``timed_out`` is set.
    """
    with open(log, "w") as out:
        start = time.perf_counter()
        child = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
        peak, stop = [0], threading.Event()
        sampler = threading.Thread(target=_sample_threads, args=(child.pid, peak, stop))
        sampler.start()
        killed = threading.Event()
        killer = threading.Timer(timeout or 0.0, _kill_group, (child.pid, killed))
        if timeout is not None:
            killer.start()
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        killer.cancel()
        stop.set()
        sampler.join()
    child.returncode = code = os.waitstatus_to_exitcode(status)
    return Process(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, peak[0],
                   code, killed.is_set())


def _kill_group(pid: int, killed: threading.Event) -> None:
    killed.set()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def run_process(root: Path, expect: int) -> Process:
    """One ``planctl apply`` as a subprocess, with a fresh state store."""
    state = root / "state.db"
    fresh_state(state)
    argv = [sys.executable, "-m", "planner", "apply", str(root / "plan" / "plan.yaml"),
            "--state", str(state)]
    done = measure(argv, root, env(), root / "apply.log")
    if done.code != expect:
        sys.exit(f"{' '.join(argv)} exited {done.code}, expected {expect}:\n"
                 + (root / "apply.log").read_text()[-3000:])
    return done


class CountingStore(SQLiteStore):
    """The real store, counting its commits."""

    commits = 0

    def commit(self, run_id: str, batch: Batch) -> None:
        self.commits += 1
        super().commit(run_id, batch)


def _run_queue_wait() -> float:
    """Seconds this process spent runnable but waiting for a CPU (Linux), else 0."""
    try:
        with open("/proc/self/schedstat") as handle:
            return int(handle.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


@dataclass
class InProcess:
    apply: float  # seconds in apply_plan
    cpu: float  # CPU seconds of this process during apply_plan
    waited: float  # seconds runnable but without a CPU (other processes' load)
    commits: int
    threads: int  # peak threading.active_count() seen by the listener
    status: str
    events: list[EventRecord] = field(default_factory=list)


def run_in_process(root: Path, loaded: Any, expect: str, keep_events: bool = False
                   ) -> InProcess:
    """One ``apply_plan`` on an already loaded plan, with a fresh state store."""
    state = root / "state-inproc.db"
    fresh_state(state)
    store = CountingStore(state)
    peak = [threading.active_count()]

    def listener(event: EventRecord) -> None:
        count = threading.active_count()
        if count > peak[0]:
            peak[0] = count

    try:
        waited = _run_queue_wait()
        cpu = time.process_time()
        start = time.perf_counter()
        outcome = planner.apply_plan(loaded, store, listener=listener, handle_signals=False)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu
        waited = _run_queue_wait() - waited
        if outcome.status != expect:
            errors = "; ".join(f"{k}: {v}" for k, v in list(outcome.errors.items())[:3])
            sys.exit(f"in-process apply ended {outcome.status}, expected {expect}: {errors}")
        events = store.get_events(outcome.run_id) if keep_events else []
        return InProcess(elapsed, cpu, waited, store.commits, peak[0], outcome.status, events)
    finally:
        store.close()


def load(root: Path) -> Any:
    return planner.load_plan(root / "plan" / "plan.yaml")


def median(values: list[float]) -> float:
    return statistics.median(values)


def spread(values: list[float], scale: float = 1.0, unit: str = "s", digits: int = 3) -> str:
    """``median (min–max)`` of ``values`` times ``scale``."""
    m, lo, hi = (f"{v * scale:.{digits}f}" for v in (median(values), min(values), max(values)))
    return f"{m}{unit} (min {lo}, max {hi})"


def series(label: str, runs: int, one: Callable[[int], str]) -> None:
    """Run ``one(i)`` ``runs`` times, printing the line each returns."""
    for i in range(runs):
        print(f"  {label} run {i + 1}: {one(i)}", flush=True)


def header(what: str, n: int, root: Path) -> None:
    text = (root / "plan" / "plan.yaml").read_text()
    print(f"{what}: n={n}, plan {text.count(chr(10))} lines ({root / 'plan'})")
    print(f"python {sys.version.split()[0]}; planner from {REPO}; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")


def self_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_series(root: Path, runs: int, expect: int) -> list[Process]:
    """``planctl apply`` as a whole process: one untimed warm-up run, then ``runs`` timed."""
    print(f"whole process: planctl apply, exit {expect} ({runs} runs after one warm-up run)")
    run_process(root, expect=expect)
    procs: list[Process] = []

    def one(_: int) -> str:
        p = run_process(root, expect=expect)
        procs.append(p)
        return (f"{p.wall:.3f}s wall, {p.cpu:.3f}s CPU, peak RSS {p.max_rss_mb:.0f} MB, "
                f"peak {p.threads} threads")

    series("process", runs, one)
    return procs
