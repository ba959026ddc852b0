"""Tests of `planctl plan` (planner.preview): the real CLI in real subprocesses, asking only
`exists` probes, writing nothing, with documented exit codes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from seedplan import make_seed, spawn, wait_for

import planner
from planner.preview import EXIT_CHANGES, EXIT_WOULD_FAIL

ROOT = Path(__file__).resolve().parent.parent


def planctl(cwd: Path, *args: str | Path, env: Mapping[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    """The real CLI in ``cwd``; a traceback is never acceptable output."""
    done = subprocess.run(
        [sys.executable, "-m", "planner", *map(str, args)], cwd=cwd, capture_output=True,
        text=True, timeout=120, check=False,
        env={**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT), **(env or {})})
    assert "Traceback" not in done.stderr, done.stderr
    return done


def write(tmp_path: Path, text: str, name: str = "plan.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def rows(stdout: str) -> dict[str, str]:
    """The command table of `planctl plan`: command id -> its whole row."""
    table = stdout.split("\n\n")[1]
    return {line.split()[0]: line for line in table.splitlines()[1:]}


def rollback_order(stdout: str) -> list[str]:
    """The command ids of the rollback section, in order."""
    _, found, rest = stdout.partition("its rollback would undo, in this order:\n")
    assert found, stdout
    return [line.split()[1] for line in rest.split("\n\n")[0].splitlines()[1:]]


def as_json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def state_files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.glob("state.db*"))}


# -- the seed plan -------------------------------------------------------------------------


def test_plan_of_the_seed_plan_shows_what_would_run_and_writes_nothing(tmp_path: Path) -> None:
    """On an empty storage the VM would be created; its clones' probes, which apply asks
    only after that, are known after apply (absent now), as is start_vm's argument; the
    rollback would undo the clones (reversed) then the VM; nothing is created: no state
    store, no VM, no image."""
    seed = make_seed(tmp_path)
    done = seed.planctl("plan", str(seed.plan))
    assert done.returncode == 0, done.stdout + done.stderr
    table = rows(done.stdout)
    assert list(table) == ["add_vm", "clone[disk0]", "clone[disk1]", "clone[disk2]", "start_vm"]
    assert re.search(r"\bwould run\s+vm/vm-42", table["add_vm"]), table["add_vm"]
    for iid in ("add_vm", "clone[disk0]", "clone[disk1]", "clone[disk2]"):
        assert table[iid].rstrip().endswith("inverse")
    for iid in ("clone[disk0]", "clone[disk1]", "clone[disk2]"):
        assert re.search(r"\bknown after apply\s+image/vm-42", table[iid]), table[iid]
    # The loop's instances share one line of reasons.
    assert "known after apply: clone[disk0], clone[disk1], clone[disk2]: `exists` says " \
        "absent now, but apply would ask it after `add_vm` changed things\n" in done.stdout
    assert "./store copy-image disk1 vm-42-disk1" in table["clone[disk1]"]
    assert "would run (read-only)" in table["start_vm"]
    assert "(known after apply)" in table["start_vm"]
    assert "apply would change 4 commands (3 known only after apply)" in done.stdout
    assert rollback_order(done.stdout) == ["clone[disk2]", "clone[disk1]", "clone[disk0]",
                                           "add_vm"]
    assert "./store remove-image vm-42-disk2" in done.stdout
    assert "a rollback would leave nothing behind" in done.stdout
    assert not seed.state.exists()
    assert not (tmp_path / ".planctl").exists()
    assert seed.listing() == []
    assert seed.log() == []  # the store's audit log of mutations: none

    detailed = seed.planctl("plan", str(seed.plan), "--detailed-exitcode")
    assert detailed.returncode == EXIT_CHANGES == 10, detailed.stderr
    assert detailed.stdout == done.stdout


def test_plan_after_apply_finds_everything_unchanged_and_changes_no_state(
        tmp_path: Path) -> None:
    """After a successful apply, every command's probe says present: UNCHANGED, nothing to
    undo, exit 0 with --detailed-exitcode; outputs come from the probes (start_vm's argument
    shows the VM's uuid); the state store is byte for byte what apply left."""
    seed = make_seed(tmp_path)
    applied = seed.apply("--var", "copy_seconds=0.05")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    before = state_files(seed.state.parent)
    uuid = seed.store("vm-exists", "vm-42").stdout.strip()
    done = seed.planctl("plan", str(seed.plan), "--detailed-exitcode")
    assert done.returncode == 0, done.stdout + done.stderr
    table = rows(done.stdout)
    for iid in ("add_vm", "clone[disk0]", "clone[disk1]", "clone[disk2]"):
        assert "UNCHANGED (exists)" in table[iid], table[iid]
    assert uuid and f"ready with uuid {uuid[:20]}" in table["start_vm"]  # cut at 60 chars
    assert "nothing would change; 4 unchanged, 1 read-only" in done.stdout
    assert "rollback would undo" not in done.stdout
    assert state_files(seed.state.parent) == before
    assert seed.planctl("runs").stdout.count("\n") == 2  # the header and the one apply


# -- what is asked, what is not ------------------------------------------------------------

PROBED = """\
name: probed
vars: {skip: false}
commands:
  - id: absent
    exists: {shell: "echo absent >> probes.log; exit 1"}
    run: {shell: "touch ran-absent"}
    inverse: {shell: "touch undone-absent"}
  - id: present
    exists: {shell: "echo present >> probes.log; echo have-it"}
    run: {shell: "touch ran-present"}
    inverse: {shell: "touch undone-present"}
    outputs: {said: "{{ result.stdout | trim }}"}
  - id: reads_present
    needs: present
    exists: {command: [sh, -c, 'echo "reads $1" >> probes.log; exit 1', sh,
                       "{{ commands.present.outputs.said }}"]}
    run: {shell: "touch ran-reads"}
    inverse: {shell: "touch undone-reads"}
  - id: made
    needs: absent
    run: {shell: "echo made-output; touch ran-made"}
    inverse: {shell: "touch undone-made"}
    outputs: {said: "{{ result.stdout | trim }}"}
  - id: reads_made
    needs: made
    exists: {command: [sh, -c, 'echo "reads-made $1" >> probes.log', sh,
                       "{{ commands.made.outputs.said }}"]}
    run: {command: [touch, "ran-{{ commands.made.outputs.said }}"]}
    inverse: {shell: "touch undone-reads-made"}
  - id: parent
    when: "{{ not skip }}"
    exists: {shell: "echo parent >> probes.log; exit 1"}
    run: {shell: "touch ran-parent"}
    inverse: {shell: "touch undone-parent"}
    children:
      - id: child
        exists: {shell: "echo child >> probes.log; exit 1"}
        run: {shell: "touch ran-child"}
        inverse: {shell: "touch undone-child"}
"""


def test_plan_runs_only_exists_probes_and_follows_outputs_like_apply(tmp_path: Path) -> None:
    """Only `exists` probes run, never `run` or `inverse`. A probe reading the outputs of a
    command found present gets them from that command's probe, as apply would; a probe
    reading outputs of a command that would run is not asked: known after apply. A probe
    apply would ask after a command that would change something (here `parent`, before
    its `child`) is asked, but its answer may change by then: known after apply too."""
    write(tmp_path, PROBED)
    done = planctl(tmp_path, "plan", "plan.yaml", "-o", "json", "--detailed-exitcode")
    assert done.returncode == EXIT_CHANGES, done.stdout + done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.yaml", "probes.log"]
    asked = (tmp_path / "probes.log").read_text().splitlines()
    assert sorted(asked) == ["absent", "child", "parent", "present", "reads have-it"]
    data = as_json(done)
    verdicts = {c["id"]: c["verdict"] for c in data["commands"]}
    assert verdicts == {"absent": "run", "present": "unchanged", "reads_present": "run",
                        "made": "run-unprobed", "reads_made": "unknown", "parent": "run",
                        "child": "unknown"}
    by_id = {c["id"]: c for c in data["commands"]}
    assert by_id["reads_made"]["run"] == "touch 'ran-(known after apply)'"
    assert by_id["reads_made"]["changes"] is True  # it may: counted as a change
    assert by_id["present"]["changes"] is False and by_id["present"]["undo"] == "nothing"
    assert data["changes"] == 6 and data["failures"] == 0
    # Dependents first, children before their parent.
    assert data["rollback"] == ["child", "parent", "reads_made", "made", "reads_present",
                                "absent"]


def test_plan_skips_what_when_excludes_with_its_children(tmp_path: Path) -> None:
    """A command whose `when` is false is SKIPPED, its children too, and neither is probed."""
    write(tmp_path, PROBED)
    done = planctl(tmp_path, "plan", "plan.yaml", "--var", "skip=true")
    assert done.returncode == 0, done.stdout + done.stderr
    table = rows(done.stdout)
    assert "SKIPPED" in table["parent"] and "SKIPPED" in table["child"]
    asked = (tmp_path / "probes.log").read_text().splitlines()
    assert "parent" not in asked and "child" not in asked
    assert "2 skipped" in done.stdout


def test_plan_exits_11_when_a_probe_cannot_answer(tmp_path: Path) -> None:
    """A probe that cannot run (program not found) would fail the apply: the preview says
    so and exits 11, with or without --detailed-exitcode."""
    write(tmp_path, """\
        name: broken-probe
        commands:
          - id: fine
            run: {command: [touch, fine]}
            inverse: {command: [rm, fine]}
          - id: broken
            exists: {command: [./no-such-tool, check]}
            run: {command: [touch, broken]}
            inverse: {command: [rm, broken]}
        """)
    for extra in ((), ("--detailed-exitcode",)):
        done = planctl(tmp_path, "plan", "plan.yaml", *extra)
        assert done.returncode == EXIT_WOULD_FAIL == 11, done.stdout + done.stderr
        assert "would fail" in rows(done.stdout)["broken"]
        assert re.search(r"^would fail: broken: exists probe could not answer: .*no-such-tool",
                         done.stdout, re.M), done.stdout
        assert "1 would fail" in done.stdout
    assert not (tmp_path / "fine").exists() and not (tmp_path / "broken").exists()


def test_plan_names_leftovers_irreversible_and_read_only_commands(tmp_path: Path) -> None:
    """The rollback column says how each command would be undone: by its inverse, not at
    all (irreversible, read-only), or not possibly (no inverse: a leftover, named)."""
    write(tmp_path, """\
        name: undo-kinds
        commands:
          - id: undoable
            run: {command: [touch, a]}
            inverse: {command: [rm, a]}
          - id: forever
            irreversible: true
            run: {command: [touch, b]}
          - id: reader
            changes: false
            run: {command: [cat, plan.yaml]}
          - id: forgotten
            run: {command: [touch, c]}
        """)
    done = planctl(tmp_path, "plan", "plan.yaml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "forgotten" in done.stderr and "warning" in done.stderr  # validation's warning
    table = rows(done.stdout)
    assert table["undoable"].rstrip().endswith("inverse")
    assert table["forever"].rstrip().endswith("irreversible")
    assert "would run (read-only)" in table["reader"]
    assert table["forgotten"].rstrip().endswith("LEFTOVER (no inverse)")
    assert rollback_order(done.stdout) == ["undoable"]
    assert "left behind by a rollback (no inverse, not irreversible): forgotten" in done.stdout
    data = as_json(planctl(tmp_path, "plan", "plan.yaml", "--output", "json"))
    assert {c["id"]: c["undo"] for c in data["commands"]} == {
        "undoable": "inverse", "forever": "irreversible", "reader": "read-only",
        "forgotten": "leftover"}
    assert data["leftovers"] == ["forgotten"]
    assert data["changes"] == 3  # the reader changes nothing


def test_plan_json_is_one_document_with_a_version(tmp_path: Path) -> None:
    """`--output json` prints one JSON document (warnings stay on stderr) with a version."""
    seed = make_seed(tmp_path)
    done = seed.planctl("plan", str(seed.plan), "--output", "json", "-j", "1")
    assert done.returncode == 0, done.stderr
    data = as_json(done)
    assert data["version"] == 1 and data["plan"] == "add-vm-from-template"
    assert [c["id"] for c in data["commands"]] == [
        "add_vm", "clone[disk0]", "clone[disk1]", "clone[disk2]", "start_vm"]
    assert data["commands"][1] == {
        "id": "clone[disk0]", "parent": "add_vm", "entity": "image/vm-42-disk0",
        "verdict": "unknown",
        "reason": "`exists` says absent now, but apply would ask it after `add_vm` changed things",
        "run": "./store copy-image disk0 vm-42-disk0",
        "inverse": "./store remove-image vm-42-disk0", "undo": "inverse", "changes": True}
    assert data["rollback"] == ["clone[disk2]", "clone[disk1]", "clone[disk0]", "add_vm"]
    assert data["leftovers"] == [] and data["changes"] == 4


# -- bad input -----------------------------------------------------------------------------


def test_plan_of_an_invalid_plan_exits_3(tmp_path: Path) -> None:
    """An invalid plan exits 3 with a located error, and no probe runs."""
    write(tmp_path, """\
        name: broken
        commands:
          - id: a
            exists: {shell: "touch probed"}
            run: {command: [touch, a]}
            retries: many
        """)
    done = planctl(tmp_path, "plan", "plan.yaml")
    assert done.returncode == 3, done.stdout + done.stderr
    assert re.search(r"plan\.yaml:\d+:\d+: error:", done.stderr)
    assert not (tmp_path / "probed").exists()


def test_plan_with_a_missing_secret_exits_3_before_probing(tmp_path: Path) -> None:
    """A probe may need a secret: one that is not set exits 3, naming it, before any probe."""
    write(tmp_path, """\
        name: needs-secret
        secrets: {token: {env: PLANCTL_TEST_PREVIEW_TOKEN}}
        commands:
          - id: a
            exists: {command: [sh, -c, 'touch probed; exit 1']}
            run: {command: [echo, "{{ token }}"]}
            irreversible: true
        """)
    env = {k: v for k, v in os.environ.items() if k != "PLANCTL_TEST_PREVIEW_TOKEN"}
    done = subprocess.run([sys.executable, "-m", "planner", "plan", "plan.yaml"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "PLANCTL_TEST_PREVIEW_TOKEN" in done.stderr
    assert not (tmp_path / "probed").exists()


def test_plan_help_documents_the_exit_codes() -> None:
    """`planctl plan --help` explains --detailed-exitcode and the codes 10 and 11."""
    done = planctl(ROOT, "plan", "--help")
    assert done.returncode == 0
    text = " ".join(done.stdout.split())
    assert "--detailed-exitcode" in text
    assert "10 something would change" in text and "11 apply would fail" in text


# -- the Python API ------------------------------------------------------------------------


def test_preview_plan_through_the_api_matches_the_cli(tmp_path: Path) -> None:
    """`planner.preview_plan` gives what the CLI prints: `format_preview` is its text."""
    path = write(tmp_path, PROBED)
    preview = planner.preview_plan(planner.load_plan(path))
    assert preview.exit_code() == 0 and preview.exit_code(detailed=True) == EXIT_CHANGES
    done = planctl(tmp_path, "plan", str(path))
    assert planner.format_preview(preview) == done.stdout


@pytest.mark.parametrize("when", ["{{ commands.made.status == 'SUCCEEDED' }}",
                                  "{{ run_id != '' }}"])
def test_plan_cannot_tell_a_when_that_needs_apply(tmp_path: Path, when: str) -> None:
    """A `when` reading what only apply knows makes the command known after apply."""
    write(tmp_path, f"""\
        name: late-when
        commands:
          - id: made
            run: {{command: [touch, made]}}
            inverse: {{command: [rm, made]}}
            outputs: {{x: "{{{{ result.rc }}}}"}}
          - id: later
            needs: made
            when: "{when}"
            run: {{command: [touch, later]}}
            inverse: {{command: [rm, later]}}
        """)
    done = planctl(tmp_path, "plan", "plan.yaml", "-o", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    verdicts = {c["id"]: c["verdict"] for c in as_json(done)["commands"]}
    if "commands.made.status" in when:  # predicted: a command that would run succeeds
        assert verdicts == {"made": "run-unprobed", "later": "run-unprobed"}
    else:
        assert verdicts == {"made": "run-unprobed", "later": "unknown"}


def test_plan_and_show_print_the_plans_description(tmp_path: Path) -> None:
    """The plan's `description` heads `planctl plan` (text and JSON) and `planctl show`,
    folded to one line; a plan without one prints no empty line for it."""
    write(tmp_path, """\
        name: described
        description: Make a marker file,
          then nothing else.
        commands:
          - id: mark
            run: {command: [touch, marker]}
            inverse: {command: [rm, marker]}
        """)
    done = planctl(tmp_path, "plan", "plan.yaml")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        "plan described (plan.yaml)\nMake a marker file, then nothing else.\n\nCOMMAND")
    assert as_json(planctl(tmp_path, "plan", "plan.yaml", "-o", "json"))["description"] \
        == "Make a marker file, then nothing else."
    assert planctl(tmp_path, "apply", "plan.yaml").returncode == 0
    shown = planctl(tmp_path, "show", "--last").stdout.splitlines()
    assert shown[1:3] == ["plan     described (plan.yaml)",
                          "         Make a marker file, then nothing else."]

    write(tmp_path, "name: bare\ncommands:\n  - id: a\n    run: {command: ['true']}\n",
          "bare.yaml")
    bare = planctl(tmp_path, "plan", "bare.yaml")
    assert bare.stdout.startswith("plan bare (bare.yaml)\n\nCOMMAND"), bare.stdout
    assert as_json(planctl(tmp_path, "plan", "bare.yaml", "-o", "json"))["description"] is None


LOCKING = """\
    name: locking
    commands:
      - id: hold
        entity: "file/held"
        run: {command: [sh, -c, 'touch started; sleep 30']}
        inverse: {command: ["true"]}
      - id: other
        entity: "file/other"
        run: {command: ["true"]}
        inverse: {command: ["true"]}
    """


def test_plan_reports_entities_another_run_holds_and_still_writes_nothing(
        tmp_path: Path) -> None:
    """An apply in flight holds the plan's entities: `planctl plan` lists them as locked by
    that run (alive), in text and JSON, exits as it would otherwise, and leaves the state
    file as it found it. Once the run has ended (killed: its locks are dead) and with no
    state file at all, nothing is reported and no file is made."""
    write(tmp_path, LOCKING)
    fresh = planctl(tmp_path, "plan", "plan.yaml")
    assert fresh.returncode == 0 and "locked now" not in fresh.stdout
    assert not (tmp_path / ".planctl").exists()

    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    running = spawn(tmp_path, "apply", "plan.yaml", env=env)
    try:
        wait_for("the apply to start `hold`", (tmp_path / "started").exists, timeout=30,
                 proc=running)
        before = state_files(tmp_path / ".planctl")
        done = planctl(tmp_path, "plan", "plan.yaml", "--detailed-exitcode")
        assert done.returncode == 10, done.stdout + done.stderr
        locked = done.stdout.split("locked now by other runs", 1)[1]
        assert re.search(r"entity file/held is locked by run \S+ \(pid \d+ on ", locked)
        assert "entity file/other is locked" in locked
        data = as_json(planctl(tmp_path, "plan", "plan.yaml", "-o", "json"))
        assert [(lock["entity"], lock["holder"]) for lock in data["locked"]] == [
            ("file/held", "alive"), ("file/other", "alive")]
        assert state_files(tmp_path / ".planctl").keys() == before.keys()
    finally:
        running.kill()
        running.communicate()
    # `planctl locks` opens the store (its close folds the killed run's WAL in, and
    # removes it), so the plan below reads a file no connection has open.
    assert "dead" in planctl(tmp_path, "locks").stdout
    after = state_files(tmp_path / ".planctl")
    assert list(after) == ["state.db"]
    data = as_json(planctl(tmp_path, "plan", "plan.yaml", "-o", "json"))
    assert {lock["holder"].split(" ")[0] for lock in data["locked"]} == {"dead"}
    assert state_files(tmp_path / ".planctl") == after  # no -wal or -shm made


def test_plan_with_an_unusable_state_file_exits_3(tmp_path: Path) -> None:
    write(tmp_path, LOCKING)
    (tmp_path / "junk.db").write_text("not a database")
    done = planctl(tmp_path, "plan", "plan.yaml", "--state", "junk.db")
    assert done.returncode == 3
    assert done.stderr.strip().splitlines()[-1] == \
        "planctl: error: junk.db: not a usable planctl state store: file is not a database"
    assert done.stdout == ""


# -- plan against apply: what plan says definitely, apply does -----------------------------

# What apply ends a command with, for each verdict plan gives without "known after apply".
AGREES = {"run": {"SUCCEEDED"}, "run-unprobed": {"SUCCEEDED"}, "unchanged": {"UNCHANGED"},
          "skipped": {"SKIPPED"}, "no-run": {"UNCHANGED", "SUCCEEDED"}, "fail": {"FAILED"},
          "not-reached": {None}}


def planned_then_applied(tmp_path: Path, *args: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """`planctl plan -o json`, then `planctl apply` of the same plan on the same files: the
    verdict of each command, and the status its forward part ended with (None: not run)."""
    done = planctl(tmp_path, "plan", "plan.yaml", "-o", "json", *args)
    assert done.returncode in (0, EXIT_WOULD_FAIL), done.stdout + done.stderr
    verdicts = {c["id"]: c["verdict"] for c in as_json(done)["commands"]}
    applied = planctl(tmp_path, "apply", "plan.yaml", "-o", "json", *args)
    ended: dict[str, Any] = dict.fromkeys(verdicts)
    for line in applied.stdout.splitlines():
        event = json.loads(line)
        if event["kind"] == "command" and event["execution_reason"] == "REGULAR_FLOW":
            ended[event["command_id"]] = event["status"]
    for iid, verdict in verdicts.items():
        if verdict != "unknown":
            assert ended[iid] in AGREES[verdict], (iid, verdict, ended[iid], applied.stdout)
    return verdicts, ended


def test_children_of_a_parent_whose_when_is_known_after_apply_are_not_promised(
        tmp_path: Path) -> None:
    """A parent's `when` reading outputs of a command that would run is known after apply,
    and so is every one of its descendants (a group's too): apply may skip them all. Plan
    no longer says they would run; apply indeed skips them."""
    write(tmp_path, """\
        name: late-parent
        commands:
          - id: up
            run: {command: [echo, "no"]}
            inverse: {command: ["true"]}
            outputs: {flag: "{{ result.stdout | trim }}"}
          - id: parent
            needs: up
            when: "{{ commands.up.outputs.flag == 'yes' }}"
            run: {command: [touch, parent]}
            inverse: {command: [rm, parent]}
            children:
              - id: child
                exists: {command: [test, -e, child]}
                run: {command: [touch, child]}
                inverse: {command: [rm, child]}
                children:
                  - id: grandchild
                    run: {command: [touch, grandchild]}
                    inverse: {command: [rm, grandchild]}
          - id: group
            needs: up
            when: "{{ commands.up.outputs.flag == 'yes' }}"
            children:
              - id: member
                run: {command: [touch, member]}
                inverse: {command: [rm, member]}
        """)
    verdicts, ended = planned_then_applied(tmp_path)
    assert verdicts == {"up": "run-unprobed", "parent": "unknown", "child": "unknown",
                        "grandchild": "unknown", "group": "unknown", "member": "unknown"}
    assert ended == {"up": "SUCCEEDED", "parent": "SKIPPED", "child": "SKIPPED",
                     "grandchild": "SKIPPED", "group": "SKIPPED", "member": "SKIPPED"}
    text = planctl(tmp_path, "plan", "plan.yaml").stdout
    assert "known after apply: child, grandchild: whether its ancestor `parent` is skipped" \
        in text


def test_what_waits_for_a_command_that_would_fail_is_not_reached(tmp_path: Path) -> None:
    """Apply starts nothing after a failure: the children of a command whose probe cannot
    answer, and what needs it (directly or not), never run. Plan says "not reached" for
    them, leaves them out of the changes and of the rollback, and exits 11; apply indeed
    never starts them and undoes only what ran before."""
    write(tmp_path, """\
        name: doomed
        commands:
          - id: first
            run: {command: [touch, first]}
            inverse: {command: [rm, first]}
          - id: broken
            needs: first
            exists: {command: [./no-such-probe]}
            run: {command: [touch, broken]}
            inverse: {command: [rm, broken]}
            children:
              - id: kid
                exists: {command: [test, -e, kid]}
                run: {command: [touch, kid]}
                inverse: {command: [rm, kid]}
          - id: after
            needs: broken
            run: {command: [touch, after]}
            inverse: {command: [rm, after]}
          - id: later
            needs: after
            run: {command: [touch, later]}
            inverse: {command: [rm, later]}
        """)
    done = planctl(tmp_path, "plan", "plan.yaml", "--detailed-exitcode")
    assert done.returncode == EXIT_WOULD_FAIL, done.stdout + done.stderr
    table = rows(done.stdout)
    for iid in ("kid", "after", "later"):
        assert re.search(r"\bnot reached\s", table[iid]), table[iid]
    assert rollback_order(done.stdout) == ["first"]
    assert "apply would change 1 command;" in done.stdout and "3 not reached" in done.stdout
    data = as_json(planctl(tmp_path, "plan", "plan.yaml", "-o", "json"))
    assert data["changes"] == 1 and data["rollback"] == ["first"]
    assert {c["id"]: c["reason"] for c in data["commands"]}["later"] == \
        "it waits for `broken`, which would fail: apply would start nothing after that"
    verdicts, ended = planned_then_applied(tmp_path)
    assert verdicts == {"first": "run-unprobed", "broken": "fail", "kid": "not-reached",
                        "after": "not-reached", "later": "not-reached"}
    assert ended == {"first": "SUCCEEDED", "broken": "FAILED", "kid": None, "after": None,
                     "later": None}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".planctl", "plan.yaml"]


def test_a_probe_apply_asks_after_a_change_is_known_after_apply(tmp_path: Path) -> None:
    """`configure` probes a file that `unpack`, which it needs and which would run, makes:
    absent when plan asks, present when apply asks. Plan says so ("known after apply",
    with what it found now) instead of "would run"; apply finds it present: UNCHANGED.
    Once `unpack` is present itself, the probe's answer is plan's to give: unchanged."""
    write(tmp_path, """\
        name: unpack-then-configure
        commands:
          - id: unpack
            exists: {command: [test, -d, app]}
            run: {shell: "mkdir app && echo default > app/config"}
            inverse: {command: [rm, -r, app]}
          - id: configure
            needs: unpack
            exists: {command: [test, -e, app/config]}
            run: {shell: "echo custom > app/config"}
            inverse: {command: [rm, app/config]}
          - id: report
            needs: configure
            changes: false
            exists: {command: [test, -e, app/config]}
            run: {command: [cat, app/config]}
        """)
    verdicts, ended = planned_then_applied(tmp_path)
    assert verdicts == {"unpack": "run", "configure": "unknown", "report": "unknown"}
    assert ended == {"unpack": "SUCCEEDED", "configure": "UNCHANGED", "report": "UNCHANGED"}
    reason = {c["id"]: c["reason"] for c in as_json(
        planctl(tmp_path, "plan", "plan.yaml", "-o", "json"))["commands"]}
    assert reason == {"unpack": "`exists` says present", "configure": "`exists` says present",
                      "report": "`exists` says present"}
    (tmp_path / "app" / "config").unlink()
    verdicts, ended = planned_then_applied(tmp_path)
    assert verdicts == {"unpack": "unchanged", "configure": "run", "report": "unknown"}
    assert ended == {"unpack": "UNCHANGED", "configure": "SUCCEEDED", "report": "UNCHANGED"}
    assert (tmp_path / "app" / "config").read_text() == "custom\n"


def test_plan_reads_the_state_file_apply_would_given_as_a_url(tmp_path: Path) -> None:
    """`--state` (and PLANCTL_STATE) takes what apply takes: a sqlite:/// or file:/// URL
    of the state file reports the same locks as its path (here one kept for the leftover
    of a failed run). It used to be read as a path named like the URL, with no locks."""
    write(tmp_path, """\
        name: kept
        commands:
          - id: made
            entity: "file/made"
            run: {command: [touch, made]}
            inverse: {command: [rm, made]}
          - id: boom
            needs: made
            run: {command: ["false"]}
            irreversible: true
        """)
    failed = planctl(tmp_path, "apply", "plan.yaml", "--no-rollback", "-s", "st/state.db")
    assert failed.returncode == 2, failed.stdout + failed.stderr
    before = state_files(tmp_path / "st")
    for state, env in (("st/state.db", {}), ("sqlite:///st/state.db", {}),
                       (f"file://{tmp_path}/st/state.db", {}),
                       (None, {"PLANCTL_STATE": "sqlite:///st/state.db"})):
        args = ("-s", state) if state else ()
        data = as_json(planctl(tmp_path, "plan", "plan.yaml", "-o", "json", *args, env=env))
        assert [(lock["entity"], lock["holder"]) for lock in data["locked"]] == [
            ("file/made", "kept for leftovers")], state
    assert state_files(tmp_path / "st") == before
    assert not (tmp_path / "sqlite:").exists()


def test_outputs_of_a_present_command_are_kept_one_by_one_as_apply_keeps_them(
        tmp_path: Path) -> None:
    """A command found present takes its outputs from the probe's answer, each on its own:
    one that reads `poll` (which only `run` gives) is left out, the others stand. Plan used
    to drop them all, so a command reading one of the others "would fail" (exit 11) while
    apply ran it and succeeded."""
    write(tmp_path, """\
        name: partial-outputs
        commands:
          - id: vm
            exists: {command: [echo, vm-7]}
            run:
              command: [echo, vm-7]
              async:
                handle: "{{ result.stdout | trim }}"
                poll: {command: [echo, ready]}
                until: "{{ poll.stdout | trim == 'ready' }}"
            inverse: {command: ["true"]}
            outputs:
              name: "{{ result.stdout | trim }}"
              state: "{{ poll.stdout | trim }}"
          - id: report
            needs: vm
            changes: false
            run: {command: [echo, "{{ commands.vm.outputs.name }}"]}
        """)
    done = planctl(tmp_path, "plan", "plan.yaml", "--detailed-exitcode")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "echo vm-7" in rows(done.stdout)["report"]
    verdicts, ended = planned_then_applied(tmp_path)
    assert verdicts == {"vm": "unchanged", "report": "run-unprobed"}
    assert ended == {"vm": "UNCHANGED", "report": "SUCCEEDED"}


@pytest.mark.parametrize("kid_inverse", [None, '{command: [rm, "{{ paths.kid.name }}"]}'])
def test_what_a_command_left_behind_depends_on_is_left_behind_too(
        tmp_path: Path, kid_inverse: str | None) -> None:
    """A rollback cannot undo `kid` (it has no inverse, or one that does not render), so it
    leaves `kid` and never undoes `base`, which `kid` depends on (the Reverter undoes
    nothing that something still there needs). Plan used to promise the rollback would
    undo `base` (and, for the inverse that does not render, that nothing is left behind);
    it now names both as left behind, which is what apply's rollback does when `boom`
    fails."""
    inverse = f"\n                inverse: {kid_inverse}" if kid_inverse else ""
    write(tmp_path, f"""\
        name: stuck-rollback
        vars: {{paths: {{kid: kid}}, boom: "no"}}
        commands:
          - id: base
            run: {{command: [mkdir, base]}}
            inverse: {{command: [rmdir, base]}}
            children:
              - id: kid
                run: {{command: [touch, base/kid]}}{inverse}
          - id: other
            run: {{command: [touch, other]}}
            inverse: {{command: [rm, other]}}
          - id: boom
            needs: [base, other]
            irreversible: true
            run: {{command: [test, "{{{{ boom }}}}", =, "no"]}}
        """)
    data = as_json(planctl(tmp_path, "plan", "plan.yaml", "-o", "json"))
    assert data["rollback"] == ["other"]
    assert data["leftovers"] == ["base", "kid"]
    done = planctl(tmp_path, "plan", "plan.yaml")
    assert "a rollback would leave nothing behind" not in done.stdout
    assert rollback_order(done.stdout) == ["other"]
    why = "no inverse, not irreversible" if kid_inverse is None else \
        "its inverse does not render"
    assert f"left behind by a rollback ({why}): kid\n" in done.stdout
    assert "left behind by a rollback (something that depends on it is left behind): " \
        "base\n" in done.stdout
    applied = planctl(tmp_path, "apply", "plan.yaml", "-o", "json", "--var", "boom=yes")
    assert applied.returncode == 2, applied.stdout + applied.stderr
    events = [json.loads(line) for line in applied.stdout.splitlines()]
    reverted = [e["command_id"] for e in events
                if e["kind"] == "command" and e["status"] == "REVERTED"]
    outcome = events[-1]
    assert reverted == data["rollback"]
    assert sorted(x["command"] for x in outcome["leftovers"]) == data["leftovers"]
    assert (tmp_path / "base" / "kid").exists() and not (tmp_path / "other").exists()


def test_what_apply_may_never_start_before_a_failure_is_known_after_apply(
        tmp_path: Path) -> None:
    """Once a command fails, apply starts no step at all, not only those that wait for it:
    with one step at a time, `other` (which waits for nothing) is never started after
    `broken` fails. Plan used to say it "would run"; it now says it is known after apply.
    `prep`, which `broken` waits for, and `first`, which apply starts in its first round
    (before any outcome is known), are sure to run."""
    write(tmp_path, """\
        name: stops-first
        settings: {max_parallel: 1}
        commands:
          - id: prep
            run: {command: [touch, prep]}
            inverse: {command: [rm, prep]}
          - id: broken
            needs: prep
            exists: {command: [./no-such-probe]}
            run: {command: [touch, broken]}
            inverse: {command: [rm, broken]}
          - id: other
            run: {command: [touch, other]}
            inverse: {command: [rm, other]}
        """)
    done = planctl(tmp_path, "plan", "plan.yaml", "--detailed-exitcode")
    assert done.returncode == EXIT_WOULD_FAIL, done.stdout + done.stderr
    assert "known after apply: other: apply starts nothing once `broken` fails, and that " \
        "does not wait for it: whether it starts this one first is known after apply\n" \
        in done.stdout
    verdicts, ended = planned_then_applied(tmp_path)
    assert verdicts == {"prep": "run-unprobed", "broken": "fail", "other": "unknown"}
    assert ended == {"prep": "SUCCEEDED", "broken": "FAILED", "other": None}
    # With two steps at a time, apply starts `prep` and `other` together: both sure.
    verdicts, ended = planned_then_applied(tmp_path, "-j", "2")
    assert verdicts == {"prep": "run-unprobed", "broken": "fail", "other": "run-unprobed"}
    assert ended == {"prep": "SUCCEEDED", "broken": "FAILED", "other": "SUCCEEDED"}


def test_a_lock_apply_would_take_over_is_not_reported(tmp_path: Path) -> None:
    """An apply killed after recording its run SUCCEEDED, before releasing its locks,
    leaves them with a dead holder and nothing to undo or resume: the next apply frees
    them and goes on. Plan used to list them as "locked now by other runs (apply would
    wait ..., then exit 4)"; it now leaves them out, and apply indeed succeeds."""
    write(tmp_path, """\
        name: killed-late
        commands:
          - id: one
            entity: "file/one"
            run: {command: [touch, one]}
            inverse: {command: [rm, one]}
        """)
    for crash_at in range(1, 30):  # the last crash point: SUCCEEDED is committed
        shutil.rmtree(tmp_path / ".planctl", ignore_errors=True)
        killed = planctl(tmp_path, "apply", "plan.yaml", env={"PLANCTL_CRASH_AT": str(crash_at)})
        if killed.returncode == 0:
            pytest.fail("no crash point between SUCCEEDED and the release of the locks")
        status = planctl(tmp_path, "runs").stdout.split("\n")[1].split()
        if "SUCCEEDED" in status and "file/one" in planctl(tmp_path, "locks").stdout:
            break
    before = state_files(tmp_path / ".planctl")
    done = planctl(tmp_path, "plan", "plan.yaml")
    assert done.returncode == 0 and "locked now" not in done.stdout, done.stdout
    assert as_json(planctl(tmp_path, "plan", "plan.yaml", "-o", "json"))["locked"] == []
    assert state_files(tmp_path / ".planctl") == before
    applied = planctl(tmp_path, "apply", "plan.yaml")
    assert applied.returncode == 0, applied.stdout + applied.stderr


def test_a_plan_that_stops_on_failure_is_not_promised_a_rollback(tmp_path: Path) -> None:
    """With `on_failure: stop` a failed apply rolls nothing back: it stops, exit 2, and
    leaves the rollback to `planctl rollback`. Plan used to say "if apply fails, its
    rollback would undo ..." all the same; it now says apply stops and what `planctl
    rollback` of its run would undo, which is what that rollback then undoes."""
    write(tmp_path, """\
        name: stopper
        vars: {boom: "no"}
        settings: {on_failure: stop}
        commands:
          - id: made
            run: {command: [touch, made]}
            inverse: {command: [rm, made]}
          - id: boom
            needs: made
            irreversible: true
            run: {command: [test, "{{ boom }}", =, "no"]}
        """)
    done = planctl(tmp_path, "plan", "plan.yaml")
    assert "its rollback would undo" not in done.stdout
    assert "\nif apply fails, it stops there (on_failure: stop); `planctl rollback` of its " \
        "run would undo, in this order:\n" in done.stdout
    data = as_json(planctl(tmp_path, "plan", "plan.yaml", "-o", "json"))
    assert (data["on_failure"], data["rollback"]) == ("stop", ["made"])
    applied = planctl(tmp_path, "apply", "plan.yaml", "--var", "boom=yes")
    assert applied.returncode == 2 and "STOPPED" in applied.stdout + applied.stderr
    assert (tmp_path / "made").exists()
    undone = planctl(tmp_path, "rollback", "--last", "-o", "json")
    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert [e["command_id"] for e in map(json.loads, undone.stdout.splitlines())
            if e["kind"] == "command" and e["status"] == "REVERTED"] == data["rollback"]
    assert not (tmp_path / "made").exists()
