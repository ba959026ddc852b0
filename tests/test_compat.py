"""Runs recorded by an older planctl, handled by this one: a team upgrades planctl while runs
are in its state store. The stores under tests/stores/ are dumps (`sqlite3 state.db .dump`)
of real stores an older planctl wrote; each file says which commit wrote it and how.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from planner.errors import PlanError, Severity, UsageError
from planner.loader import load_snapshot, load_text

STORES = Path(__file__).parent / "stores"

# The plan of the run in stores/schema1-8586d3e.sql, as planctl 8586d3e applied it. It took
# `when: enable_extra` (a condition written as text: a load error since c31c3fb) and
# `--var labels=blue` for a var whose default is a list (an error since dfbe5db).
OLD_PLAN = """\
name: upgraded
description: Recorded by planctl 8586d3e (state schema 1).
vars:
  items: [a, b]
  fail: "no"
  enable_extra: "yes"
  labels: []
secrets:
  token: {env: OLD_TOKEN}
commands:
  - id: base
    entity: dir/base
    exists: {command: [test, -d, out/base]}
    run: {command: [mkdir, -p, out/base]}
    inverse: {command: [rm, -rf, out/base]}
    children:
      - id: file
        for_each: "{{ items }}"
        as: it
        entity: "file/{{ it }}"
        exists: {command: [test, -f, "out/base/{{ it }}"]}
        run: {shell: "echo {{ token }} > out/base/{{ it }}"}
        inverse: {command: [rm, -f, "out/base/{{ it }}"]}
  - id: extra
    needs: [base]
    when: enable_extra
    changes: false
    run: {command: ["true"]}
  - id: last
    needs: [extra]
    exists: {command: ["false"]}
    run: {shell: "echo {{ labels }}; test {{ fail }} = no"}
    inverse: {command: ["true"]}
"""
OLD_RUN = "20261130-203207-24bd4f"


def _old_store(root: Path, dump: str) -> Path:
    path = root / "state.db"
    with sqlite3.connect(path) as db:
        db.executescript((STORES / dump).read_text())
    return path


def _planctl(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-m", "planner", *args, "--state", "state.db"],
                          cwd=root, capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "OLD_TOKEN": "s3cr3t-value",
                               "NO_COLOR": "1"})
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_rollback_of_a_stopped_run_an_older_planctl_recorded(tmp_path: Path) -> None:
    """A run that planctl 8586d3e (state schema 1) stopped with --no-rollback, its plan taken
    by that planctl but refused by today's loader, is rolled back by this one: the store is
    upgraded, the leftovers undone, the run ROLLED_BACK (its rollback was refused, exit 3,
    'when: enable_extra is text, not a template' and '--var labels: ... must be a list')."""
    _old_store(tmp_path, "schema1-8586d3e.sql")
    (tmp_path / "out" / "base").mkdir(parents=True)  # what the run left behind
    for item in "ab":
        (tmp_path / "out" / "base" / item).write_text("s3cr3t-value\n")
    shown = _planctl(tmp_path, "show", OLD_RUN)
    assert shown.returncode == 0, shown.stderr
    assert "STOPPED" in shown.stdout
    dry = _planctl(tmp_path, "rollback", OLD_RUN, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "file[a]" in dry.stdout
    done = _planctl(tmp_path, "rollback", OLD_RUN)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not (tmp_path / "out" / "base").exists()
    listed = _planctl(tmp_path, "runs")
    assert OLD_RUN in listed.stdout and "ROLLED_BACK" in listed.stdout
    events = [json.loads(line) for line in _planctl(tmp_path, "events", OLD_RUN)
              .stdout.splitlines()]
    reverted = [e["command_id"] for e in events if e.get("status") == "REVERTED"]
    assert sorted(reverted) == ["base", "file[a]", "file[b]"]
    assert _planctl(tmp_path, "locks").stdout.strip() == "no locks held"


# The rules the loader gained after runs were recorded with plans that broke them (each an
# error in a plan file since the commit named): a recorded run's snapshot still loads, with
# the rule's message as a warning.
LATER_RULES = {
    "c31c3fb when as text": """
commands:
  - {id: a, when: enabled, run: {command: ["true"]}, changes: false}
""",
    "cd9f9c1 inverse reads an undeclared output": """
commands:
  - id: a
    run: {command: ["true"]}
    inverse: {command: [echo, "{{ outputs.path }}"]}
""",
    "5572a75 own outputs read in run": """
commands:
  - id: a
    run: {command: [echo, "{{ commands.a.outputs.x }}"]}
    outputs: {x: "1"}
    inverse: {command: ["true"]}
""",
    "7ef9a0f looped output read as one": """
commands:
  - {id: a, for_each: [1, 2], run: {command: ["true"]}, outputs: {x: "1"}, changes: false}
  - {id: b, needs: [a], run: {command: [echo, "{{ commands.a.outputs.x }}"]}, changes: false}
""",
    "4279432 looped status compared with a string": """
commands:
  - {id: a, for_each: [1, 2], run: {command: ["true"]}, changes: false}
  - id: b
    needs: [a]
    when: "{{ commands.a.status == 'SUCCEEDED' }}"
    run: {command: ["true"]}
    changes: false
""",
}


@pytest.mark.parametrize("rule", sorted(LATER_RULES))
def test_a_snapshot_breaking_a_later_rule_still_loads(rule: str) -> None:
    text = "name: p\nvars: {enabled: true}\n" + LATER_RULES[rule]
    with pytest.raises(PlanError) as refused:
        load_text(text, "p.yaml")
    message = refused.value.diagnostics[0].message
    loaded = load_snapshot(yaml.safe_load(text), "p.yaml")
    assert [d.message for d in loaded.warnings if d.severity is Severity.WARNING
            and d.message == message] == [message]


def test_a_snapshot_keeps_the_vars_its_run_was_given() -> None:
    """A run's vars are not checked against the plan's shapes again: `--var labels=blue`
    for a list default was taken before dfbe5db, and is still refused in a new apply."""
    text = "name: p\nvars: {labels: []}\ncommands:\n" \
        "  - {id: a, run: {command: [echo, \"{{ labels }}\"]}, changes: false}\n"
    loaded = load_snapshot(yaml.safe_load(text), "p.yaml", variables={"labels": "blue"})
    assert loaded.plan.vars["labels"] == "blue"
    with pytest.raises(UsageError, match="must be one"):
        load_text(text, "p.yaml", variables={"labels": "blue"})
