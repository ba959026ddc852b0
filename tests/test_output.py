"""The output layer through the real CLI: live tree on a terminal, plain lines, NDJSON events,
JUnit XML and the GitHub step summary, for apply, rollback and resume of the seed plan."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from html import unescape
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import junitschema
import pytest
from seedplan import Seed, make_seed
from terminal import on_terminal

FAIL_DISK1 = ["--var", "fail_disks=disk1", "--var", "copy_seconds=0.1"]
QUICK = ["--var", "copy_seconds=0.1"]
ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
COMMON_KEYS = ("schema_version", "kind", "seq", "ts", "time", "run_id")
COMMAND_KEYS = ("command_id", "entity", "status", "previous", "execution_reason", "error")


@pytest.fixture
def seed(tmp_path: Path) -> Seed:
    seed = make_seed(tmp_path)
    seed.env.pop("GITHUB_STEP_SUMMARY", None)
    seed.env.pop("PLANCTL_OUTPUT", None)
    return seed


def _objects(stdout: str) -> list[dict[str, Any]]:
    """Every line of stdout as a JSON object; fails on anything else."""
    assert stdout.endswith("\n"), stdout[-200:]
    objects = []
    for line in stdout.splitlines():
        obj = json.loads(line)
        assert isinstance(obj, dict), line
        objects.append(obj)
    return objects


def _on_terminal(seed: Seed, *args: str, env: dict[str, str] | None = None,
                 timeout: float = 60) -> tuple[int, str]:
    """`planctl ARGS` on a 120x40 pseudo-terminal, in the seed's directory and environment
    (without NO_COLOR unless ``env`` sets it); its exit code and what it wrote there."""
    full = {**seed.env, "TERM": "xterm-256color", **(env or {})}
    if env is None or "NO_COLOR" not in env:
        full.pop("NO_COLOR", None)
    return on_terminal(seed.root, full, *args, timeout=timeout)


def _cases(path: Path) -> tuple[ET.Element, dict[str, ET.Element]]:
    """The run's suite and its cases by name, once the report passed Jenkins' schema."""
    root = ET.parse(path).getroot()
    junitschema.check(root)
    suites = root.findall("testsuite")
    assert root.tag == "testsuites" and len(suites) == 1
    return suites[0], {case.get("name", ""): case for case in suites[0].findall("testcase")}


# -- --output json ----------------------------------------------------------------------------


def test_json_output_is_one_versioned_object_per_line_and_nothing_else(seed: Seed) -> None:
    """With --output json a failing apply writes only JSON objects to stdout, each with the
    schema version, an ISO-8601 UTC timestamp, the run id and a rising seq; command events
    carry command id, entity, status and execution_reason (ROLLBACK_FLOW for inverses); the
    last object is the outcome with the exit code, and the human summary is on stderr."""
    done = seed.apply(*FAIL_DISK1, "--output", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    objects = _objects(done.stdout)
    run_id = seed.last_run().id
    for obj in objects:
        assert list(obj)[:6] == list(COMMON_KEYS), obj
        assert obj["schema_version"] == 1
        assert ISO_MS.match(obj["ts"]), obj["ts"]
        assert obj["run_id"] == run_id
        assert isinstance(obj["time"], float)
    events, outcome = objects[:-1], objects[-1]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert {e["kind"] for e in events} == {"run", "command", "task"}
    commands = [e for e in events if e["kind"] == "command"]
    for event in commands:
        assert all(key in event for key in COMMAND_KEYS), event
        assert event["entity"] is not None
    inverses = [e for e in commands if e["status"] in ("REVERTING", "REVERTED", "REVERT_SKIPPED")]
    assert len(inverses) == 7
    assert {e["execution_reason"] for e in inverses} == {"ROLLBACK_FLOW"}
    failed = [e for e in commands if e["status"] == "FAILED"]
    assert {e["command_id"]: e["error"] for e in failed} == {
        "clone[disk1]": "async task failed (async.failed_when is true)",
        "add_vm": "a child failed"}
    tasks = [e for e in events if e["kind"] == "task"]
    assert {e["entity"] for e in tasks} == {"image/vm-42-disk0", "image/vm-42-disk1",
                                            "image/vm-42-disk2"}
    runs = [e["status"] for e in events if e["kind"] == "run"]
    assert runs == ["RUNNING", "ROLLING_BACK", "ROLLED_BACK"]
    assert events[0]["plan"] == "add-vm-from-template" and events[0]["commands"] == 5
    assert outcome["kind"] == "outcome" and outcome["seq"] is None
    assert (outcome["status"], outcome["exit_code"]) == ("ROLLED_BACK", 1)
    assert outcome["counts"] == {"changed": 3, "unchanged": 0, "failed": 2, "reverted": 3,
                                 "skipped": 0, "not_run": 1, "leftovers": 0}
    assert outcome["leftovers"] == []
    assert "ROLLED_BACK in " in done.stderr
    assert "3 changed, 0 unchanged, 2 failed, 3 reverted, 0 left over" in done.stderr


def test_json_output_of_an_invalid_plan_is_a_single_error_object(seed: Seed) -> None:
    """An invalid plan with --output json exits 3 with exactly one `error` object on stdout,
    its diagnostics located; the human diagnostics go to stderr."""
    bad = seed.plan.parent / "bad.yaml"
    bad.write_text("name: bad\ncommands:\n  - id: a\n    run: {command: [echo, '{{ nope }}']}\n")
    done = seed.planctl("apply", str(bad), "--output", "json")
    assert done.returncode == 3, done.stdout + done.stderr
    [error] = _objects(done.stdout)
    assert (error["kind"], error["exit_code"], error["error"]) == ("error", 3, "plan")
    assert error["schema_version"] == 1 and error["run_id"] is None
    [diagnostic] = [d for d in error["diagnostics"] if d["severity"] == "error"]
    assert (diagnostic["file"], diagnostic["line"], diagnostic["severity"]) == \
        (str(bad), 4, "error")
    assert "nope" in diagnostic["message"]
    assert f"{bad}:4:" in done.stderr


def test_json_output_of_a_usage_error(seed: Seed) -> None:
    """`rollback --output json` of an unknown run exits 3 with one `error` object (usage);
    PLANCTL_OUTPUT=json chooses JSON too."""
    assert seed.apply(*QUICK).returncode == 0
    done = seed.planctl("rollback", "no-such-run", env={"PLANCTL_OUTPUT": "json"})
    assert done.returncode == 3, done.stdout + done.stderr
    [error] = _objects(done.stdout)
    assert (error["kind"], error["error"], error["exit_code"]) == ("error", "usage", 3)
    assert "unknown run 'no-such-run'" in error["message"]
    assert "unknown run" in done.stderr


def test_json_output_of_a_bad_option_value_names_the_option(seed: Seed) -> None:
    """`apply -j 0 --output json` (whichever comes first) exits 3 with one `error` object
    (usage) whose message names the option, and nothing runs."""
    for args in (["-j", "0", "-o", "json"], ["-o", "json", "-j", "0"]):
        done = seed.apply(*args)
        assert done.returncode == 3, done.stdout + done.stderr
        [error] = _objects(done.stdout)
        assert (error["kind"], error["error"], error["exit_code"]) == ("error", "usage", 3)
        assert error["message"] == "-j/--max-parallel: 0 is not in the range x>=1"
        assert done.stderr == ("planctl: error: -j/--max-parallel: 0 is not in the range x>=1 "
                               "(see: planctl apply --help)\n")
    assert seed.store("list").stdout == ""


def test_rollback_and_resume_act_only_on_a_run_named(seed: Seed) -> None:
    """Without RUN or --last, `rollback` and `resume` exit 3 saying how to name one and
    undo nothing; `show`, which only reads, shows the most recent run."""
    assert seed.apply(*QUICK).returncode == 0
    run_id = seed.last_run().id
    before = seed.store("list").stdout
    for verb in ("rollback", "resume"):
        done = seed.planctl(verb)
        assert done.returncode == 3, f"{verb}: {done.stdout}{done.stderr}"
        assert f"or --last: `planctl {verb} --last`" in done.stderr
    assert seed.store("list").stdout == before and before
    assert seed.last_run().status == "SUCCEEDED"
    shown = seed.planctl("show")
    assert shown.returncode == 0 and run_id in shown.stdout


def test_json_output_of_rollback_then_of_nothing_to_undo(seed: Seed) -> None:
    """`planctl rollback --output json` of a succeeded run streams its ROLLBACK_FLOW events
    and an outcome with exit code 0; a second one writes only an outcome saying there is
    nothing to undo, with the message on stderr."""
    assert seed.apply(*QUICK).returncode == 0
    run_id = seed.last_run().id
    done = seed.planctl("rollback", "--last", "-o", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    objects = _objects(done.stdout)
    assert objects[0]["kind"] == "run" and objects[0]["status"] == "ROLLING_BACK"
    assert objects[0]["plan"] == "add-vm-from-template"
    reverted = {e["command_id"] for e in objects
                if e["kind"] == "command" and e["status"] == "REVERTED"}
    assert reverted == {"add_vm", "clone[disk0]", "clone[disk1]", "clone[disk2]"}
    assert objects[-1]["kind"] == "outcome"
    assert (objects[-1]["status"], objects[-1]["exit_code"]) == ("ROLLED_BACK", 0)
    assert objects[-1]["counts"]["reverted"] == 4

    again = seed.planctl("rollback", "--last", "-o", "json")
    assert again.returncode == 0, again.stdout + again.stderr
    [outcome] = _objects(again.stdout)
    assert outcome["kind"] == "outcome" and outcome["run_id"] == run_id
    assert outcome["message"] == f"run {run_id} (ROLLED_BACK): nothing to undo"
    assert "nothing to undo" in again.stderr


NOISY = """\
import os
import sys


def noisy(what: str) -> dict[str, str]:
    print(f"print {what}")
    sys.stdout.write(f"sys.stdout {what}\\n")
    os.write(1, f"fd 1 {what}\\n".encode())
    os.system(f"echo os.system {what}")
    if what == "run":
        open("thing.made", "w").close()
    else:
        os.remove("thing.made")
    return {"id": what}


def made(what: str) -> bool:
    print(f"print probe {what}")
    return os.path.exists("thing.made")
"""
NOISY_PLAN = """\
name: noisy
commands:
  - id: make
    entity: thing/x
    exists: {python: {function: "noisy:made", kwargs: {what: exists}}}
    run: {python: {function: "noisy:noisy", kwargs: {what: run}}}
    inverse: {python: {function: "noisy:noisy", kwargs: {what: inverse}}}
"""


@pytest.mark.parametrize("closed", [">&-", "2>&-", ">&- 2>&-"])
@pytest.mark.parametrize("output", ["text", "json"])
def test_a_closed_stdout_or_stderr_keeps_the_exit_status(seed: Seed, closed: str,
                                                        output: str) -> None:
    """Started with stdout or stderr closed (a daemon, `>&-`), planctl still exits as the
    run ended (0 succeeded, 1 rolled back), without a traceback; with one of them open,
    what goes there is whole (the JSON stream parses)."""
    python = shlex.quote(sys.executable)
    for args, code in ((FAIL_DISK1, 1), (QUICK, 0)):
        line = " ".join([python, "-m", "planner", "apply", shlex.quote(str(seed.plan)),
                         *args, "-o", output, closed, *([] if "2>" in closed else ["2>err"])])
        done = subprocess.run(["sh", "-c", line], cwd=seed.root, env=seed.env,
                              capture_output=True, text=True, check=False, timeout=60)
        errors = (seed.root / "err").read_text() if "2>" not in closed else done.stderr
        assert done.returncode == code, (line, done.stdout, errors)
        assert "Traceback" not in errors and "internal error" not in errors, errors
        if closed == "2>&-" and output == "json":
            assert _objects(done.stdout)[-1]["exit_code"] == code


@pytest.mark.parametrize("secret", ["1", "error", "p\u00e4ssw\u00f6rd"])
def test_json_error_object_masks_its_texts_not_its_keys_or_numbers(seed: Seed,
                                                                   secret: str) -> None:
    """The `error` object of a run that could not start, once the plan's secrets are
    resolved, keeps its keys, kinds and numbers whatever the secret's value (`1`, `error`),
    and masks a secret in its message even where JSON escapes it (`\\u00e4`)."""
    plan = seed.root / "secretive.yaml"
    plan.write_text("name: secretive\nsecrets:\n  token: {env: API_TOKEN}\ncommands:\n"
                    "  - {id: a, changes: false, run: {command: [echo]}}\n")
    done = seed.planctl("apply", str(plan), "-o", "json",
                        env={"API_TOKEN": secret, "PLANCTL_PROGRESS_INTERVAL": secret + "s"})
    assert done.returncode == 3, done.stdout + done.stderr
    [error] = _objects(done.stdout)
    assert list(error)[:6] == list(COMMON_KEYS)
    assert (error["schema_version"], error["kind"], error["error"], error["exit_code"]) == (
        1, "error", "usage", 3)
    assert ISO_MS.match(error["ts"]) and isinstance(error["time"], float), error
    if len(secret) > 4:
        assert secret not in error["message"] and "***" in error["message"], error


def test_json_output_keeps_stdout_for_json_when_a_python_step_prints(seed: Seed) -> None:
    """A `python` function runs inside planctl: what it prints (print, sys.stdout, file
    descriptor 1, a program it starts) goes to stderr with --output json, for apply,
    rollback --dry-run, rollback and plan -o json alike; stdout holds JSON only."""
    (seed.root / "noisy.py").write_text(NOISY)
    (seed.root / "noisy.yaml").write_text(NOISY_PLAN)
    done = seed.planctl("apply", "noisy.yaml", "-o", "json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert _objects(done.stdout)[-1]["kind"] == "outcome"
    for line in ("print probe exists", "print run", "sys.stdout run", "fd 1 run",
                 "os.system run"):
        assert line in done.stderr.splitlines(), done.stderr
    preview = seed.planctl("plan", "noisy.yaml", "-o", "json")
    assert preview.returncode == 0, preview.stdout + preview.stderr
    assert json.loads(preview.stdout)["commands"][0]["id"] == "make"
    assert "print probe exists" in preview.stderr
    dry = seed.planctl("rollback", "--last", "--dry-run", "-o", "json")
    assert (dry.returncode, dry.stdout) == (0, ""), dry.stdout + dry.stderr
    undone = seed.planctl("rollback", "--last", "-o", "json")
    assert undone.returncode == 0, undone.stdout + undone.stderr
    objects = _objects(undone.stdout)
    assert (objects[-1]["kind"], objects[-1]["status"]) == ("outcome", "ROLLED_BACK")
    assert "os.system inverse" in undone.stderr.splitlines(), undone.stderr


def test_resume_of_an_ended_run_says_so_and_writes_the_reports_asked_for(
        seed: Seed, tmp_path: Path) -> None:
    """`planctl resume` of a run that ended prints that there is nothing to resume (exit
    0): alone in text, as an outcome with --output json, and with --junit the report of
    the run as it is."""
    assert seed.apply(*QUICK).returncode == 0
    run_id = seed.last_run().id
    done = seed.planctl("resume", "--last")
    assert (done.returncode, done.stdout) == (
        0, f"run {run_id} ended SUCCEEDED: nothing to resume\n")
    done = seed.planctl("resume", "--last", "-o", "json", "--junit", str(tmp_path / "j.xml"))
    assert done.returncode == 0, done.stdout + done.stderr
    [outcome] = _objects(done.stdout)
    assert outcome["message"] == f"run {run_id} ended SUCCEEDED: nothing to resume"
    assert (outcome["status"], outcome["counts"]["changed"]) == ("SUCCEEDED", 4)
    _, cases = _cases(tmp_path / "j.xml")
    assert set(cases) >= {"add_vm", "clone[disk0]", "start_vm"}


def _read_lines(proc: subprocess.Popen[str], into: Queue[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        into.put(line)


def test_json_events_stream_live_and_resume_reports_the_whole_run(seed: Seed,
                                                                  tmp_path: Path) -> None:
    """JSON lines arrive while the run goes on (flushed per event): once all three copies
    are polled, SIGINT ends apply with exit 130 and an INTERRUPTED outcome; `planctl resume
    --output json --junit` then streams a RESUMED run event and REATTACHED tasks, ends with
    exit 0, and its JUnit report covers the whole run, every command passed."""
    proc = subprocess.Popen([sys.executable, "-m", "planner", "apply", str(seed.plan),
                             "--var", "copy_seconds=3", "-o", "json"], cwd=seed.root,
                            env=seed.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines: Queue[str] = Queue()
    reader = threading.Thread(target=_read_lines, args=(proc, lines), daemon=True)
    reader.start()
    seen: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + 30
        while sum(e["kind"] == "task" for e in seen) < 3:
            assert time.monotonic() < deadline, seen
            try:
                seen.append(json.loads(lines.get(timeout=1)))
            except Empty:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(timeout=10)
    assert proc.stderr is not None
    err = proc.stderr.read()
    assert "Traceback" not in err, err
    while not lines.empty():
        seen.append(json.loads(lines.get()))
    assert code == 130, err
    assert seen[-1]["kind"] == "outcome"
    assert (seen[-1]["status"], seen[-1]["exit_code"]) == ("INTERRUPTED", 130)
    assert f"planctl resume {seen[-1]['run_id']}" in err

    report = tmp_path / "resume.xml"
    resumed = seed.planctl("resume", "--last", "-o", "json", "--junit", str(report))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    objects = _objects(resumed.stdout)
    assert (objects[0]["kind"], objects[0]["status"], objects[0]["previous"]) == \
        ("run", "RESUMED", "INTERRUPTED")
    reattached = {e["command_id"] for e in objects
                  if e["kind"] == "task" and e["task_status"] == "REATTACHED"}
    assert reattached == {"clone[disk0]", "clone[disk1]", "clone[disk2]"}
    assert objects[1]["seq"] > max(e["seq"] or 0 for e in seen)  # one log across invocations
    assert (objects[-1]["status"], objects[-1]["exit_code"]) == ("SUCCEEDED", 0)
    suite, cases = _cases(report)
    assert sorted(cases) == ["add_vm", "clone[disk0]", "clone[disk1]", "clone[disk2]",
                             "start_vm"]
    assert (suite.get("failures"), suite.get("skipped")) == ("0", "0")


# -- plain lines --------------------------------------------------------------------------------


def test_plain_lines_when_stdout_is_not_a_terminal(seed: Seed) -> None:
    """Piped, text output is one plain line per event, with no control codes even without
    NO_COLOR, and ends with the summary counts."""
    env = {k: v for k, v in seed.env.items() if k != "NO_COLOR"}
    seed.env = env
    done = seed.apply(*FAIL_DISK1)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "\x1b" not in done.stdout and "\r" not in done.stdout
    lines = done.stdout.splitlines()
    events = seed.events()
    assert len([line for line in lines if re.match(r"^\s+\d+\.\d\ds  ", line)]) == len(events)
    assert any(re.search(r"REVERTED\s+clone\[disk0\] \[ROLLBACK_FLOW\]$", line)
               for line in lines)
    assert lines[-1].startswith("ROLLED_BACK in ")
    assert lines[-1].endswith(": 3 changed, 0 unchanged, 2 failed, 3 reverted, 0 left over, "
                              "1 not run")


@pytest.mark.parametrize("env", [{"NO_COLOR": "1"}, {"TERM": "dumb"}],
                         ids=["NO_COLOR", "TERM=dumb"])
def test_plain_lines_on_a_terminal_with_no_color_or_a_dumb_term(seed: Seed,
                                                                env: dict[str, str]) -> None:
    """On a terminal, NO_COLOR or TERM=dumb gives the plain lines: no escape codes at all."""
    code, text = _on_terminal(seed, "apply", str(seed.plan), *FAIL_DISK1, env=env)
    assert code == 1, text
    assert "\x1b" not in text
    assert re.search(r"REVERTED\s+add_vm \[ROLLBACK_FLOW\]", text), text
    assert "ROLLED_BACK in " in text


# -- the live tree ------------------------------------------------------------------------------


def test_live_tree_on_a_terminal_shows_commands_rollback_and_summary(seed: Seed) -> None:
    """On a terminal, apply draws a tree of the commands (children under add_vm) with a
    spinner and `polling` while copies are polled, shows the rollback on the same rows
    (SUCCEEDED → REVERTED), prints the summary, gives the cursor back and exits 1."""
    code, text = _on_terminal(seed, "apply", str(seed.plan), "--var", "fail_disks=disk1",
                              "--var", "copy_seconds=0.8")
    assert code == 1, text
    assert "\x1b[" in text  # it is a live display, redrawn in place
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    assert "planctl apply add-vm-from-template" in plain
    assert re.search(r"├── . add_vm  vm/vm-42", plain), plain[-3000:]
    assert re.search(r"│   [├└]── . clone\[disk0\]  image/vm-42-disk0", plain)
    assert "polling" in plain
    spinner = set("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")
    assert spinner & set(plain), "no spinner frame drawn"
    final = plain[plain.rindex("planctl apply add-vm-from-template"):]
    assert re.search(r"clone\[disk0\]  image/vm-42-disk0  SUCCEEDED \d+\.\d\ds → REVERTED",
                     final), final
    assert re.search(r"clone\[disk1\]  image/vm-42-disk1  FAILED \d+\.\d\ds → REVERT_SKIPPED",
                     final), final
    assert re.search(r"add_vm  vm/vm-42  FAILED \d+\.\d\ds → REVERTED", final), final
    assert "ROLLED_BACK" in final.splitlines()[0]
    assert re.search(r"ROLLED_BACK in \d+\.\d\ds: 3 changed, 0 unchanged, 2 failed, "
                     r"3 reverted, 0 left over, 1 not run", final), final
    assert text.rstrip().endswith("not run") and "\x1b[?25h" in text  # cursor shown again
    assert seed.listing() == []


def test_live_tree_of_a_rollback_with_leftovers(seed: Seed) -> None:
    """`planctl rollback` on a terminal starts from the recorded statuses, shows the inverse
    that keeps failing as REVERT_FAILED, lists the leftovers and exits 2."""
    assert seed.apply(*QUICK).returncode == 0
    code, text = _on_terminal(seed, "rollback", "--last",
                              env={"STORE_FAIL_REMOVE": "vm-42-disk0"})
    assert code == 2, text
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    final = plain[plain.rindex("planctl rollback add-vm-from-template"):]
    assert re.search(r"clone\[disk0\]  image/vm-42-disk0  SUCCEEDED → REVERT_FAILED", final)
    assert re.search(r"clone\[disk2\]  image/vm-42-disk2  SUCCEEDED → REVERTED", final)
    assert re.search(r"add_vm  vm/vm-42  SUCCEEDED\s", final)  # still in use: not undone
    assert "ROLLBACK_FAILED in " in final and "2 left over" in final
    assert "- clone[disk0] image/vm-42-disk0 [REVERT_FAILED]" in final


# -- JUnit ---------------------------------------------------------------------------------------


def test_junit_of_a_failing_apply_with_its_rollback(seed: Seed, tmp_path: Path) -> None:
    """`--junit` writes one suite for the run: a case per command and per inverse that ran
    or was skipped; the failed copy and its parent are failures with their messages, the
    never-copied image's inverse and the command that never ran are skipped."""
    report = tmp_path / "reports" / "junit.xml"
    report.parent.mkdir()
    done = seed.apply(*FAIL_DISK1, "--junit", str(report))
    assert done.returncode == 1, done.stdout + done.stderr
    assert report.read_bytes().startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    suite, cases = _cases(report)
    run = seed.last_run()
    assert suite.get("name") == "add-vm-from-template" and suite.get("id") == run.id
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors"),
            suite.get("skipped")) == ("9", "2", "0", "2")
    assert sorted(cases) == sorted([
        "add_vm", "clone[disk0]", "clone[disk1]", "clone[disk2]", "start_vm",
        "add_vm (inverse)", "clone[disk0] (inverse)", "clone[disk1] (inverse)",
        "clone[disk2] (inverse)"])
    for case in cases.values():
        assert case.get("classname") == "add-vm-from-template"
        assert float(case.get("time", "x")) >= 0
    failure = cases["clone[disk1]"].find("failure")
    assert failure is not None
    assert failure.get("message") == "async task failed (async.failed_when is true)"
    assert cases["add_vm"].find("failure") is not None
    skipped = cases["clone[disk1] (inverse)"].find("skipped")
    assert skipped is not None and "absent" in (skipped.text or "")
    assert cases["start_vm"].find("skipped") is not None
    for name in ("clone[disk0]", "clone[disk0] (inverse)", "add_vm (inverse)"):
        assert list(cases[name]) == [cases[name].find("system-out")], name  # passed
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["status"] == "ROLLED_BACK" and props["exit_code"] == "1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", suite.get("timestamp", ""))


def test_junit_of_a_failed_rollback_then_of_the_rollback_that_finishes(seed: Seed,
                                                                       tmp_path: Path) -> None:
    """An inverse that fails is a failing `(inverse)` case and the VM it blocks a leftover
    failure; the JUnit report of a later `planctl rollback` has every inverse passing."""
    first, second = tmp_path / "apply.xml", tmp_path / "rollback.xml"
    done = seed.apply(*FAIL_DISK1, "--junit", str(first),
                      env={"STORE_FAIL_REMOVE": "vm-42-disk0"})
    assert done.returncode == 2, done.stdout + done.stderr
    suite, cases = _cases(first)
    failure = cases["clone[disk0] (inverse)"].find("failure")
    assert failure is not None and failure.get("type") == "REVERT_FAILED"
    assert "removal of vm-42-disk0 failed" in failure.get("message", "")
    leftover = cases["add_vm (inverse)"].find("failure")
    assert leftover is not None and leftover.get("type") == "LEFTOVER"
    assert suite.get("failures") == "4"  # clone[disk1], add_vm, and both inverses

    again = seed.planctl("rollback", "--last", "--junit", str(second))
    assert again.returncode == 0, again.stdout + again.stderr
    suite, cases = _cases(second)
    inverses = {n: c for n, c in cases.items() if n.endswith(" (inverse)")}
    assert len(inverses) == 4
    assert [n for n, c in inverses.items() if c.find("failure") is not None] == []
    assert suite.get("failures") == "2"  # the forward failures stay what they were
    out = cases["clone[disk0] (inverse)"].find("system-out")
    assert out is not None and "inverse started 2 times" in (out.text or "")


GONE_PLAN = """\
name: gone
commands:
  - id: made
    entity: thing/made
    run: {shell: "touch made"}
  - id: boom
    needs: made
    exists: {shell: "test -e boom"}
    run: {shell: "exit 1"}
    inverse: {shell: "rm -f boom"}
"""


def test_junit_skipped_inverse_says_why_exists_or_gone(seed: Seed, tmp_path: Path) -> None:
    """An inverse skipped because `exists` says the thing is absent says so; one skipped
    because `rollback --gone` says it was removed by hand says that, not `exists`."""
    (seed.root / "gone.yaml").write_text(GONE_PLAN)
    assert seed.planctl("apply", "gone.yaml").returncode == 2
    report = tmp_path / "rollback.xml"
    done = seed.planctl("rollback", "--last", "--gone", "made", "--junit", str(report))
    assert done.returncode == 0, done.stdout + done.stderr
    _, cases = _cases(report)
    reasons = {name: case.findtext("skipped") for name, case in cases.items()
               if case.find("skipped") is not None}
    assert reasons == {"boom (inverse)": "nothing to undo: `exists` says it is absent",
                       "made (inverse)": "nothing to undo: removed by hand (--gone)"}


# -- GitHub step summary -----------------------------------------------------------------------


def test_junit_and_step_summary_of_an_error_xml_cannot_carry(seed: Seed,
                                                              tmp_path: Path) -> None:
    """A command whose error quotes U+FFFE, U+FFFF and a control code (what a tool printed)
    still gets a JUnit file that parses and passes the schema, and a step summary; both
    show the characters escaped."""
    plan = seed.root / "odd.yaml"
    plan.write_text(
        "name: odd\ncommands:\n  - id: odd\n    changes: false\n"
        "    run: {shell: \"printf 'bad \\\\357\\\\277\\\\276 \\\\357\\\\277\\\\277 "
        "\\\\001' >&2; exit 1\"}\n")
    report, summary = tmp_path / "junit.xml", tmp_path / "summary.md"
    done = seed.planctl("apply", str(plan), "--junit", str(report),
                        env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert done.returncode == 1, done.stdout + done.stderr
    _, cases = _cases(report)
    failure = cases["odd"].find("failure")
    assert failure is not None
    assert failure.get("message") == "exit status 1: bad \\ufffe \\uffff \\x01"
    assert "exit status 1: bad \\ufffe \\uffff \\x01" in summary.read_text(encoding="utf-8")


def test_step_summary_cells_carry_no_link_or_image_from_a_commands_error(
        seed: Seed, tmp_path: Path) -> None:
    """An error message written as Markdown (what a tool or a server answered) shows as
    text in the step summary: no link, no image, no HTML, the table whole."""
    plan = seed.root / "md.yaml"
    plan.write_text(
        "name: md\ncommands:\n  - id: md\n    changes: false\n"
        "    run: {shell: \"echo 'see [docs](https://evil.example/x) "
        "![p](https://evil.example/p.png) <img src=x> a|b' >&2; exit 1\"}\n")
    summary = tmp_path / "summary.md"
    done = seed.planctl("apply", str(plan), env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert done.returncode == 1, done.stdout + done.stderr
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark").enable("table").render(summary.read_text("utf-8"))
    assert "<a " not in html and "<img" not in html, html
    cells = re.findall(r"<td[^>]*>(.*?)</td>", html)
    assert len(cells) == 8, cells
    assert unescape(cells[-1]) == ("exit status 1: see [docs](https://evil.example/x) "
                                   "![p](https://evil.example/p.png) <img src=x> a|b")


def test_step_summary_cells_show_backslashes_as_written(seed: Seed, tmp_path: Path) -> None:
    """A backslash in an error (a Windows path, a regex) shows as written in the step
    summary's table, rather than escaping what follows it: `C:\\<dir>` is not
    `C:&lt;dir>`, `\\\\server` keeps both, `\\|` neither loses its backslash nor splits
    the row."""
    message = r"C:\<dir> \\server\share a\|b \[l\](u) x\.y \ufffe e\\"
    (seed.root / "message.txt").write_text(message + "\n")
    plan = seed.root / "slashes.yaml"
    plan.write_text("name: slashes\ncommands:\n  - id: slashes\n    changes: false\n"
                    "    run: {shell: \"cat message.txt >&2; exit 1\"}\n")
    summary = tmp_path / "summary.md"
    done = seed.planctl("apply", str(plan), env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert done.returncode == 1, done.stdout + done.stderr
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark").enable("table").render(summary.read_text("utf-8"))
    cells = re.findall(r"<td[^>]*>(.*?)</td>", html)
    assert len(cells) == 8, cells
    assert unescape(cells[-1]) == f"exit status 1: {message}"


def test_step_summary_starts_on_a_line_of_its_own(seed: Seed, tmp_path: Path) -> None:
    """What an earlier step wrote without a final line break (`printf '# Deploy'`) stays
    as it was, and the run's summary still starts with its own heading."""
    summary = tmp_path / "summary.md"
    summary.write_text("# Deploy")
    done = seed.apply(*QUICK, env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert done.returncode == 0, done.stdout + done.stderr
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark").enable("table").render(summary.read_text("utf-8"))
    assert html.startswith("<h1>Deploy</h1>\n<h3>"), html[:200]
    assert summary.read_text("utf-8").startswith("# Deploy\n### ")


def test_github_step_summary_is_appended_as_markdown(seed: Seed, tmp_path: Path) -> None:
    """With GITHUB_STEP_SUMMARY set, each run appends a Markdown heading, a counts line and a
    table of its commands to that file, keeping what was there."""
    summary = tmp_path / "step-summary.md"
    summary.write_text("# Earlier step\n\n")
    env = {"GITHUB_STEP_SUMMARY": str(summary)}
    assert seed.apply(*FAIL_DISK1, env=env).returncode == 1
    assert seed.apply(*QUICK, env=env).returncode == 0
    text = summary.read_text()
    assert text.startswith("# Earlier step\n\n")
    headings = re.findall(r"^### .* planctl apply add-vm-from-template: (\w+)$", text, re.M)
    assert headings == ["ROLLED_BACK", "SUCCEEDED"]
    assert text.count("| command | entity | status | forward | time | inverse | time | note |"
                      ) == 2
    assert re.search(r"^\| clone\[disk1\] \| image/vm-42-disk1 \| REVERT_SKIPPED \| FAILED \| "
                     r"[\d.]+s \| REVERT_SKIPPED \| [\d.]+s \| async task failed", text, re.M)
    assert re.search(r"^\| add_vm \| vm/vm-42 \| SUCCEEDED \| SUCCEEDED \| [\d.]+s \|  \|  \|",
                     text, re.M)
    assert "(exit 1)" in text and "(exit 0)" in text
    # The plan's description, under each heading.
    assert re.findall(r"^### .*\n\n> (.*)$", text, re.M) == [
        "Create a VM from a template, one cloned image per template disk."] * 2
    assert "3 changed, 0 unchanged, 2 failed, 3 reverted, 0 left over" in text


ODD_LEFTOVERS_PLAN = """\
name: odd-leftovers
vars:
  keys: ["a|b", "<i>&amp;", "x`y", "z\\\\|w"]
commands:
  - id: c
    for_each: "{{ keys }}"
    entity: "e/{{ item }}<b>"
    run: {shell: "touch made-$PLANCTL_IDEMPOTENCY_KEY"}
  - id: boom
    needs: c
    changes: false
    run: {command: ["false"]}
"""


def test_step_summary_shows_leftover_ids_and_the_gone_command_exactly(seed: Seed,
                                                                      tmp_path: Path) -> None:
    """The leftovers of the step summary are code spans, which take no escapes: the ids
    and entities show exactly as they are (no `&lt;`, no `\\|`), backticks included, and
    the `planctl rollback RUN --gone ...` shown is the command that works when pasted."""
    from markdown_it import MarkdownIt

    (seed.root / "odd.yaml").write_text(ODD_LEFTOVERS_PLAN)
    summary = tmp_path / "summary.md"
    done = seed.planctl("apply", "odd.yaml", env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert done.returncode == 2, done.stdout + done.stderr
    html = MarkdownIt("commonmark").enable("table").render(summary.read_text("utf-8"))
    shown = [unescape(code) for code in re.findall(r"<code>(.*?)</code>", html)]
    ids = ["c[a|b]", "c[<i>&amp;]", "c[x`y]", "c[z\\|w]"]
    for key, command in zip(["a|b", "<i>&amp;", "x`y", "z\\|w"], ids, strict=True):
        assert command in shown and f"e/{key}<b>" in shown, (command, shown)
    [advice] = [code for code in shown if code.startswith("planctl rollback ")]
    assert shlex.split(advice)[4::2] == ids
    path = f"{Path(sys.executable).parent}{os.pathsep}{seed.env.get('PATH', '')}"
    again = subprocess.run(advice, shell=True, cwd=seed.root, env={**seed.env, "PATH": path},
                           capture_output=True, text=True, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "ROLLED_BACK" in again.stdout


# -- secrets -----------------------------------------------------------------------------------

SECRET = "s3cr3t-Valu3"
SECRET_PLAN = """\
name: secretive
secrets:
  token: {env: API_TOKEN}
commands:
  - id: make
    entity: file/made
    exists: {shell: "test -e made"}
    run: {shell: "echo made with {{ token }}; touch made"}
    inverse: {shell: "echo cannot remove with {{ token }} >&2; exit 3"}
    outputs: {said: "{{ result.stdout | trim }}"}
  - id: boom
    needs: make
    changes: false
    run: {shell: "echo the token is {{ token }} >&2; exit 1"}
"""


def test_secrets_appear_in_no_output(seed: Seed, tmp_path: Path) -> None:
    """A secret echoed by commands that fail is masked in the NDJSON events, the plain
    lines, the summaries, the JUnit report and the GitHub step summary; it never appears."""
    plan = seed.plan.parent / "secretive.yaml"
    plan.write_text(SECRET_PLAN)
    summary, report = tmp_path / "summary.md", tmp_path / "junit.xml"
    env = {"API_TOKEN": SECRET, "GITHUB_STEP_SUMMARY": str(summary)}
    as_json = seed.planctl("apply", str(plan), "-o", "json", "--junit", str(report), env=env)
    assert as_json.returncode == 2, as_json.stdout + as_json.stderr
    errors = [e["error"] for e in _objects(as_json.stdout) if e["kind"] == "command"
              and e["error"]]
    assert "exit status 1: the token is ***" in errors  # the message is there, masked
    as_lines = seed.planctl("rollback", "--last", "--junit", str(report), env=env)
    assert as_lines.returncode == 2, as_lines.stdout + as_lines.stderr
    assert "cannot remove with ***" in as_lines.stdout
    junit = report.read_text()
    assert "cannot remove with ***" in junit
    outputs = {"json": as_json.stdout, "json stderr": as_json.stderr,
               "lines": as_lines.stdout, "lines stderr": as_lines.stderr,
               "junit": junit, "step summary": summary.read_text()}
    assert summary.read_text().count("### ") == 2
    for name, text in outputs.items():
        assert SECRET not in text, name


def test_resume_of_an_ended_run_reports_it_without_loading_its_plan(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The reports of an ended run (`resume -o json --junit`, the step summary) come from
    its record, snapshot and events: its plan is not loaded (seconds for a big one), and
    they are those the loaded plan gave, a loop and a `changes: false` command included."""
    import io

    import planner.executor
    from planner.cli import main
    from planner.reporters import Reporting
    from planner.sqlite_store import SQLiteStore

    plan = tmp_path / "plan.yaml"
    plan.write_text("""\
name: ended
description: a loop and a check
commands:
  - id: copy
    for_each: [a, b]
    as: item
    run: {command: ['true']}
    inverse: {command: ['true']}
  - id: check
    needs: copy
    changes: false
    run: {command: ['true']}
""")
    state = str(tmp_path / "state.db")
    monkeypatch.delenv("PLANCTL_OUTPUT", raising=False)
    assert main(["apply", str(plan), "-s", state]) == 0
    capsys.readouterr()
    load_run = planner.executor.load_run

    def refused(*args: Any) -> Any:
        raise AssertionError("the plan was loaded")

    monkeypatch.setattr(planner.executor, "load_run", refused)
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "new.md"))
    assert main(["resume", "--last", "-o", "json", "--junit", str(tmp_path / "new.xml"),
                 "-s", state]) == 0
    [outcome] = _objects(capsys.readouterr().out)
    # What the reports were from the loaded plan.
    store = SQLiteStore(tmp_path / "state.db")
    try:
        run_id = store.last_run_id()
        assert run_id is not None
        out = io.StringIO()
        reporting = Reporting(output="json", verb="resume", loaded=load_run(store, run_id),
                              stdout=out, stderr=io.StringIO(), junit=tmp_path / "old.xml",
                              environ={"GITHUB_STEP_SUMMARY": str(tmp_path / "old.md")})
        reporting.nothing_to_do(store, run_id, outcome["message"])
    finally:
        store.close()
    [expected] = _objects(out.getvalue())
    assert outcome["counts"] == {"changed": 2, "unchanged": 1, "failed": 0, "reverted": 0,
                                 "skipped": 0, "not_run": 0, "leftovers": 0}
    for volatile in ("ts", "time", "duration"):
        del outcome[volatile], expected[volatile]
    assert outcome == expected

    def timeless(text: str) -> str:
        return re.sub(r"\d+\.\d+s?", "T", text)

    assert timeless((tmp_path / "new.xml").read_text()) == \
        timeless((tmp_path / "old.xml").read_text())
    assert timeless((tmp_path / "new.md").read_text()) == \
        timeless((tmp_path / "old.md").read_text())
    assert "a loop and a check" in (tmp_path / "new.md").read_text()
