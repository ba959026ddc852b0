"""Scenario tests of the executor (REGULAR_FLOW): real subprocesses, a real HTTP server on
127.0.0.1, real SQLite files, through the Python API and through the `planctl` CLI."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from asyncjobs import AsyncJobsServer, Job
from seedplan import wait_for
from test_crash_sweep import PROBE_OUTPUTS_PLAN

import planner
from planner.store import CommandRecord, EventRecord, RunRecord, TaskRecord

REPO = Path(__file__).resolve().parents[1]
SEED_DIR = REPO / "plans" / "vm-from-template"
SEED = SEED_DIR / "plan.yaml"
PY = sys.executable


# -- helpers -----------------------------------------------------------------------------


@dataclass
class Recorded:
    """What the state file holds about one run, read back through a fresh SQLiteStore."""

    outcome: Any
    run: RunRecord
    commands: dict[str, CommandRecord]
    tasks: list[TaskRecord]
    events: list[EventRecord]
    heard: list[EventRecord]  # what the listener was told, in order

    def status(self, iid: str) -> str:
        return self.commands[iid].status

    def command_events(self, iid: str | None = None) -> list[EventRecord]:
        return [e for e in self.events
                if e.kind == "command" and (iid is None or e.command_id == iid)]

    def statuses_of(self, iid: str) -> list[str]:
        return [e.data["status"] for e in self.command_events(iid)]

    def index(self, iid: str, status: str) -> int:
        """Position in the log of the event that moved ``iid`` to ``status``."""
        for position, event in enumerate(self.events):
            if event.kind == "command" and event.command_id == iid \
                    and event.data["status"] == status:
                return position
        raise AssertionError(f"no {status} event for {iid}")


def write_plan(tmp_path: Path, text: str, name: str = "plan.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def read_state(db: Path, run_id: str | None = None) -> tuple[RunRecord, dict[str, CommandRecord],
                                                             list[TaskRecord], list[EventRecord]]:
    store = planner.SQLiteStore(db)
    try:
        rid = run_id or store.last_run_id()
        assert rid is not None
        run = store.get_run(rid)
        assert run is not None
        return run, store.get_commands(rid), store.get_tasks(rid), store.get_events(rid)
    finally:
        store.close()


def apply(tmp_path: Path, text: str, *, variables: Mapping[str, Any] | None = None,
          secrets: Mapping[str, str] | None = None,
          listener: Callable[[EventRecord], None] | None = None,
          max_parallel: int | None = None, on_failure: str | None = None) -> Recorded:
    """Load ``text`` as tmp_path/plan.yaml and apply it through the Python API."""
    path = write_plan(tmp_path, text)
    loaded = planner.load_plan(path, variables=dict(variables or {}))
    db = tmp_path / "state.db"
    heard: list[EventRecord] = []

    def listen(event: EventRecord) -> None:
        heard.append(event)
        if listener is not None:
            listener(event)

    store = planner.SQLiteStore(db)
    try:
        outcome = planner.apply_plan(
            loaded, store, listener=listen, secrets=dict(secrets or {}),
            options=planner.ApplyOptions(max_parallel=max_parallel, on_failure=on_failure))
    finally:
        store.close()
    run, commands, tasks, events = read_state(db, outcome.run_id)
    return Recorded(outcome, run, commands, tasks, events, heard)


def planctl(cwd: Path, *args: str | Path, env: Mapping[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess, in ``cwd``."""
    return subprocess.run(
        [PY, "-m", "planner", *map(str, args)], cwd=cwd, capture_output=True, text=True,
        env={**os.environ, "NO_COLOR": "1", **(env or {})}, timeout=120, check=False,
    )


def script(tmp_path: Path, name: str, body: str) -> Path:
    """An executable Python script in tmp_path."""
    path = tmp_path / name
    path.write_text(f"#!{PY}\n" + textwrap.dedent(body), encoding="utf-8")
    path.chmod(0o755)
    return path


def store_tool(store_dir: Path, *args: str) -> str:
    """Run the seed plan's `store` stand-in against ``store_dir``; its stdout."""
    done = subprocess.run([str(SEED_DIR / "store"), *args], capture_output=True, text=True,
                          env={**os.environ, "STORE_DIR": str(store_dir)}, check=True,
                          timeout=30)
    return done.stdout


# A script a command runs to read the state DB itself: the row of a command (its own,
# unless named) and of its async task, as JSON on stdout.
PEEK = """\
import json, os, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
run = os.environ["PLANCTL_RUN_ID"]
target = sys.argv[2] if len(sys.argv) > 2 else os.environ["PLANCTL_COMMAND_ID"]
row = db.execute("SELECT status, execution_reason, params FROM commands"
                 " WHERE run_id = ? AND id = ?", (run, target)).fetchone()
task = db.execute("SELECT handle, status, execution_reason FROM async_tasks"
                  " WHERE run_id = ? AND command_id = ?", (run, target)).fetchone()
print(json.dumps({
    "status": row[0], "reason": row[1], "params": json.loads(row[2]) if row[2] else None,
    "handle": task[0] if task else None, "task_status": task[1] if task else None,
}))
"""


# -- a small plan, end to end ------------------------------------------------------------

SMALL = """\
name: small
vars: {who: world}
commands:
  - id: a
    run: {command: [echo, hello]}
    outputs: {x: "{{ result.stdout | trim }}"}
    changes: false
  - id: b
    needs: [a]
    run: {shell: "echo {{ commands.a.outputs.x }}-{{ who }} > out.txt"}
    inverse: {command: [rm, -f, out.txt]}
"""


def test_small_plan_succeeds_and_passes_outputs_downstream(tmp_path: Path) -> None:
    """A command's outputs (rendered from its result) reach a dependent's shell script."""
    rec = apply(tmp_path, SMALL)
    assert rec.outcome.status == "SUCCEEDED"
    assert rec.outcome.exit_code == 0
    assert (tmp_path / "out.txt").read_text() == "hello-world\n"
    a, b = rec.commands["a"], rec.commands["b"]
    assert (a.status, b.status) == ("SUCCEEDED", "SUCCEEDED")
    assert a.outputs == {"x": "hello"}
    assert a.result["rc"] == 0 and a.result["stdout"] == "hello\n"
    assert a.params == {"action": "command", "args": ["echo", "hello"]}
    assert a.attempts == 1 and b.attempts == 1
    assert a.started_at is not None and a.ended_at is not None
    assert a.ended_at <= (b.started_at or 0)


def test_run_record_and_event_log_are_persisted(tmp_path: Path) -> None:
    """The run record and its event log are in the state file: seq contiguous from 1, the
    same events the listener heard, every command event with status and REGULAR_FLOW."""
    rec = apply(tmp_path, SMALL)
    assert rec.run.status == "SUCCEEDED"
    assert rec.run.plan_name == "small"
    assert rec.run.snapshot["name"] == "small"
    assert rec.run.variables == {"who": "world"}
    assert rec.run.ended_at is not None and rec.run.ended_at >= rec.run.started_at
    assert rec.run.pid == os.getpid()
    assert [e.seq for e in rec.events] == list(range(1, len(rec.events) + 1))
    assert [(e.seq, e.kind, e.command_id) for e in rec.events] == [
        (e.seq, e.kind, e.command_id) for e in rec.heard]
    assert rec.events[0].kind == "run" and rec.events[0].data["status"] == "RUNNING"
    assert rec.events[-1].kind == "run" and rec.events[-1].data["status"] == "SUCCEEDED"
    commands = rec.command_events()
    assert commands
    for event in commands:
        assert event.data["status"]
        assert event.data["execution_reason"] == "REGULAR_FLOW"
    assert rec.statuses_of("a") == ["STARTING", "SUCCEEDED"]
    assert rec.statuses_of("b") == ["STARTING", "SUCCEEDED"]
    assert rec.index("a", "SUCCEEDED") < rec.index("b", "STARTING")


def test_cli_apply_then_runs_and_show_list_the_run(tmp_path: Path) -> None:
    """`planctl apply` exits 0 on success; `runs` and `show --last` then list the run."""
    write_plan(tmp_path, SMALL)
    done = planctl(tmp_path, "apply", "plan.yaml")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.txt").read_text() == "hello-world\n"
    assert (tmp_path / ".planctl" / "state.db").exists()
    run, commands, _, _ = read_state(tmp_path / ".planctl" / "state.db")
    assert run.status == "SUCCEEDED"
    assert run.id in done.stdout
    listing = planctl(tmp_path, "runs")
    assert listing.returncode == 0, listing.stderr
    assert re.search(rf"{run.id}\s+small\s+SUCCEEDED", listing.stdout)
    shown = planctl(tmp_path, "show", "--last")
    assert shown.returncode == 0, shown.stderr
    assert run.id in shown.stdout
    assert re.search(r"^a\s+SUCCEEDED\s+REGULAR_FLOW", shown.stdout, re.M)
    assert re.search(r"^b\s+SUCCEEDED\s+REGULAR_FLOW", shown.stdout, re.M)
    assert set(commands) == {"a", "b"}


def test_cli_show_and_run_line_name_the_commands(tmp_path: Path) -> None:
    """`show` has a NAME column with each command's `name`, rendered from vars and loop
    variables, or as written when it reads what only the run knows; the run's first plain
    line counts its commands in good English."""
    write_plan(tmp_path, """\
        name: named
        vars: {who: ann, hosts: [web1]}
        commands:
          - id: greet
            name: "Greet {{ who }}"
            changes: false
            run: {command: [echo, hi]}
            outputs: {said: "{{ result.stdout | trim }}"}
          - id: deploy
            name: "Deploy to {{ host }} after {{ commands.greet.outputs.said }}"
            for_each: "{{ hosts }}"
            as: host
            needs: greet
            changes: false
            run: {command: [echo, deployed]}
          - id: quiet
            changes: false
            run: {command: [echo]}
        """)
    done = planctl(tmp_path, "apply", "plan.yaml", "-j", "1")
    assert done.returncode == 0, done.stdout + done.stderr
    shown = planctl(tmp_path, "show", "--last")
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^COMMAND\s+STATUS\s+REASON\s+TRIES\s+TIME\s+ENTITY\s+NAME\s+NOTES$",
                     shown.stdout, re.M), shown.stdout
    assert re.search(r"^greet\s+SUCCEEDED\s+.*\sGreet ann$", shown.stdout, re.M)
    deploy = "Deploy to {{ host }} after {{ commands.greet.outputs.said }}"
    assert re.search(rf"^deploy\[web1\]\s+SUCCEEDED\s+.*\s{re.escape(deploy)}$",
                     shown.stdout, re.M), shown.stdout
    assert re.search(r"^quiet\s+SUCCEEDED\s+REGULAR_FLOW\s+1\s+\S+$", shown.stdout, re.M)
    assert "plan named (3 commands)" in done.stdout

    write_plan(tmp_path, "name: one\ncommands:\n  - {id: a, changes: false, "
                         "run: {command: [echo]}}\n")
    one = planctl(tmp_path, "apply", "plan.yaml")
    assert "plan one (1 command)" in one.stdout, one.stdout


# -- failure -----------------------------------------------------------------------------

FAILING = """\
name: failing
settings: {on_failure: stop}
commands:
  - id: slow
    run: {shell: "sleep 0.3; echo done > slow.txt"}
    inverse: {command: [rm, -f, slow.txt]}
  - id: reader
    run: {command: [echo, looked]}
    changes: false
  - id: bad
    run: {command: [sh, -c, "echo broken disk >&2; exit 4"]}
    inverse: {command: [echo, nothing]}
  - id: after_bad
    needs: [bad]
    run: {command: [touch, after_bad.txt]}
    inverse: {command: [rm, -f, after_bad.txt]}
  - id: after_slow
    needs: [slow]
    run: {command: [touch, after_slow.txt]}
    inverse: {command: [rm, -f, after_slow.txt]}
"""


def test_failing_command_stops_the_run_and_lets_in_flight_steps_end(tmp_path: Path) -> None:
    """A failed command stops the run: its dependents and anything not started stay PENDING,
    a sibling already in flight runs to its end, and the run ends STOPPED (exit code 2)."""
    rec = apply(tmp_path, FAILING)
    assert rec.outcome.status == "STOPPED"
    assert rec.outcome.exit_code == 2
    assert rec.run.status == "STOPPED"
    assert rec.status("bad") == "FAILED"
    assert rec.commands["bad"].error == "exit status 4: broken disk"
    assert rec.status("slow") == "SUCCEEDED"
    assert (tmp_path / "slow.txt").exists()
    assert rec.status("after_bad") == "PENDING"
    assert rec.status("after_slow") == "PENDING"  # slow ended after the stop
    assert rec.statuses_of("after_bad") == [] and rec.statuses_of("after_slow") == []
    assert not (tmp_path / "after_bad.txt").exists()
    assert not (tmp_path / "after_slow.txt").exists()
    left = {item.command for item in rec.outcome.leftovers}
    assert left == {"slow", "bad"}  # `reader` changed nothing
    assert not [c.id for c in rec.commands.values() if c.status in ("STARTING", "RUNNING")]


def test_cli_failing_command_exits_2_and_lists_the_leftovers(tmp_path: Path) -> None:
    """With --no-rollback, a failed run exits 2 and prints what it left behind and how to
    undo it."""
    text = FAILING.replace("settings: {on_failure: stop}\n", "")
    write_plan(tmp_path, text)
    done = planctl(tmp_path, "apply", "plan.yaml", "--no-rollback")
    assert done.returncode == 2, done.stdout + done.stderr
    run, commands, _, _ = read_state(tmp_path / ".planctl" / "state.db")
    assert run.status == "STOPPED"
    assert commands["after_bad"].status == "PENDING"
    assert "leftovers" in done.stdout
    assert re.search(r"^\s+- slow\b.*SUCCEEDED", done.stdout, re.M)
    assert re.search(r"^\s+- bad\b.*FAILED", done.stdout, re.M)
    assert not re.search(r"^\s+- reader\b", done.stdout, re.M)
    assert f"planctl rollback {run.id}" in done.stdout


def test_an_irreversible_command_is_no_leftover_of_a_stopped_run(tmp_path: Path) -> None:
    """A STOPPED run lists what a rollback would undo, as the rollback counts it: not an
    `irreversible` command, whose entity is released; the rollback then leaves nothing."""
    rec = apply(tmp_path, """\
        name: irreversible-stop
        settings: {on_failure: stop}
        commands:
          - id: notify
            entity: chat/ops
            irreversible: true
            run: {command: [echo, sent]}
          - id: made
            entity: file/made
            run: {command: [touch, made.txt]}
            inverse: {command: [rm, made.txt]}
          - id: bad
            needs: [notify, made]
            changes: false
            run: {command: [sh, -c, "exit 1"]}
        """)
    assert rec.outcome.status == "STOPPED"
    assert [x.command for x in rec.outcome.leftovers] == ["made"]
    stopped = [e for e in rec.events if e.kind == "run" and e.data["status"] == "STOPPED"]
    assert [x["command"] for x in stopped[0].data["leftovers"]] == ["made"]
    store = planner.SQLiteStore(tmp_path / "state.db")
    try:
        assert [lock.entity for lock in store.list_locks()] == ["file/made"]
        undone = planner.rollback_run(store, rec.run.id, secrets={}, handle_signals=False)
        assert (undone.status, undone.leftovers) == ("ROLLED_BACK", ())
        assert store.list_locks() == []
    finally:
        store.close()
    assert not (tmp_path / "made.txt").exists()


def test_parent_whose_children_all_ended_is_settled_when_the_run_stops(tmp_path: Path) -> None:
    """A parent whose children all ended well in the round in which another command failed
    does not stay RUNNING: a finished run leaves no command in flight."""
    rec = apply(tmp_path, """\
        name: stop-race
        settings: {on_failure: stop}
        commands:
          - id: p
            children:
              - id: c
                when: false
                run: {command: [touch, c.txt]}
                inverse: {command: [rm, c.txt]}
          - id: a
            when: false
            run: {command: [touch, a.txt]}
            inverse: {command: [rm, a.txt]}
          - id: x
            needs: [a]
            run: {command: ["{{ [] | first }}"]}
            irreversible: true
        """)
    assert rec.outcome.status == "STOPPED"
    assert (rec.status("c"), rec.status("x")) == ("SKIPPED", "FAILED")
    assert not {c.id for c in rec.commands.values() if c.status in ("STARTING", "RUNNING")}
    assert rec.status("p") == "UNCHANGED"


def test_command_failing_before_its_intent_is_no_leftover(tmp_path: Path) -> None:
    """A command whose `run` fails to render never acted: it is not a leftover, and undoing
    the rest leaves the run ROLLED_BACK (exit code 1)."""
    rec = apply(tmp_path, """\
        name: render-fail
        commands:
          - id: a
            run: {command: [touch, a.txt]}
            inverse: {command: [rm, a.txt]}
          - id: x
            needs: [a]
            run: {command: ["{{ [] | first }}"]}
            inverse: {command: [echo, undo-x]}
        """)
    assert rec.status("x") == "FAILED"
    assert rec.statuses_of("x") == ["FAILED"]  # never STARTING: nothing ran
    assert not (tmp_path / "a.txt").exists()
    assert [item.command for item in rec.outcome.leftovers] == []
    assert rec.outcome.status == "ROLLED_BACK"
    assert rec.outcome.exit_code == 1


CHAIN = """\
name: chain
commands:
  - id: a
    run: {command: [touch, a.txt]}
    inverse: {command: [rm, a.txt]}
  - id: b
    needs: [a]
    run: {command: [sh, -c, "sleep 0.1; touch b.txt"]}
    inverse: {command: [rm, b.txt]}
  - id: c
    needs: [b]
    run: {command: [touch, c.txt]}
    inverse: {command: [rm, c.txt]}
"""


def test_a_failing_listener_does_not_change_the_run(tmp_path: Path) -> None:
    """A listener that raises on every event (a reporter whose pipe closed) neither stops nor
    fails the run: every command still runs and the run succeeds."""
    def broken(event: EventRecord) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    try:
        rec = apply(tmp_path, CHAIN, listener=broken)
    except BrokenPipeError:
        pytest.fail("the listener's exception escaped apply_plan")
    assert rec.outcome.status == "SUCCEEDED"
    assert sorted(p.name for p in tmp_path.glob("*.txt")) == ["a.txt", "b.txt", "c.txt"]


def test_cli_apply_into_a_closed_pipe_still_finishes_the_run(tmp_path: Path) -> None:
    """`planctl apply` whose stdout reader went away still runs the plan to its end, and
    does not exit 1 (which would claim the run was fully rolled back)."""
    write_plan(tmp_path, CHAIN)
    proc = subprocess.Popen([PY, "-m", "planner", "apply", "plan.yaml"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "NO_COLOR": "1"})
    assert proc.stdout is not None
    proc.stdout.close()
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    run, _, _, _ = read_state(tmp_path / ".planctl" / "state.db")
    assert run.status == "SUCCEEDED", (run.status, proc.returncode, err[-300:])
    assert sorted(p.name for p in tmp_path.glob("*.txt")) == ["a.txt", "b.txt", "c.txt"]
    assert proc.returncode != 1


# -- async tasks over HTTP ---------------------------------------------------------------


def jobs_plan(url: str, *, duration: float = 0.05, fail: bool = False, timeout: str = "5s",
              poll_retries: int = 3, cancel: bool = True) -> str:
    cancel_op = (f'cancel: {{http: {{method: DELETE, url: "{url}/jobs/{{{{ handle }}}}"}}}}'
                 if cancel else "")
    return f"""\
name: jobs
settings: {{on_failure: stop}}
commands:
  - id: job
    run:
      http:
        method: POST
        url: "{url}/jobs"
        json: {{duration: {duration}, fail: {str(fail).lower()}, name: copy}}
      async:
        handle: "{{{{ result.json.id }}}}"
        poll:
          http: {{url: "{url}/jobs/{{{{ handle }}}}"}}
          retries: {poll_retries}
        until: "{{{{ poll.json.status == 'succeeded' }}}}"
        failed_when: "{{{{ poll.json.status == 'failed' }}}}"
        interval: 0.02s
        backoff: 1
        timeout: {timeout}
        {cancel_op}
    outputs: {{final: "{{{{ poll.json.status }}}}", job: "{{{{ handle }}}}"}}
    irreversible: true
"""


def requests_of(server: AsyncJobsServer, method: str) -> list[str]:
    return [path for m, path, _ in server.requests if m == method]


def test_async_job_is_started_polled_and_succeeds(tmp_path: Path,
                                                  async_jobs_server: AsyncJobsServer) -> None:
    """POST starts a job, its id becomes the handle, GET polls it until it succeeded; the
    async_tasks row keeps handle, status and the number of polls."""
    rec = apply(tmp_path, jobs_plan(async_jobs_server.url, duration=0.1))
    assert rec.outcome.status == "SUCCEEDED"
    job = rec.commands["job"]
    assert job.status == "SUCCEEDED"
    assert job.result["status"] == 202
    assert job.outputs == {"final": "succeeded", "job": "job-1"}
    assert requests_of(async_jobs_server, "POST") == ["/jobs"]
    gets = requests_of(async_jobs_server, "GET")
    assert gets and set(gets) == {"/jobs/job-1"}
    [task] = rec.tasks
    assert (task.command_id, task.execution_reason, task.handle, task.status) == (
        "job", "REGULAR_FLOW", "job-1", "SUCCEEDED")
    assert task.polls == len(gets) >= 1
    assert task.updated_at >= task.started_at
    assert rec.statuses_of("job") == ["STARTING", "RUNNING", "SUCCEEDED"]
    task_events = [e.data["task_status"] for e in rec.events if e.kind == "task"]
    assert task_events == ["RUNNING", "SUCCEEDED"]


def test_async_job_that_fails_fails_its_command(tmp_path: Path,
                                               async_jobs_server: AsyncJobsServer) -> None:
    """A poll for which failed_when is true fails the command and marks its task FAILED."""
    rec = apply(tmp_path, jobs_plan(async_jobs_server.url, fail=True))
    assert rec.outcome.status == "STOPPED"
    job = rec.commands["job"]
    assert job.status == "FAILED"
    assert "failed_when" in (job.error or "")
    [task] = rec.tasks
    assert task.status == "FAILED"
    assert "DELETE" not in {m for m, _, _ in async_jobs_server.requests}


def test_async_job_timeout_cancels_the_job(tmp_path: Path,
                                           async_jobs_server: AsyncJobsServer) -> None:
    """A job still running at the async timeout fails its command as TIMED_OUT, and the
    declared cancel operation (DELETE) is sent to the server."""
    rec = apply(tmp_path, jobs_plan(async_jobs_server.url, duration=30, timeout="0.2s"))
    job = rec.commands["job"]
    assert job.status == "FAILED"
    assert "timed out" in (job.error or "")
    assert "cancel ran" in (job.error or "")
    [task] = rec.tasks
    assert task.status == "TIMED_OUT"
    assert requests_of(async_jobs_server, "DELETE") == ["/jobs/job-1"]
    assert async_jobs_server.jobs["job-1"].cancelled


def test_transient_poll_errors_within_retries_are_tolerated(
        tmp_path: Path, async_jobs_server: AsyncJobsServer) -> None:
    """Two 503 answers to polls, with poll retries 2, do not fail the task."""
    async_jobs_server.flaky_polls = 2
    rec = apply(tmp_path, jobs_plan(async_jobs_server.url, poll_retries=2))
    assert rec.commands["job"].status == "SUCCEEDED"
    assert async_jobs_server.flaky_polls == 0
    [task] = rec.tasks
    assert task.polls >= 3


def test_poll_errors_beyond_retries_fail_the_task(tmp_path: Path,
                                                  async_jobs_server: AsyncJobsServer) -> None:
    """Three 503 answers in a row, with poll retries 2, fail the command."""
    async_jobs_server.flaky_polls = 3
    rec = apply(tmp_path, jobs_plan(async_jobs_server.url, poll_retries=2))
    job = rec.commands["job"]
    assert job.status == "FAILED"
    assert "poll failed 3 times" in (job.error or "")
    assert "503" in (job.error or "")
    [task] = rec.tasks
    assert task.status == "FAILED" and task.polls == 3


def test_handle_is_committed_before_the_first_poll(tmp_path: Path,
                                                   async_jobs_server: AsyncJobsServer) -> None:
    """The first poll, a process reading the state file through its own connection, already
    finds the async_tasks row with the handle, and the command RUNNING."""
    peek = script(tmp_path, "peek.py", PEEK)
    rec = apply(tmp_path, f"""\
        name: handle-first
        commands:
          - id: job
            run:
              http: {{method: POST, url: "{async_jobs_server.url}/jobs", json: {{duration: 0}}}}
              async:
                handle: "{{{{ result.json.id }}}}"
                poll: {{command: ["{peek}", "{tmp_path / 'state.db'}"]}}
                until: "{{{{ poll.json.handle == handle and poll.json.status == 'RUNNING' }}}}"
                failed_when: "{{{{ poll.json.handle != handle }}}}"
                interval: 0.01s
            outputs: {{seen: "{{{{ poll.json }}}}"}}
            irreversible: true
        """)
    job = rec.commands["job"]
    assert job.status == "SUCCEEDED", job.error
    assert job.outputs["seen"]["task_status"] == "RUNNING"
    assert rec.tasks[0].polls == 1


# -- write-ahead ---------------------------------------------------------------------------


def test_intent_is_committed_before_the_side_effect(tmp_path: Path) -> None:
    """A command's process, reading the state file itself, finds its own row STARTING with
    REGULAR_FLOW and its rendered params; a dependent finds its predecessor already
    SUCCEEDED; a child finds its parent's run recorded (RUNNING: it waits for children)."""
    peek = script(tmp_path, "peek.py", PEEK)
    db = tmp_path / "state.db"
    rec = apply(tmp_path, f"""\
        name: write-ahead
        commands:
          - id: first
            run: {{command: ["{peek}", "{db}"]}}
            outputs: {{seen: "{{{{ result.json }}}}"}}
            irreversible: true
          - id: second
            needs: [first]
            run: {{command: ["{peek}", "{db}", first]}}
            outputs: {{seen: "{{{{ result.json }}}}"}}
            irreversible: true
          - id: parent
            run: {{command: ["true"]}}
            irreversible: true
            children:
              - id: child
                run: {{command: ["{peek}", "{db}", parent]}}
                outputs: {{seen: "{{{{ result.json }}}}"}}
                irreversible: true
        """)
    assert rec.outcome.status == "SUCCEEDED"
    seen = rec.commands["first"].outputs["seen"]
    assert (seen["status"], seen["reason"]) == ("STARTING", "REGULAR_FLOW")
    assert seen["params"] == {"action": "command", "args": [str(peek), str(db)]}
    assert rec.commands["second"].outputs["seen"]["status"] == "SUCCEEDED"
    assert rec.commands["child"].outputs["seen"]["status"] == "RUNNING"  # waits for children


def test_intent_after_an_exists_probe_is_committed_before_the_side_effect(
        tmp_path: Path) -> None:
    """A lone command whose `exists` says absent finds its own row STARTING when it runs:
    the intent recorded after the probe is committed before the action starts."""
    peek = script(tmp_path, "peek.py", PEEK)
    db = tmp_path / "state.db"
    rec = apply(tmp_path, f"""\
        name: write-ahead-probed
        commands:
          - id: probed
            exists: {{command: ["false"]}}
            run: {{command: ["{peek}", "{db}"]}}
            outputs: {{seen: "{{{{ result.json }}}}"}}
            irreversible: true
        """)
    assert rec.outcome.status == "SUCCEEDED"
    seen = rec.commands["probed"].outputs["seen"]
    assert (seen["status"], seen["reason"]) == ("STARTING", "REGULAR_FLOW")
    assert rec.statuses_of("probed") == ["STARTING", "SUCCEEDED"]


# -- environment and idempotency -----------------------------------------------------------


def test_planctl_variables_reach_subprocesses(tmp_path: Path) -> None:
    """command and shell actions see PLANCTL_RUN_ID, PLANCTL_COMMAND_ID,
    PLANCTL_EXECUTION_REASON and a PLANCTL_IDEMPOTENCY_KEY of their own."""
    rec = apply(tmp_path, """\
        name: env
        commands:
          - id: cmd
            run: {command: [sh, -c, 'env | grep ^PLANCTL_ | sort > "env-$PLANCTL_COMMAND_ID.txt"']}
            irreversible: true
          - id: sh
            run: {shell: 'env | grep ^PLANCTL_ | sort > "env-$PLANCTL_COMMAND_ID.txt"'}
            irreversible: true
        """)
    assert rec.outcome.status == "SUCCEEDED"
    seen = {}
    for iid in ("cmd", "sh"):
        lines = (tmp_path / f"env-{iid}.txt").read_text().splitlines()
        seen[iid] = dict(line.split("=", 1) for line in lines)
        assert seen[iid]["PLANCTL_RUN_ID"] == rec.outcome.run_id
        assert seen[iid]["PLANCTL_COMMAND_ID"] == iid
        assert seen[iid]["PLANCTL_EXECUTION_REASON"] == "REGULAR_FLOW"
        assert re.fullmatch(r"[0-9a-f]{16,}", seen[iid]["PLANCTL_IDEMPOTENCY_KEY"])
    assert seen["cmd"]["PLANCTL_IDEMPOTENCY_KEY"] != seen["sh"]["PLANCTL_IDEMPOTENCY_KEY"]


def test_idempotency_key_is_stable_across_retries(tmp_path: Path) -> None:
    """A command that fails twice and then succeeds saw the same idempotency key each time."""
    flaky = script(tmp_path, "flaky.py", """\
        import os, sys
        with open("keys.txt", "a") as f:
            f.write(os.environ["PLANCTL_IDEMPOTENCY_KEY"] + "\\n")
        with open("keys.txt") as f:
            sys.exit(0 if len(f.read().splitlines()) >= 3 else 1)
        """)
    rec = apply(tmp_path, f"""\
        name: retry-key
        commands:
          - id: flaky
            run: {{command: ["{flaky}"], retries: 2, delay: 0.01s}}
            irreversible: true
        """)
    assert rec.commands["flaky"].status == "SUCCEEDED"
    assert rec.commands["flaky"].attempts == 3
    keys = (tmp_path / "keys.txt").read_text().splitlines()
    assert len(keys) == 3 and len(set(keys)) == 1
    assert [e.data["attempt"] for e in rec.events if e.kind == "retry"] == [1, 2]


def test_http_sends_the_idempotency_key_and_keeps_it_across_retries(
        tmp_path: Path, async_jobs_server: AsyncJobsServer) -> None:
    """The http action sends Idempotency-Key; a retry resends the same key, so the server
    answers the second POST with the job the first created (200) instead of a new one."""
    url = async_jobs_server.url
    rec = apply(tmp_path, f"""\
        name: http-key
        commands:
          - id: create
            run:
              http: {{method: POST, url: "{url}/jobs", json: {{name: one}}, status: 200}}
              retries: 1
              delay: 0.01s
            irreversible: true
          - id: other
            needs: [create]
            run: {{http: {{method: POST, url: "{url}/jobs", json: {{name: two}}}}}}
            irreversible: true
        """)
    assert rec.commands["create"].status == "SUCCEEDED", rec.commands["create"].error
    assert rec.commands["create"].attempts == 2
    posts = [headers for method, _, headers in async_jobs_server.requests if method == "POST"]
    keys = [{k.lower(): v for k, v in h.items()}["idempotency-key"] for h in posts]
    assert len(keys) == 3
    assert keys[0] == keys[1] != keys[2]
    assert sorted(job.name for job in async_jobs_server.jobs.values()) == ["one", "two"]


# -- retries and failed_when ---------------------------------------------------------------


def test_retries_wait_with_growing_delay_and_record_attempts(tmp_path: Path) -> None:
    """Each retry waits ``delay`` times ``backoff`` to the power of the retries before it;
    attempts and retry events are recorded."""
    stamp = script(tmp_path, "stamp.py", """\
        import sys, time
        with open("times.txt", "a") as f:
            f.write(f"{time.monotonic()}\\n")
        with open("times.txt") as f:
            sys.exit(0 if len(f.read().splitlines()) >= 4 else 1)
        """)
    rec = apply(tmp_path, f"""\
        name: retries
        commands:
          - id: stamp
            run: {{command: ["{stamp}"], retries: 3, delay: 0.05s, backoff: 2}}
            irreversible: true
          - id: hopeless
            run: {{command: [sh, -c, "exit 9"], retries: 2, delay: 0.01s}}
            irreversible: true
        """, on_failure="stop")
    times = [float(t) for t in (tmp_path / "times.txt").read_text().split()]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 3
    for gap, delay in zip(gaps, (0.05, 0.1, 0.2), strict=True):
        assert gap >= delay * 0.9, gaps
    assert rec.commands["stamp"].status == "SUCCEEDED"
    assert rec.commands["stamp"].attempts == 4
    hopeless = rec.commands["hopeless"]
    assert hopeless.status == "FAILED"
    assert hopeless.attempts == 3
    assert hopeless.error == "exit status 9"
    retry_events = [(e.command_id, e.data["attempt"]) for e in rec.events if e.kind == "retry"]
    assert sorted(retry_events) == [("hopeless", 1), ("hopeless", 2),
                                    ("stamp", 1), ("stamp", 2), ("stamp", 3)]


def test_failed_when_overrides_the_exit_status(tmp_path: Path) -> None:
    """failed_when decides success over the exit status: rc 3 may succeed, rc 0 may fail."""
    rec = apply(tmp_path, """\
        name: failed-when
        settings: {on_failure: stop}
        commands:
          - id: rc3_ok
            run: {command: [sh, -c, "exit 3"], failed_when: "{{ result.rc not in [0, 3] }}"}
            irreversible: true
          - id: says_error
            needs: [rc3_ok]
            run: {command: [echo, "ERROR: quota"], failed_when: "{{ 'ERROR' in result.stdout }}"}
            irreversible: true
        """)
    assert rec.commands["rc3_ok"].status == "SUCCEEDED"
    assert rec.commands["rc3_ok"].result["rc"] == 3
    says = rec.commands["says_error"]
    assert says.status == "FAILED"
    assert says.error == "failed_when is true"
    assert rec.outcome.status == "STOPPED"


# -- parents and children: the seed plan ---------------------------------------------------


def seed_apply(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    store_dir = tmp_path / "store"
    done = planctl(tmp_path, "apply", SEED, "--var", "copy_seconds=0.2", *args,
                   env={"STORE_DIR": str(store_dir)})
    return done, store_dir


def test_seed_plan_creates_vm_and_images_and_ends_parent_after_children(
        tmp_path: Path) -> None:
    """The seed plan succeeds: a VM and one image per disk exist, and add_vm ends
    SUCCEEDED only after every clone did."""
    done, store_dir = seed_apply(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert store_tool(store_dir, "list").splitlines() == [
        "image vm-42-disk0", "image vm-42-disk1", "image vm-42-disk2", "vm vm-42"]
    run, commands, tasks, events = read_state(tmp_path / ".planctl" / "state.db")
    rec = Recorded(None, run, commands, tasks, events, [])
    clones = [f"clone[disk{i}]" for i in range(3)]
    assert all(rec.status(c) == "SUCCEEDED" for c in [*clones, "add_vm", "start_vm"])
    assert {c.parent for c in commands.values()} == {None, "add_vm"}
    assert rec.statuses_of("add_vm") == ["STARTING", "RUNNING", "SUCCEEDED"]
    parent_end = rec.index("add_vm", "SUCCEEDED")
    assert all(rec.index(c, "SUCCEEDED") < parent_end for c in clones)
    assert all(rec.index("add_vm", "RUNNING") < rec.index(c, "STARTING") for c in clones)
    assert rec.index("add_vm", "SUCCEEDED") < rec.index("start_vm", "STARTING")
    assert sorted(t.command_id for t in tasks) == clones
    assert all(t.status == "SUCCEEDED" and t.handle.startswith("task-") for t in tasks)
    uuid = commands["add_vm"].outputs["uuid"]
    assert uuid and uuid in commands["start_vm"].result["stdout"]


def test_seed_plan_child_failure_fails_the_parent_and_blocks_what_needs_it(
        tmp_path: Path) -> None:
    """With one copy failing (and no rollback), that clone FAILED, its siblings still ended,
    add_vm FAILED with "a child failed", start_vm never ran, and the CLI exits 2."""
    done, store_dir = seed_apply(tmp_path, "--var", "fail_disks=disk1", "--no-rollback")
    assert done.returncode == 2, done.stdout + done.stderr
    _, commands, tasks, events = read_state(tmp_path / ".planctl" / "state.db")
    assert commands["clone[disk1]"].status == "FAILED"
    assert commands["clone[disk0]"].status == "SUCCEEDED"
    assert commands["clone[disk2]"].status == "SUCCEEDED"
    assert commands["add_vm"].status == "FAILED"
    assert commands["add_vm"].error == "a child failed"
    assert commands["start_vm"].status == "PENDING"
    assert not [e for e in events if e.command_id == "start_vm"]
    assert not [c.id for c in commands.values() if c.status in ("STARTING", "RUNNING")]
    assert {t.command_id: t.status for t in tasks}["clone[disk1]"] == "FAILED"
    assert store_tool(store_dir, "list").splitlines() == [
        "image vm-42-disk0", "image vm-42-disk2", "vm vm-42"]


def test_seed_plan_leaves_an_existing_vm_alone_and_still_runs_children(
        tmp_path: Path) -> None:
    """When the VM exists before the run, add_vm never starts its `run`, is recorded as not
    changed by the run, takes its outputs from the exists probe, and its children still
    clone every disk: the run succeeds."""
    store_dir = tmp_path / "store"
    uuid = store_tool(store_dir, "create-vm", "vm-42").strip()
    done, _ = seed_apply(tmp_path, "--no-rollback")
    assert done.returncode == 0, done.stdout + done.stderr
    _, commands, _, events = read_state(tmp_path / ".planctl" / "state.db")
    add_vm = [e.data["status"] for e in events if e.command_id == "add_vm"
              and e.kind == "command"]
    assert "STARTING" not in add_vm, add_vm
    assert commands["add_vm"].changed is False
    assert commands["add_vm"].attempts == 0
    assert commands["add_vm"].outputs == {"uuid": uuid}
    assert all(commands[f"clone[disk{i}]"].status == "SUCCEEDED" for i in range(3))
    assert uuid in commands["start_vm"].result["stdout"]
    assert store_tool(store_dir, "list").splitlines() == [
        "image vm-42-disk0", "image vm-42-disk1", "image vm-42-disk2", "vm vm-42"]


def test_a_parent_whose_children_never_ran_does_not_say_a_child_failed(tmp_path: Path) -> None:
    """A parent whose `run` ends after another command failed ends with failure, its
    children never started: it says so, rather than "a child failed", which sent the
    reader looking for a failed child there was none of; so does the group around it."""
    rec = apply(tmp_path, """\
        name: stopped-parent
        commands:
          - id: group
            children:
              - id: p
                run: {shell: "while [ ! -e go ]; do sleep 0.01; done; touch p"}
                inverse: {command: [rm, p]}
                children:
                  - id: c
                    run: {command: [touch, c]}
                    inverse: {command: [rm, c]}
          - id: boom
            changes: false
            run: {shell: "touch go; exit 1"}
        """)
    assert rec.outcome.status == "ROLLED_BACK"
    assert (rec.status("c"), rec.status("p")) == ("PENDING", "REVERTED")
    assert not (tmp_path / "c").exists() and not (tmp_path / "p").exists()
    stopped = "a child did not run: the run stopped first"
    failed = {e.command_id: e.data["error"] for e in rec.command_events()
              if e.data["status"] == "FAILED"}
    assert failed == {"boom": "exit status 1", "p": stopped, "group": stopped}


def test_parent_whose_exists_is_present_ends_unchanged(tmp_path: Path) -> None:
    """A parent whose `exists` says present ends UNCHANGED even though its children ran."""
    rec = apply(tmp_path, """\
        name: present-parent
        commands:
          - id: parent
            exists: {command: ["true"]}
            run: {command: [touch, parent.txt]}
            inverse: {command: [rm, -f, parent.txt]}
            children:
              - id: child
                run: {command: [touch, child.txt]}
                inverse: {command: [rm, -f, child.txt]}
        """)
    assert not (tmp_path / "parent.txt").exists()
    assert rec.status("child") == "SUCCEEDED"
    assert rec.status("parent") == "UNCHANGED"


def test_command_whose_exists_is_present_ends_unchanged_without_running(
        tmp_path: Path) -> None:
    """A command whose `exists` succeeds ends UNCHANGED, changed False, its `run` never ran."""
    rec = apply(tmp_path, """\
        name: present
        commands:
          - id: there
            exists: {command: ["true"]}
            run: {command: [touch, ran.txt]}
            inverse: {command: [rm, -f, ran.txt]}
          - id: after
            needs: [there]
            run: {command: [touch, after.txt]}
            inverse: {command: [rm, -f, after.txt]}
        """)
    assert rec.outcome.status == "SUCCEEDED"
    assert rec.status("there") == "UNCHANGED"
    assert rec.commands["there"].changed is False
    assert rec.statuses_of("there") == ["UNCHANGED"]
    assert not (tmp_path / "ran.txt").exists()
    assert (tmp_path / "after.txt").exists()


def test_an_http_exists_probe_is_present_on_2xx_absent_on_404_and_unanswered_on_5xx(
        tmp_path: Path, async_jobs_server: AsyncJobsServer) -> None:
    """An `http` probe succeeds, so the resource is present, on a 2xx (UNCHANGED, `run` never
    runs); a 404 is an answer, absent (`run` runs); a 503 is no answer: never taken as
    absent, the step fails before its `run`."""
    url = async_jobs_server.url
    async_jobs_server.jobs["job-1"] = Job(id="job-1", name="", duration=0, fail=False)
    async_jobs_server.flaky_polls = 10  # GET /jobs/job-1 answers 503
    rec = apply(tmp_path, f"""\
        name: http-probes
        commands:
          - id: present
            exists: {{http: {{url: "{url}/echo"}}}}
            run: {{command: [touch, present.ran]}}
            inverse: {{command: [rm, present.ran]}}
          - id: absent
            exists: {{http: {{url: "{url}/jobs/nope"}}}}
            run: {{command: [touch, absent.ran]}}
            inverse: {{command: [rm, absent.ran]}}
          - id: broken
            needs: [present, absent]
            exists: {{http: {{url: "{url}/jobs/job-1"}}}}
            run: {{command: [touch, broken.ran]}}
            inverse: {{command: [rm, broken.ran]}}
        """, on_failure="stop")
    assert rec.outcome.status == "STOPPED"
    assert (rec.status("present"), rec.status("absent"), rec.status("broken")) == (
        "UNCHANGED", "SUCCEEDED", "FAILED")
    assert (rec.commands["broken"].error or "").startswith("exists probe could not answer")
    assert not (tmp_path / "present.ran").exists() and not (tmp_path / "broken.ran").exists()
    assert (tmp_path / "absent.ran").exists()
    assert [x.command for x in rec.outcome.leftovers] == ["absent"]


def test_an_exists_probe_retries_only_when_it_could_not_answer(tmp_path: Path) -> None:
    """"absent" is an answer: a probe's retries (here from `defaults`) are spent only on a
    probe that could not answer (exit 127), never on one that said absent, before `run` or
    before an inverse; so no `retry` is reported for an answer."""
    rec = apply(tmp_path, """\
        name: probe-retries
        defaults: {retries: 2, delay: 10ms}
        commands:
          - id: make
            exists:
              shell: "echo asked >> make.asked; [ $(wc -l < make.asked) = 1 ] && exit 127;
                test -e made"
            run: {command: [touch, made]}
            inverse: {command: [rm, made]}
          - id: gone
            exists: {shell: "echo asked >> gone.asked; exit 1"}
            run: {command: ["true"]}
            inverse: {shell: "echo undone >> gone.undone"}
          - id: boom
            needs: [make, gone]
            changes: false
            run: {command: ["false"]}
        """)
    assert rec.outcome.status == "ROLLED_BACK"
    assert (rec.status("make"), rec.status("gone")) == ("REVERTED", "REVERT_SKIPPED")
    assert not (tmp_path / "made").exists()
    assert not (tmp_path / "gone.undone").exists()
    # make: could not answer, asked again (absent), then present before its inverse.
    assert (tmp_path / "make.asked").read_text().count("asked") == 3
    # gone: absent before run, absent before its inverse; one ask each.
    assert (tmp_path / "gone.asked").read_text().count("asked") == 2
    retries = [e.command_id for e in rec.events if e.kind == "retry" and e.command_id != "boom"]
    assert retries == ["make"], retries


def test_rollback_never_reports_undone_what_a_broken_probe_could_not_check(
        tmp_path: Path) -> None:
    """When the `exists` probe cannot run during the rollback, the command's resource is
    either removed by its inverse or reported as a leftover, never claimed undone."""
    script(tmp_path, "probe.py", """\
        import os, sys
        sys.exit(0 if os.path.exists("made.txt") else 1)
        """)
    rec = apply(tmp_path, """\
        name: broken-probe
        commands:
          - id: make
            exists: {command: [./probe.py]}
            run: {command: [touch, made.txt]}
            inverse: {command: [rm, made.txt]}
          - id: boom
            needs: [make]
            run: {command: [sh, -c, "rm probe.py; exit 1"]}
            irreversible: true
        """)
    assert rec.status("boom") == "FAILED"
    assert not (tmp_path / "probe.py").exists()
    left = (tmp_path / "made.txt").exists()
    assert not left or rec.outcome.status == "ROLLBACK_FAILED", (
        rec.outcome.status, rec.status("make"))
    assert not left or rec.outcome.exit_code == 2


# -- when, for_each ------------------------------------------------------------------------


def test_when_false_skips_a_command_and_all_its_children(tmp_path: Path) -> None:
    """`when` false marks a command SKIPPED, its children SKIPPED, and what needs it still runs."""
    rec = apply(tmp_path, """\
        name: skip
        vars: {enabled: false}
        commands:
          - id: parent
            when: "{{ enabled }}"
            run: {command: [touch, parent.txt]}
            inverse: {command: [rm, -f, parent.txt]}
            children:
              - id: child
                run: {command: [touch, child.txt]}
                inverse: {command: [rm, -f, child.txt]}
                children:
                  - id: grandchild
                    run: {command: [touch, grandchild.txt]}
                    inverse: {command: [rm, -f, grandchild.txt]}
          - id: literal_false
            when: false
            run: {command: [touch, literal.txt]}
            inverse: {command: [rm, -f, literal.txt]}
          - id: after
            needs: [parent]
            run: {command: [touch, after.txt]}
            inverse: {command: [rm, -f, after.txt]}
        """)
    assert rec.outcome.status == "SUCCEEDED"
    for iid in ("parent", "child", "grandchild", "literal_false"):
        assert rec.status(iid) == "SKIPPED", iid
        assert rec.statuses_of(iid) == ["SKIPPED"], iid
        assert rec.commands[iid].params is None
    assert sorted(p.name for p in tmp_path.glob("*.txt")) == ["after.txt"]


def test_for_each_expands_over_vars_and_needs_waits_for_every_instance(tmp_path: Path) -> None:
    """A for_each over a var runs one instance per item; a command that needs the looped
    command starts only after all instances succeeded."""
    rec = apply(tmp_path, """\
        name: loop
        vars: {disks: [d0, d1, d2], pause: {d0: 0.15, d1: 0.0, d2: 0.08}}
        commands:
          - id: copy
            for_each: "{{ disks }}"
            as: disk
            run: {shell: "sleep {{ pause[disk] }}; echo {{ disk }} > {{ disk }}.txt"}
            inverse: {shell: "rm -f {{ disk }}.txt"}
            outputs: {name: "{{ disk }}"}
          - id: report
            needs: [copy]
            run:
              command: [echo, "{{ commands.copy.outputs | map(attribute='name') | join(',') }}"]
            changes: false
        """, variables={"disks": ["d0", "d1", "d2"]})
    assert rec.outcome.status == "SUCCEEDED"
    copies = ["copy[d0]", "copy[d1]", "copy[d2]"]
    assert all(rec.status(c) == "SUCCEEDED" for c in copies)
    assert sorted(p.read_text() for p in tmp_path.glob("d*.txt")) == ["d0\n", "d1\n", "d2\n"]
    start = rec.index("report", "STARTING")
    assert all(rec.index(c, "SUCCEEDED") < start for c in copies)
    assert rec.commands["report"].result["stdout"] == "d0,d1,d2\n"


LOOP_READERS = """\
    name: readers
    commands:
      - id: copy
        for_each: "{{ disks }}"
        as: disk
        changes: false
        run: {command: [echo, "{{ disk }}"]}
        outputs: {name: "{{ disk }}"}
      - id: report
        needs: [copy]
        changes: false
        run:
          command: [echo, "{{ commands.copy.outputs | map(attribute='name') | join(',') }}",
                    "{{ commands.copy.status | length }}",
                    "{{ commands.copy.instances | list | join(',') }}"]
    """


@pytest.mark.parametrize(("disks", "printed"), [
    (["d0", "d1"], "d0,d1 2 copy[d0],copy[d1]\n"),
    (["d0"], "d0 1 copy[d0]\n"),
    ([], " 0 \n"),
])
def test_a_loop_read_from_outside_gives_lists_whatever_its_length(
        tmp_path: Path, disks: list[str], printed: str) -> None:
    """`commands.copy` read from outside its loop is lists (and `instances`) for two
    items, one and none alike: one item used to give a mapping, none an undefined name."""
    rec = apply(tmp_path, LOOP_READERS.replace('"{{ disks }}"', json.dumps(disks)))
    assert rec.outcome.status == "SUCCEEDED", rec.outcome
    assert rec.commands["report"].result["stdout"] == printed


def test_a_sibling_in_an_outer_loop_reads_its_own_iteration_of_an_inner_loop(
        tmp_path: Path) -> None:
    """Inside loop `vm`, `report` reads the inner loop `disk` of its own vm only: the
    lists of that iteration's instances (it got every vm's, some not yet run)."""
    rec = apply(tmp_path, """\
        name: nested
        commands:
          - id: vm
            for_each: [a, b]
            as: v
            changes: false
            run: {command: [echo, "{{ v }}"]}
            children:
              - id: disk
                for_each: [k1, k2]
                as: k
                changes: false
                run: {command: [echo, "{{ v }}-{{ k }}"]}
                outputs: {o: "{{ result.stdout | trim }}"}
              - id: report
                needs: disk
                changes: false
                run:
                  command: [echo, "{{ commands.disk.outputs | map(attribute='o') | join(',') }}"]
        """)
    assert rec.outcome.status == "SUCCEEDED", rec.outcome
    reports = {i: c.result["stdout"] for i, c in rec.commands.items() if "report" in i}
    assert reports == {"report[a]": "a-k1,a-k2\n", "report[b]": "b-k1,b-k2\n"}, reports


# -- concurrency -------------------------------------------------------------------------

# Each call arrives, then waits for all `width` calls to have arrived: they only all
# return if they are in flight together. A bounded wait, so a failure cannot hang: the
# first to give up releases the others, which give up too.
FANOUT_MODULE = """\
import asyncio

arrived = 0
everyone = asyncio.Event()
gave_up = False

async def meet(width):
    global arrived, gave_up
    arrived += 1
    if arrived == width:
        everyone.set()
    try:
        await asyncio.wait_for(everyone.wait(), 60)
    except TimeoutError:
        gave_up = True
        everyone.set()
    if gave_up:
        raise RuntimeError(f"gave up: {arrived} of {width} arrived")
    return {"met": arrived}
"""

PEAK_MODULE = """\
import asyncio

current = 0
peak = 0

async def work(seconds):
    global current, peak
    current += 1
    peak = max(peak, current)
    try:
        await asyncio.sleep(seconds)
    finally:
        current -= 1
    return peak
"""


def test_500_wide_fan_out_runs_concurrently_on_one_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """500 async python commands that each wait for all the others to have started all
    succeed: they run together. And the executor starts no thread while doing so."""
    (tmp_path / "planctl_fanout_mod.py").write_text(FANOUT_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    before = threading.active_count()
    counts: list[int] = []
    rec = apply(tmp_path, """\
        name: fan-out
        vars: {items: []}
        settings: {max_parallel: 500}
        commands:
          - id: nap
            for_each: "{{ items }}"
            run: {python: {function: "planctl_fanout_mod:meet", kwargs: {width: 500}}}
            changes: false
        """, variables={"items": list(range(500))},
        listener=lambda _event: counts.append(threading.active_count()))
    assert rec.outcome.status == "SUCCEEDED"
    assert len(rec.commands) == 500
    assert {c.status for c in rec.commands.values()} == {"SUCCEEDED"}
    assert rec.commands["nap[499]"].result == {"met": 500, "value": {"met": 500}}
    assert counts and max(counts) <= before, (before, max(counts))


def test_max_parallel_caps_the_commands_in_flight(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """With max_parallel 3, twenty commands never run more than three at a time, and do
    reach three."""
    (tmp_path / "planctl_peak_mod.py").write_text(PEAK_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    rec = apply(tmp_path, """\
        name: capped
        vars: {items: []}
        settings: {max_parallel: 3}
        commands:
          - id: work
            for_each: "{{ items }}"
            run: {python: {function: "planctl_peak_mod:work", kwargs: {seconds: 0.03}}}
            changes: false
        """, variables={"items": list(range(20))})
    assert rec.outcome.status == "SUCCEEDED"
    assert sys.modules["planctl_peak_mod"].peak == 3  # type: ignore[attr-defined]
    # The running count is also visible in the log: never more than 3 between events.
    in_flight = peak = 0
    for event in rec.command_events():
        if event.data["status"] == "STARTING":
            in_flight += 1
        elif event.data["status"] == "SUCCEEDED":
            in_flight -= 1
        peak = max(peak, in_flight)
    assert peak == 3


def test_max_parallel_defaults_to_16(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan that sets no max_parallel runs sixteen commands at a time (spec, settings)."""
    (tmp_path / "planctl_peak_default_mod.py").write_text(PEAK_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    rec = apply(tmp_path, """\
        name: default-cap
        vars: {items: []}
        commands:
          - id: work
            for_each: "{{ items }}"
            run: {python: {function: "planctl_peak_default_mod:work", kwargs: {seconds: 0.1}}}
            changes: false
        """, variables={"items": list(range(40))})
    assert rec.outcome.status == "SUCCEEDED"
    assert sys.modules["planctl_peak_default_mod"].peak == 16  # type: ignore[attr-defined]


def test_max_parallel_option_overrides_the_plan(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """ApplyOptions(max_parallel=1) runs a plan that allows 16 one command at a time."""
    (tmp_path / "planctl_peak_one_mod.py").write_text(PEAK_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    rec = apply(tmp_path, """\
        name: one-at-a-time
        vars: {items: []}
        commands:
          - id: work
            for_each: "{{ items }}"
            run: {python: {function: "planctl_peak_one_mod:work", kwargs: {seconds: 0.01}}}
            changes: false
        """, variables={"items": list(range(5))}, max_parallel=1)
    assert rec.outcome.status == "SUCCEEDED"
    assert sys.modules["planctl_peak_one_mod"].peak == 1  # type: ignore[attr-defined]


# -- secrets -----------------------------------------------------------------------------

SECRET = "s3cr3t-V4lue-9f8e7d"

SECRET_PLAN = """\
name: secret
secrets:
  token: {env: PLANCTL_TEST_TOKEN}
commands:
  - id: use
    run:
      command: [sh, -c, 'printf %s "$1" > seen.txt; echo "token=$1"; echo "err $1" >&2', sh,
                "{{ token }}"]
    outputs: {echoed: "{{ result.stdout | trim }}"}
    irreversible: true
  - id: leak_on_failure
    needs: [use]
    run: {command: [sh, -c, 'echo "denied for $1" >&2; exit 1', sh, "{{ token }}"]}
    irreversible: true
"""


def test_secret_is_used_but_never_stored_or_printed(tmp_path: Path) -> None:
    """A secret from the environment reaches the command's argv, but its value is in neither
    the state files (database and WAL), nor the events, nor the CLI's output."""
    write_plan(tmp_path, SECRET_PLAN)
    done = planctl(tmp_path, "apply", "plan.yaml", "--no-rollback",
                   env={"PLANCTL_TEST_TOKEN": SECRET})
    assert done.returncode == 2, done.stdout + done.stderr
    assert (tmp_path / "seen.txt").read_text() == SECRET
    state = tmp_path / ".planctl"
    files = sorted(state.glob("state.db*"))
    assert state / "state.db" in files
    for path in files:
        leaked = SECRET.encode() in path.read_bytes()
        assert not leaked, path
    assert SECRET not in done.stdout and SECRET not in done.stderr
    run, commands, _, events = read_state(state / "state.db")
    assert commands["use"].status == "SUCCEEDED"
    assert commands["use"].outputs == {"echoed": "token=\u00absecret:token\u00bb"}  # named
    assert commands["leak_on_failure"].status == "FAILED"
    assert "***" in (commands["leak_on_failure"].error or "")
    assert SECRET not in json.dumps([e.data for e in events])
    assert SECRET not in json.dumps(run.snapshot) + json.dumps(run.variables)
    shown = planctl(tmp_path, "show", "--last")
    assert SECRET not in shown.stdout


def test_secret_is_kept_out_of_listener_events(tmp_path: Path) -> None:
    """Through the API, the listener never receives a secret's value."""
    rec = apply(tmp_path, SECRET_PLAN, secrets={"token": SECRET}, on_failure="stop")
    assert (tmp_path / "seen.txt").read_text() == SECRET
    assert rec.heard
    assert SECRET not in repr([e.data for e in rec.heard])


def test_missing_secret_exits_3_before_anything_runs(tmp_path: Path) -> None:
    """A required secret that is not set makes `apply` exit 3, naming it, before any command
    runs and before a state store is created."""
    write_plan(tmp_path, SECRET_PLAN)
    env = {k: v for k, v in os.environ.items() if k != "PLANCTL_TEST_TOKEN"}
    done = subprocess.run([PY, "-m", "planner", "apply", "plan.yaml"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "PLANCTL_TEST_TOKEN" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "seen.txt").exists()
    assert not (tmp_path / ".planctl").exists()


# -- bad input ---------------------------------------------------------------------------


def test_invalid_plan_exits_3_without_creating_a_state_store(tmp_path: Path) -> None:
    """An invalid plan makes `apply` exit 3 with a located error and no state store."""
    write_plan(tmp_path, """\
        name: broken
        commands:
          - id: a
            run: {command: [touch, a.txt]}
            retries: many
        """)
    done = planctl(tmp_path, "apply", "plan.yaml")
    assert done.returncode == 3, done.stdout + done.stderr
    assert re.search(r"plan\.yaml:\d+:\d+: error:", done.stderr)
    assert not (tmp_path / ".planctl").exists()
    assert not (tmp_path / "a.txt").exists()


def test_unknown_var_exits_3_without_creating_a_state_store(tmp_path: Path) -> None:
    """`--var` naming a variable the plan does not declare exits 3, and nothing runs."""
    write_plan(tmp_path, SMALL)
    done = planctl(tmp_path, "apply", "plan.yaml", "--var", "whom=me")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "whom" in done.stderr
    assert not (tmp_path / ".planctl").exists()
    assert not (tmp_path / "out.txt").exists()


def test_missing_plan_file_exits_3(tmp_path: Path) -> None:
    """A plan path that does not exist exits 3 with a message, and no state store."""
    done = planctl(tmp_path, "apply", "nope.yaml")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "nope.yaml" in done.stderr
    assert not (tmp_path / ".planctl").exists()


def test_secret_in_an_entity_is_refused_or_never_stored(tmp_path: Path) -> None:
    """A secret used in an `entity` template is either refused when the plan loads or kept
    out of the state file like every other use of it."""
    text = """\
        name: secret-entity
        secrets:
          token: {env: PLANCTL_TEST_TOKEN}
        commands:
          - id: a
            entity: "account/{{ token }}"
            run: {command: [echo, ok]}
            changes: false
        """
    try:
        rec = apply(tmp_path, text, secrets={"token": SECRET})
    except planner.PlanError:
        return
    assert rec.outcome.status == "SUCCEEDED"
    for path in sorted(tmp_path.glob("state.db*")):
        leaked = SECRET.encode() in path.read_bytes()
        assert not leaked, path


# -- timeouts and state files ------------------------------------------------------------


def test_default_timeout_kills_a_command_that_runs_too_long(tmp_path: Path) -> None:
    """A `defaults.timeout` applies to every command: one that outlives it fails as timed out."""
    rec = apply(tmp_path, """\
        name: too-long
        defaults: {timeout: 0.2s}
        settings: {on_failure: stop}
        commands:
          - id: sleepy
            run: {command: [sleep, "30"]}
            irreversible: true
        """)
    sleepy = rec.commands["sleepy"]
    assert sleepy.status == "FAILED"
    assert sleepy.error == "timed out after 0.2s"
    assert sleepy.ended_at is not None and sleepy.started_at is not None
    assert sleepy.ended_at - sleepy.started_at < 25


def test_cli_state_file_that_is_not_a_database_exits_3(tmp_path: Path) -> None:
    """`apply --state` on a file that is not a state store exits 3 and runs nothing."""
    write_plan(tmp_path, SMALL)
    (tmp_path / "junk.db").write_bytes(b"definitely not sqlite\n" * 200)
    done = planctl(tmp_path, "apply", "plan.yaml", "--state", "junk.db")
    assert done.returncode == 3, done.stdout + done.stderr
    assert "junk.db" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out.txt").exists()


# -- embedding: threads, child processes, signals -----------------------------------------

PY311 = sys.version_info < (3, 12)


@pytest.mark.skipif(not hasattr(os, "pidfd_open"),
                    reason="without pidfd asyncio waits for each child in a thread")
def test_subprocess_fan_out_starts_no_thread_per_process(tmp_path: Path) -> None:
    """Fifty `command` subprocesses in flight at once are watched without a thread each."""
    before = threading.active_count()
    counts: list[int] = []
    rec = apply(tmp_path, """\
        name: processes
        vars: {items: []}
        settings: {max_parallel: 50}
        commands:
          - id: nap
            for_each: "{{ items }}"
            run: {command: [sleep, "0.3"]}
            changes: false
        """, variables={"items": list(range(50))},
        listener=lambda _event: counts.append(threading.active_count()))
    assert rec.outcome.status == "SUCCEEDED"
    assert counts and max(counts) <= before, (before, max(counts))


# planctl as on macOS or a BSD: no os.pidfd_open, and no /proc (the paths planner.orphans
# reads point at a directory that does not exist), set up before the CLI starts.
WITHOUT_LINUX = """\
import os, pathlib, runpy
del os.pidfd_open
from planner import orphans
missing = pathlib.Path(os.environ["NO_PROC"])
orphans.stat.__defaults__ = (missing,)
orphans.scan.__kwdefaults__ = orphans.alive.__kwdefaults__ = {"proc": missing}
runpy.run_module("planner", run_name="__main__")
"""


def test_without_pidfd_and_proc_a_run_rolls_back_and_resumes(tmp_path: Path) -> None:
    """Where there is neither os.pidfd_open nor /proc, subprocess actions still run (asyncio
    watches them its own way), a failed run is rolled back, and a run killed with -9 is
    resumed: its dead holder is told by its pid alone."""
    write_plan(tmp_path, """\
        name: portable
        vars: {ok: true}
        commands:
          - id: made
            exists: {command: [test, -e, made.txt]}
            run: {command: [touch, made.txt]}
            inverse: {command: [rm, made.txt]}
          - id: last
            needs: made
            run: {shell: "touch started; until test -e go; do sleep 0.05; done; {{ ok | lower }}"}
            changes: false
        """)
    env = {**os.environ, "NO_COLOR": "1", "NO_PROC": str(tmp_path / "no-proc")}
    argv = [PY, "-c", WITHOUT_LINUX]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*argv, *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120, check=False)

    (tmp_path / "go").touch()
    failed = cli("apply", "plan.yaml", "--var", "ok=false")
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert not (tmp_path / "made.txt").exists()

    for name in ("go", "started"):
        (tmp_path / name).unlink()
    killed = subprocess.Popen([*argv, "apply", "plan.yaml"], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    try:
        wait_for("the last command to start", (tmp_path / "started").exists, proc=killed)
    finally:
        killed.kill()
        killed.wait()
    (tmp_path / "go").touch()  # the shell left running ends too
    resumed = cli("resume", "--last")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "SUCCEEDED" in resumed.stderr + resumed.stdout
    assert (tmp_path / "made.txt").exists()


def test_without_proc_a_lock_holder_is_alive_while_its_pid_is() -> None:
    """Without /proc the signal check alone decides: a live pid holds, a reaped one does
    not, and a zombie (ended, not yet reaped) still holds until it is reaped, where /proc
    would have shown it ended (docs/state.md)."""
    from planner import executor, orphans

    child = subprocess.Popen(["true"])
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # ended, left a zombie
        if Path("/proc/self/stat").exists():
            assert not executor._pid_alive(child.pid)
        defaults = orphans.stat.__defaults__
        orphans.stat.__defaults__ = (Path("/no/proc/here"),)
        try:
            assert executor._pid_alive(os.getpid())
            assert executor._pid_alive(child.pid)
        finally:
            orphans.stat.__defaults__ = defaults
    finally:
        child.wait()
    assert not executor._pid_alive(child.pid)


def _in_thread(work: Callable[[], Any], timeout: float = 15) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            out["error"] = repr(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        out["error"] = f"still running after {timeout:g} s"
    return out


def test_asyncio_subprocesses_in_other_threads_still_work_after_apply(tmp_path: Path) -> None:
    """After apply_plan returns, an embedding program can still run asyncio subprocesses on
    an event loop in another thread."""
    rec = apply(tmp_path, SMALL)
    assert rec.outcome.status == "SUCCEEDED"

    async def spawn() -> int:
        proc = await asyncio.create_subprocess_exec("true")
        return await proc.wait()

    assert _in_thread(lambda: asyncio.run(spawn())) == {"value": 0}


@pytest.mark.filterwarnings("ignore:A loop is being detached:RuntimeWarning")
def test_two_runs_in_two_threads_both_finish(tmp_path: Path) -> None:
    """Two plans applied at once from two threads (as an embedding CI service would) both
    finish and succeed."""
    long_path = write_plan(tmp_path, """\
        name: long
        commands:
          - id: a
            run: {command: [sleep, "0.5"]}
            changes: false
          - id: b
            needs: [a]
            run: {command: [echo, b]}
            changes: false
        """, "long.yaml")
    short_path = write_plan(tmp_path, """\
        name: short
        commands:
          - id: s
            run: {command: [echo, s]}
            changes: false
        """, "short.yaml")
    long_started = threading.Event()

    def run(path: Path, db: str, listener: Callable[[EventRecord], None] | None) -> str:
        store = planner.SQLiteStore(tmp_path / db)
        try:
            return str(planner.apply_plan(planner.load_plan(path), store, listener=listener,
                                          handle_signals=False).status)
        finally:
            store.close()

    def long_run() -> str:
        return run(long_path, "long.db", lambda e: long_started.set())

    def short_run() -> str:
        long_started.wait(10)
        time.sleep(0.1)
        return run(short_path, "short.db", None)

    results: dict[str, dict[str, Any]] = {}
    threads = [
        threading.Thread(target=lambda: results.__setitem__("long", _in_thread(long_run, 3))),
        threading.Thread(target=lambda: results.__setitem__("short", _in_thread(short_run, 3))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == {"long": {"value": "SUCCEEDED"}, "short": {"value": "SUCCEEDED"}}


def test_apply_restores_the_callers_signal_handlers(tmp_path: Path) -> None:
    """An embedding program's SIGTERM and SIGINT handlers are in place again after apply_plan."""
    def mine(signum: int, frame: Any) -> None:
        pass

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGTERM, mine)
        signal.signal(signal.SIGINT, mine)
        rec = apply(tmp_path, SMALL)
        assert rec.outcome.status == "SUCCEEDED"
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) is mine
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


# -- a rollback elsewhere; a probe that cannot answer; a bug in a step ---------------------


def test_a_run_is_rolled_back_from_another_directory(tmp_path: Path) -> None:
    """The run keeps its plan's absolute path: `planctl rollback` from another working
    directory (a CI job that downloaded the state) runs the inverses where the run ran."""
    project = tmp_path / "project"
    (project / "plans").mkdir(parents=True)
    (project / "plans" / "p.yaml").write_text(
        "name: p\ncommands:\n  - id: a\n    run: {command: [touch, made]}\n"
        "    inverse: {command: [rm, made]}\n    exists: {command: [test, -e, made]}\n")
    env = {**os.environ, "PLANCTL_STATE": str(tmp_path / "state.db"), "NO_COLOR": "1",
           "PYTHONPATH": str(REPO)}
    cli = [PY, "-m", "planner"]
    done = subprocess.run([*cli, "apply", "plans/p.yaml"], cwd=project, env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (project / "plans" / "made").exists()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    undo = subprocess.run([*cli, "rollback", "--last"], cwd=elsewhere, env=env,
                          capture_output=True, text=True)
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert not (project / "plans" / "made").exists()
    run, _, _, _ = read_state(tmp_path / "state.db")
    assert run.plan_file == str(project / "plans" / "p.yaml")


def test_a_probe_that_cannot_answer_in_a_rollback_is_a_revert_failure(tmp_path: Path) -> None:
    """Before an inverse, an `exists` that cannot answer (here: it times out) marks the
    command REVERT_FAILED with the probe's error, and nothing is removed (this broke a
    status rule and the step failed with no trace)."""
    rec = apply(tmp_path, """\
        name: p
        commands:
          - id: a
            run: {command: [touch, made]}
            exists: {command: [sh, -c, "[ -e hang ] && sleep 5; test -e made"], timeout: 0.3s}
            inverse: {command: [rm, made]}
        """)
    assert rec.outcome.status == "SUCCEEDED"
    (tmp_path / "hang").touch()
    store = planner.SQLiteStore(tmp_path / "state.db")
    try:
        done = planner.rollback_run(store, rec.run.id, secrets={}, handle_signals=False)
    finally:
        store.close()
    assert done.status == "ROLLBACK_FAILED"
    assert (tmp_path / "made").exists()
    [left] = done.leftovers
    assert (left.command, left.status) == ("a", "REVERT_FAILED")
    assert left.reason.startswith("exists probe could not answer: ")
    _, commands, _, _ = read_state(tmp_path / "state.db")
    assert commands["a"].status == "REVERT_FAILED"
    assert commands["a"].error == left.reason


def test_a_bug_in_a_step_is_not_reported_as_a_plain_failure(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An exception no step should raise (a bug in planctl) ends the run with that
    exception, after the other steps, instead of passing for the step's failure."""
    def broken(*args: Any, **kwargs: Any) -> bool:
        raise RuntimeError("a bug")

    from planner.executor import Runner

    monkeypatch.setattr(Runner, "_acted", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        apply(tmp_path, """\
            name: p
            commands:
              - id: a
                changes: false
                run: {command: [sh, -c, "sleep 0.01"]}
            """)


def test_a_heartbeat_the_store_refused_once_is_renewed_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A heartbeat that fails (the store busy past its timeout: another process held a
    write transaction for over 30 s) is tried again at the next beat, with a warning.
    Before, the first failure ended the heartbeat for good: the live run looked dead
    (`planctl locks`: "dead (40s ago)") until it ended, and could be taken over."""
    monkeypatch.setenv("PLANCTL_LOCK_LEASE", "0.6")  # a beat every 0.2 s

    beats: list[float] = []

    class BusyOnce(planner.SQLiteStore):
        def heartbeat(self, run_id: str, now: float) -> bool:
            beats.append(now)
            if len(beats) == 1:
                raise sqlite3.OperationalError("database is locked")
            return super().heartbeat(run_id, now)

    path = write_plan(tmp_path, """\
        name: beats
        commands:
          - id: slow
            changes: false
            run: {shell: "until [ -e go ]; do sleep 0.05; done"}
        """)
    heard: list[EventRecord] = []

    def go_after_three_beats() -> None:
        try:
            wait_for("three heartbeats", lambda: len(beats) >= 3, timeout=10)
        finally:
            (tmp_path / "go").touch()

    store = BusyOnce(tmp_path / "state.db")
    waiter = threading.Thread(target=go_after_three_beats)
    waiter.start()
    try:
        outcome = planner.apply_plan(planner.load_plan(path), store, listener=heard.append,
                                     handle_signals=False)
    finally:
        (tmp_path / "go").touch()
        waiter.join()
        store.close()
    assert outcome.status == "SUCCEEDED"
    assert len(beats) >= 3
    warnings = [e.data["message"] for e in heard if e.kind == "warning"]
    assert warnings == ["heartbeat not recorded (database is locked): trying again in 0.2s"]


def test_outputs_the_exists_probe_cannot_give_leave_the_others(tmp_path: Path) -> None:
    """A command found present by `exists` takes its outputs from the probe. An output
    that reads what only `run` gives (`poll` here) is not available, with a warning naming
    it; the others are kept, and a dependent reads them. Before, one such output dropped
    them all, and the dependent failed on an undefined output."""
    (tmp_path / "present").write_text("here\n")
    rec = apply(tmp_path, PROBE_OUTPUTS_PLAN)  # `exists` finds the file present
    assert rec.outcome.status == "SUCCEEDED", rec.events
    assert rec.status("make") == "UNCHANGED"
    assert rec.commands["make"].outputs == {"content": "here"}
    assert rec.commands["use"].result["stdout"] == "here\n"
    warnings = [e.data["message"] for e in rec.heard if e.kind == "warning"]
    assert len(warnings) == 1 and warnings[0].startswith(
        "outputs not available from the exists probe: job: "), warnings
    assert "poll" in warnings[0]
