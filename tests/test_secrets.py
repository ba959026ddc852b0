"""Secrets never leave the process: not in the state store, events, reports, summaries,
error messages or crash logs; a secret value shown in a command's output is masked as ***.

The scenario runs a plan through the real CLI (real subprocesses, a real SQLite file) with
one secret from the environment and one from a file, used by a command that echoes them to
stdout and stderr, an async task whose handle and poll output hold them, a command that
fails with one in its message (after a retry), and an inverse that fails with one in its
message; then every file planctl wrote and everything it printed is searched for them.
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
from collections.abc import Mapping
from pathlib import Path

import pytest
from seedplan import spawn, wait_for

import planner
from planner import cli, executor
from planner.executor import _Redactor, redact_secrets, resolve_secrets

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "tok-9Zq7Lm3Xw1"  # from the environment
KEY = "key-Pf4Rt8Vb2N"  # from a file
SECRETS = (TOKEN, KEY)

AUDIT = """\
name: secrets-audit
secrets:
  token: {env: PLANCTL_AUDIT_TOKEN}
  key: {file: key.txt}
commands:
  - id: echo
    entity: echo/one
    exists:
      command:
        - sh
        - -c
        - |
          if [ -e probe-broken ]; then echo "probe saw $1" >&2; exit 127; fi
          test -e made.txt && echo "have $1"
        - sh
        - "{{ token }}"
    run:
      command:
        - sh
        - -c
        - |
          printf %s "$1$2" > used.txt; touch made.txt
          echo "token=$1 key=$2"; echo "to stderr $1 $2" >&2
        - sh
        - "{{ token }}"
        - "{{ key }}"
    inverse: {command: [sh, -c, 'rm -f made.txt; echo "removed with $1"', sh, "{{ token }}"]}
    outputs: {said: "{{ result.stdout | trim }}"}
  - id: job
    needs: echo
    run:
      command: [sh, -c, 'echo "job-$1"', sh, "{{ key }}"]
      async:
        handle: "{{ result.stdout | trim }}"
        poll: {command: [sh, -c, 'echo "finished $1 for $2"', sh, "{{ token }}", "{{ handle }}"]}
        until: "{{ 'finished' in poll.stdout }}"
        interval: 0.05s
    inverse:
      command:
        - sh
        - -c
        - 'if [ -e inverse-fails ]; then echo "cannot remove $1" >&2; exit 3; fi'
        - sh
        - "{{ token }}"
    outputs: {polled: "{{ poll.stdout | trim }}"}
  - id: denied
    needs: job
    run:
      command: [sh, -c, 'echo "denied for $1" >&2; exit 1', sh, "{{ token }}"]
      retries: 1
      delay: 0.01s
    irreversible: true
"""

BAD_TEMPLATE = """\
name: secret-in-a-template-error
secrets:
  token: {env: PLANCTL_AUDIT_TOKEN}
commands:
  - id: bad
    run: {command: [echo, "{{ commands[token].status }}"]}
    irreversible: true
"""


def planctl(cwd: Path, *args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "planner", *args], cwd=cwd, env=dict(env),
                          capture_output=True, text=True, timeout=120, check=False)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def leaks(text: str | bytes) -> list[str]:
    """The secret values found in ``text``."""
    if isinstance(text, bytes):
        return [s for s in SECRETS if s.encode() in text]
    return [s for s in SECRETS if s in text]


@pytest.fixture
def audit(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    (tmp_path / "audit.yaml").write_text(AUDIT, encoding="utf-8")
    (tmp_path / "bad.yaml").write_text(BAD_TEMPLATE, encoding="utf-8")
    (tmp_path / "key.txt").write_text(KEY + "\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PLANCTL_", "GITHUB_"))}
    env.update(PLANCTL_AUDIT_TOKEN=TOKEN, NO_COLOR="1", PYTHONPATH=str(ROOT),
               GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md"),
               TMPDIR=str(tmp_path / "tmp"))  # where a crash log would go
    (tmp_path / "tmp").mkdir()
    return tmp_path, env


def test_secrets_reach_commands_but_no_file_or_output_of_planctl(
        audit: tuple[Path, dict[str, str]]) -> None:
    """Through apply (text, JSON, JUnit, step summary), rollback (and its dry run), plan,
    show and runs: the secrets are used, and found nowhere but where the plan's own
    commands put them; where planctl shows output that held one, it shows ***."""
    root, env = audit
    printed: dict[str, str] = {}

    def run(name: str, *args: str, code: int) -> str:
        done = planctl(root, *args, env=env)
        assert done.returncode == code, f"{name}: {done.returncode}\n{done.stdout}{done.stderr}"
        printed[name] = done.stdout + done.stderr
        return done.stdout

    # 1. The inverse of `job` fails, with the token in its message: leftovers (exit 2).
    (root / "inverse-fails").touch()
    out = run("apply", "apply", "audit.yaml", "--junit", "apply.xml", code=2)
    assert (root / "used.txt").read_text() == TOKEN + KEY  # the command got both
    assert re.search(r"FAILED\s+denied: .*denied for \*\*\*", out), out
    assert re.search(r"REVERT_FAILED\s+job.*cannot remove \*\*\*", out), out
    assert "cannot remove ***" in out.split("REVERT_FAILED")[-1]  # the leftovers' summary too
    run("show", "show", "--last", code=0)
    run("runs", "runs", code=0)
    # 2. Probes that fail with the token in their message: the dry run and the preview.
    (root / "probe-broken").touch()
    assert "probe saw ***" in run("dry-run", "rollback", "--last", "--dry-run", code=0)
    plan = run("plan", "plan", "audit.yaml", code=11)
    assert "probe saw ***" in plan and """sh -c 'echo "job-$1"' sh ***""" in plan
    assert run("plan-json", "plan", "audit.yaml", "-o", "json", code=11).count("***") >= 2
    # 3. The rollback finishes the job; a second apply rolls back fully, as JSON lines.
    (root / "probe-broken").unlink()
    (root / "inverse-fails").unlink()
    run("rollback", "rollback", "--last", "--junit", "rollback.xml", code=0)
    events = run("apply-json", "apply", "audit.yaml", "--output", "json", code=1)
    assert "***" in events
    # 4. A template error whose message holds the token.
    assert "***" in run("template", "apply", "bad.yaml", code=1)

    for name, text in printed.items():
        assert not leaks(text), f"`{name}` printed a secret:\n{text}"
    written = [p for p in root.rglob("*") if p.is_file()
               and p.name not in ("key.txt", "used.txt")]  # the plan's own files
    names = {p.name for p in written}
    assert {"state.db", "apply.xml", "rollback.xml"} <= names, names
    assert any(n.startswith("state.db-") for n in names) or "state.db" in names
    for path in written:
        assert not leaks(path.read_bytes()), f"{path} holds a secret"
    # What the state store kept: *** where an error held a secret; in outputs, which a
    # later rollback reads back, a placeholder naming the secret.
    store = planner.SQLiteStore(root / ".planctl" / "state.db")
    try:
        first = store.list_runs(10)[-1].id
        commands = store.get_commands(first)
        tasks = store.get_tasks(first)
    finally:
        store.close()
    assert commands["echo"].outputs == {"said": "token=\u00absecret:token\u00bb "
                                                "key=\u00absecret:key\u00bb"}
    assert commands["job"].outputs == {
        "polled": "finished \u00absecret:token\u00bb for job-\u00absecret:key\u00bb"}
    assert "***" in (commands["denied"].error or "")
    assert {t.handle for t in tasks} == {"job-\u00absecret:key\u00bb"}  # named, not kept


OUTPUT_SECRET = """\
name: output-secret
secrets:
  token: {env: PLANCTL_AUDIT_TOKEN}
commands:
  - id: make
    run: {command: [sh, -c, 'touch "made-$1"; echo "made-$1"', sh, "{{ token }}"]}
    outputs: {file: "{{ result.stdout | trim }}"}
    inverse: {command: [rm, "{{ outputs.file }}"]}
  - id: fail
    needs: make
    run: {command: ["false"]}
    changes: false
"""


def test_a_later_rollback_gives_the_inverse_the_secret_an_output_held(
        audit: tuple[Path, dict[str, str]]) -> None:
    """An output that holds a secret is stored with a placeholder naming it, not the value
    and not ***: `planctl rollback` in another process puts the secret back, and the
    inverse removes the file the run made (before, it was given made-*** and failed, exit
    2, for every later rollback too). Nothing planctl prints or stores holds the value."""
    root, env = audit
    (root / "out.yaml").write_text(OUTPUT_SECRET, encoding="utf-8")
    made = root / f"made-{TOKEN}"
    stopped = planctl(root, "apply", "out.yaml", "--no-rollback", env=env)
    assert stopped.returncode == 2 and made.exists(), stopped.stdout + stopped.stderr
    shown = planctl(root, "show", "--last", "make", env=env)
    assert "made-\u00absecret:token\u00bb" in shown.stdout
    done = planctl(root, "rollback", "--last", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not made.exists()
    for text in (stopped.stdout, stopped.stderr, shown.stdout, done.stdout, done.stderr):
        assert not leaks(text), text
    for path in (root / ".planctl").iterdir():
        assert not leaks(path.read_bytes()), path


def test_a_crash_log_leaves_resolved_secrets_out(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The traceback file of an internal error (exit 70) masks every secret resolved so far,
    in the message on stderr and in the file."""
    (tmp_path / "plan.yaml").write_text(BAD_TEMPLATE, encoding="utf-8")
    loaded = planner.load_plan(tmp_path / "plan.yaml")
    assert resolve_secrets(loaded, {"PLANCTL_AUDIT_TOKEN": TOKEN}) == {"token": TOKEN}
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    try:
        raise RuntimeError(f"a bug that quotes {TOKEN}")
    except RuntimeError as exc:
        assert cli._internal_error(exc) == 70
    err = capsys.readouterr().err
    assert "a bug that quotes ***" in err and not leaks(err)
    logs = list(tmp_path.glob("planctl-crash-*.log"))
    assert len(logs) == 1
    text = logs[0].read_text()
    assert "a bug that quotes ***" in text and not leaks(text)
    assert redact_secrets(f"x{TOKEN}y") == "x***y"


def test_a_long_lived_host_keeps_only_the_newest_resolved_secrets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host resolving a fresh token per run keeps the last MAX_RESOLVED of them for crash
    logs, not every one it ever saw; the newest, and one resolved again, are still masked."""
    (tmp_path / "plan.yaml").write_text(BAD_TEMPLATE, encoding="utf-8")
    loaded = planner.load_plan(tmp_path / "plan.yaml")
    monkeypatch.setattr(executor, "_RESOLVED", {})
    monkeypatch.setattr(executor, "MAX_RESOLVED", 3)
    for i in range(5):
        resolve_secrets(loaded, {"PLANCTL_AUDIT_TOKEN": f"tok-{i}"})
        if i == 3:
            resolve_secrets(loaded, {"PLANCTL_AUDIT_TOKEN": "tok-1"})  # 1 is new again
    assert list(executor._RESOLVED) == ["tok-3", "tok-1", "tok-4"]
    assert redact_secrets("tok-0 tok-1 tok-2 tok-4") == "tok-0 *** tok-2 ***"


def test_a_secret_file_is_read_without_its_line_ending(tmp_path: Path) -> None:
    """A secret file's trailing newline, CRLF included, is not part of the secret."""
    (tmp_path / "plan.yaml").write_text(textwrap.dedent("""\
        name: file-secret
        secrets: {key: {file: key.txt}}
        commands:
          - id: a
            run: {command: [echo, "{{ key }}"]}
            changes: false
        """), encoding="utf-8")
    (tmp_path / "key.txt").write_bytes(KEY.encode() + b"\r\n")
    assert resolve_secrets(planner.load_plan(tmp_path / "plan.yaml")) == {"key": KEY}


def test_the_redactor_masks_keys_and_values_kept_as_text() -> None:
    """Mapping keys and values the store keeps as their text (bytes, objects) are masked;
    numbers and None pass as they are. Only exact values are masked (documented)."""
    redact = _Redactor({"token": TOKEN})
    data = {TOKEN: 1, "b": TOKEN.encode(), "n": 3, "none": None, "l": (f"a{TOKEN}",),
            "set": {TOKEN}}
    masked = redact(data)
    assert not leaks(repr(masked))
    assert masked["***"] == 1 and masked["n"] == 3 and masked["none"] is None
    assert masked["l"] == ["a***"]
    assert redact(TOKEN.upper()) == TOKEN.upper()  # a transformed value is not recognised


SECRET_HANDLE = """\
name: secret-handle
secrets:
  token: {env: PLANCTL_AUDIT_TOKEN}
commands:
  - id: job
    run:
      command: [sh, -c, 'echo "job-$1"', sh, "{{ token }}"]
      async:
        handle: "{{ result.stdout | trim }}"
        poll:
          command: [sh, -c, 'echo "$1" >> polled.txt; if [ -e done ]; then echo finished; fi',
                    sh, "{{ handle }}"]
        until: "{{ 'finished' in poll.stdout }}"
        interval: 0.05s
        max_interval: 0.05s
    inverse: {command: ["true"]}
"""


def test_a_handle_holding_a_secret_is_stored_without_it_and_resumed_with_it(
        audit: tuple[Path, dict[str, str]]) -> None:
    """A task handle that contains a secret is stored with a placeholder naming the secret,
    never the value; after a kill -9, `planctl resume` (given the secret again) re-attaches
    and polls the real handle until the task ends."""
    root, env = audit
    (root / "handle.yaml").write_text(SECRET_HANDLE, encoding="utf-8")
    applying = spawn(root, "apply", "handle.yaml", env=env)
    try:
        wait_for("the task to be polled", (root / "polled.txt").exists, timeout=30,
                 proc=applying)
    finally:
        applying.kill()
        applying.communicate()
    stored = b"".join(p.read_bytes() for p in (root / ".planctl").glob("state.db*"))
    assert not leaks(stored)
    shown = planctl(root, "show", "--last", env=env)
    assert "job-\u00absecret:token\u00bb" in shown.stdout and not leaks(shown.stdout)

    (root / "done").touch()
    (root / "polled.txt").unlink()
    resumed = planctl(root, "resume", "--last", env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "REATTACHED" in resumed.stdout and not leaks(resumed.stdout + resumed.stderr)
    assert (root / "polled.txt").read_text().split() == [f"job-{TOKEN}"]
    stored = b"".join(p.read_bytes() for p in (root / ".planctl").glob("state.db*"))
    assert not leaks(stored)


def test_handle_placeholders_name_the_longest_secret_and_survive_a_missing_one() -> None:
    from planner.executor import unmask

    redactor = _Redactor({"short": "abc", "long": "abcdef", "empty": ""})
    stored = redactor.naming("id-abcdef-abc")
    assert stored == "id-\u00absecret:long\u00bb-\u00absecret:short\u00bb"
    assert unmask(stored, {"short": "abc", "long": "abcdef"}) == "id-abcdef-abc"
    assert unmask(stored, {"short": "abc"}) == "id-\u00absecret:long\u00bb-abc"
    assert unmask("plain-id", {"short": "abc"}) == "plain-id"


FILE_SECRET = """\
name: file-secret
secrets:
  token: {env: PLANCTL_FILE_SECRET_TOKEN}
  key: {file: secret.txt}
  extra: {file: extra.txt, optional: true}
commands:
  - id: a
    run: {command: [touch, made.txt]}
    changes: false
"""


def test_a_secret_that_cannot_be_read_says_why(tmp_path: Path) -> None:
    """A secret file that is missing, a directory or not UTF-8 stops `apply` with exit 3 and
    one line saying why it cannot be read; a missing variable says it is not set. Nothing
    runs and no state store is made. A missing optional file is empty."""
    (tmp_path / "plan.yaml").write_text(FILE_SECRET, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLANCTL_", "GITHUB_"))}
    env.update(NO_COLOR="1", PYTHONPATH=str(ROOT))

    def error(**more: str) -> str:
        done = planctl(tmp_path, "apply", "plan.yaml", env={**env, **more})
        assert done.returncode == 3, done.stdout + done.stderr
        assert not (tmp_path / "made.txt").exists() and not (tmp_path / ".planctl").exists()
        return done.stderr

    token = {"PLANCTL_FILE_SECRET_TOKEN": TOKEN}
    assert error() == ("planctl: error: secret `token`: environment variable "
                       "PLANCTL_FILE_SECRET_TOKEN is not set\n")
    assert error(**token) == ("planctl: error: secret `key`: cannot read file secret.txt: "
                              "No such file or directory\n")
    (tmp_path / "secret.txt").mkdir()
    assert error(**token) == ("planctl: error: secret `key`: cannot read file secret.txt: "
                              "Is a directory\n")
    (tmp_path / "secret.txt").rmdir()
    (tmp_path / "secret.txt").write_bytes(b"\xff\xfe")
    assert error(**token) == "planctl: error: secret `key`: file secret.txt is not UTF-8 text\n"
    (tmp_path / "secret.txt").write_text(KEY + "\n", encoding="utf-8")
    loaded = planner.load_plan(tmp_path / "plan.yaml")
    assert resolve_secrets(loaded, token) == {"token": TOKEN, "key": KEY, "extra": ""}
    (tmp_path / "extra.txt").mkdir()  # there, but not a file: an error even when optional
    with pytest.raises(planner.UsageError, match=r"^secret `extra`: cannot read file "
                                                 r"extra.txt: Is a directory$"):
        resolve_secrets(loaded, token)


FAILS = """\
name: fails-with-a-secret
secrets:
  token: {env: PLANCTL_AUDIT_TOKEN}
commands:
  - id: made
    entity: thing/made
    run: {command: [sh, -c, 'echo "made with $1"', sh, "{{ token }}"]}
    inverse: {command: ["true"]}
  - id: fails
    needs: made
    run: {command: [sh, -c, 'echo "using $1" >&2; exit 1', sh, "{{ token }}"]}
    irreversible: true
"""

# The keys of each event kind, after the common ones, as docs/output.md lists them.
EVENT_KEYS = {
    "run": ["plan", "commands", "status", "previous", "signal", "leftovers"],
    "command": ["command_id", "entity", "status", "previous", "execution_reason", "error"],
    "warning": ["command_id", "message"],
    "outcome": ["plan", "status", "exit_code", "duration", "counts", "leftovers", "message"],
}
COMMON_KEYS = ["schema_version", "kind", "seq", "ts", "time", "run_id"]


@pytest.mark.parametrize("secret", ["status", "e", "a", "FAILED", "REGULAR_FLOW"])
def test_a_secret_that_reads_like_planctl_s_words_leaves_events_whole(
        audit: tuple[Path, dict[str, str]], secret: str) -> None:
    """A secret equal to a key, a status or a letter of them masks what commands printed,
    never the keys of events nor planctl's own values (statuses, flows, entities): the
    events, their copy in the state store and the counts of the outcome stay right."""
    root, env = audit
    (root / "fails.yaml").write_text(FAILS, encoding="utf-8")
    env = {**env, "PLANCTL_AUDIT_TOKEN": secret}
    done = planctl(root, "apply", "fails.yaml", "--output", "json", env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    for event in events:
        assert list(event) == COMMON_KEYS + EVENT_KEYS[event["kind"]], event
    changes = [(e["command_id"], e["previous"], e["status"], e["execution_reason"],
                e["entity"]) for e in events if e["kind"] == "command"]
    made, regular, rollback = "thing/made", "REGULAR_FLOW", "ROLLBACK_FLOW"
    assert changes == [
        ("made", "PENDING", "STARTING", regular, made),
        ("made", "STARTING", "SUCCEEDED", regular, made),
        ("fails", "PENDING", "STARTING", regular, None),
        ("fails", "STARTING", "FAILED", regular, None),
        ("made", "SUCCEEDED", "REVERTING", rollback, made),
        ("made", "REVERTING", "REVERTED", rollback, made),
    ]
    assert [e["status"] for e in events if e["kind"] == "run"] == [
        "RUNNING", "ROLLING_BACK", "ROLLED_BACK"]
    assert events[-1]["plan"] == "fails-with-a-secret"
    assert events[-1]["counts"]["failed"] == 1 and events[-1]["counts"]["reverted"] == 1
    failed = next(e for e in events if e["kind"] == "command" and e["status"] == "FAILED")
    assert secret not in failed["error"].replace("***", "")  # masked, whatever it garbles
    logged = planctl(root, "events", "--last", env=env).stdout
    assert logged == "".join(line + "\n" for line in done.stdout.splitlines()[:-1])
    store = planner.SQLiteStore(root / ".planctl" / "state.db")
    try:
        commands = store.get_commands(store.list_runs(1)[0].id)
    finally:
        store.close()
    assert {iid: r.status for iid, r in commands.items()} == {"made": "REVERTED",
                                                                "fails": "FAILED"}
    assert commands["made"].params is not None and set(commands["made"].params) == {
        "action", "args"}
    assert commands["made"].params["action"] == "command"
    assert commands["made"].execution_reason == rollback
    plain = planctl(root, "apply", "fails.yaml", env=env)
    assert re.search(r"^ +\S+ +FAILED +fails: ", plain.stdout, re.M), plain.stdout
    assert re.search(r"^ROLLED_BACK in \S+: 1 changed, 0 unchanged, 1 failed, 1 reverted",
                     plain.stdout, re.M), plain.stdout


@pytest.mark.parametrize("secret", ["a", "abc", "abcd"])
def test_a_secret_shorter_than_4_characters_is_masked_with_a_warning(
        audit: tuple[Path, dict[str, str]], secret: str) -> None:
    """A secret of 1 to 3 characters is still masked everywhere, and the run says once, at
    its start, that masking it will hide unrelated text too, naming the secret (not its
    value); a longer one gets no warning."""
    root, env = audit
    (root / "fails.yaml").write_text(FAILS, encoding="utf-8")
    env = {**env, "PLANCTL_AUDIT_TOKEN": secret}
    done = planctl(root, "apply", "fails.yaml", "--output", "json", env=env)
    events = [json.loads(line) for line in done.stdout.splitlines()]
    warnings = [e["message"] for e in events if e["kind"] == "warning"]
    if len(secret) >= 4:
        assert warnings == []
        return
    assert [e["kind"] for e in events[:2]] == ["run", "warning"]
    assert warnings == ["secret `token` is shorter than 4 characters: masking it as *** "
                        "will also hide the same characters in unrelated text"]
    made = next(e for e in events if e["kind"] == "command" and e["status"] == "SUCCEEDED")
    assert made["status"] == "SUCCEEDED"
    failed = next(e for e in events if e["kind"] == "command" and e["status"] == "FAILED")
    assert "using ***" in failed["error"]


def test_a_record_keeps_planctl_s_keys_and_words_and_masks_the_rest() -> None:
    """``record`` masks the user data of planctl's records (events, row updates), nested
    params and leftovers included, but not their keys, statuses, flows, ids or entities."""
    redact = _Redactor({"token": "e"})
    record = redact.record({
        "status": "REVERTED", "previous": "REVERTING", "execution_reason": "ROLLBACK_FLOW",
        "entity": "image/e", "error": "exit status 1: seen e", "attempts": 2,
        "params": {"action": "shell", "args": {"cmd": "echo e"}},
        "leftovers": [{"command": "clone[e]", "entity": "image/e", "status": "REVERT_FAILED",
                       "reason": "cannot remove e"}],
        "result": {"e": "e"},
    })
    assert record == {
        "status": "REVERTED", "previous": "REVERTING", "execution_reason": "ROLLBACK_FLOW",
        "entity": "image/e", "error": "***xit status 1: s******n ***", "attempts": 2,
        "params": {"action": "shell", "args": {"cmd": "***cho ***"}},
        "leftovers": [{"command": "clone[e]", "entity": "image/e",
                       "status": "REVERT_FAILED", "reason": "cannot r***mov*** ***"}],
        "result": {"***": "***"},  # a result's keys are data: masked
    }


HOST_SECRET = """\
name: secret-in-a-host
secrets:
  token: {env: PLANCTL_AUDIT_TOKEN}
commands:
  - id: call
    run: {http: {url: "http://{{ token }}.invalid/x?k={{ token }}"}}
    irreversible: true
"""


def test_a_secret_in_an_http_host_is_masked_in_its_error(
        audit: tuple[Path, dict[str, str]]) -> None:
    """A secret with capitals used as an HTTP URL's host: the error that the host cannot be
    resolved quotes it as written, so it is masked; neither it nor its lower-case form
    reaches the output, the JUnit report or the state store."""
    root, env = audit
    (root / "host.yaml").write_text(HOST_SECRET, encoding="utf-8")
    secret = "Zq9SECRETz"
    env = {**env, "PLANCTL_AUDIT_TOKEN": secret}
    done = planctl(root, "apply", "host.yaml", "--output", "json", "--junit", "host.xml",
                   env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    failed = [json.loads(line) for line in done.stdout.splitlines()
              if '"FAILED"' in line and '"command"' in line]
    assert len(failed) == 1
    assert failed[0]["error"].startswith("cannot resolve host ***.invalid: ")
    files = [root / "host.xml", *(root / ".planctl").glob("state.db*")]
    for text in [done.stdout + done.stderr, *(p.read_bytes().decode("latin-1") for p in files)]:
        assert secret.lower() not in text.lower()


CUT_SHORT = """\
name: secret-cut-short
vars: {url: ""}
secrets:
  token: {env: PLANCTL_AUDIT_TOKEN}
commands:
  - id: stderr
    run:
      shell: 'printf "%0480d %s and more\\n" 0 "$T" >&2; exit 1'
      env: {T: "{{ token }}"}
    irreversible: true
  - id: body
    run:
      http:
        url: "{{ url }}"
        method: POST
        body: "{{ 'x' * 150 }} {{ token }} and more"
    irreversible: true
"""


class _EchoBody(http.server.BaseHTTPRequestHandler):
    """Answers 400 with the request's body: a server quoting a bad request back."""

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(400)
        self.send_header("content-type", "text/plain")
        self.end_headers()
        self.wfile.write(b"rejected: " + body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_secret_cut_short_in_an_error_excerpt_is_masked_whole(
        audit: tuple[Path, dict[str, str]]) -> None:
    """An error quotes a stderr line (500 characters at most) or a response body (200) cut
    short: a secret that straddled the cut is masked before the cut, not after. Before, the
    cut left its first characters, which masking no longer recognised, in the output, the
    JUnit report and the state store (`...0000 tok-9Zq7Lm3X...`)."""
    root, env = audit
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoBody)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        (root / "cut.yaml").write_text(CUT_SHORT, encoding="utf-8")
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        done = planctl(root, "apply", "cut.yaml", "--var", f"url={url}", "--junit", "cut.xml",
                       env=env)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(r"FAILED\s+stderr: exit status 1: 0{480} \*\*\* and more$", done.stdout,
                     re.MULTILINE)
    assert re.search(r"FAILED\s+body: HTTP 400 .*: rejected: x{150} \*\*\* and more",
                     done.stdout)
    files = [root / "cut.xml", *(root / ".planctl").glob("state.db*")]
    for text in [done.stdout + done.stderr, *(p.read_bytes().decode("latin-1") for p in files)]:
        assert TOKEN[:6] not in text  # not even the first characters


QUOTED = """\
name: secret-quoted
secrets:
  token: {env: PLANCTL_AUDIT_TOKEN}
commands:
  - id: shell
    run: {shell: "printf %s {{ token }} > shell.txt"}
    irreversible: true
  - id: quoted
    needs: shell
    run: {command: [sh, -c, 'printf %s "$1" > quoted.txt', sh, "{{ token | quote }}"]}
    irreversible: true
  - id: argv
    needs: quoted
    run: {command: [sh, -c, 'true', sh, "{{ token }}"]}
    irreversible: true
  - id: missing
    needs: argv
    run: {command: [echo, "{{ {'k': 1}[token] }}"]}
    irreversible: true
"""


def test_a_secret_planctl_quoted_or_escaped_is_masked(
        audit: tuple[Path, dict[str, str]]) -> None:
    """A secret holding quotes, a backslash and a space, as planctl itself writes it: quoted
    by a `shell` template or the `quote` filter (the stored and shown parameters), in the
    command line `plan` shows, and escaped in the repr a template error quotes. Each is
    masked as the value is; before, none held the value as it is, so each was printed and
    stored (`printf %s 'Zq9'"'"'SECRETz ...'`)."""
    root, env = audit
    secret = "Zq9'SECRETz \"x\\y"
    env = {**env, "PLANCTL_AUDIT_TOKEN": secret}
    (root / "quoted.yaml").write_text(QUOTED, encoding="utf-8")
    plan = planctl(root, "plan", "quoted.yaml", env=env)
    plan_json = planctl(root, "plan", "quoted.yaml", "-o", "json", env=env)
    done = planctl(root, "apply", "quoted.yaml", "--junit", "quoted.xml", env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert (root / "shell.txt").read_text() == secret  # the commands got it whole
    assert (root / "quoted.txt").read_text() == "'Zq9'\"'\"'SECRETz \"x\\y'"
    assert re.search(r"FAILED\s+missing: .*has no attribute '\*\*\*'", done.stdout), done.stdout
    shown = planctl(root, "show", "--last", "shell", env=env)
    assert "printf %s '***' > shell.txt" in shown.stdout
    assert "sh -c true sh ***" in plan.stdout
    files = [root / "quoted.xml", *(root / ".planctl").glob("state.db*")]
    texts = [p.read_bytes().decode("latin-1") for p in files]
    for run in (plan, plan_json, done, shown):
        texts.append(run.stdout + run.stderr)
    for text in texts:
        assert "SECRETz" not in text, text


THROUGH_ENV = """\
name: secret-through-env
secrets:
  token: {env: PLANCTL_AUDIT_TOKEN}
commands:
  - id: boxed
    name: "deploy {{ env.PLANCTL_AUDIT_TOKEN | default('unnamed') }}"
    entity: "box/{{ env.PLANCTL_AUDIT_TOKEN | default('shared') }}"
    for_each: "{{ [env.PLANCTL_AUDIT_TOKEN | default('one')] }}"
    run: {command: [sh, -c, 'test "$T" = "$1"', sh, "{{ token }}"], env: {T: "{{ item }}"}}
    irreversible: true
"""


def test_a_secret_read_as_env_is_kept_out_of_loop_keys_entities_and_names(
        audit: tuple[Path, dict[str, str]]) -> None:
    """Loop keys, entities and names are planctl's own words, never masked, and a secret
    cannot be used in them; but `env.VAR` reached the variable a secret is read from, and
    its value became a command id (`boxed[tok-...]`), a lock key and a name, printed by
    apply, plan and graph and stored. There `env` now lacks the variables secrets are read
    from: they are as if not set (here the `default`s), and the value is nowhere."""
    root, env = audit
    (root / "env.yaml").write_text(THROUGH_ENV, encoding="utf-8")
    runs = [planctl(root, "graph", "env.yaml", "--format", "json", env=env),
            planctl(root, "plan", "env.yaml", "-o", "json", env=env),
            planctl(root, "apply", "env.yaml", "-o", "json", "--junit", "env.xml", env=env)]
    assert runs[-1].returncode == 1, runs[-1].stdout + runs[-1].stderr  # `item` is no token
    assert '"command_id":"boxed[one]"' in runs[-1].stdout.replace(" ", "")
    runs.append(planctl(root, "show", "--last", "boxed[one]", env=env))
    assert "box/shared" in runs[-1].stdout and "deploy unnamed" in runs[-1].stdout
    files = [root / "env.xml", *(root / ".planctl").glob("state.db*")]
    for text in [*(r.stdout + r.stderr for r in runs), *(p.read_bytes() for p in files)]:
        assert not leaks(text), text


def test_a_secret_at_a_cut_of_a_long_output_is_masked_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An output longer than OUTPUT_KEPT keeps its first and last halves: a secret that
    straddled either cut is masked before the cut is made, not cut in two (its first, or
    last, characters were stored in state.db, which masking no longer recognised). Here
    OUTPUT_KEPT is made small, so that the program's output need not be 32 MiB."""
    from planner.actions import _process

    kept = 10_000
    monkeypatch.setattr(_process, "OUTPUT_KEPT", kept)
    half = kept // 2
    # The token over the first cut, a run of filler, the token over the second cut.
    script = (f"import os, sys; t = os.environ['T']; sys.stdout.write('a' * {half - 6} + t"
              f" + 'b' * 300_000 + t + 'd' * {half + 6 - len(TOKEN)})")
    (tmp_path / "plan.yaml").write_text(textwrap.dedent(f"""\
        name: long-output
        secrets:
          token: {{env: PLANCTL_AUDIT_TOKEN}}
        commands:
          - id: long
            run:
              command: [{sys.executable}, -c, {json.dumps(script)}]
              env: {{T: "{{{{ token }}}}"}}
            changes: false
        """), encoding="utf-8")
    loaded = planner.load_plan(tmp_path / "plan.yaml")
    store = planner.SQLiteStore(tmp_path / "state.db")
    try:
        outcome = planner.apply_plan(loaded, store, secrets={"token": TOKEN},
                                     handle_signals=False)
        stdout = store.get_commands(outcome.run_id)["long"].result["stdout"]
    finally:
        store.close()
    assert outcome.status == "SUCCEEDED"
    assert "bytes left out by planctl" in stdout
    assert stdout.startswith("a" * (half - 6) + "***b")
    assert stdout.endswith("b***" + "d" * (half + 6 - len(TOKEN)))
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("state.db*"))
    for part in (TOKEN[:5], TOKEN[-5:]):  # neither end of the token, cut or not
        assert part not in stdout and part.encode() not in stored


PRINTED_PLACEHOLDER = """\
name: printed-placeholder
secrets:
  token: {env: PLANCTL_AUDIT_TOKEN}
  spare: {env: PLANCTL_AUDIT_SPARE, optional: true}
commands:
  - id: make
    run: {command: [printf, "id-\\u00absecret:token\\u00bb \\u00absecret:spare\\u00bb"]}
    outputs: {id: "{{ result.stdout }}"}
    inverse: {command: [sh, -c, 'printf %s "$1" > undone.txt', sh, "{{ outputs.id }}"]}
  - id: fail
    needs: make
    run: {command: ["false"]}
    changes: false
"""


@pytest.mark.parametrize("spare", ["", "spare-Yt6Hn2"])
def test_a_placeholder_a_program_printed_is_not_replaced_by_a_secret(
        audit: tuple[Path, dict[str, str]], spare: str) -> None:
    """A program (a remote API) that prints `«secret:token»` in what becomes an output:
    a later `planctl rollback` gives the inverse that text, as the apply's own rollback
    would, not the token's value (before, the stored text was taken for a placeholder and
    the inverse sent the secret wherever the output goes). So too for a secret that was
    empty (optional, unset) when the output was stored and has a value at the rollback."""
    root, env = audit
    (root / "printed.yaml").write_text(PRINTED_PLACEHOLDER, encoding="utf-8")
    stopped = planctl(root, "apply", "printed.yaml", "--no-rollback", env=env)
    assert stopped.returncode == 2, stopped.stdout + stopped.stderr
    done = planctl(root, "rollback", "--last", env={**env, "PLANCTL_AUDIT_SPARE": spare})
    assert done.returncode == 0, done.stdout + done.stderr
    assert (root / "undone.txt").read_text() == \
        "id-\u00absecret:token\u00bb \u00absecret:spare\u00bb"


def test_a_secret_in_an_http_url_is_masked_in_what_httpx_logs(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """httpx logs each request's URL at INFO (`HTTP Request: GET http://...?token=...`): a
    host embedding planctl that shows INFO logs showed a secret in an `http` action's URL.
    What httpx logs during the action's request now has the run's secrets masked."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoBody)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    (tmp_path / "plan.yaml").write_text(textwrap.dedent(f"""\
        name: logged
        secrets:
          token: {{env: PLANCTL_AUDIT_TOKEN}}
        commands:
          - id: call
            run: {{http: {{url: "{url}?token={{{{ token }}}}", method: POST, status: 400}}}}
            changes: false
        """), encoding="utf-8")
    loaded = planner.load_plan(tmp_path / "plan.yaml")
    store = planner.SQLiteStore(tmp_path / "state.db")
    try:
        with caplog.at_level(logging.DEBUG):
            outcome = planner.apply_plan(loaded, store, secrets={"token": TOKEN},
                                         handle_signals=False)
    finally:
        store.close()
        server.shutdown()
        server.server_close()
    assert outcome.status == "SUCCEEDED"
    assert "?token=*** " in caplog.text  # httpx's line, masked
    assert not leaks(caplog.text), caplog.text
