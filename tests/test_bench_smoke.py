"""The benchmark scripts run, at tiny sizes, and their runs end as they should.

Figures are for people and are never asserted here; what is asserted is that each script
exits 0 and prints its RESULT lines, so that a change to planctl that breaks a benchmark
(w2_fanout.py once failed from its second size, with nothing in CI to notice) fails here
instead of on the day someone wants figures. compare.py runs without the peers: they are
installed from PyPI into a virtualenv of their own, which CI does not need.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"

pytestmark = pytest.mark.skipif(not BENCH.is_dir(), reason="bench/ is not beside the tests")


def _bench(tmp: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLANCTL_")}
    done = subprocess.run([sys.executable, *args], cwd=tmp, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr
    return done.stdout


def _results(out: str) -> list[dict[str, str]]:
    return [dict(re.findall(r"(\w+)=(\S+)", line)) for line in out.splitlines()
            if line.startswith("RESULT ")]


@pytest.mark.parametrize(("script", "args", "workload", "sizes"), [
    ("w1_chain.py", ["--n", "30", "--runs", "1"], "W1", ["30"]),
    # Two sizes in one process: the second plan directory has its own noop.py.
    ("w2_fanout.py", ["--n", "20", "--runs", "1", "--info-n", "40", "--info-runs", "1"],
     "W2", ["20", "40"]),
    ("w3_revert.py", ["--n", "30", "--runs", "1"], "W3", ["30"]),
])
def test_engine_benchmarks_run_and_report(tmp_path: Path, script: str, args: list[str],
                                          workload: str, sizes: list[str]) -> None:
    results = _results(_bench(tmp_path, str(BENCH / script), *args))
    assert [r.get("n") for r in results if r.get("workload") == workload] == sizes, results
    for result in results:
        assert float(result["process_median_s"]) > 0


def test_load_benchmark_runs_and_reports(tmp_path: Path) -> None:
    out = _bench(tmp_path, str(BENCH / "load_plan.py"), "--commands", "50", "--runs", "1")
    assert _results(out), out


def test_reads_benchmark_times_every_command_on_a_store_it_builds(tmp_path: Path) -> None:
    out = _bench(tmp_path, str(BENCH / "reads.py"), "--n", "60", "--w3", "20",
                 "--fanout", "20", "--killed", "300", "--small", "3", "--runs", "1")
    cases = {r.get("case") for r in _results(out)}
    assert {"runs", "show_w1", "show_w1_command", "events_w1", "events_w1_command", "locks",
            "dry_run_w3", "resume_ended", "rollback_killed", "resume_killed",
            "rollback_done"} <= cases, out


def test_compare_without_peers_runs_every_workload_and_its_limits(tmp_path: Path) -> None:
    tools = "planctl,sqlite-limit,asyncio-limit,asyncio-sqlite-limit"
    _bench(tmp_path, str(BENCH / "compare.py"), "--quick", "--no-warmup", "--tools", tools,
           "--out", str(tmp_path / "out"))
    report = json.loads((tmp_path / "out" / "compare-quick.json").read_text())
    series = report["series"]
    failed = [(s["workload"], s["n"], s["tool"], s["stopped"]) for s in series if s["failed"]]
    assert not failed
    ran = {(s["workload"], s["tool"]) for s in series if s["stopped"] is None}
    for workload in ("W1", "W2", "W3", "L"):
        assert (workload, "planctl") in ran, sorted(ran)
    assert ("W1", "sqlite-limit") in ran and ("W2", "asyncio-sqlite-limit") in ran, sorted(ran)
    assert (tmp_path / "out" / "compare-quick.md").read_text().count("| W1 |") >= 2


def test_crash_soak_kills_recovers_and_finds_every_invariant_kept(tmp_path: Path) -> None:
    """A few iterations of the crash soak: planctl killed at random moments and recovered;
    it exits 0 only when every iteration kept its invariants."""
    out = _bench(tmp_path, str(BENCH / "crash_soak.py"), "--iterations", "4", "--jobs", "1",
                 "--seed", "1", "--dir", str(tmp_path / "soak"))
    [result] = _results(out)
    assert (result["iterations"], result["failures"]) == ("4", "0"), out
    assert int(result["invocations"]) >= 4, out
