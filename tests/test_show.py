"""`planctl show RUN COMMAND` and `planctl events` through the real CLI, on real SQLite
state written by real runs: a command's stdout, result, outputs and async tasks, and a
run's event log as `apply --output json` streamed it."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from seedplan import Seed, make_seed

QUICK = ["--var", "copy_seconds=0.1"]
FAIL_DISK1 = ["--var", "fail_disks=disk1", *QUICK]

# Prints two lines (and colour codes on stderr); an async task forward and one in its
# inverse; then a failure, so that both are recorded.
TALKATIVE = """\
name: talkative
commands:
  - id: talk
    run:
      shell: "printf 'line one\\\\nline two\\\\n'; printf 'a \\\\033[31mred\\\\033[0m hi\\\\n' >&2"
    inverse: {command: ["true"]}
    outputs: {first: "{{ result.stdout.splitlines()[0] }}"}
  - id: job
    needs: talk
    run:
      command: [echo, job-fwd-1]
      async:
        handle: "{{ result.stdout | trim }}"
        poll: {command: [echo, done]}
        until: "{{ poll.stdout | trim == 'done' }}"
        interval: 0.05s
    inverse:
      command: [echo, job-inv-1]
      async:
        handle: "{{ result.stdout | trim }}"
        poll: {command: [echo, done]}
        until: "{{ poll.stdout | trim == 'done' }}"
        interval: 0.05s
  - id: boom
    needs: job
    changes: false
    run: {command: [sh, -c, "echo broken >&2; exit 2"]}
"""

SECRET = "s3cr3t-Valu3"
SECRETIVE = """\
name: secretive
secrets:
  token: {env: API_TOKEN}
commands:
  - id: say
    changes: false
    run: {shell: "echo the token is {{ token }}; echo and again {{ token }} >&2"}
    outputs: {said: "{{ result.stdout | trim }}"}
"""


@pytest.fixture
def seed(tmp_path: Path) -> Seed:
    seed = make_seed(tmp_path)
    seed.env.pop("PLANCTL_OUTPUT", None)
    return seed


def _objects(stdout: str) -> list[dict[str, Any]]:
    """Every line of stdout as a JSON object; fails on anything else."""
    assert stdout.endswith("\n"), stdout[-200:]
    return [json.loads(line) for line in stdout.splitlines()]


def _usage_error(done: Any) -> str:
    """The one-line error of an exit 3, with nothing on stdout."""
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stdout == ""
    assert done.stderr.startswith("planctl: error: ") and done.stderr.count("\n") == 1
    return str(done.stderr)


# -- show RUN COMMAND ---------------------------------------------------------------------


def test_show_command_prints_its_output_result_outputs_and_tasks(seed: Seed) -> None:
    """`show RUN COMMAND` prints the command's rendered params, its stdout and stderr as
    indented blocks (control codes escaped), its outputs, its history, and its async tasks
    of both flows: the forward one and the one its inverse started in ROLLBACK_FLOW."""
    plan = seed.root / "talkative.yaml"
    plan.write_text(TALKATIVE)
    applied = seed.planctl("apply", str(plan))
    assert applied.returncode == 1, applied.stdout + applied.stderr
    run_id = seed.last_run().id

    talk = seed.planctl("show", "--last", "talk")
    assert talk.returncode == 0, talk.stderr
    out = talk.stdout
    assert out.startswith(f"run               {run_id} (talkative, ROLLED_BACK)\n"
                          "command           talk\n")
    assert "\nstatus            REVERTED\nexecution_reason  ROLLBACK_FLOW\n" in out
    assert "\nparams\n  action: shell\n  args: printf " in out
    assert "\nresult\n  rc: 0\n  stdout: |\n    line one\n    line two\n" in out
    assert "\n  stderr: |\n    a \\x1b[31mred\\x1b[0m hi\n" in out
    assert "\x1b" not in out
    assert "\noutputs\n  first: line one\n" in out
    assert "\ntasks             -\n" in out
    assert re.search(r"^ +\S+s  SUCCEEDED +talk$", out, re.M), out
    assert re.search(r"^ +\S+s  REVERTED +talk \[ROLLBACK_FLOW\]$", out, re.M), out

    job = seed.planctl("show", run_id[:12], "job")  # a prefix of the run id will do
    assert job.returncode == 0, job.stderr
    assert "\n  stdout: |\n    job-fwd-1\n" in job.stdout
    assert re.search(r"^  REGULAR_FLOW +task job-fwd-1 SUCCEEDED \(1 poll in \S+s\)\n"
                     r"    poll: \[\"echo\", \"done\"\]\n"
                     r"  ROLLBACK_FLOW +task job-inv-1 SUCCEEDED \(1 poll in \S+s\)$",
                     job.stdout, re.M), job.stdout
    assert re.search(r"^ +\S+s  task RUNNING +job handle job-inv-1$", job.stdout, re.M)

    boom = seed.planctl("show", "--last", "boom")
    assert boom.returncode == 0, boom.stderr
    assert "\nstatus            FAILED\n" in boom.stdout
    assert "\nerror             exit status 2: broken\n" in boom.stdout
    assert re.search(r"\n  rc: 2\n", boom.stdout), boom.stdout  # its result is kept too
    assert "\n  stderr: |\n    broken\n" in boom.stdout
    assert '\n  args: ["sh", "-c", "echo broken >&2; exit 2"]\n' in boom.stdout

    table = seed.planctl("show", run_id)  # without COMMAND: the run's table, as before
    assert table.returncode == 0, table.stderr
    assert re.search(r"^COMMAND +STATUS +REASON +TRIES +TIME +ENTITY +NOTES$", table.stdout,
                     re.M), table.stdout


def test_show_of_a_seed_clone_gives_its_task_handle_from_stdout(seed: Seed) -> None:
    """In the seed plan, `show --last 'clone[disk0]'` shows the copy's stdout, which is
    the handle of its async task, and that task with its poll command and polls."""
    assert seed.apply(*QUICK).returncode == 0
    [task] = [t for t in seed.tasks() if t.command_id == "clone[disk0]"]
    done = seed.planctl("show", "--last", "clone[disk0]")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "\nname              Clone disk0 into vm-42-disk0\nspec              clone\n" in out
    assert "\nparent            add_vm\nentity            image/vm-42-disk0\n" in out
    assert f"\n  stdout: |\n    {task.handle}\n" in out
    assert f"  REGULAR_FLOW   task {task.handle} SUCCEEDED ({task.polls} poll" in out
    assert f'\n    poll: ["./store", "task-status", "{task.handle}"]\n' in out
    uuid = seed.commands()["add_vm"].outputs["uuid"]
    assert f"\noutputs\n  uuid: {uuid}\n" in seed.planctl("show", "--last", "add_vm").stdout


def test_an_unknown_command_exits_3_with_a_hint(seed: Seed) -> None:
    """An id that is not a command of the run exits 3 in one line: a near miss gets a
    did-you-mean, a loop's id lists its instances, anything else says where the ids are;
    a command given where RUN goes says how to show it for the most recent run."""
    assert seed.apply(*QUICK).returncode == 0
    run_id = seed.last_run().id
    near = _usage_error(seed.planctl("show", "--last", "clone[dsk1]"))
    assert near == (f"planctl: error: clone[dsk1]: run {run_id} has no such command "
                    "(did you mean `clone[disk1]`?)\n")
    loop = _usage_error(seed.planctl("show", run_id, "clone"))
    assert loop == (f"planctl: error: clone: a loop in run {run_id}; give one of its "
                    "commands: clone[disk0], clone[disk1], clone[disk2]\n")
    far = _usage_error(seed.planctl("show", "--last", "zzz"))
    assert f"(`planctl show {run_id}` lists them)" in far
    misplaced = _usage_error(seed.planctl("show", "clone[disk1]"))
    assert misplaced == ("planctl: error: unknown run 'clone[disk1]'; to show command "
                         "clone[disk1] of the most recent run: "
                         "`planctl show --last 'clone[disk1]'`\n")
    for both in (["--last", run_id, "add_vm"], ["--last", run_id]):
        assert "not both" in _usage_error(seed.planctl("show", *both))
    _usage_error(seed.planctl("show", "nope", "add_vm"))


# -- events -------------------------------------------------------------------------------


def test_events_are_what_apply_output_json_streamed(seed: Seed) -> None:
    """`planctl events --last` prints, line for line, what `apply --output json` printed
    for the run, but its outcome object (the log does not keep it): same kinds, seq,
    statuses, entities, timestamps. Without RUN it is the most recent run."""
    applied = seed.apply(*FAIL_DISK1, "--output", "json")
    assert applied.returncode == 1, applied.stdout + applied.stderr
    streamed = applied.stdout.splitlines()
    assert json.loads(streamed[-1])["kind"] == "outcome"

    done = seed.planctl("events", "--last")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert done.stdout.splitlines() == streamed[:-1]
    objects = _objects(done.stdout)
    assert [o["seq"] for o in objects] == list(range(1, len(objects) + 1))
    assert {o["schema_version"] for o in objects} == {1}
    assert [o["status"] for o in objects if o["kind"] == "run"] == [
        "RUNNING", "ROLLING_BACK", "ROLLED_BACK"]
    assert seed.planctl("events").stdout == done.stdout

    only = seed.planctl("events", seed.last_run().id, "--command", "clone[disk1]")
    assert only.returncode == 0, only.stderr
    picked = _objects(only.stdout)
    assert picked == [o for o in objects if o.get("command_id") == "clone[disk1]"]
    assert [(o["kind"], o.get("status") or o.get("task_status")) for o in picked] == [
        ("command", "STARTING"), ("command", "RUNNING"), ("task", "RUNNING"),
        ("task", "FAILED"), ("command", "FAILED"), ("command", "REVERT_SKIPPED")]


def test_events_read_a_page_at_a_time_print_the_whole_log(
        seed: Seed, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`events` reads a long log a page at a time (its memory stays flat): pages of 4
    events print the same lines as one read, with --command too."""
    import planner.cli

    assert seed.apply(*FAIL_DISK1).returncode == 1
    whole = seed.planctl("events", "--last").stdout
    one = seed.planctl("events", "--last", "--command", "clone[disk1]").stdout
    monkeypatch.setattr(planner.cli, "_EVENTS_PAGE", 4)
    for args, expected in ((["events", "--last"], whole),
                           (["events", "--last", "--command", "clone[disk1]"], one)):
        assert planner.cli.main([*args, "--state", str(seed.state)]) == 0
        assert capsys.readouterr().out == expected
    assert len(whole.splitlines()) > 12 and len(one.splitlines()) == 6


def test_events_are_written_through_the_buffer_not_flushed_line_by_line(
        seed: Seed, monkeypatch: pytest.MonkeyPatch) -> None:
    """`events` of a long log wrote and flushed each line (200,000 system calls for a
    100,000-command run): it writes through stdout's buffer, flushed once at the end, and
    the lines are those `planctl events` prints; `events | head -1` still ends quietly."""
    import io

    import planner.cli

    assert seed.apply(*FAIL_DISK1).returncode == 1
    whole = seed.planctl("events", "--last").stdout

    class Counting(io.StringIO):
        flushes = 0

        def flush(self) -> None:
            Counting.flushes += 1
            super().flush()

    out = Counting()
    monkeypatch.setattr(sys, "stdout", out)
    assert planner.cli.main(["events", "--last", "--state", str(seed.state)]) == 0
    assert out.getvalue() == whole and len(whole.splitlines()) > 12
    assert Counting.flushes == 1
    head = subprocess.run(f"{shlex.quote(sys.executable)} -m planner events --last "
                          f"--state {shlex.quote(str(seed.state))} | head -1", shell=True,
                          cwd=seed.root, env={k: v for k, v in seed.env.items()
                                              if k != "PYTHONUNBUFFERED"},
                          capture_output=True, text=True, timeout=60)
    assert head.stdout == whole.splitlines(keepends=True)[0] and head.stderr == ""


def test_events_span_the_apply_and_the_later_rollback(seed: Seed) -> None:
    """A run stopped with leftovers and rolled back later: its events are the apply's
    stream followed by the rollback's, as each printed them with --output json."""
    applied = seed.apply(*FAIL_DISK1, "--no-rollback", "-o", "json")
    assert applied.returncode == 2, applied.stdout + applied.stderr
    rolled = seed.planctl("rollback", "--last", "-o", "json")
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr
    done = seed.planctl("events", "--last")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == (applied.stdout.splitlines()[:-1]
                                        + rolled.stdout.splitlines()[:-1])


def test_events_of_an_unknown_run_or_command_exit_3(seed: Seed) -> None:
    """`events` of a run that is not recorded, or with a --command the run lacks, exits 3
    with one line and prints no JSON; without a state store, likewise."""
    missing = _usage_error(seed.planctl("events", "--last"))
    assert "no state store" in missing
    assert seed.apply(*QUICK).returncode == 0
    assert _usage_error(seed.planctl("events", "20991231")) == (
        "planctl: error: unknown run '20991231'\n")
    wrong = _usage_error(seed.planctl("events", "--command", "start-vm"))
    assert "did you mean `start_vm`?" in wrong


def test_show_and_events_keep_secrets_masked(seed: Seed) -> None:
    """A secret a command printed is stored masked: `show` prints a placeholder naming it
    in the result and outputs (which a later rollback reads back), `events` `***`."""
    plan = seed.root / "secretive.yaml"
    plan.write_text(SECRETIVE)
    env = {"API_TOKEN": SECRET}
    assert seed.planctl("apply", str(plan), env=env).returncode == 0
    shown = seed.planctl("show", "--last", "say", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "\n  stdout: |\n    the token is \u00absecret:token\u00bb\n" in shown.stdout
    assert "\noutputs\n  said: the token is \u00absecret:token\u00bb\n" in shown.stdout
    events = seed.planctl("events", "--last", env=env)
    for text in (shown.stdout, events.stdout, shown.stderr, events.stderr):
        assert SECRET not in text


def test_show_of_a_read_only_command_says_it_changed_nothing(seed: Seed) -> None:
    """A command declared `changes: false` that succeeded shows `changed  no (changes:
    false)`, as the summary counts it unchanged; one that may change things `yes`. Before,
    `show` said `yes` for both."""
    plan = seed.root / "secretive.yaml"
    plan.write_text(SECRETIVE + """\
  - id: touch
    run: {command: [touch, touched]}
    inverse: {command: [rm, touched]}
""")
    applied = seed.planctl("apply", str(plan), env={"API_TOKEN": SECRET})
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "1 changed, 1 unchanged" in applied.stdout
    say, touch = (seed.planctl("show", "--last", command).stdout for command in ("say", "touch"))
    assert "\nchanged           no (changes: false)\n" in say, say
    assert "\nchanged           yes\n" in touch, touch
