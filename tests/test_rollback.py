"""ROLLBACK_FLOW end to end: the seed plan (vm-from-template) run by the real CLI against its
`store` tool, with failure injection; the store's audit log, `store list` and the SQLite state
file say what really happened. Crash recovery is covered by test_crash_sweep.py.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from seedplan import INVERSE_STATUSES, Seed, make_seed

from planner import rollback as rollback_module
from planner.executor import RunOutcome, rollback_run
from planner.rollback import MAX_REVERT_ATTEMPTS

FAIL_DISK1 = ["--var", "fail_disks=disk1", "--var", "copy_seconds=0.1"]
QUICK = ["--var", "copy_seconds=0.1"]
IMAGES = ["image vm-42-disk0", "image vm-42-disk1", "image vm-42-disk2"]


@pytest.fixture
def seed(tmp_path: Path) -> Seed:
    return make_seed(tmp_path)


def _removals(seed: Seed) -> list[str]:
    """Removals in the order the store saw them, e.g. ['remove-image vm-42-disk2', ...]."""
    return [f"{verb} {args[0]}" for verb, *args in seed.log() if verb.startswith("remove-")]


def _seq(events: list, command: str, status: str) -> int:
    found = [e.seq for e in events
             if e.kind == "command" and e.command_id == command and e.data["status"] == status]
    assert len(found) == 1, f"{command} {status}: {found}"
    return found[0]


# -- the seed scenario ------------------------------------------------------------------------


def test_failed_copy_rolls_back_siblings_then_the_vm(seed: Seed) -> None:
    """When one of three copies fails, the two copied images and then the VM are removed in
    ROLLBACK_FLOW, the failed clone is REVERT_SKIPPED, and the run ends ROLLED_BACK (exit 1)."""
    done = seed.apply(*FAIL_DISK1)
    assert done.returncode == 1, done.stdout + done.stderr
    assert seed.listing() == []
    # The store saw both images removed, once each, before the VM.
    assert _removals(seed)[-1] == "remove-vm vm-42"
    assert sorted(_removals(seed)[:-1]) == ["remove-image vm-42-disk0",
                                            "remove-image vm-42-disk2"]
    assert seed.mutations()["remove-image vm-42-disk1"] == 0  # never created
    run = seed.last_run()
    assert run.status == "ROLLED_BACK"
    commands = seed.commands()
    assert {i: c.status for i, c in commands.items()} == {
        "add_vm": "REVERTED", "clone[disk0]": "REVERTED", "clone[disk1]": "REVERT_SKIPPED",
        "clone[disk2]": "REVERTED", "start_vm": "PENDING"}
    events = seed.events()
    # The events table agrees: the VM's inverse starts after both image inverses ended.
    vm_starts = _seq(events, "add_vm", "REVERTING")
    assert _seq(events, "clone[disk0]", "REVERTED") < vm_starts
    assert _seq(events, "clone[disk2]", "REVERTED") < vm_starts
    assert _seq(events, "clone[disk1]", "FAILED") < _seq(events, "clone[disk1]", "REVERT_SKIPPED")
    inverse_events = [e for e in events
                      if e.kind == "command" and e.data["status"] in INVERSE_STATUSES]
    assert len(inverse_events) == 7  # 3 REVERTING, 3 REVERTED, 1 REVERT_SKIPPED
    assert {e.data["execution_reason"] for e in inverse_events} == {"ROLLBACK_FLOW"}
    reverted = [c for c in commands.values() if c.status in INVERSE_STATUSES]
    assert len(reverted) == 4
    assert {c.execution_reason for c in reverted} == {"ROLLBACK_FLOW"}
    shown = seed.planctl("show", "--last")
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^add_vm\s+REVERTED\s+ROLLBACK_FLOW", shown.stdout, re.M), shown.stdout
    assert re.search(r"^\s+clone\[disk1\]\s+REVERT_SKIPPED\s+ROLLBACK_FLOW", shown.stdout,
                     re.M), shown.stdout
    assert "status   ROLLED_BACK" in shown.stdout


# -- nothing inverted that the run did not create ---------------------------------------------


def test_pre_existing_vm_is_adopted_and_never_removed(seed: Seed) -> None:
    """A VM that existed before the run is left in place by the rollback, which removes only
    the images the run copied, and the run still counts as fully rolled back (exit 1)."""
    seed.store("create-vm", "vm-42")
    done = seed.apply(*FAIL_DISK1)
    assert done.returncode == 1, done.stdout + done.stderr
    assert seed.listing() == ["vm vm-42"]
    assert seed.mutations()["create-vm vm-42"] == 1  # ours, before the run
    assert seed.mutations()["remove-vm vm-42"] == 0
    assert sorted(_removals(seed)) == ["remove-image vm-42-disk0", "remove-image vm-42-disk2"]
    add_vm = seed.commands()["add_vm"]
    assert add_vm.changed is False
    vm_statuses = [e.data["status"] for e in seed.events()
                   if e.kind == "command" and e.command_id == "add_vm"]
    assert "STARTING" not in vm_statuses  # exists said present: create-vm never ran
    assert not INVERSE_STATUSES & set(vm_statuses)


def test_pre_existing_image_is_kept_and_blocks_the_vm_removal(seed: Seed) -> None:
    """An image that existed before the run stays UNCHANGED and is never removed; the store
    refuses to remove the VM while it exists, so add_vm ends REVERT_FAILED and the run exits 2
    listing the VM as a leftover."""
    task = seed.store("copy-image", "disk0", "vm-42-disk0").stdout.strip()
    for _ in range(200):
        if seed.store("task-status", task).stdout.strip() != "running":
            break
    assert seed.store("task-status", task).stdout.strip() == "finished"
    done = seed.apply(*FAIL_DISK1)
    assert done.returncode == 2, done.stdout + done.stderr
    commands = seed.commands()
    assert commands["clone[disk0]"].status == "UNCHANGED"
    assert commands["clone[disk0]"].changed is False
    assert commands["add_vm"].status == "REVERT_FAILED"
    assert "still has images: vm-42-disk0" in (commands["add_vm"].error or "")
    assert seed.mutations()["remove-image vm-42-disk0"] == 0
    assert seed.mutations()["remove-image vm-42-disk2"] == 1
    assert seed.listing() == ["image vm-42-disk0", "vm vm-42"]
    assert seed.last_run().status == "ROLLBACK_FAILED"
    assert re.search(r"^\s+- add_vm vm/vm-42 \[REVERT_FAILED\]: .*still has images",
                     done.stdout, re.M), done.stdout
    assert "clone[disk0]" not in done.stdout.split("leftovers")[1]


# -- a failing inverse, then a later rollback ---------------------------------------------------


def test_failed_removal_is_left_over_then_a_later_rollback_finishes(seed: Seed) -> None:
    """An image whose removal fails is REVERT_FAILED and keeps its VM (exit 2, leftovers
    listed, `planctl rollback RUN` suggested); once the fault is gone a rollback removes the
    rest exactly once (exit 0), and a third call has nothing to undo (exit 0)."""
    done = seed.apply(*FAIL_DISK1, env={"STORE_FAIL_REMOVE": "vm-42-disk0"})
    assert done.returncode == 2, done.stdout + done.stderr
    run_id = seed.last_run().id
    commands = seed.commands()
    assert commands["clone[disk0]"].status == "REVERT_FAILED"
    assert commands["clone[disk2]"].status == "REVERTED"
    assert commands["add_vm"].status == "FAILED"  # not reverted: its image is still there
    assert seed.mutations()["remove-vm vm-42"] == 0
    assert seed.listing() == ["image vm-42-disk0", "vm vm-42"]
    leftovers = done.stdout.split("leftovers", 1)[1]
    assert re.search(r"- clone\[disk0\] image/vm-42-disk0 \[REVERT_FAILED\]: "
                     r".*removal of vm-42-disk0 failed", leftovers), done.stdout
    assert re.search(r"- add_vm vm/vm-42 \[FAILED\]: ", leftovers), done.stdout
    assert f"planctl rollback {run_id}" in done.stdout

    again = seed.planctl("rollback", "--last")
    assert again.returncode == 0, again.stdout + again.stderr
    assert seed.listing() == []
    assert seed.last_run().status == "ROLLED_BACK"
    counts = seed.mutations()
    assert counts["remove-image vm-42-disk0"] == counts["remove-image vm-42-disk2"] == 1
    assert counts["remove-vm vm-42"] == 1
    assert _removals(seed)[-1] == "remove-vm vm-42"

    third = seed.planctl("rollback", "--last")
    assert third.returncode == 0, third.stdout + third.stderr
    assert "nothing to undo" in third.stdout
    assert seed.mutations() == counts


# -- the inverse's intent is durable before it acts --------------------------------------------

# The inverse reports what the state store says about its own command while it runs.
_SPY = """\
import os, sqlite3, sys
row = sqlite3.connect(os.environ["PLANCTL_STATE"]).execute(
    "SELECT status, execution_reason FROM commands WHERE run_id = ? AND id = ?",
    (os.environ["PLANCTL_RUN_ID"], os.environ["PLANCTL_COMMAND_ID"])).fetchone()
with open("seen", "a") as out:
    out.write(" ".join([*row, os.environ["PLANCTL_EXECUTION_REASON"], sys.argv[1]]) + "\\n")
os.remove("made")
"""

_SPY_PLAN = """\
name: durable-inverse
commands:
  - id: make
    entity: thing/made
    run: {{shell: "touch made"}}
    inverse: {{command: [{python}, -c, {spy}, "{{{{ execution_reason }}}}"]}}{exists}
  - id: boom
    needs: [make]
    changes: false
    run: {{shell: "exit 1"}}
"""


@pytest.mark.parametrize("probe", ["with exists", "without exists"])
def test_inverse_runs_after_its_rollback_flow_intent_is_committed(seed: Seed, probe: str
                                                                 ) -> None:
    """An inverse finds its command already committed as REVERTING with execution_reason
    ROLLBACK_FLOW, and gets ROLLBACK_FLOW in its environment and templates."""
    exists = '\n    exists: {shell: "test -e made"}' if probe == "with exists" else ""
    plan = seed.plan.parent / "durable.yaml"
    plan.write_text(_SPY_PLAN.format(python=json.dumps(sys.executable),
                                     spy=json.dumps(_SPY), exists=exists))
    done = seed.planctl("apply", str(plan))
    assert done.returncode == 1, done.stdout + done.stderr
    assert (plan.parent / "seen").read_text() == \
        "REVERTING ROLLBACK_FLOW ROLLBACK_FLOW ROLLBACK_FLOW\n"
    assert not (plan.parent / "made").exists()
    make = seed.commands()["make"]
    assert (make.status, make.execution_reason) == ("REVERTED", "ROLLBACK_FLOW")


# Two independent branches whose inverses each wait for the other's to have started: they
# can both succeed only when run in parallel. `keep` needs `base`, and its inverse fails.
BRANCHES_PLAN = """\
name: branches
commands:
  - id: left
    run: {command: [touch, left]}
    inverse:
      shell: "rm left; touch left.undoing; for i in $(seq 200); do
        [ -e right.undoing ] && exit 0; sleep 0.05; done; exit 1"
  - id: right
    run: {command: [touch, right]}
    inverse:
      shell: "rm right; touch right.undoing; for i in $(seq 200); do
        [ -e left.undoing ] && exit 0; sleep 0.05; done; exit 1"
  - id: base
    run: {command: [touch, base]}
    inverse: {command: [rm, base]}
  - id: keep
    needs: [base]
    run: {command: [touch, keep]}
    inverse: {shell: "echo cannot >&2; exit 1"}
  - id: boom
    needs: [left, right, keep]
    changes: false
    run: {command: ["false"]}
"""


def test_independent_branches_are_undone_in_parallel_and_a_failed_inverse_keeps_its_needs(
        seed: Seed) -> None:
    """Independent branches are undone in parallel (each inverse here waits for the other
    to start, so run one after the other both would fail); an inverse that fails leaves
    what its command needs in place, as still in use (REVERT_FAILED, exit 2)."""
    plan = seed.root / "branches.yaml"
    plan.write_text(BRANCHES_PLAN)
    done = seed.planctl("apply", str(plan))
    assert done.returncode == 2, done.stdout + done.stderr
    statuses = {i: c.status for i, c in seed.commands().items()}
    assert statuses == {"left": "REVERTED", "right": "REVERTED", "base": "SUCCEEDED",
                        "keep": "REVERT_FAILED", "boom": "FAILED"}
    assert not (seed.root / "left").exists() and not (seed.root / "right").exists()
    assert (seed.root / "base").exists() and (seed.root / "keep").exists()
    leftovers = done.stdout.split("leftovers", 1)[1]
    assert re.search(r"- base \[SUCCEEDED\]: not undone: something that depends on it",
                     leftovers), done.stdout
    assert re.search(r"- keep \[REVERT_FAILED\]: .*cannot", leftovers), done.stdout
    assert seed.last_run().status == "ROLLBACK_FAILED"


# The poll of an inverse's task checks what the state store says about its command and task:
# "ok" when both are committed as they should be before a first poll, else what it found.
_TASK_SPY = """\
import os, sqlite3, sys
db = sqlite3.connect(os.environ["PLANCTL_STATE"])
key = (os.environ["PLANCTL_RUN_ID"], os.environ["PLANCTL_COMMAND_ID"])
row = db.execute("SELECT status, execution_reason FROM commands WHERE run_id = ? AND id = ?",
                 key).fetchone()
tasks = db.execute("SELECT handle, status, execution_reason, entity FROM async_tasks"
                   " WHERE run_id = ? AND command_id = ?", key).fetchall()
found = (row, tasks, os.environ["PLANCTL_EXECUTION_REASON"])
expected = (("REVERTING", "ROLLBACK_FLOW"), [(sys.argv[1], "RUNNING", "ROLLBACK_FLOW",
                                               "thing/made")], "ROLLBACK_FLOW")
print("ok" if found == expected else found)
"""

_ASYNC_INVERSE_PLAN = """\
name: async-inverse
commands:
  - id: make
    entity: thing/made
    exists: {{command: [test, -e, made]}}
    run: {{command: [touch, made]}}
    inverse:
      shell: "rm made; echo job-inv-7"
      async:
        handle: "{{{{ result.stdout | trim }}}}"
        poll: {{command: [{python}, -c, {spy}, "{{{{ handle }}}}"]}}
        until: "{{{{ poll.stdout | trim == 'ok' }}}}"
        failed_when: "{{{{ poll.stdout | trim != 'ok' }}}}"
        interval: 10ms
  - id: boom
    needs: [make]
    changes: false
    run: {{command: ["false"]}}
"""


def test_an_async_inverse_task_is_recorded_under_the_commands_entity_before_it_is_polled(
        seed: Seed) -> None:
    """The task an inverse starts is committed, with its handle, under the entity of the
    command it undoes and in ROLLBACK_FLOW, before its first poll, which finds the command
    REVERTING; the task is polled to its end, and its success marks the command REVERTED
    while the run still ends ROLLED_BACK."""
    plan = seed.root / "async-inverse.yaml"
    plan.write_text(_ASYNC_INVERSE_PLAN.format(python=json.dumps(sys.executable),
                                               spy=json.dumps(_TASK_SPY)))
    done = seed.planctl("apply", str(plan))
    assert done.returncode == 1, done.stdout + done.stderr
    assert not (seed.root / "made").exists()
    assert seed.commands()["make"].status == "REVERTED"
    assert seed.last_run().status == "ROLLED_BACK"
    (task,) = seed.tasks()
    assert (task.handle, task.status, task.execution_reason, task.entity, task.polls) == (
        "job-inv-7", "SUCCEEDED", "ROLLBACK_FLOW", "thing/made", 1)


RETRIED_INVERSES_PLAN = """\
name: retried-inverses
commands:
  - id: flaky
    run: {command: [touch, flaky]}
    inverse:
      shell: "echo try >> flaky.tries; [ $(wc -l < flaky.tries) -ge 3 ] && rm flaky"
      retries: 2
      delay: 10ms
  - id: stuck
    run: {command: [touch, stuck]}
    inverse: {shell: "echo try >> stuck.tries; exit 1", retries: 1, delay: 10ms}
  - id: boom
    needs: [flaky, stuck]
    changes: false
    run: {command: ["false"]}
"""


def test_an_inverse_is_retried_within_its_retries_before_it_is_revert_failed(
        seed: Seed) -> None:
    """An inverse that fails is tried again within its own `retries`: one that succeeds on
    its third attempt marks its command REVERTED; one that keeps failing marks it
    REVERT_FAILED once its retries are spent, and the run ends ROLLBACK_FAILED (exit 2)."""
    plan = seed.root / "retried.yaml"
    plan.write_text(RETRIED_INVERSES_PLAN)
    done = seed.planctl("apply", str(plan))
    assert done.returncode == 2, done.stdout + done.stderr
    commands = seed.commands()
    assert (commands["flaky"].status, commands["stuck"].status) == ("REVERTED",
                                                                    "REVERT_FAILED")
    assert (seed.root / "flaky.tries").read_text().count("try") == 3
    assert (seed.root / "stuck.tries").read_text().count("try") == 2
    assert not (seed.root / "flaky").exists() and (seed.root / "stuck").exists()
    assert seed.last_run().status == "ROLLBACK_FAILED"


# -- rolling back a run that did not roll back by itself ---------------------------------------


def test_rollback_of_a_succeeded_run_undoes_everything_children_first(seed: Seed) -> None:
    """`planctl rollback --dry-run` of a SUCCEEDED run lists the images then the VM and changes
    nothing; `planctl rollback` then removes them in that order and exits 0."""
    done = seed.apply(*QUICK)
    assert done.returncode == 0, done.stdout + done.stderr
    assert seed.listing() == [*IMAGES, "vm vm-42"]
    log_before = seed.log()

    dry = seed.planctl("rollback", "--last", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    rows = [line.split() for line in dry.stdout.splitlines()[1:]]
    assert [row[1] for row in rows][-1] == "add_vm"
    assert sorted(row[1] for row in rows[:-1]) == ["clone[disk0]", "clone[disk1]",
                                                  "clone[disk2]"]
    assert [row[0] for row in rows] == ["1", "2", "3", "4"]
    assert all("would run inverse" in line for line in dry.stdout.splitlines()[1:])
    assert seed.log() == log_before
    assert seed.last_run().status == "SUCCEEDED"

    undo = seed.planctl("rollback", "--last")
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert seed.listing() == []
    removals = _removals(seed)
    assert len(removals) == 4 and removals[-1] == "remove-vm vm-42"
    assert seed.last_run().status == "ROLLED_BACK"
    assert {c.status for i, c in seed.commands().items() if i != "start_vm"} == {"REVERTED"}

def test_rollback_uses_the_plan_and_vars_the_run_started_with(seed: Seed) -> None:
    """`planctl rollback RUN` works from the plan as it was when the run started, with the
    run's --var values: the plan file edited and moved away since changes nothing."""
    plan = seed.root / "snap.yaml"
    plan.write_text("name: snap\nvars: {tag: one}\ncommands:\n  - id: make\n"
                    "    run: {shell: 'touch made-{{ tag }}'}\n"
                    "    inverse: {shell: 'rm made-{{ tag }}; echo old {{ tag }} >> undone'}\n")
    done = seed.planctl("apply", str(plan), "--var", "tag=two")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (seed.root / "made-two").exists()
    plan.write_text(plan.read_text().replace("echo old", "echo new").replace("one", "three"))
    plan.rename(seed.root / "moved.yaml")
    undo = seed.planctl("rollback", "--last")
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert not (seed.root / "made-two").exists()
    assert (seed.root / "undone").read_text() == "old two\n"
    assert seed.last_run().status == "ROLLED_BACK"


def test_rollback_gets_the_plans_numbers_as_written(seed: Seed) -> None:
    """The run's plan comes back from its JSON snapshot with its floats as floats. Read
    through YAML 1.1, JSON's `1e-05` and `1e+20` were text, so a later rollback handed the
    inverse "1e-05" where the plan said 0.00001."""
    (seed.root / "record.py").write_text(
        "import json\n"
        "def kinds(**values):\n"
        "    with open('undone', 'w') as out:\n"
        "        json.dump({k: [type(v).__name__, v] for k, v in values.items()}, out)\n")
    plan = seed.root / "floats.yaml"
    plan.write_text("name: floats\ncommands:\n  - id: make\n    run: {shell: 'touch made'}\n"
                    "    inverse:\n      python:\n        function: record:kinds\n"
                    "        kwargs: {tiny: 0.00001, huge: 1.0e+20, whole: 3, half: 0.5}\n")
    done = seed.planctl("apply", str(plan))
    assert done.returncode == 0, done.stdout + done.stderr
    undo = seed.planctl("rollback", "--last")
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert json.loads((seed.root / "undone").read_text()) == {
        "tiny": ["float", 1e-05], "huge": ["float", 1e20], "whole": ["int", 3],
        "half": ["float", 0.5]}


PART_WAY_PLAN = """\
name: part-way
commands:
  - id: base
    run: {command: [sh, -c, "echo made > base"]}
    inverse: {command: [sh, -c, "echo base >> undone; rm base"]}
  - id: vm
    run: {command: [mkdir, vm]}
    exists: {command: [test, -d, vm]}
    inverse: {command: [sh, -c, "echo vm >> undone; rmdir vm"]}
    children:
      - id: img
        needs: [base]
        run: {command: [sh, -c, "touch vm/img; exit 1"]}
        inverse: {command: [rm, vm/img]}
"""


def test_what_a_part_way_failure_may_have_left_is_left_and_gone_settles_it(
        seed: Seed) -> None:
    """`img` failed part-way and has no `exists`: it may still be there, so its inverse is
    not run (a leftover, exit 2), while every command the run changed gets its inverse
    (the spec): `base` is undone, and `vm`'s rmdir fails on the image inside. The summary
    says only a removal by hand settles img; once done, `rollback --gone img` records it
    REVERT_SKIPPED and undoes vm. `rollback --dry-run` says what it would do before."""
    plan = seed.root / "part-way.yaml"
    plan.write_text(PART_WAY_PLAN)
    done = seed.planctl("apply", str(plan), "--no-rollback")
    assert done.returncode == 2, done.stdout + done.stderr
    dry = seed.planctl("rollback", "--last", "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    verdicts = {row.split()[1]: row for row in dry.stdout.splitlines()[1:]}
    assert "left alone" in verdicts["img"]
    assert "would run inverse" in verdicts["vm"] and "would run inverse" in verdicts["base"]

    undo = seed.planctl("rollback", "--last")
    assert undo.returncode == 2, undo.stdout + undo.stderr
    assert sorted((seed.root / "undone").read_text().split()) == ["base", "vm"]
    assert (seed.root / "vm" / "img").exists() and not (seed.root / "base").exists()
    assert seed.last_run().status == "ROLLBACK_FAILED"
    statuses = {i: c.status for i, c in seed.commands().items()}
    assert statuses == {"img": "FAILED", "vm": "REVERT_FAILED", "base": "REVERTED"}
    assert f"then: planctl rollback {seed.last_run().id} --gone img" in undo.stdout

    # Removed by hand and said so: the rollback records img gone and undoes the rest.
    assert seed.planctl("rollback", "--last", "--gone", "nope").returncode == 3
    (seed.root / "vm" / "img").unlink()
    undo = seed.planctl("rollback", "--last", "--gone", "img")
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert not (seed.root / "vm").exists()
    statuses = {i: c.status for i, c in seed.commands().items()}
    assert statuses == {"img": "REVERT_SKIPPED", "vm": "REVERTED", "base": "REVERTED"}
    assert seed.last_run().status == "ROLLED_BACK"


def test_gone_given_a_loop_or_a_near_miss_says_which_commands_it_means(seed: Seed) -> None:
    """`--gone clone` (a loop's id) lists the loop's commands to give, one by one, and a
    near miss suggests the command; both exit 3 before anything is undone."""
    done = seed.apply(*FAIL_DISK1, "--no-rollback")
    assert done.returncode == 2, done.stdout + done.stderr
    run_id = seed.last_run().id
    loop = seed.planctl("rollback", "--last", "--gone", "clone")
    assert (loop.returncode, loop.stdout) == (3, "")
    assert loop.stderr == (f"planctl: error: --gone clone: a loop in run {run_id}; give each "
                           "of its commands that is gone: clone[disk0], clone[disk1], "
                           "clone[disk2]\n")
    near = seed.planctl("rollback", "--last", "--gone", "clone[dsk1]")
    assert near.returncode == 3
    assert near.stderr == (f"planctl: error: --gone clone[dsk1]: run {run_id} has no such "
                           "command (did you mean `clone[disk1]`?)\n")
    assert seed.last_run().status == "STOPPED"


FAILED_PRESENT_PLAN = """\
name: failed-present
commands:
  - id: make
    exists: {shell: "test -e made && cat made"}
    run: {shell: "echo uuid-7 > made; exit 1"}
    inverse: {shell: "rm made; echo {{ outputs.uuid }} >> undone"}
    outputs: {uuid: "{{ result.stdout | trim }}"}
"""


@pytest.mark.parametrize("how", ["apply", "rollback"])
def test_a_failed_command_found_present_is_undone_with_outputs_from_its_probe(
        seed: Seed, how: str) -> None:
    """A command whose `run` failed after creating its resource gets its inverse when
    `exists` says present (spec, ROLLBACK_FLOW 2). Its `run` gave no outputs, so, as for a
    command found present on resume, the probe's answer stands in: an inverse that reads
    `outputs` runs (it used to end REVERT_FAILED on "'dict object' has no attribute 'uuid'",
    for good), whether apply rolls back itself or a later `planctl rollback` does."""
    plan = seed.root / "failed-present.yaml"
    plan.write_text(FAILED_PRESENT_PLAN)
    args = ["--no-rollback"] if how == "rollback" else []
    done = seed.planctl("apply", str(plan), *args)
    assert done.returncode == (2 if how == "rollback" else 1), done.stdout + done.stderr
    if how == "rollback":
        assert (seed.root / "made").exists()
        done = seed.planctl("rollback", "--last")
        assert done.returncode == 0, done.stdout + done.stderr
    assert not (seed.root / "made").exists()
    assert (seed.root / "undone").read_text() == "uuid-7\n"
    assert seed.commands()["make"].status == "REVERTED"
    assert seed.last_run().status == "ROLLED_BACK"


@pytest.mark.parametrize("how", ["on_failure: stop", "--no-rollback"])
def test_stopped_run_leaves_everything_for_a_later_rollback(seed: Seed, how: str) -> None:
    """With on_failure: stop or --no-rollback a failed run removes nothing and exits 2 listing
    its leftovers; a later `planctl rollback` removes them all and exits 0."""
    args = list(FAIL_DISK1)
    if how == "--no-rollback":
        args.append("--no-rollback")
    else:
        text = seed.plan.read_text()
        assert "on_failure: rollback" in text
        seed.plan.write_text(text.replace("on_failure: rollback", "on_failure: stop"))
    done = seed.apply(*args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert seed.last_run().status == "STOPPED"
    assert _removals(seed) == []
    assert seed.listing() == ["image vm-42-disk0", "image vm-42-disk2", "vm vm-42"]
    assert "- add_vm vm/vm-42" in done.stdout
    assert "- clone[disk2] image/vm-42-disk2" in done.stdout

    undo = seed.planctl("rollback", "--last")
    assert undo.returncode == 0, undo.stdout + undo.stderr
    assert seed.listing() == []
    assert _removals(seed)[-1] == "remove-vm vm-42"
    assert seed.commands()["clone[disk1]"].status == "REVERT_SKIPPED"


# -- the attempt cap ------------------------------------------------------------------------------


ALWAYS_FAILS = {"STORE_FAIL_REMOVE": "vm-42-disk0"}


def _api_rollback(seed: Seed, monkeypatch: pytest.MonkeyPatch) -> RunOutcome:
    """`planctl rollback --last` through the Python API, in this process (a CLI call would
    find the run's locks held by this live process: see test_locks_signals.py)."""
    for name in ("STORE_DIR", "PLANCTL_STATE"):
        monkeypatch.setenv(name, seed.env[name])
    with seed.db() as store:
        return rollback_run(store, seed.last_run().id, handle_signals=False)


def test_an_inverse_that_always_fails_is_capped(seed: Seed) -> None:
    """Repeated `planctl rollback` calls of an inverse that always fails never take
    revert_attempts above MAX_REVERT_ATTEMPTS; the command ends REVERT_FAILED with "gave up" and
    every call exits 2."""
    done = seed.apply(*FAIL_DISK1, env=ALWAYS_FAILS)
    assert done.returncode == 2, done.stdout + done.stderr
    assert seed.commands()["clone[disk0]"].revert_attempts == 1
    for attempt in range(2, MAX_REVERT_ATTEMPTS + 3):
        done = seed.planctl("rollback", "--last", env=ALWAYS_FAILS)
        assert done.returncode == 2, done.stdout + done.stderr
        record = seed.commands()["clone[disk0]"]
        assert record.status == "REVERT_FAILED"
        assert record.revert_attempts == min(attempt, MAX_REVERT_ATTEMPTS)
    assert "gave up" in (record.error or "")
    assert "gave up" in done.stdout
    assert seed.mutations()["remove-image vm-42-disk0"] == 0
    assert seed.last_run().status == "ROLLBACK_FAILED"
    assert seed.listing() == ["image vm-42-disk0", "vm vm-42"]


def _give_up_at_once(seed: Seed, monkeypatch: pytest.MonkeyPatch) -> RunOutcome:
    """In this process: a failed apply whose removal of vm-42-disk0 failed, then a rollback
    with the cap lowered to the one attempt already made (planctl gives up)."""
    from planner.executor import apply_plan
    from planner.loader import load_plan

    for name in ("STORE_DIR", "PLANCTL_STATE"):
        monkeypatch.setenv(name, seed.env[name])
    monkeypatch.setenv("STORE_FAIL_REMOVE", "vm-42-disk0")
    loaded = load_plan(seed.plan, variables={"fail_disks": "disk1", "copy_seconds": 0.1})
    with seed.db() as store:
        assert apply_plan(loaded, store, handle_signals=False).exit_code == 2
    monkeypatch.setattr(rollback_module, "MAX_REVERT_ATTEMPTS", 1)
    outcome = _api_rollback(seed, monkeypatch)
    assert "gave up" in (seed.commands()["clone[disk0]"].error or "")
    return outcome


def test_after_giving_up_a_leftover_removed_by_hand_lets_rollback_finish(
        seed: Seed, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once planctl gave up on an inverse, removing the leftover by hand lets `planctl
    rollback` see it absent, remove the VM and exit 0, as its own hint promises."""
    _give_up_at_once(seed, monkeypatch)
    monkeypatch.delenv("STORE_FAIL_REMOVE")
    seed.store("remove-image", "vm-42-disk0")
    assert _api_rollback(seed, monkeypatch).status == "ROLLED_BACK"
    assert seed.listing() == []
    assert seed.mutations()["remove-vm vm-42"] == 1


def test_the_rollback_that_gives_up_says_so(seed: Seed, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    """The rollback that hits the attempt cap gives "gave up" as its leftover's reason."""
    outcome = _give_up_at_once(seed, monkeypatch)
    reasons = {x.command: x.reason for x in outcome.leftovers}
    assert "gave up" in reasons["clone[disk0]"], reasons


def test_dry_run_keeps_what_a_leftover_needs_without_building_a_networkx_graph(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A command without an inverse is a leftover: what it waits for, directly or not
    (what it needs, its parent), is kept, and the dry run says so. That walk no longer
    builds the plan's networkx DiGraph (seconds for 100,000 commands), nor imports it."""
    import planner.graph
    from planner.cli import main

    plan = tmp_path / "plan.yaml"
    plan.write_text("""\
name: kept
commands:
  - id: base
    run: {command: ['true']}
    inverse: {command: ['true']}
  - id: side
    run: {command: ['true']}
    inverse: {command: ['true']}
  - id: mid
    needs: base
    run: {command: ['true']}
  - id: top
    needs: mid
    run: {command: ['true']}
    inverse: {command: ['true']}
  - id: box
    run: {command: ['true']}
    inverse: {command: ['true']}
    children:
      - id: inner
        run: {command: ['true']}
""")
    state = str(tmp_path / "state.db")
    assert main(["apply", str(plan), "-s", state]) == 0
    capsys.readouterr()

    def refused(*args: object) -> None:
        raise AssertionError("the networkx graph was built")

    monkeypatch.setattr(planner.graph, "_digraph", refused)
    assert main(["rollback", "--last", "--dry-run", "-s", state]) == 0
    rows = {row.split()[1]: row.split(None, 3)[3] for row in
            capsys.readouterr().out.splitlines()[1:]}
    assert rows == {"top": "would run inverse", "mid": "LEFTOVER (no inverse)",
                    "side": "would run inverse", "base": "kept: mid is still there",
                    "inner": "LEFTOVER (no inverse)", "box": "kept: inner is still there"}
