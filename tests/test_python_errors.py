"""Scenario tests: whatever a plan's python function returns or raises, planctl stores it
or fails the function's step with a clear message, and the run ends as for any failure."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

FUNCTIONS = '''\
import asyncio
import os
import sys


def made(): return {"id": 1}


def undo(): return None


def absent(): return False


def tuple_key(): return {(1, 2): "b"}


def huge_int(): return 10**5000


def itself():
    value = {}
    value["self"] = value
    return value


class Unprintable:
    def __str__(self): raise ValueError("no text")


def unprintable(): return Unprintable()


def nan(): return {"v": float("nan")}


def surrogate(): raise RuntimeError(os.fsdecode(b"disk-\\xff"))


def exits(): sys.exit(5)


async def exits_later():
    await asyncio.sleep(0)
    sys.exit(6)


def interrupts(): raise KeyboardInterrupt
'''


def _apply(tmp_path: Path, function: str) -> tuple[subprocess.CompletedProcess[str],
                                                    list[dict[str, Any]]]:
    """Apply a plan whose second command calls ``function`` after the first made something."""
    (tmp_path / "noop.py").write_text(FUNCTIONS)
    (tmp_path / "plan.yaml").write_text(textwrap.dedent(f"""\
        name: odd-results
        commands:
          - id: a
            run: {{python: "noop:made"}}
            inverse: {{python: "noop:undo"}}
          - id: b
            needs: a
            exists: {{python: "noop:absent"}}
            run: {{python: "noop:{function}"}}
            inverse: {{python: "noop:undo"}}
        """))
    done = subprocess.run([sys.executable, "-m", "planner", "apply", "plan.yaml",
                           "--state", "state.db", "--output", "json"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    return done, [json.loads(line) for line in done.stdout.splitlines()]


def _rows(tmp_path: Path) -> tuple[str, dict[str, tuple[str, str | None]]]:
    with contextlib.closing(sqlite3.connect(tmp_path / "state.db")) as db:
        (status,) = db.execute("SELECT status FROM runs").fetchone()
        rows = db.execute("SELECT id, status, error FROM commands").fetchall()
    return status, {iid: (st, error) for iid, st, error in rows}


@pytest.mark.parametrize(("function", "why"), [
    ("tuple_key", "keys must be str, int, float, bool or None, not tuple"),
    ("huge_int", "Exceeds the limit (4300 digits) for integer string conversion"),
    ("itself", "it contains itself, or is nested too deeply"),
    ("unprintable", "str() of a Unprintable raised ValueError: no text"),
    ("nan", "Out of range float values are not JSON compliant"),
])
def test_a_value_with_no_json_form_fails_its_step_and_the_run_rolls_back(
        tmp_path: Path, function: str, why: str) -> None:
    """A return value the state store cannot keep fails its step, saying why; the run
    rolls back what it did, exit 1, and nothing is left RUNNING or STARTING."""
    done, objects = _apply(tmp_path, function)
    assert done.returncode == 1, done.stderr
    assert "internal error" not in done.stderr
    outcome = objects[-1]
    assert outcome["kind"] == "outcome" and outcome["status"] == "ROLLED_BACK"
    status, rows = _rows(tmp_path)
    assert status == "ROLLED_BACK"
    assert rows["a"] == ("REVERTED", None)
    assert rows["b"][0] == "REVERT_SKIPPED"  # failed, and `exists` says nothing is there
    error = rows["b"][1] or ""
    assert error.startswith(
        f"python noop:{function} returned a value planctl cannot store as JSON: {why}"), error


def test_an_error_with_a_lone_surrogate_is_stored_escaped(tmp_path: Path) -> None:
    """An exception message holding a lone surrogate (a file name that is not UTF-8) fails
    the step with the message escaped; the run rolls back."""
    done, objects = _apply(tmp_path, "surrogate")
    assert done.returncode == 1, done.stderr
    status, rows = _rows(tmp_path)
    assert status == "ROLLED_BACK"
    assert rows["b"] == ("REVERT_SKIPPED", "RuntimeError: disk-\\udcff")
    failed = [o for o in objects if o["kind"] == "command" and o["status"] == "FAILED"]
    assert failed[0]["error"] == "RuntimeError: disk-\\udcff"


@pytest.mark.parametrize(("function", "error"), [
    ("exits", "SystemExit: 5"),
    ("exits_later", "SystemExit: 6"),
    ("interrupts", "KeyboardInterrupt"),
])
def test_system_exit_or_keyboard_interrupt_in_a_function_fails_its_step(
        tmp_path: Path, function: str, error: str) -> None:
    """``sys.exit()`` (argparse, say) or KeyboardInterrupt raised by a plan's function is
    that step's failure: planctl does not exit with the function's code, the run rolls
    back and ends with its outcome."""
    done, objects = _apply(tmp_path, function)
    assert done.returncode == 1, done.stdout + done.stderr
    assert objects[-1]["kind"] == "outcome" and objects[-1]["status"] == "ROLLED_BACK"
    status, rows = _rows(tmp_path)
    assert status == "ROLLED_BACK"
    assert rows["a"] == ("REVERTED", None)
    assert rows["b"] == ("REVERT_SKIPPED", f"python noop:{function} raised {error}")
