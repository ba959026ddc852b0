"""`planctl prune`: which recorded runs it forgets, on a real SQLite store of real runs."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from planner.errors import LockedError
from planner.executor import Runner, execute
from planner.prune import ENDED_CLEAN
from planner.sqlite_store import SQLiteStore

ROOT = Path(__file__).resolve().parent.parent

# One file made (and removed by its inverse); `fail` makes the run fail after it.
TOUCH = """\
name: touch
vars: {file: a.txt, fail: false}
commands:
  - id: make
    run: {command: [touch, "{{ file }}"]}
    inverse: {command: [rm, -f, "{{ file }}"]}
  - id: check
    needs: make
    run: {shell: "exit {{ 1 if fail else 0 }}"}
    changes: false
"""
READ_ONLY = """\
name: read-only
commands:
  - {id: look, run: {command: ["true"]}, changes: false}
"""


def planctl(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "planner", *args, "-s", "state.db"], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=60, check=False)


def last_run(cwd: Path) -> str:
    with closing(SQLiteStore(cwd / "state.db")) as store:
        run_id = store.last_run_id()
    assert run_id is not None
    return run_id


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, str]:
    """Five runs, oldest first: rolled back, stopped with a leftover, succeeded with a
    change (b.txt), succeeded read-only, and a newest read-only one."""
    (tmp_path / "touch.yaml").write_text(TOUCH, encoding="utf-8")
    (tmp_path / "ro.yaml").write_text(READ_ONLY, encoding="utf-8")
    ids = {}
    for name, args, code in (
            ("rolled_back", ["touch.yaml", "--var", "fail=true"], 1),
            ("stopped", ["touch.yaml", "--var", "fail=true", "--var", "file=s.txt",
                         "--no-rollback"], 2),
            ("changed", ["touch.yaml", "--var", "file=b.txt"], 0),
            ("read_only", ["ro.yaml"], 0),
            ("newest", ["ro.yaml"], 0)):
        done = planctl(tmp_path, "apply", *args)
        assert done.returncode == code, done.stdout + done.stderr
        ids[name] = last_run(tmp_path)
    return ids


def listed(cwd: Path) -> list[str]:
    done = planctl(cwd, "runs", "-n", "100")
    assert done.returncode == 0, done.stderr
    return [line.split()[0] for line in done.stdout.splitlines()[1:]]


def test_prune_forgets_only_runs_with_nothing_left_to_do(tmp_path: Path,
                                                         runs: dict[str, str]) -> None:
    """--keep 1 leaves the newest run alone and, of the others, forgets the rolled-back and
    the read-only ones; it keeps the stopped one (leftovers) and the one whose change can
    still be rolled back. --dry-run says the same and removes nothing. What is kept still
    works: the stopped run's events are there and its rollback undoes its leftover."""
    everything = listed(tmp_path)
    dry = planctl(tmp_path, "prune", "--keep", "1", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert listed(tmp_path) == everything
    lines = dry.stdout.splitlines()
    assert [line.split()[:3] for line in lines[:-1]] == [
        ["would", "remove", runs["read_only"]],
        ["kept", runs["changed"], "SUCCEEDED"],
        ["kept", runs["stopped"], "STOPPED"],
        ["would", "remove", runs["rolled_back"]],
    ]
    assert lines[1].endswith("touch: its changes can still be rolled back "
                             "(--include-succeeded forgets it)")
    assert lines[2].endswith(f"leftovers to undo (planctl rollback {runs['stopped']})")
    assert lines[-1] == "would remove 2 runs of 4 looked at; the newest run was not looked at"

    done = planctl(tmp_path, "prune", "--keep", "1")
    assert done.returncode == 0, done.stderr
    assert [line.split()[1] for line in done.stdout.splitlines()[:-1]
            if line.startswith("removed ")] == [runs["read_only"], runs["rolled_back"]]
    assert done.stdout.endswith("removed 2 runs of 4 looked at; the newest run was not "
                                "looked at\n")
    assert listed(tmp_path) == [runs["newest"], runs["changed"], runs["stopped"]]
    assert planctl(tmp_path, "events", runs["stopped"]).stdout.count("\n") > 3
    assert planctl(tmp_path, "show", runs["rolled_back"]).returncode == 3
    assert (tmp_path / "s.txt").exists()
    assert planctl(tmp_path, "rollback", runs["stopped"]).returncode == 0
    assert not (tmp_path / "s.txt").exists()


def test_include_succeeded_forgets_runs_whose_changes_stay(tmp_path: Path,
                                                           runs: dict[str, str]) -> None:
    """--older-than looks only at runs older than it (none here); --keep 0
    --include-succeeded forgets every run with nothing to undo or whose changes stay, and
    keeps the stopped one. The change stays in place, and planctl no longer knows it."""
    done = planctl(tmp_path, "prune", "--older-than", "1h", "--include-succeeded")
    assert (done.returncode, done.stdout) == (0, "removed 0 runs of 0 looked at\n")
    done = planctl(tmp_path, "prune", "--keep", "0", "--older-than", "0",
                   "--include-succeeded")
    assert done.returncode == 0, done.stderr
    assert f"removed  {runs['changed']}  SUCCEEDED       touch: its changes stay, and " \
           "planctl can no longer undo them" in done.stdout
    assert done.stdout.endswith("removed 4 runs of 5 looked at\n")
    assert listed(tmp_path) == [runs["stopped"]]
    assert (tmp_path / "b.txt").exists()
    gone = planctl(tmp_path, "rollback", runs["changed"])
    assert gone.returncode == 3 and "unknown run" in gone.stderr
    again = planctl(tmp_path, "apply", "ro.yaml")  # new runs are recorded as before
    assert again.returncode == 0, again.stderr
    assert len(listed(tmp_path)) == 2


def test_prune_without_a_valid_selection_is_a_usage_error_and_removes_nothing(
        tmp_path: Path, runs: dict[str, str]) -> None:
    everything = listed(tmp_path)
    for args, message in [
            ((), "say which runs to look at: --keep N (all but the newest N), --older-than "
                 "AGE, or both"),
            (("--older-than", "5 parsecs"), "--older-than '5 parsecs': not a duration (30d, "
                                            "12h, 90m, 1h30m, or seconds)"),
            (("--older-than", ""), "--older-than '': not a duration"),
            (("--keep", "-1"), "--keep: -1 is not in the range x>=0")]:
        done = planctl(tmp_path, "prune", *args)
        assert done.returncode == 3 and done.stdout == "", args
        assert message in done.stderr
    assert listed(tmp_path) == everything


def test_a_rollback_that_read_a_run_before_it_was_pruned_writes_nothing(
        tmp_path: Path, runs: dict[str, str]) -> None:
    """A rollback that loaded a run, which prune then deletes, stops when it takes the
    run's locks (the run changed since it read it) and records nothing: the run stays
    gone, its change in place."""
    with closing(SQLiteStore(tmp_path / "state.db")) as store:
        runner = Runner.from_store(store, runs["changed"], secrets={})
        assert store.delete_run(runs["changed"], ENDED_CLEAN)
        with pytest.raises(LockedError, match="changed since this planctl read it"):
            execute(runner, runner.rollback, handle_signals=False)
        assert store.get_run(runs["changed"]) is None and store.list_locks() == []
    assert (tmp_path / "b.txt").exists()
