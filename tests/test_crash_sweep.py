"""Crash-point sweep: planctl is killed with SIGKILL at every crash point of apply and of
rollback in turn, then recovered; whatever the point, nothing is left behind, nothing is
undone twice and no async task is started twice.

A crash point is a status transition (just before it is recorded) or a commit (just after
it is durable); ``PLANCTL_CRASH_AT=N`` makes the executor kill itself at the N-th one. The
sweep raises N until a run gets through untouched, so it covers every point there is.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

SEED = Path(__file__).resolve().parent.parent / "plans" / "vm-from-template"
MAX_POINTS = 200  # a guard against a sweep that never ends


def _setup(tmp: Path) -> tuple[Path, dict[str, str]]:
    """A copy of the seed plan with quick copies and polls, and its own store and state."""
    plan_dir = tmp / "plan"
    shutil.copytree(SEED, plan_dir, ignore=shutil.ignore_patterns(".store"))
    plan = plan_dir / "plan.yaml"
    text = plan.read_text().replace("interval: 0.2s", "interval: 0.02s")
    plan.write_text(text.replace("max_interval: 1s", "max_interval: 0.05s"))
    env = {**os.environ, "STORE_DIR": str(tmp / "store"), "PLANCTL_STATE": str(tmp / "state.db")}
    env.pop("PLANCTL_CRASH_AT", None)
    return plan, env


def _planctl(args: list[str], env: dict[str, str], crash_at: int = 0) -> int:
    run_env = dict(env)
    if crash_at:
        run_env["PLANCTL_CRASH_AT"] = str(crash_at)
    done = subprocess.run([sys.executable, "-m", "planner", *args], env=run_env,
                          capture_output=True, text=True, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode


def _store(env: dict[str, str], *args: str) -> str:
    return subprocess.run([str(SEED / "store"), *args], env=env, capture_output=True,
                          text=True, check=True).stdout


def _log(env: dict[str, str]) -> Counter[str]:
    """Mutations the storage system saw, e.g. {'remove-image vm-42-disk0': 1}."""
    path = Path(env["STORE_DIR"]) / "log"
    lines = path.read_text().splitlines() if path.exists() else []
    counts: Counter[str] = Counter()
    for line in lines:
        _, verb, *args = line.split()
        if verb in ("create-vm", "remove-vm", "remove-image"):
            counts[f"{verb} {args[0]}"] += 1
        elif verb == "copy-image":
            counts[f"copy-image {args[1]}"] += 1
    return counts


def _recover(env: dict[str, str], command: str) -> None:
    """Resume (or roll back) until the run has ended; each call must end without a crash."""
    for _ in range(3):
        code = _planctl([command, "--last"], env)
        assert code != -signal.SIGKILL
        if code in (0, 1, 2):
            return
    raise AssertionError(f"planctl {command} did not finish")


def _assert_once(env: dict[str, str]) -> None:
    counts = _log(env)
    twice = {k: n for k, n in counts.items() if n > 1}
    assert not twice, f"done more than once: {twice}"


@pytest.mark.parametrize("scenario", ["failure", "success"])
def test_apply_survives_a_kill_at_every_crash_point(tmp_path: Path, scenario: str) -> None:
    """Killed anywhere in apply (and its rollback), resume ends with no leftover, no double
    inverse and no task started twice; a successful run ends with everything in place."""
    extra = ["--var", "copy_seconds=0.05"]
    if scenario == "failure":
        extra += ["--var", "fail_disks=disk1"]
    swept = 0
    for point in range(1, MAX_POINTS):
        case = tmp_path / f"p{point}"
        case.mkdir()
        plan, env = _setup(case)
        code = _planctl(["apply", str(plan), *extra], env, crash_at=point)
        if code != -signal.SIGKILL:
            assert code == (1 if scenario == "failure" else 0)
            break
        swept += 1
        _recover(env, "resume")
        _assert_once(env)
        listing = _store(env, "list")
        if scenario == "failure":
            assert listing == "", f"leftovers after a kill at point {point}: {listing}"
        else:
            assert listing.split("\n")[-2] == "vm vm-42", listing
            assert listing.count("image ") == 3, listing
            assert _planctl(["rollback", "--last"], env) == 0
            assert _store(env, "list") == ""
            _assert_once(env)
    assert swept >= 10, "the sweep should have found crash points to kill at"


def test_rollback_survives_a_kill_at_every_crash_point(tmp_path: Path) -> None:
    """A stopped run's rollback killed at any point is completed by a second rollback,
    which removes each image and the VM exactly once."""
    swept = 0
    for point in range(1, MAX_POINTS):
        case = tmp_path / f"p{point}"
        case.mkdir()
        plan, env = _setup(case)
        code = _planctl(["apply", str(plan), "--no-rollback", "--var", "copy_seconds=0.05",
                         "--var", "fail_disks=disk1"], env)
        assert code == 2
        code = _planctl(["rollback", "--last"], env, crash_at=point)
        if code != -signal.SIGKILL:
            assert code == 0
            break
        swept += 1
        _recover(env, "rollback")
        assert _store(env, "list") == "", f"leftovers after a kill at point {point}"
        _assert_once(env)
        counts = _log(env)
        assert counts["remove-vm vm-42"] == 1
        assert counts["remove-image vm-42-disk0"] == counts["remove-image vm-42-disk2"] == 1
    assert swept >= 5


# `make` creates its file and prints its content; `exists` prints it too, so the probe can
# give `content`, but not `job`, which reads what only an async `run` would give.
PROBE_OUTPUTS_PLAN = """\
name: resume-outputs
commands:
  - id: make
    entity: file/present
    exists: {command: [cat, present]}
    run: {shell: "echo here > present; echo here"}
    inverse: {command: [rm, present]}
    outputs:
      content: "{{ result.stdout | trim }}"
      job: "{{ poll.id }}"
  - id: use
    needs: make
    changes: false
    run: {command: [echo, "{{ commands.make.outputs.content }}"]}
"""


def test_resume_keeps_the_outputs_the_probe_gives(tmp_path: Path) -> None:
    """Killed after `make` ran but before its outcome was recorded, the run resumes with
    `exists` standing in for `run`'s lost result: the output the probe can give is kept
    (and `use` reads it), the one it cannot is left out with a warning. Before, that one
    output failed `make`, and the resumed run rolled back a command that had succeeded."""
    import planner

    plan = tmp_path / "plan.yaml"
    plan.write_text(PROBE_OUTPUTS_PLAN)
    env = {**os.environ, "PLANCTL_STATE": str(tmp_path / "state.db")}
    env.pop("PLANCTL_CRASH_AT", None)
    for crash_at in range(1, 20):  # the first point after `make` created its file
        (tmp_path / "state.db").unlink(missing_ok=True)
        (tmp_path / "present").unlink(missing_ok=True)
        assert _planctl(["apply", str(plan)], env, crash_at) == -signal.SIGKILL
        if (tmp_path / "present").exists():
            break
    else:
        pytest.fail("no crash point after `make` ran")
    store = planner.SQLiteStore(tmp_path / "state.db")
    try:
        run_id = store.last_run_id()
        assert run_id is not None
        assert store.get_commands(run_id)["make"].status == "STARTING"
    finally:
        store.close()
    resumed = subprocess.run([sys.executable, "-m", "planner", "resume", run_id], env=env,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "make outputs not available from the exists probe: job: " in resumed.stdout
    store = planner.SQLiteStore(tmp_path / "state.db")
    try:
        commands = store.get_commands(run_id)
    finally:
        store.close()
    assert commands["make"].status == "SUCCEEDED"
    assert commands["make"].outputs == {"content": "here"}
    assert commands["use"].result["stdout"] == "here\n"
