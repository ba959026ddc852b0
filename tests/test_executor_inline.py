"""Scenario tests of steps run inline: plain `python` functions, called by the driver right
after the commit of their intent, with no task of their own; and of the plan's directory
on ``sys.path`` during a run."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import planner
from planner.executor import Runner
from planner.store import EventRecord

# A module kept next to the plan: every call reads, through a connection of its own, the
# committed row of the command it serves, and keeps what it saw.
WITNESS = """\
import asyncio
import os
import sqlite3

seen = []
STATE = ""


def _row(command):
    db = sqlite3.connect(STATE)
    try:
        return db.execute(
            "SELECT status, execution_reason FROM commands WHERE id = ?", (command,)
        ).fetchone()
    finally:
        db.close()


def look(command, fail=False):
    seen.append((command, *_row(command)))
    if fail:
        raise RuntimeError("planned failure")
    return {"command": command}


def absent(command):
    seen.append((command, *_row(command)))
    return False  # an `exists` probe answering "not there"


async def look_later(command):
    await asyncio.sleep(0)
    return look(command)
"""


def _plan(tmp_path: Path, text: str, module: str) -> Path:
    """The plan, and the witness module next to it, watching the plan's state file."""
    state = str(tmp_path / "state.db")
    (tmp_path / f"{module}.py").write_text(WITNESS.replace('STATE = ""', f"STATE = {state!r}"))
    path = tmp_path / "plan.yaml"
    path.write_text(textwrap.dedent(text).replace("MOD", module))
    return path


def _apply(path: Path, module: str, listener: Any = None) -> tuple[Any, Any]:
    db = path.parent / "state.db"
    loaded = planner.load_plan(path)
    store = planner.SQLiteStore(db)
    try:
        # The module is not importable before the run: the Runner makes it so.
        assert module not in sys.modules
        outcome = planner.apply_plan(loaded, store, handle_signals=False, listener=listener,
                                     options=planner.ApplyOptions(max_parallel=4))
    finally:
        store.close()
    return outcome, sys.modules[module]


CHAIN = """\
name: inline
commands:
  - id: a
    run: {python: {function: "MOD:look", kwargs: {command: a}}}
    inverse: {python: {function: "MOD:look", kwargs: {command: a}}}
  - id: b
    needs: a
    run: {python: {function: "MOD:look_later", kwargs: {command: b}}}
    inverse: {python: {function: "MOD:look", kwargs: {command: b}}}
  - id: c
    needs: b
    run: {python: {function: "MOD:look", kwargs: {command: c, fail: true}}}
    inverse: {python: {function: "MOD:look", kwargs: {command: c}}}
    exists: {python: {function: "MOD:absent", kwargs: {command: c}}}
"""


def test_plan_directory_is_importable_during_the_run_only(tmp_path: Path) -> None:
    """A `python` action finds a module kept next to the plan, through the Python API
    too; the plan's directory leaves ``sys.path`` when the run ends."""
    path = _plan(tmp_path, """\
        name: near
        commands:
          - id: a
            run: {python: "MOD:look"}
            changes: false
        """, "planctl_near_mod")
    before = list(sys.path)
    loaded = planner.load_plan(path)
    store = planner.SQLiteStore(tmp_path / "state.db")
    try:
        sys.modules.pop("planctl_near_mod", None)
        outcome = planner.apply_plan(loaded, store, handle_signals=False)
    finally:
        store.close()
        sys.modules.pop("planctl_near_mod", None)
    # look() without `command` fails with a TypeError: the module was imported and called.
    assert outcome.errors["a"].startswith("TypeError")
    assert sys.path == before


def test_sync_and_async_python_steps_act_after_their_intent_and_roll_back_after_theirs(
        tmp_path: Path) -> None:
    """Each call sees its own command STARTING (forward) or REVERTING in ROLLBACK_FLOW
    (inverse) in the committed state, whether it ran inline (sync) or as a task (async);
    the run uses no thread and logs contiguous events."""
    module = "planctl_inline_mod"
    path = _plan(tmp_path, CHAIN, module)
    threads: list[int] = []

    def listen(event: EventRecord) -> None:
        threads.append(threading.active_count())

    before = threading.active_count()
    sys.modules.pop(module, None)
    try:
        outcome, witness = _apply(path, module, listen)
    finally:
        sys.modules.pop(module, None)
    assert outcome.status == "ROLLED_BACK"
    assert outcome.statuses == {"a": "REVERTED", "b": "REVERTED", "c": "REVERT_SKIPPED"}
    assert witness.seen == [
        ("a", "STARTING", "REGULAR_FLOW"),
        ("b", "STARTING", "REGULAR_FLOW"),
        ("c", "PENDING", "REGULAR_FLOW"),  # its exists probe: absent
        ("c", "STARTING", "REGULAR_FLOW"),
        ("c", "FAILED", "REGULAR_FLOW"),  # the probe again, in the rollback: still absent
        ("b", "REVERTING", "ROLLBACK_FLOW"),
        ("a", "REVERTING", "ROLLBACK_FLOW"),
    ]
    assert max(threads) <= before
    db = sqlite3.connect(tmp_path / "state.db")
    try:
        seqs = [row[0] for row in db.execute("SELECT seq FROM events ORDER BY seq")]
    finally:
        db.close()
    assert seqs == list(range(1, len(seqs) + 1))


def test_a_long_inline_chain_still_lets_the_event_loop_run(tmp_path: Path) -> None:
    """Three hundred sync steps in a row give the event loop turns in between: a callback
    scheduled before the run fires while the chain is still going."""
    module = "planctl_turns_mod"
    lines = ["name: turns", "commands:"]
    for i in range(300):
        lines += [f"  - id: s{i}", f"    run: {{python: {{function: '{module}:look',"
                  f" kwargs: {{command: s{i}}}}}}}", "    changes: false"]
        if i:
            lines.append(f"    needs: s{i - 1}")
    path = _plan(tmp_path, "\n".join(lines) + "\n", module)
    loaded = planner.load_plan(path)
    store = planner.SQLiteStore(tmp_path / "state.db")
    fired: list[int] = []

    async def main() -> Any:
        runner = Runner(loaded, store)
        loop = asyncio.get_running_loop()
        loop.call_soon(lambda: fired.append(len(sys.modules[module].seen)))
        with runner.importable():
            return await runner.apply()

    sys.modules.pop(module, None)
    try:
        outcome = asyncio.run(main())
    finally:
        store.close()
        sys.modules.pop(module, None)
    assert outcome.status == "SUCCEEDED"
    assert fired and fired[0] < 300


def test_two_plans_with_a_module_of_the_same_name_do_not_share_it_silently(
        tmp_path: Path) -> None:
    """Python keeps one module per name in a process: of two plans applied from it, each
    with its own ``planctl_twin.py``, the second does not call the first one's function;
    its step fails saying why, while its first plan, applied again, still works."""
    module = "planctl_twin"
    plans = {}
    for name in ("first", "second"):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{module}.py").write_text(f"def who():\n    return {name!r}\n")
        plans[name] = tmp_path / name / "plan.yaml"
        plans[name].write_text(textwrap.dedent(f"""\
            name: {name}
            commands:
              - id: who
                changes: false
                run: {{python: "{module}:who"}}
                outputs: {{who: "{{{{ result.value }}}}"}}
            """))
    store = planner.SQLiteStore(tmp_path / "state.db")
    try:
        outcomes = [planner.apply_plan(planner.load_plan(plans[name]), store,
                                       handle_signals=False)
                    for name in ("first", "second", "first")]
        outputs = [store.get_commands(o.run_id)["who"].outputs for o in outcomes]
    finally:
        store.close()
        sys.modules.pop(module, None)
    assert [o.status for o in outcomes] == ["SUCCEEDED", "ROLLED_BACK", "SUCCEEDED"]
    assert outputs[0] == outputs[2] == {"who": "first"}
    assert outcomes[1].errors["who"] == (
        f"module {module} was imported from {tmp_path}/first/{module}.py before this plan's "
        f"own {tmp_path}/second/{module}.py: a process keeps one module per name, so plans "
        f"applied from one process need distinct module names")
