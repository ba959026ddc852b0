"""Entity locks, signals and --cancel-inflight, end to end: real planctl processes running the
seed plan (vm-from-template) against its `store` tool and one SQLite state file, started,
signalled and killed from here. kill -9 at every crash point is test_crash_sweep.py's job.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from seedplan import Seed, finish, make_seed, signal_when, wait_for

SLOW = ["--var", "copy_seconds=2"]
DISKS = ("disk0", "disk1", "disk2")
ENTITIES = ["image/vm-42-disk0", "image/vm-42-disk1", "image/vm-42-disk2", "vm/vm-42"]

# Another plan that touches the seed plan's VM.
OTHER_PLAN = """\
name: inspect-vm
commands:
  - id: inspect
    entity: vm/vm-42
    changes: false
    run: {command: [./store, vm-exists, vm-42]}
"""

# One long async copy that can be cancelled, and one command that fails once the copy started.
CANCEL_PLAN = """\
name: cancel-inflight
vars:
  copy_seconds: 5
defaults:
  env: {STORE_COPY_SECONDS: "{{ copy_seconds }}"}
commands:
  - id: clone
    entity: image/img-slow
    exists: {command: [./store, image-exists, img-slow]}
    run:
      command: [./store, copy-image, disk0, img-slow]
      async:
        handle: "{{ result.stdout | trim }}"
        poll: {command: [./store, task-status, "{{ handle }}"]}
        until: "{{ poll.stdout | trim == 'finished' }}"
        failed_when: "{{ poll.stdout | trim in ['failed', 'aborted'] }}"
        interval: 0.05s
        max_interval: 0.1s
        timeout: 1m
        cancel: {command: [./store, abort-task, "{{ handle }}"]}
    inverse: {command: [./store, remove-image, img-slow]}
  - id: breaks
    changes: false
    run:
      shell: 'until ls "$STORE_DIR"/tasks/*.json >/dev/null 2>&1; do sleep 0.05; done; exit 1'
"""

# One async copy whose outputs, and a downstream command, read the forward `result`.
RESULT_PLAN = """\
name: async-result
vars:
  copy_seconds: 2
defaults:
  env: {STORE_COPY_SECONDS: "{{ copy_seconds }}"}
commands:
  - id: clone
    entity: image/img-out
    exists: {command: [./store, image-exists, img-out]}
    run:
      command: [./store, copy-image, disk0, img-out]
      async:
        handle: "{{ result.stdout | trim }}"
        poll: {command: [./store, task-status, "{{ handle }}"]}
        until: "{{ poll.stdout | trim == 'finished' }}"
        failed_when: "{{ poll.stdout | trim in ['failed', 'aborted'] }}"
        interval: 0.05s
        max_interval: 0.1s
    inverse: {command: [./store, remove-image, img-out]}
    outputs: {task: "{{ result.stdout | trim }}"}
  - id: report
    needs: clone
    changes: false
    run: {command: [echo, "copied by {{ commands.clone.outputs.task }}"]}
    outputs: {line: "{{ result.stdout | trim }}"}
"""


@pytest.fixture
def seed(tmp_path: Path) -> Seed:
    return make_seed(tmp_path)


def _held_by_one_run(seed: Seed) -> bool:
    locks = seed.locks()
    return sorted(x.entity for x in locks) == ENTITIES and len({x.run_id for x in locks}) == 1


def _polling(seed: Seed, copies: int = 3) -> bool:
    """Every copy's handle is committed: the run is polling all its tasks."""
    if not seed.state.exists():
        return False
    with seed.db() as store:
        run_id = store.last_run_id()
        tasks = store.get_tasks(run_id) if run_id else []
    return sum(t.status == "RUNNING" for t in tasks) == copies


def _refused_while_alive(seed: Seed, run_id: str, proc: subprocess.Popen[str]) -> None:
    """`resume` and `rollback` of a run whose apply ``proc`` is alive exit 4 naming it."""
    for verb in ("resume", "rollback"):
        done = seed.planctl(verb, run_id)
        assert done.returncode == 4, f"{verb}: {done.stdout}{done.stderr}"
        assert "still running" in done.stderr and f"pid {proc.pid}" in done.stderr


def _kill_while_polling(seed: Seed) -> None:
    """Start a slow apply of the seed plan and kill -9 it once it polls every copy."""
    proc = seed.spawn("apply", str(seed.plan), *SLOW)
    try:
        wait_for("the copies to be polled", lambda: _polling(seed), proc=proc)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def _spawn_holder(seed: Seed, copy_seconds: float) -> tuple[subprocess.Popen[str], str]:
    """Start an apply of the seed plan and wait until it holds its entities."""
    proc = seed.spawn("apply", str(seed.plan), "--var", f"copy_seconds={copy_seconds}")
    try:
        wait_for("the apply to lock its entities", lambda: _held_by_one_run(seed), proc=proc)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    return proc, seed.locks()[0].run_id


@pytest.fixture
def holder(seed: Seed) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """An apply whose copies take a minute, holding the seed entities; killed afterwards."""
    proc, run_id = _spawn_holder(seed, 60)
    try:
        yield proc, run_id
        assert proc.poll() is None, "the holder ended during the test"
    finally:
        proc.kill()
        proc.communicate()
        seed.store("reset")  # stops the detached copy workers


def _copies(seed: Seed) -> dict[str, int]:
    counts = seed.mutations()
    return {disk: counts[f"copy-image vm-42-{disk}"] for disk in DISKS}


# -- entity locks -----------------------------------------------------------------------------


def test_a_second_run_on_held_entities_exits_4_naming_the_holder(
        seed: Seed, holder: tuple[subprocess.Popen[str], str]) -> None:
    """While an apply holds the seed entities, a second apply, or a resume or rollback of the
    live run, exits 4 at once naming the holder's run id, pid and host, and records nothing."""
    proc, run_id = holder
    second = seed.apply(*SLOW)
    assert second.returncode == 4, second.stdout + second.stderr
    assert proc.poll() is None, "the second apply waited for the first to end"
    assert f"by run {run_id}" in second.stderr
    assert f"pid {proc.pid}" in second.stderr
    assert f"on {socket.gethostname()}" in second.stderr
    assert "--lock-timeout" in second.stderr
    _refused_while_alive(seed, run_id, proc)
    with seed.db() as store:
        assert [r.id for r in store.list_runs()] == [run_id]
    assert seed.mutations()["create-vm vm-42"] == 1


def test_lock_timeout_waits_for_the_holder_then_runs(seed: Seed) -> None:
    """`planctl locks` lists the held entities while a run holds them; a second apply with
    --lock-timeout waits for it, then finds everything in place (UNCHANGED) and succeeds, and
    afterwards `planctl locks` says no locks are held."""
    proc, run_id = _spawn_holder(seed, 3)
    try:
        listed = seed.planctl("locks")
        assert listed.returncode == 0, listed.stderr
        rows = [line.split() for line in listed.stdout.splitlines()[1:]]
        assert [row[0] for row in rows] == ENTITIES
        assert {row[1] for row in rows} == {run_id}
        assert {row[2] for row in rows} == {f"{socket.gethostname()}:{proc.pid}"}
        assert all(row[-1] == "alive" for row in rows), listed.stdout

        launched = time.time()
        second = seed.apply(*SLOW, "--lock-timeout", "10")
        assert second.returncode == 0, second.stdout + second.stderr
        code, _, err = finish(proc)
        assert code == 0, err
        with seed.db() as store:
            first, waited = store.get_run(run_id), store.get_run(store.last_run_id() or "")
            assert first is not None and waited is not None and waited.id != run_id
            assert first.status == waited.status == "SUCCEEDED"
            # Launched while the first run held the entities, it started once they were free.
            assert first.ended_at is not None and launched < first.ended_at
            assert waited.started_at >= first.ended_at
            statuses = {i: c.status for i, c in store.get_commands(waited.id).items()}
        assert statuses == {"add_vm": "UNCHANGED", "clone[disk0]": "UNCHANGED",
                            "clone[disk1]": "UNCHANGED", "clone[disk2]": "UNCHANGED",
                            "start_vm": "SUCCEEDED"}
        assert _copies(seed) == {"disk0": 1, "disk1": 1, "disk2": 1}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    after = seed.planctl("locks")
    assert (after.returncode, after.stdout) == (0, "no locks held\n")


def _in_its_loop(pid: int) -> bool:
    """Whether process ``pid`` waits in its event loop (epoll): the run's loop, which
    installed the run's SIGINT/SIGTERM handlers first, waiting between lock attempts.
    (A SIGTERM handler alone no longer tells: planctl has one from its start.)"""
    return Path(f"/proc/{pid}/wchan").read_text() in ("ep_poll", "do_epoll_wait")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_signals_while_waiting_for_a_lock_stop_the_wait_and_record_nothing(
        seed: Seed, holder: tuple[subprocess.Popen[str], str]) -> None:
    """An apply waiting (--lock-timeout) for entities another run holds stops at once on
    SIGTERM then SIGINT: exit 130, no run recorded, no lock taken. It used to ignore both,
    wait for the holder, then record a run INTERRUPTED that kept every entity locked."""
    _, run_id = holder
    waiting = seed.spawn("apply", str(seed.plan), *SLOW, "--lock-timeout", "120")
    code, out, err = signal_when(waiting, "the waiting apply to wait in its event loop",
                                 lambda: _in_its_loop(waiting.pid),
                                 signal.SIGTERM, signal.SIGINT, ready_timeout=60, timeout=30)
    assert code == 130, out + err
    with seed.db() as store:
        assert [r.id for r in store.list_runs()] == [run_id]
    assert {x.run_id for x in seed.all_locks()} == {run_id}
    assert "INTERRUPT" not in out + err
    assert err.splitlines()[-1] == "planctl: interrupted: SIGTERM while waiting for entity " \
        "locks another run holds: nothing was recorded", err


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_a_signal_while_waiting_for_a_lock_ends_the_json_stream_with_an_error(
        seed: Seed, holder: tuple[subprocess.Popen[str], str]) -> None:
    """With --output json, an apply stopped while it waits for locks ends its stdout with
    one `error` object (`interrupted`, exit 130), as output.md promises for whatever ends
    planctl before a run. Before, it exited 130 saying nothing at all."""
    waiting = seed.spawn("apply", str(seed.plan), *SLOW, "--lock-timeout", "120", "-o", "json")
    code, out, err = signal_when(waiting, "the waiting apply to wait in its event loop",
                                 lambda: _in_its_loop(waiting.pid), signal.SIGINT, timeout=30)
    assert code == 130, out + err
    (line,) = out.splitlines()
    error = json.loads(line)
    assert (error["kind"], error["error"], error["exit_code"], error["run_id"]) == \
        ("error", "interrupted", 130, None)
    assert error["message"] == "SIGINT while waiting for entity locks another run holds: " \
        "nothing was recorded"


@pytest.mark.skipif(not Path("/proc/self/wchan").exists(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_planctl_reads_its_inputs_exits_130_recording_nothing(
        tmp_path: Path, sig: signal.Signals) -> None:
    """SIGTERM (a CI cancelling the job) while planctl still reads what it is to run (here a
    --vars-file that is a named pipe, held open by this test) stops it as Ctrl-C does:
    exit 130, `planctl: interrupted`, the JSON `error` object, nothing recorded. SIGTERM
    used to kill it there (exit -15) without a word."""
    import os

    plan = tmp_path / "plan.yaml"
    plan.write_text("name: quick\nvars: {who: x}\ncommands:\n"
                    "  - {id: a, changes: false, run: {command: [echo, '{{ who }}']}}\n")
    fifo = tmp_path / "vars.yaml"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [sys.executable, "-m", "planner", "apply", str(plan), "--vars-file", str(fifo),
         "-s", str(tmp_path / "s.db"), "-o", "json"], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    writer: list[int] = []

    def reading() -> bool:  # a writer can open the pipe once planctl opened it to read
        try:
            writer.append(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            return False
        return True

    def blocked() -> bool:
        # In the read itself: a signal that comes between the open and the read is
        # handled only once the read returns, which this test's open pipe never lets it.
        return "pipe_read" in Path(f"/proc/{proc.pid}/wchan").read_text()

    try:
        wait_for("planctl to open its --vars-file", reading, proc=proc)
        wait_for("planctl to block reading its --vars-file", blocked, proc=proc)
        proc.send_signal(sig)
        code, out, err = finish(proc, timeout=30)
    finally:
        for fd in writer:
            os.close(fd)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert code == 130, out + err
    (line,) = out.splitlines()
    error = json.loads(line)
    assert (error["kind"], error["error"], error["exit_code"], error["run_id"]) == \
        ("error", "interrupted", 130, None)
    assert err.splitlines()[-1].startswith("planctl: interrupted"), err
    assert not (tmp_path / "s.db").exists()


def test_unlock_refuses_a_live_holder_without_force(seed: Seed) -> None:
    """`planctl unlock` of an entity held by a live run exits 3 and keeps the lock; with
    --force it releases it, saying that the holder stops, which it does (exit 130)."""
    proc, run_id = _spawn_holder(seed, 60)
    try:
        refused = seed.planctl("unlock", "vm/vm-42")
        assert refused.returncode == 3, refused.stdout + refused.stderr
        assert f"held by run {run_id}, which is alive" in refused.stderr
        assert "--force" in refused.stderr
        assert sorted(x.entity for x in seed.locks()) == ENTITIES
        forced = seed.planctl("unlock", "--force", "vm/vm-42")
        assert forced.returncode == 0, forced.stdout + forced.stderr
        assert f"unlocked vm/vm-42 (was held by run {run_id}); its planctl (pid {proc.pid}" \
            in forced.stdout
        assert "vm/vm-42" not in [x.entity for x in seed.locks()]
        code, out, err = finish(proc)
        assert code == 130, out + err
        assert f"run {run_id} is no longer held by this planctl" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        seed.store("reset")  # stops the detached copy workers


def test_locks_of_a_killed_run_stay_until_unlocked_or_resumed(seed: Seed) -> None:
    """After kill -9 of an apply its entities stay locked: another plan touching one exits 4
    saying the holder is not alive and how to recover; `planctl unlock` releases that entity,
    and `planctl resume --last` takes the run's locks over and finishes it."""
    _kill_while_polling(seed)
    run_id = seed.last_run().id
    assert sorted(x.entity for x in seed.locks()) == ENTITIES
    assert {x.run_id for x in seed.locks()} == {run_id}

    other = seed.plan.parent / "other.yaml"
    other.write_text(OTHER_PLAN)
    blocked = seed.planctl("apply", str(other))
    assert blocked.returncode == 4, blocked.stdout + blocked.stderr
    assert f"entity vm/vm-42 is locked by run {run_id}" in blocked.stderr
    assert "not alive" in blocked.stderr
    for hint in (f"planctl resume {run_id}", f"planctl rollback {run_id}",
                 "planctl unlock vm/vm-42"):
        assert hint in blocked.stderr
    listed = seed.planctl("locks")
    assert listed.stdout.count("dead (") == 4, listed.stdout

    released = seed.planctl("unlock", "vm/vm-42")
    assert released.returncode == 0, released.stdout + released.stderr
    assert sorted(x.entity for x in seed.locks()) == ENTITIES[:3]

    resumed = seed.planctl("resume", "--last")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert seed.last_run().status == "SUCCEEDED"
    assert seed.listing() == ["image vm-42-disk0", "image vm-42-disk1", "image vm-42-disk2",
                              "vm vm-42"]
    assert _copies(seed) == {"disk0": 1, "disk1": 1, "disk2": 1}
    assert seed.locks() == []
    assert seed.planctl("apply", str(other)).returncode == 0


def test_a_rollback_of_a_killed_run_follows_its_tasks_before_it_asks_exists(
        seed: Seed) -> None:
    """kill -9 while the copies run, then rollback: the copies still run remotely, so the
    rollback follows each recorded task to its end before it asks `exists` (which would
    say absent and let the image appear afterwards, never removed), then removes them all.
    `--dry-run` says so before."""
    _kill_while_polling(seed)
    dry = seed.planctl("rollback", "--last", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert dry.stdout.count("to its end first, then decide") == 3, dry.stdout
    undo = seed.planctl("rollback", "--last")
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert undo.stdout.count("REATTACHED") == 3, undo.stdout
    assert seed.last_run().status == "ROLLED_BACK"
    time.sleep(0.5)  # a copy left running would land now
    assert seed.listing() == []
    assert _copies(seed) == {"disk0": 1, "disk1": 1, "disk2": 1}


FOLLOWED_OUTPUTS_PLAN = """\
name: followed-outputs
defaults:
  env: {STORE_COPY_SECONDS: "1"}
commands:
  - id: clone
    entity: image/img-out
    run:
      command: [./store, copy-image, disk0, img-out]
      async:
        handle: "{{ result.stdout | trim }}"
        poll: {command: [./store, task-status, "{{ handle }}"]}
        until: "{{ poll.stdout | trim == 'finished' }}"
        failed_when: "{{ poll.stdout | trim in ['failed', 'aborted'] }}"
        interval: 0.05s
        max_interval: 0.1s
    inverse: {shell: "./store remove-image img-out && echo {{ outputs.task }} >> undone"}
    outputs: {task: "{{ result.stdout | trim }}"}
"""


def test_a_rollback_that_follows_a_killed_runs_task_gives_its_inverse_the_outputs(
        seed: Seed) -> None:
    """kill -9 while a copy is polled, then `planctl rollback`: the rollback follows the
    task to its end and renders the command's `outputs` from the recorded `result`, as
    `resume` would, so an inverse that reads them runs. It used to find no outputs and end
    REVERT_FAILED ("'dict object' has no attribute 'task'"), exit 2, on every rollback."""
    plan = seed.plan.parent / "followed.yaml"
    plan.write_text(FOLLOWED_OUTPUTS_PLAN)
    proc = seed.spawn("apply", str(plan))
    try:
        wait_for("the copy to be polled", lambda: _polling(seed, 1), proc=proc)
    finally:
        proc.kill()
        proc.communicate()
    (task,) = seed.tasks()
    undo = seed.planctl("rollback", "--last")
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert "REATTACHED" in undo.stdout
    assert seed.commands()["clone"].status == "REVERTED"
    assert (plan.parent / "undone").read_text() == f"{task.handle}\n"
    assert seed.listing() == []
    assert seed.mutations()["copy-image img-out"] == 1


def test_outputs_a_rollback_rendered_from_a_followed_task_survive_its_own_kill(
        seed: Seed) -> None:
    """Killed twice: apply while the copy is polled, then the rollback that followed the
    copy to its end, rendered its `outputs` and began the inverse. The outputs are stored
    before the inverse starts, so the next rollback, which runs the inverse again (no
    `exists` probe to ask), renders it. They were kept in memory only: REVERT_FAILED,
    exit 2, and every later rollback the same."""
    plan = seed.plan.parent / "followed.yaml"
    plan.write_text(FOLLOWED_OUTPUTS_PLAN.replace(
        'inverse: {shell: "./store remove-image img-out && echo {{ outputs.task }} >> undone"}',
        'inverse: {shell: "echo {{ outputs.task }} >> undone; while [ ! -e go ]; do sleep '
        '0.05; done; ./store remove-image img-out || true"}'))
    undone = plan.parent / "undone"
    proc = seed.spawn("apply", str(plan))
    try:
        wait_for("the copy to be polled", lambda: _polling(seed, 1), proc=proc)
    finally:
        proc.kill()
        proc.communicate()
    (task,) = seed.tasks()
    proc = seed.spawn("rollback", "--last")
    try:
        wait_for("the inverse to begin", lambda: undone.exists(), proc=proc)
    finally:
        proc.kill()
        proc.communicate()
    assert seed.commands()["clone"].status == "REVERTING"
    (plan.parent / "go").touch()  # the killed rollback's inverse may end now
    undo = seed.planctl("rollback", "--last")
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert seed.commands()["clone"].status == "REVERTED"
    assert undone.read_text() == f"{task.handle}\n{task.handle}\n"
    assert seed.listing() == []


NO_ENTITY_PLAN = """\
name: no-entities
commands:
  - id: a
    run: {command: [touch, a]}
    inverse: {command: [rm, a]}
    exists: {command: [test, -e, a]}
  - id: b
    needs: [a]
    run: {command: [sh, -c, "while [ ! -e go ]; do sleep 0.05; done; touch b"]}
    inverse: {command: [rm, b]}
    exists: {command: [test, -e, b]}
"""


def _status(seed: Seed, command: str) -> str | None:
    if not seed.state.exists():
        return None
    with seed.db() as store:
        run_id = store.last_run_id()
        record = store.get_commands(run_id).get(command) if run_id else None
    return record.status if record else None


def test_a_live_run_without_entities_cannot_be_resumed_or_rolled_back(seed: Seed) -> None:
    """A run holds a lock on itself whether its commands name entities or not: while its
    apply is alive, `resume` and `rollback` of it exit 4 at once and touch nothing (before,
    a rollback removed `a` under the running apply, which then created `b` anyway). The
    run's own lock is not an entity: `planctl locks` does not list it. A dry run warns."""
    plan = seed.root / "no-entities.yaml"
    plan.write_text(NO_ENTITY_PLAN)
    proc = seed.spawn("apply", str(plan))
    try:
        wait_for("command b to start", lambda: _status(seed, "b") == "STARTING", proc=proc)
        run_id = seed.last_run().id
        assert seed.planctl("locks").stdout == "no locks held\n"
        dry = seed.planctl("rollback", run_id, "--dry-run")
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert f"warning: run {run_id} is still running (pid {proc.pid}" in dry.stderr
        assert "a rollback now would exit 4" in dry.stderr
        _refused_while_alive(seed, run_id, proc)
        assert (seed.root / "a").exists()
        (seed.root / "go").touch()
        code, out, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert code == 0, out + err
    assert (seed.root / "b").exists()
    assert seed.last_run().status == "SUCCEEDED"
    assert seed.all_locks() == []


PROBING_PLAN = """\
name: probing
commands:
  - id: a
    entity: file/a
    exists: {shell: "touch probing; while [ ! -e go ]; do sleep 0.05; done; exit 1"}
    run: {command: [touch, a]}
    inverse: {command: [rm, a]}
"""


def test_a_run_interrupted_before_it_changed_anything_is_ended_by_its_rollback(
        seed: Seed) -> None:
    """Interrupted while its first probe ran, a run changed nothing but keeps its locks:
    `rollback` (nothing to undo) still ends it ROLLED_BACK and frees them, so the plan
    applies again (it said 'nothing to undo', exit 0, and left them held). Meanwhile, a
    rollback of it while it is alive exits 4 (it said 'nothing to undo', exit 0)."""
    plan = seed.root / "probing.yaml"
    plan.write_text(PROBING_PLAN)
    proc = seed.spawn("apply", str(plan))
    try:
        wait_for("the probe to start", lambda: (seed.root / "probing").exists(), proc=proc)
        live = seed.planctl("rollback", "--last")
        assert live.returncode == 4, live.stdout + live.stderr
        assert "still running" in live.stderr
        proc.send_signal(signal.SIGINT)
        code, out, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert code == 130, out + err
    assert [lock.entity for lock in seed.locks()] == ["file/a"]
    undo = seed.planctl("rollback", "--last")
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert seed.last_run().status == "ROLLED_BACK"
    assert seed.all_locks() == []
    (seed.root / "go").touch()
    again = seed.planctl("apply", str(plan))
    assert again.returncode == 0, again.stdout + again.stderr
    assert (seed.root / "a").exists()


UNSET_ENTITY = """\
name: unset-entity
secrets:
  token: {env: PLANCTL_TEST_TOKEN}
commands:
  - id: vm
    entity: "vm/{{ env.PLANCTL_TEST_VM }}"
    run: {shell: "echo made > made"}
    inverse: {shell: "rm made"}
"""


def test_an_entity_that_does_not_render_stops_the_run_before_it_starts(seed: Seed) -> None:
    """An entity made of an unset `env.X` (or of the variable a secret is read from) is
    a lock the run cannot take: apply exits 3 before anything runs or is recorded, and
    `plan` says the same. It used to run the command unlocked, as if it had no entity."""
    (seed.root / "unset.yaml").write_text(UNSET_ENTITY, encoding="utf-8")
    base = {"PLANCTL_TEST_TOKEN": "tok-1234567"}
    message = ("planctl: error: command vm: its entity 'vm/{{ env.PLANCTL_TEST_VM }}' does "
               "not render: 'env.PLANCTL_TEST_VM' is undefined (no 'PLANCTL_TEST_VM'); an "
               "entity is the lock the run takes before it starts, made of vars, loop "
               "variables, `env` and `run_id` (not `env.PLANCTL_TEST_TOKEN`: secrets are "
               "read from them)\n")
    for verb in ("apply", "plan"):
        done = seed.planctl(verb, "unset.yaml", env=base)
        assert (done.returncode, done.stderr) == (3, message), done.stdout + done.stderr
    assert not (seed.root / "made").exists()
    assert "unset-entity" not in seed.planctl("runs").stdout
    # The variable a secret is read from is not there for an entity either (set or not).
    (seed.root / "secret.yaml").write_text(UNSET_ENTITY.replace(
        "env.PLANCTL_TEST_VM", "env.PLANCTL_TEST_TOKEN"), encoding="utf-8")
    done = seed.planctl("apply", "secret.yaml", env=base)
    assert done.returncode == 3 and "does not render" in done.stderr, done.stderr
    assert "tok-1234567" not in done.stdout + done.stderr
    assert not (seed.root / "made").exists()
    done = seed.planctl("apply", "unset.yaml", env={**base, "PLANCTL_TEST_VM": "vm-7"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "vm/vm-7" in seed.planctl("show", "--last", "vm").stdout


def test_the_run_lock_prefix_is_not_an_entity(seed: Seed) -> None:
    """An entity may not take the form of a run's own lock: exit 3 before anything runs."""
    plan = seed.root / "reserved.yaml"
    plan.write_text("name: reserved\ncommands:\n  - id: a\n    entity: planctl:run/x\n"
                    "    run: {command: [touch, a]}\n")
    done = seed.planctl("apply", str(plan))
    assert done.returncode == 3, done.stdout + done.stderr
    assert "entity planctl:run/x: the prefix planctl:run/ is reserved" in done.stderr
    assert not (seed.root / "a").exists()
    assert seed.all_locks() == []


def test_locks_kept_for_leftovers_say_so_instead_of_an_age(seed: Seed) -> None:
    """A run that stopped with leftovers keeps their locks with no holder: `planctl locks`
    shows them as kept for leftovers (no heartbeat age), and a second apply exits 4 saying
    which run keeps them and that rolling it back releases them."""
    done = seed.apply("--var", "fail_disks=disk1", "--var", "copy_seconds=0.1",
                      "--no-rollback")
    assert done.returncode == 2, done.stdout + done.stderr
    run_id = seed.last_run().id
    listed = seed.planctl("locks")
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()[1:]
    assert [row.split()[0] for row in rows] == ENTITIES
    assert all(row.endswith("kept for leftovers") for row in rows), listed.stdout
    assert "ago" not in listed.stdout

    blocked = seed.apply(*SLOW)
    assert blocked.returncode == 4, blocked.stdout + blocked.stderr
    assert f"kept locked by run {run_id}" in blocked.stderr
    assert f"which ended STOPPED with leftovers: `planctl rollback {run_id}`" in blocked.stderr
    assert "heartbeat" not in blocked.stderr and "ago" not in blocked.stderr


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_a_killed_apply_not_yet_reaped_can_be_resumed_at_once(seed: Seed) -> None:
    """Right after kill -9, before its parent reaps it, the killed planctl is a zombie: its
    locks count as dead, and `planctl resume` takes them over instead of refusing with
    "still running"."""
    proc = seed.spawn("apply", str(seed.plan), *SLOW)
    try:
        wait_for("the copies to be polled", lambda: _polling(seed), proc=proc)
        proc.send_signal(signal.SIGKILL)  # and no wait(): it stays a zombie
        stat = Path(f"/proc/{proc.pid}/stat")
        wait_for("the killed apply to be a zombie",
                 lambda: stat.read_bytes().rpartition(b")")[2].split()[0] == b"Z")
        listed = seed.planctl("locks")
        assert listed.stdout.count("dead (") == 4, listed.stdout
        resumed = seed.planctl("resume", "--last")
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert proc.poll() == -signal.SIGKILL  # reaped only now
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert seed.last_run().status == "SUCCEEDED"
    assert _copies(seed) == {"disk0": 1, "disk1": 1, "disk2": 1}


def _apply_killed_in(seed: Seed, method: str) -> None:
    """Run a real apply of the seed plan that kill -9s itself when it calls ``method`` of
    its SQLite store."""
    killed = subprocess.run(
        [sys.executable, "-c",
         "import os, signal, sys\n"
         "from planner import cli, sqlite_store\n"
         "def die(*args, **kwargs):\n"
         "    os.kill(os.getpid(), signal.SIGKILL)\n"
         f"sqlite_store.SQLiteStore.{method} = die\n"
         "sys.exit(cli.main(sys.argv[1:]))\n",
         "apply", str(seed.plan), "--var", "copy_seconds=0.2"],
        cwd=seed.root, env=seed.env, capture_output=True, text=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr


def test_an_apply_killed_before_it_recorded_its_run_locks_nothing_out(seed: Seed) -> None:
    """kill -9 after apply took its locks and before it wrote its run (the state store
    is opened in the killed process, the run record never written): no run exists to
    resume or roll back, so the next apply frees those locks instead of exiting 4 with a
    hint to resume a run that does not exist."""
    _apply_killed_in(seed, "create_run")
    assert sorted(x.entity for x in seed.locks()) == ENTITIES
    with seed.db() as store:
        assert store.last_run_id() is None

    applied = seed.apply("--var", "copy_seconds=0.2")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert seed.last_run().status == "SUCCEEDED"
    assert seed.all_locks() == []
    assert _copies(seed) == {"disk0": 1, "disk1": 1, "disk2": 1}


def test_an_apply_killed_after_it_ended_before_it_unlocked_locks_nothing_out(
        seed: Seed) -> None:
    """kill -9 after apply recorded SUCCEEDED and before it released its locks: `resume`
    has nothing to resume, and the next apply frees the dead run's locks and finds
    everything in place, instead of exiting 4 with hints that either do nothing
    (`resume`) or undo the run (`rollback`)."""
    _apply_killed_in(seed, "release_locks")
    run = seed.last_run()
    assert run.status == "SUCCEEDED"
    assert sorted(x.entity for x in seed.locks()) == ENTITIES
    resumed = seed.planctl("resume", "--last")
    assert resumed.returncode == 0 and "nothing to resume" in resumed.stdout

    applied = seed.apply("--var", "copy_seconds=0.2")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    again = seed.last_run()
    assert again.id != run.id and again.status == "SUCCEEDED"
    assert set(c.status for c in seed.commands(again.id).values()) == {"UNCHANGED",
                                                                      "SUCCEEDED"}
    assert seed.all_locks() == []
    assert _copies(seed) == {"disk0": 1, "disk1": 1, "disk2": 1}


def test_resume_after_kill_9_renders_outputs_from_the_async_result(seed: Seed) -> None:
    """The forward `result` of an async `run` is committed with its handle: after kill -9
    while its task is polled, `planctl resume` re-attaches and renders the command's
    `outputs` (and what reads them downstream) from that result."""
    plan = seed.plan.parent / "result.yaml"
    plan.write_text(RESULT_PLAN)
    proc = seed.spawn("apply", str(plan))
    try:
        wait_for("the copy to be polled", lambda: _polling(seed, 1), proc=proc)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    (task,) = seed.tasks()
    assert seed.commands()["clone"].result["stdout"].strip() == task.handle

    resumed = seed.planctl("resume", "--last")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    commands = seed.commands()
    assert commands["clone"].status == "SUCCEEDED"
    assert commands["clone"].outputs == {"task": task.handle}
    assert commands["report"].outputs == {"line": f"copied by {task.handle}"}
    assert seed.mutations()["copy-image img-out"] == 1


KEY_PLAN = """\
name: key
commands:
  - id: make
    exists: {command: [test, -e, made]}
    run: {shell: "echo $PLANCTL_IDEMPOTENCY_KEY >> keys; [ -e again ] && touch made || sleep 1"}
    inverse: {command: [rm, made]}
"""


def test_a_command_run_again_by_resume_keeps_its_idempotency_key(seed: Seed) -> None:
    """After kill -9 while `run` runs (it made nothing), `planctl resume` finds the command
    STARTING, its `exists` says absent, and runs it again with the same
    PLANCTL_IDEMPOTENCY_KEY, so a remote system could refuse the duplicate."""
    plan = seed.root / "key.yaml"
    plan.write_text(KEY_PLAN)
    keys = seed.root / "keys"
    proc = seed.spawn("apply", str(plan))
    try:
        wait_for("the run to start", keys.exists, proc=proc)
    finally:
        proc.kill()
        proc.communicate()
    assert seed.commands()["make"].status == "STARTING"
    (seed.root / "again").touch()
    resumed = seed.planctl("resume", "--last")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert seed.commands()["make"].status == "SUCCEEDED"
    assert (seed.root / "made").exists()
    first, second = keys.read_text().split()
    assert first == second and first


def test_a_run_ended_by_an_embedding_process_can_be_rolled_back_from_the_cli(
        seed: Seed, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that the Python API applied and that ended STOPPED can be rolled back with
    `planctl rollback` while the embedding process is still alive."""
    from planner.executor import ApplyOptions, apply_plan
    from planner.loader import load_plan

    for name in ("STORE_DIR", "PLANCTL_STATE"):
        monkeypatch.setenv(name, seed.env[name])
    loaded = load_plan(seed.plan, variables={"fail_disks": "disk1", "copy_seconds": 0.1})
    with seed.db() as store:
        outcome = apply_plan(loaded, store, handle_signals=False,
                             options=ApplyOptions(on_failure="stop"))
    assert outcome.status == "STOPPED"
    done = seed.planctl("rollback", "--last")
    assert done.returncode == 0, done.stdout + done.stderr
    assert seed.listing() == []


# -- signals ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_interrupts_the_run_and_resume_finishes_it(seed: Seed,
                                                            sig: signal.Signals) -> None:
    """SIGINT or SIGTERM while copies are polled makes apply exit 130 with the run INTERRUPTED
    and a resume hint; `planctl resume --last` re-attaches to the copies (REATTACHED task
    events) and ends SUCCEEDED without starting any copy twice."""
    proc = seed.spawn("apply", str(seed.plan), *SLOW)
    code, out, err = signal_when(proc, "the copies to be polled", lambda: _polling(seed), sig,
                                 timeout=20)
    run = seed.last_run()
    assert code == 130, out + err
    assert run.status == "INTERRUPTED"
    assert f"planctl resume {run.id}" in out
    assert seed.mutations()["remove-image vm-42-disk0"] == 0

    resumed = seed.planctl("resume", "--last")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert seed.last_run().status == "SUCCEEDED"
    assert _copies(seed) == {"disk0": 1, "disk1": 1, "disk2": 1}
    reattached = {e.command_id for e in seed.events(run.id)
                  if e.kind == "task" and e.data.get("task_status") == "REATTACHED"}
    assert reattached == {"clone[disk0]", "clone[disk1]", "clone[disk2]"}
    assert seed.listing() == ["image vm-42-disk0", "image vm-42-disk1", "image vm-42-disk2",
                              "vm vm-42"]
    assert seed.locks() == []


SLOW_PROBE_PLAN = """\
name: slow-probe
commands:
  - id: f
    entity: file/f
    # Asked before the inverse, the first time only, it takes its time: a signal lands
    # while the rollback has not started any inverse yet.
    exists:
      shell: >-
        if [ "$PLANCTL_EXECUTION_REASON" = ROLLBACK_FLOW ] && [ ! -e probed ];
        then touch probed; sleep 60; fi; test -e f
    run: {command: [touch, f]}
    inverse: {shell: "rm f && echo removed >> inverse.log"}
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_resume_of_a_rollback_interrupted_before_its_first_inverse_rolls_back(
        seed: Seed, sig: signal.Signals) -> None:
    """A rollback of a run that succeeded, interrupted while it asks `exists` (no inverse
    started yet), ends INTERRUPTED; `planctl resume`, the "continue with" it prints,
    continues the rollback: ROLLED_BACK, the file removed once, and exit 0, as the
    `rollback` it continues exits once nothing is left (it was 1, a failed apply's code).
    It used to see only SUCCEEDED commands, take the run forward and end it SUCCEEDED, the
    rollback dropped."""
    plan = seed.root / "slow-probe.yaml"
    plan.write_text(SLOW_PROBE_PLAN)
    assert seed.planctl("apply", str(plan)).returncode == 0
    proc = seed.spawn("rollback", "--last")
    code, out, err = signal_when(proc, "the rollback to ask exists",
                                 (seed.root / "probed").exists, sig, ready_timeout=60)
    run = seed.last_run()
    assert code == 130, out + err
    assert run.status == "INTERRUPTED"
    assert f"planctl resume {run.id}" in out
    assert (seed.root / "f").exists()

    resumed = seed.planctl("resume", "--last")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert seed.last_run().status == "ROLLED_BACK"
    assert not (seed.root / "f").exists()
    assert (seed.root / "inverse.log").read_text() == "removed\n"
    again = seed.planctl("rollback", "--last")
    assert again.returncode == 0 and "nothing to undo" in again.stdout, again.stdout


def test_resume_keeps_the_options_of_the_apply_it_continues(seed: Seed) -> None:
    """`apply --no-rollback -j 3` interrupted by SIGINT keeps its locks until resumed; the
    resumed run still stops instead of rolling back when a copy fails after the resume
    (exit 2, nothing removed), and runs with the same parallelism."""
    from planner.executor import Runner

    proc = seed.spawn("apply", str(seed.plan), "--var", "copy_seconds=1.5",
                      "--var", "fail_disks=disk1", "--no-rollback", "-j", "3")
    code, out, err = signal_when(proc, "the copies to be polled", lambda: _polling(seed),
                                 signal.SIGINT, timeout=20)
    assert code == 130, out + err
    run = seed.last_run()
    assert run.status == "INTERRUPTED"
    assert seed.tasks() and all(t.status == "RUNNING" for t in seed.tasks())
    listed = seed.planctl("locks")
    assert listed.stdout.count("kept until resumed") == 4, listed.stdout
    with seed.db() as store:
        runner = Runner.from_store(store, run.id)
        assert (runner.on_failure, runner.max_parallel) == ("stop", 3)

    resumed = seed.planctl("resume", "--last")
    assert resumed.returncode == 2, resumed.stdout + resumed.stderr
    assert seed.last_run().status == "STOPPED"
    assert seed.commands()["clone[disk1]"].status == "FAILED"
    assert not [verb for verb, *_ in seed.log() if verb.startswith("remove-")]
    assert f"planctl rollback {run.id}" in resumed.stdout


# -- --cancel-inflight ------------------------------------------------------------------------


def _cancel_plan(seed: Seed) -> Path:
    plan = seed.plan.parent / "cancel.yaml"
    plan.write_text(CANCEL_PLAN)
    return plan


def test_cancel_inflight_aborts_the_running_copy(seed: Seed) -> None:
    """With --cancel-inflight, a failure aborts a long copy that declares `cancel` instead of
    waiting for it, and the run ends ROLLED_BACK with no image left."""
    plan = _cancel_plan(seed)
    done = seed.planctl("apply", str(plan), "--cancel-inflight")
    assert done.returncode == 1, done.stdout + done.stderr
    assert seed.last_run().status == "ROLLED_BACK"
    (task,) = seed.tasks()
    assert (task.command_id, task.status) == ("clone", "CANCELLED")
    assert seed.store("task-status", task.handle).stdout.strip() == "aborted"
    verbs = [verb for verb, *_ in seed.log()]
    assert "abort-task" in verbs and "copy-finished" not in verbs
    assert seed.commands()["clone"].status == "REVERT_SKIPPED"
    assert seed.listing() == []


def test_without_cancel_inflight_the_copy_ends_and_is_then_removed(seed: Seed) -> None:
    """Without --cancel-inflight, a failure lets the in-flight copy run to its end, and its
    image is then removed in ROLLBACK_FLOW."""
    plan = _cancel_plan(seed)
    done = seed.planctl("apply", str(plan), "--var", "copy_seconds=1")
    assert done.returncode == 1, done.stdout + done.stderr
    verbs = [verb for verb, *_ in seed.log()]
    assert "abort-task" not in verbs
    assert verbs.index("copy-finished") < verbs.index("remove-image")
    clone = seed.commands()["clone"]
    assert (clone.status, clone.execution_reason) == ("REVERTED", "ROLLBACK_FLOW")
    assert seed.listing() == []


# -- processes a killed planctl left running ----------------------------------------------------

# `run` and `inverse` log that they started, then wait for their own `go-` file: killed
# planctl, they keep running (in a session of their own) until the test lets them end.
ORPHAN_PLAN = """\
name: orphan
commands:
  - id: f
    entity: file/f
    exists: {command: [test, -e, f]}
    run: {shell: "echo run >> log; until [ -e go-run ]; do sleep 0.02; done; touch f"}
    inverse: {shell: "echo inverse >> log; until [ -e go-inverse ]; do sleep 0.02; done; rm f"}
"""
NEEDS_PROC = pytest.mark.skipif(not Path("/proc/self/environ").exists(),
                                reason="finding left processes needs /proc (Linux)")


def _orphan_plan(seed: Seed) -> Path:
    plan = seed.root / "orphan.yaml"
    plan.write_text(ORPHAN_PLAN)
    return plan


def _shell_log(seed: Seed) -> list[str]:
    path = seed.root / "log"
    return path.read_text().split() if path.exists() else []


def _kill_once_logged(seed: Seed, proc: subprocess.Popen[str], line: str) -> None:
    """kill -9 ``proc`` once f's shell logged ``line``: it runs, its intent is committed."""
    try:
        wait_for(f"f's {line} to start", lambda: line in _shell_log(seed), proc=proc)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def _recover_waiting(seed: Seed, verb: str, go: str) -> tuple[int, str]:
    """`planctl VERB --last`, in the background; once it says it waits for the shell the
    killed planctl left running, let that shell end (touch ``go``). Exit code, stdout."""
    out = seed.root / f"{verb}.out"
    with out.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "planner", verb, "--last"],
                                cwd=seed.root, env=seed.env, stdout=sink,
                                stderr=subprocess.PIPE, text=True)
    try:
        wait_for(f"{verb} to wait for the shell left running",
                 lambda: "waiting for pid" in out.read_text(), proc=proc)
        (seed.root / go).touch()
        code, _, err = finish(proc)
    finally:
        for name in ("go-run", "go-inverse"):  # nothing keeps running after the test
            (seed.root / name).touch()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    text = out.read_text()
    assert "left running by the dead executor for command f" in text, text + err
    return code, text


@NEEDS_PROC
def test_a_rollback_waits_for_a_run_the_killed_apply_left_running(seed: Seed) -> None:
    """kill -9 while f's `run` still runs: it survives planctl (a session of its own). The
    rollback waits for it to end before it asks `exists`, which would say absent (f not yet
    made), record REVERT_SKIPPED and let f appear afterwards; then it removes f."""
    (seed.root / "go-inverse").touch()
    _kill_once_logged(seed, seed.spawn("apply", str(_orphan_plan(seed))), "run")
    code, out = _recover_waiting(seed, "rollback", "go-run")
    assert code == 0, out
    assert seed.last_run().status == "ROLLED_BACK"
    assert seed.commands()["f"].status == "REVERTED"
    assert not (seed.root / "f").exists()
    assert _shell_log(seed) == ["run", "inverse"]


@NEEDS_PROC
def test_a_resume_waits_for_a_run_the_killed_apply_left_running(seed: Seed) -> None:
    """kill -9 while f's `run` still runs, then resume: it waits for that run to end and
    then finds f present, instead of asking `exists` at once (absent) and running it a
    second time beside the first."""
    _kill_once_logged(seed, seed.spawn("apply", str(_orphan_plan(seed))), "run")
    assert seed.commands()["f"].status == "STARTING"
    code, out = _recover_waiting(seed, "resume", "go-run")
    assert code == 0, out
    assert seed.last_run().status == "SUCCEEDED"
    assert seed.commands()["f"].status == "SUCCEEDED"
    assert (seed.root / "f").exists()
    assert _shell_log(seed) == ["run"]


@NEEDS_PROC
def test_a_rollback_waits_for_an_inverse_the_killed_rollback_left_running(seed: Seed) -> None:
    """kill -9 while f's (not async) inverse runs, REVERTING committed: the next rollback
    waits for that inverse to end, then finds f absent (REVERTED), instead of asking
    `exists` at once (still present) and running the inverse a second time beside it."""
    (seed.root / "go-run").touch()
    applied = seed.planctl("apply", str(_orphan_plan(seed)))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    _kill_once_logged(seed, seed.spawn("rollback", "--last"), "inverse")
    assert seed.commands()["f"].status == "REVERTING"
    code, out = _recover_waiting(seed, "rollback", "go-inverse")
    assert code == 0, out
    assert seed.last_run().status == "ROLLED_BACK"
    assert seed.commands()["f"].status == "REVERTED"
    assert not (seed.root / "f").exists()
    assert _shell_log(seed) == ["run", "inverse"]


# -- an executor that lost its lock -----------------------------------------------------------

# b waits for a file `go` (two minutes at most: a test that fails leaves no shell behind for
# ever); c, after it, logs each time it runs.
RACE_PLAN = """\
name: race
commands:
  - id: a
    entity: file/a
    exists: {command: [test, -e, a]}
    run: {command: [touch, a]}
    inverse: {command: [rm, a]}
  - id: b
    entity: file/b
    needs: [a]
    exists: {command: [test, -e, b]}
    run:
      shell: >-
        echo b >> started; i=0;
        until [ -e go ] || [ $i -ge 2400 ]; do i=$((i + 1)); sleep 0.05; done;
        [ -e go ] && touch b
    inverse: {command: [rm, b]}
  - id: c
    entity: file/c
    needs: [b]
    run: {shell: "echo c >> ran; touch c"}
    inverse: {command: [rm, c]}
"""


def _race(seed: Seed, lease: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """An apply of RACE_PLAN with a lease of ``lease`` seconds, once b has started."""
    plan = seed.root / "race.yaml"
    plan.write_text(RACE_PLAN)
    env = {"PLANCTL_LOCK_LEASE": lease}
    proc = seed.spawn("apply", str(plan), env=env)
    try:
        wait_for("b to start", lambda: (seed.root / "started").exists(), proc=proc)
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    return proc, env


def test_a_paused_apply_whose_run_was_resumed_meanwhile_stops_when_it_wakes(
        seed: Seed) -> None:
    """An apply paused (SIGSTOP: a slow machine, a suspended job) past its lease looks dead,
    and `resume` takes the run over and finishes it. Woken (SIGCONT), the first apply
    finds the run no longer its own: it exits 130 saying so, writes nothing and starts
    nothing, so c runs once. Before, it went on beside the resume: exit 70 on a clash of
    event numbers in the store, or c run a second time."""
    proc, env = _race(seed, "1")
    run_id = seed.last_run().id
    proc.send_signal(signal.SIGSTOP)
    try:
        wait_for("the paused apply to look dead",
                 lambda: "dead (" in seed.planctl("locks", env=env).stdout)
        resumer = seed.spawn("resume", run_id, env=env)
        wait_for("the resume to take the run over", lambda: any(
            lock.pid == resumer.pid for lock in seed.all_locks()), proc=resumer)
        (seed.root / "go").touch()
        code, out, err = finish(resumer)
        assert code == 0, out + err
        assert seed.last_run().status == "SUCCEEDED"
        events = len(seed.events(run_id))
    finally:
        proc.send_signal(signal.SIGCONT)
    code, out, err = finish(proc)
    assert code == 130, out + err
    assert f"planctl: error: run {run_id} is no longer held by this planctl" in err
    assert "starting nothing more" in err
    assert (seed.root / "ran").read_text() == "c\n"
    assert (seed.root / "started").read_text() == "b\n"
    assert seed.last_run().status == "SUCCEEDED"
    assert len(seed.events(run_id)) == events
    assert seed.all_locks() == []


def test_an_apply_whose_entity_is_unlocked_by_force_stops(seed: Seed) -> None:
    """`planctl unlock --force` of an entity a live apply holds: that apply stops (exit 130,
    saying it lost its lock) rather than go on acting on an entity another run may take
    now; c never runs. Its run stays resumable: `resume` takes the locks again and
    finishes it. Before, the apply went on and ran c on the released entity."""
    proc, env = _race(seed, "3")
    run_id = seed.last_run().id
    try:
        forced = seed.planctl("unlock", "--force", "file/c", env=env)
        assert forced.returncode == 0, forced.stdout + forced.stderr
        code, out, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert code == 130, out + err
    assert f"planctl: error: run {run_id} is no longer held by this planctl" in err
    assert "`planctl unlock`" in err
    assert not (seed.root / "ran").exists()
    assert seed.last_run().status == "RUNNING"
    assert sorted(lock.entity for lock in seed.locks()) == ["file/a", "file/b"]
    (seed.root / "go").touch()
    resumed = seed.planctl("resume", run_id, env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert (seed.root / "ran").read_text() == "c\n"
    assert seed.last_run().status == "SUCCEEDED"
    assert seed.all_locks() == []


@pytest.mark.parametrize("lease", ["abc", "0", "-5", "nan", "inf"])
def test_a_lease_that_is_not_a_positive_number_exits_3_writing_nothing(
        seed: Seed, lease: str) -> None:
    """PLANCTL_LOCK_LEASE must be a positive number of seconds: otherwise apply exits 3
    naming it and creates no state store, and rollback, locks and unlock exit 3 too,
    leaving the locks of a stopped run as they were. Before, a word was an internal error
    (exit 70) once the store was made, and 0 or less made every live holder look dead at
    once (its heartbeat spinning without a pause)."""
    env = {"PLANCTL_LOCK_LEASE": lease}
    message = f"planctl: error: PLANCTL_LOCK_LEASE={lease!r}: expected seconds"
    done = seed.apply(env=env)
    assert done.returncode == 3, done.stdout + done.stderr
    assert message in done.stderr
    assert not seed.state.exists()
    assert seed.log() == []
    stopped = seed.apply("--var", "copy_seconds=0.05", "--var", "fail_disks=disk1",
                         "--no-rollback")
    assert stopped.returncode == 2, stopped.stdout + stopped.stderr
    kept = seed.locks()
    assert [lock.entity for lock in kept] == ENTITIES
    for args in (("rollback", "--last"), ("resume", "--last"), ("locks",),
                 ("unlock", "vm/vm-42")):
        done = seed.planctl(*args, env=env)
        assert done.returncode == 3, f"{args}: {done.stdout}{done.stderr}"
        assert message in done.stderr
    assert seed.locks() == kept
    assert seed.last_run().status == "STOPPED"


def test_signals_after_a_run_ended_wait_for_its_summary_and_junit_report(
        tmp_path: Path) -> None:
    """SIGTERM then SIGINT (a CI cancelling a job) that come once the run has ended, while
    its JUnit report is being written, are held until the report is whole: planctl then
    exits as the run ended and says so. The report is a named pipe, so planctl waits in it
    until this test reads, and the signals land while the summary is written. Before,
    SIGTERM killed planctl there (exit -15) with no report."""
    import os
    import threading

    plan = tmp_path / "plan.yaml"
    plan.write_text("name: quick\ncommands:\n  - {id: a, run: {command: [\"true\"]}, "
                    "changes: false}\n", encoding="utf-8")
    report = tmp_path / "report.xml"
    os.mkfifo(report)
    proc = subprocess.Popen(
        [sys.executable, "-m", "planner", "apply", str(plan), "-s", str(tmp_path / "s.db"),
         "--junit", str(report)], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    fd = -1
    try:
        # The text summary is printed once the run's flow is over, before the report.
        wait_for("the summary", lambda: any(x.startswith("SUCCEEDED in") for x in lines),
                 proc=proc)
        proc.send_signal(signal.SIGTERM)
        proc.send_signal(signal.SIGINT)
        fd = os.open(report, os.O_RDONLY | os.O_NONBLOCK)  # planctl's open returns now
        code = proc.wait(timeout=60)
        xml = os.read(fd, 1 << 20).decode()
    finally:
        if fd != -1:
            os.close(fd)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    reader.join(timeout=10)
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert code == 0, err
    assert xml.startswith("<?xml") and xml.rstrip().endswith("</testsuites>")
    assert err == ("planctl: SIGINT and SIGTERM came after the run ended: its summary and "
                   "reports were written first\n")
