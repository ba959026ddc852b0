"""Third-party actions: discovered through the `planctl.actions` entry-point group of an
installed distribution, their argument schema enforced by the core, run like built-ins."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

PLUGIN = '''\
"""A planctl action that upper-cases a word into a file."""
from pathlib import Path
from planner.actions import ActionResult


class Upper:
    name = "upper"
    schema = {
        "type": "object",
        "required": ["word", "into"],
        "additionalProperties": False,
        "properties": {"word": {"type": "string"}, "into": {"type": "string"}},
    }
    capabilities = frozenset()

    async def run(self, args, context):
        Path(args["into"]).write_text(args["word"].upper() + "\\n")
        return ActionResult(True, {"written": args["into"], "reason": context.execution_reason})


class Quit:
    """Calls sys.exit(), as a plugin using argparse may."""
    name = "quit"
    schema = {"type": "object"}
    capabilities = frozenset()

    async def run(self, args, context):
        import sys
        sys.exit(7)


class Status:
    """Polls a job: ``prepare`` as the built-in python action has it, a buggy one if asked."""
    name = "status"
    schema = {"type": "object", "properties": {"buggy": {"type": "boolean"}}}
    capabilities = frozenset({"starts-sync"})

    def __init__(self):
        self.prepared = 0

    async def run(self, args, context):
        return self.start(args, context)

    def start(self, args, context):
        return ActionResult(True, {"done": True, "prepared": self.prepared})

    def prepare(self, args, context):
        self.prepared += 1
        if args.get("buggy"):
            def call():
                raise RuntimeError("status service exploded")
            return call
        return lambda: self.start(args, context)
'''


def _site(tmp: Path) -> dict[str, str]:
    """A directory holding the plugin module and the dist-info that registers it."""
    site = tmp / "site"
    (site / "planctl_upper-1.0.dist-info").mkdir(parents=True)
    (site / "planctl_upper.py").write_text(PLUGIN)
    info = site / "planctl_upper-1.0.dist-info"
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: planctl-upper\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[planctl.actions]\nupper = planctl_upper:Upper\n"
                                           "status = planctl_upper:Status\n"
                                           "quit = planctl_upper:Quit\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PLANCTL_STATE"] = str(tmp / "state.db")
    return env


def _planctl(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "planner", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def _plan(tmp: Path, args: str) -> Path:
    plan = tmp / "plan.yaml"
    plan.write_text(textwrap.dedent(f"""\
        name: plugin
        commands:
          - id: shout
            run: {{upper: {args}}}
            inverse: {{command: [rm, -f, "{tmp}/out.txt"]}}
        """))
    return plan


def test_a_plugin_action_runs_and_its_inverse_undoes_it(tmp_path: Path) -> None:
    """An action registered by another distribution runs in apply and is undone by rollback."""
    env = _site(tmp_path)
    plan = _plan(tmp_path, f'{{word: hello, into: "{tmp_path}/out.txt"}}')
    done = _planctl(["apply", str(plan)], env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "out.txt").read_text() == "HELLO\n"
    assert _planctl(["rollback", "--last"], env).returncode == 0
    assert not (tmp_path / "out.txt").exists()


def test_a_plugin_schema_is_enforced_at_load_with_a_location(tmp_path: Path) -> None:
    """Arguments that break the plugin's own schema are a located error, exit 3."""
    env = _site(tmp_path)
    plan = _plan(tmp_path, "{word: 3}")
    done = _planctl(["validate", str(plan)], env)
    assert done.returncode == 3
    lines = [line for line in done.stderr.splitlines() if ": error: " in line]
    assert lines and all(line.startswith(f"{plan}:4:") for line in lines), done.stderr
    assert any("into" in line for line in lines)
    assert any("commands[0].run.upper.word" in line for line in lines)


def test_planctl_schema_includes_plugin_actions(tmp_path: Path) -> None:
    """`planctl schema` offers editors the plugin's arguments next to the built-ins."""
    env = _site(tmp_path)
    schema = json.loads(_planctl(["schema"], env).stdout)
    assert schema["$defs"]["action.upper"]["required"] == ["word", "into"]
    assert schema["$defs"]["operation"]["properties"]["upper"] == {
        "$ref": "#/$defs/action.upper"}
    assert "command" in schema["$defs"]["operation"]["properties"]


def test_a_plugins_prepared_poll_is_used_and_its_bug_fails_the_step(tmp_path: Path) -> None:
    """A plugin with ``prepare`` (and starts-sync) has its polls prepared once; a prepared
    call that raises fails the step with the error, like any plugin bug, not the run."""
    env = _site(tmp_path)
    plan = tmp_path / "plan.yaml"
    plan.write_text(textwrap.dedent("""\
        name: plugin-polls
        commands:
          - id: good
            changes: false
            run:
              command: ["true"]
              async:
                handle: job-1
                poll: {status: {}}
                until: "{{ poll.done }}"
                interval: 0.01s
            outputs: {prepared: "{{ poll.prepared }}"}
          - id: buggy
            needs: [good]
            changes: false
            run:
              command: ["true"]
              async:
                handle: job-2
                poll: {status: {buggy: true}}
                until: "{{ poll.done }}"
                interval: 0.01s
        """))
    done = _planctl(["apply", str(plan), "--output", "json"], env)
    assert done.returncode == 1, done.stdout + done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    ended = {e["command_id"]: e for e in events
             if e["kind"] == "command" and e["status"] in ("SUCCEEDED", "FAILED")}
    assert ended["good"]["status"] == "SUCCEEDED"
    assert ended["buggy"]["status"] == "FAILED"
    error = ended["buggy"]["error"]
    assert error.startswith("poll failed ") and error.endswith(
        " in a row: status raised RuntimeError: status service exploded"), error
    with contextlib.closing(sqlite3.connect(tmp_path / "state.db")) as db:
        (outputs,) = db.execute("SELECT outputs FROM commands WHERE id = 'good'").fetchone()
    assert json.loads(outputs) == {"prepared": 1}  # prepared once, polled with it


def test_without_the_plugin_the_action_is_unknown(tmp_path: Path) -> None:
    """The same plan without the plugin installed is refused before anything runs."""
    env = dict(os.environ, PLANCTL_STATE=str(tmp_path / "state.db"))
    plan = _plan(tmp_path, f'{{word: hello, into: "{tmp_path}/out.txt"}}')
    done = _planctl(["apply", str(plan)], env)
    assert done.returncode == 3
    assert "unknown action or option `upper`" in done.stderr
    assert not (tmp_path / "state.db").exists()


def test_a_plugin_calling_sys_exit_fails_its_step_not_planctl(tmp_path: Path) -> None:
    """A plugin action raising SystemExit fails its step like any bug of a plugin: the run
    rolls back and planctl exits 1, not with the plugin's code."""
    env = _site(tmp_path)
    plan = tmp_path / "plan.yaml"
    plan.write_text(textwrap.dedent(f"""\
        name: plugin-quits
        commands:
          - id: shout
            run: {{upper: {{word: hi, into: "{tmp_path}/out.txt"}}}}
            inverse: {{command: [rm, -f, "{tmp_path}/out.txt"]}}
          - id: quits
            needs: [shout]
            changes: false
            run: {{quit: {{}}}}
        """))
    done = _planctl(["apply", str(plan), "--output", "json"], env)
    assert done.returncode == 1, done.stdout + done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    failed = [e for e in events if e["kind"] == "command" and e["status"] == "FAILED"]
    assert [(e["command_id"], e["error"]) for e in failed] == [
        ("quits", "quit raised SystemExit: 7")]
    assert events[-1]["status"] == "ROLLED_BACK"
    assert not (tmp_path / "out.txt").exists()
