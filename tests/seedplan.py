"""A private copy of the seed plan (plans/vm-from-template) for end-to-end tests: its own
`store` state, its own SQLite state file, the real CLI in real subprocesses.

Used by test_rollback.py and test_locks_signals.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from planner.executor import RUN_KEY
from planner.sqlite_store import SQLiteStore
from planner.store import CommandRecord, EventRecord, LockRecord, RunRecord, TaskRecord

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "plans" / "vm-from-template"
INVERSE_STATUSES = frozenset({"REVERTING", "REVERTED", "REVERT_SKIPPED", "REVERT_FAILED"})


@dataclass
class Seed:
    """One test's copy of the seed plan, with the environment the CLI and `store` need."""

    root: Path
    plan: Path
    env: dict[str, str]

    @property
    def state(self) -> Path:
        return Path(self.env["PLANCTL_STATE"])

    @property
    def store_dir(self) -> Path:
        return Path(self.env["STORE_DIR"])

    # -- processes --------------------------------------------------------------------------

    def _env(self, extra: dict[str, str] | None) -> dict[str, str]:
        return {**self.env, **(extra or {})}

    def planctl(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60
                ) -> subprocess.CompletedProcess[str]:
        """Run `planctl ARGS` to its end; a traceback is never acceptable output."""
        done = subprocess.run([sys.executable, "-m", "planner", *args], cwd=self.root,
                              env=self._env(env), capture_output=True, text=True,
                              timeout=timeout)
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def spawn(self, *args: str, env: dict[str, str] | None = None
              ) -> subprocess.Popen[str]:
        """Start `planctl ARGS` in the background (stdout/stderr captured)."""
        return spawn(self.root, *args, env=self._env(env))

    def apply(self, *args: str, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
        return self.planctl("apply", str(self.plan), *args, env=env)

    def store(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the plan's `store` tool against this test's storage."""
        return subprocess.run([str(self.plan.parent / "store"), *args], env=self.env,
                              capture_output=True, text=True, check=check, timeout=30)

    def listing(self) -> list[str]:
        """`store list`: 'vm NAME' and 'image NAME' lines."""
        return self.store("list").stdout.splitlines()

    def log(self) -> list[list[str]]:
        """The store's audit log, one [verb, *args] per mutation, in order."""
        path = self.store_dir / "log"
        lines = path.read_text().splitlines() if path.exists() else []
        return [line.split()[1:] for line in lines]

    def mutations(self) -> Counter[str]:
        """How often each object was created or removed, e.g. {'remove-image vm-42-disk0': 1}."""
        counts: Counter[str] = Counter()
        for verb, *args in self.log():
            if verb in ("create-vm", "remove-vm", "remove-image"):
                counts[f"{verb} {args[0]}"] += 1
            elif verb == "copy-image":
                counts[f"copy-image {args[1]}"] += 1
        return counts

    # -- the state store ----------------------------------------------------------------------

    @contextmanager
    def db(self) -> Iterator[SQLiteStore]:
        store = SQLiteStore(self.state)
        try:
            yield store
        finally:
            store.close()

    def last_run(self) -> RunRecord:
        with self.db() as store:
            run_id = store.last_run_id()
            assert run_id is not None, "no run recorded"
            run = store.get_run(run_id)
        assert run is not None
        return run

    def commands(self, run_id: str | None = None) -> dict[str, CommandRecord]:
        with self.db() as store:
            return store.get_commands(run_id or self.last_run().id)

    def events(self, run_id: str | None = None) -> list[EventRecord]:
        with self.db() as store:
            return store.get_events(run_id or self.last_run().id)

    def tasks(self, run_id: str | None = None) -> list[TaskRecord]:
        with self.db() as store:
            return store.get_tasks(run_id or self.last_run().id)

    def locks(self) -> list[LockRecord]:
        """The entity locks (not the lock each live run holds on itself)."""
        return [lock for lock in self.all_locks() if not lock.entity.startswith(RUN_KEY)]

    def all_locks(self) -> list[LockRecord]:
        if not self.state.exists():
            return []
        with self.db() as store:
            return store.list_locks()


def make_seed(tmp: Path, interval: str = "0.05s") -> Seed:
    """Copy the seed plan into ``tmp`` with a quick poll interval; store and state under tmp."""
    plan_dir = tmp / "plan"
    shutil.copytree(SEED, plan_dir, ignore=shutil.ignore_patterns(".store"))
    plan = plan_dir / "plan.yaml"
    text = plan.read_text()
    assert "interval: 0.2s" in text and "max_interval: 1s" in text
    text = text.replace("interval: 0.2s", f"interval: {interval}")
    plan.write_text(text.replace("max_interval: 1s", "max_interval: 0.2s"))
    env = {**os.environ, "STORE_DIR": str(tmp / "store"),
           "PLANCTL_STATE": str(tmp / "state.db"), "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    for name in ("PLANCTL_CRASH_AT", "STORE_FAIL_DISKS", "STORE_FAIL_REMOVE",
                 "STORE_COPY_SECONDS", "PLANCTL_LOCK_LEASE", "PLANCTL_IDEMPOTENCY_KEY"):
        env.pop(name, None)
    return Seed(tmp, plan, env)


def wait_for(what: str, check: Callable[[], object], timeout: float = 20.0,
             proc: subprocess.Popen[str] | None = None) -> None:
    """Poll ``check`` until it is truthy; fail naming ``what`` (and a dead ``proc``'s output)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"{what}: planctl ended first ({proc.returncode}):\n{out}{err}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def spawn(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """Start `planctl ARGS` in ``cwd`` in the background (stdout/stderr captured)."""
    return subprocess.Popen([sys.executable, "-m", "planner", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def signal_when(proc: subprocess.Popen[str], what: str, ready: Callable[[], object],
                *signals: signal.Signals, ready_timeout: float = 20.0,
                timeout: float = 60) -> tuple[int, str, str]:
    """Once ``ready()`` (waited for as ``what``), send ``signals`` to the background
    planctl ``proc`` and let it end: its exit code, stdout and stderr. Killed if anything
    fails first, so a failing test leaves no planctl behind."""
    try:
        wait_for(what, ready, timeout=ready_timeout, proc=proc)
        for sig in signals:
            proc.send_signal(sig)
        return finish(proc, timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    """Wait for a background planctl; its exit code, stdout and stderr."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"planctl did not end in {timeout}s:\n{out}{err}") from None
    assert "Traceback" not in err, err
    return proc.returncode, out, err
