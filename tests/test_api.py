"""The Python API at the top of `planner`: exported, documented, lazy; listeners hear what
the CLI prints; secrets resolved as the CLI does; the runnable example in examples/api."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import planner
from planner import EventRecord

ROOT = Path(__file__).resolve().parent.parent

CHAIN = """\
name: chain
settings: {max_parallel: 1, on_failure: stop}
vars: {fail: false}
commands:
  - id: first
    run: {command: [touch, first]}
    inverse: {command: [rm, first]}
  - id: second
    needs: first
    exists: {command: [test, -e, second]}
    run: {command: [sh, -c, 'touch second; [ "$1" = false ]', sh, "{{ fail }}"]}
    inverse: {command: [rm, -f, second]}
  - id: third
    needs: second
    run: {command: [touch, third]}
    inverse: {command: [rm, third]}
"""

# One command that creates a file and an inverse that removes it.
TOUCH_PLAN = """\
    name: touch
    commands:
      - id: touch
        run: {command: [touch, touched]}
        inverse: {command: [rm, touched]}
    """


def write(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "plan.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_top_level_names_are_exported_typed_and_documented() -> None:
    """Every name of `planner.__all__` resolves; functions and classes have docstrings and
    the functions are fully annotated."""
    for name in planner.__all__:
        value = getattr(planner, name)
        if inspect.isfunction(value):
            assert value.__doc__, name
            signature = inspect.signature(value)
            assert signature.return_annotation is not inspect.Signature.empty, name
            assert all(p.annotation is not inspect.Parameter.empty
                       for p in signature.parameters.values()), name
        elif inspect.isclass(value):
            assert value.__doc__, name
    for name in ("load_plan", "load_text", "apply_plan", "rollback_run", "resume_run",
                 "preview_plan", "ApplyOptions", "RunOutcome", "EventRecord", "Listener",
                 "SQLiteStore", "MemoryStore", "PlanctlError", "PlanError", "UsageError",
                 "StateError", "LockedError"):
        assert name in planner.__all__, name
    assert set(dir(planner)) >= set(planner.__all__)
    with pytest.raises(AttributeError):
        planner.no_such_name  # noqa: B018 - the attribute access is the test


def test_importing_planner_loads_no_engine() -> None:
    """`import planner` stays cheap: the executor, loader and Jinja load on first use."""
    code = ("import sys, planner; print(sorted(m for m in ('planner.executor', "
            "'planner.loader', 'planner.preview', 'jinja2') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert done.stdout.strip() == "[]"


def test_no_planner_module_uses_a_deprecated_api_when_imported() -> None:
    """Importing every planner module raises no DeprecationWarning of planctl's own making:
    Python 3.12 deprecated subclassing asyncio's child watchers, and 3.14 removes them."""
    code = textwrap.dedent("""\
        import importlib, pkgutil, warnings
        for category in (DeprecationWarning, PendingDeprecationWarning):
            warnings.filterwarnings("error", category=category, module=r"planner(\\.|$)")
        import planner
        names = [m.name for m in pkgutil.walk_packages(planner.__path__, "planner.")]
        for name in names:
            if name != "planner.__main__":  # would run the CLI
                importlib.import_module(name)
        print(len(names))
        """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 20, done.stdout  # the walk found the modules


def test_listener_hears_the_events_the_cli_prints(tmp_path: Path) -> None:
    """A listener given to apply_plan receives the events `planctl apply --output json`
    prints, in the same order with the same statuses (a sequential plan, so the order is
    fixed), and rollback_run's listener those of `planctl rollback`."""
    api_dir, cli_dir = tmp_path / "api", tmp_path / "cli"
    heard: list[EventRecord] = []
    loaded = planner.load_plan(write(api_dir, CHAIN), variables={"fail": True})
    store = planner.SQLiteStore(api_dir / "state.db")
    try:
        outcome = planner.apply_plan(loaded, store, listener=heard.append,
                                     handle_signals=False)
        assert outcome.status == "STOPPED" and outcome.exit_code == 2
        undone: list[EventRecord] = []
        back = planner.rollback_run(store, outcome.run_id, listener=undone.append,
                                    handle_signals=False)
        assert back.status == "ROLLED_BACK" and not back.leftovers
    finally:
        store.close()
    assert sorted(p.name for p in api_dir.iterdir() if not p.name.startswith("state.db")) \
        == ["plan.yaml"]

    write(cli_dir, CHAIN)

    def cli(*args: str) -> list[dict[str, object]]:
        done = subprocess.run([sys.executable, "-m", "planner", *args, "--output", "json"],
                              cwd=cli_dir, capture_output=True, text=True, timeout=60,
                              check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert "Traceback" not in done.stderr, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]

    def shape(kind: str, command: object, data: dict[str, object]) -> tuple[object, ...]:
        return (kind, command, data.get("status"), data.get("task_status"),
                data.get("execution_reason"))

    for api_events, printed in ((heard, cli("apply", "plan.yaml", "--var", "fail=true")),
                                (undone, cli("rollback", "--last"))):
        objects = [o for o in printed if o["kind"] not in ("outcome", "error")]
        assert [shape(e.kind, e.command_id, dict(e.data)) for e in api_events] == \
            [shape(str(o["kind"]), o.get("command_id"), o) for o in objects]
        assert [e.seq for e in api_events] == [o["seq"] for o in objects]


def test_apply_plan_resolves_the_plans_secrets_like_the_cli(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without `secrets=`, apply_plan resolves the plan's own (here from the environment);
    a missing one is a UsageError naming it, raised before any run is recorded."""
    path = write(tmp_path, """\
        name: api-secret
        secrets: {token: {env: PLANCTL_API_TEST_TOKEN}}
        commands:
          - id: use
            run: {command: [sh, -c, 'printf %s "$1" > used', sh, "{{ token }}"]}
            irreversible: true
        """)
    loaded = planner.load_plan(path)
    store = planner.MemoryStore()
    monkeypatch.delenv("PLANCTL_API_TEST_TOKEN", raising=False)
    with pytest.raises(planner.UsageError, match="PLANCTL_API_TEST_TOKEN"):
        planner.apply_plan(loaded, store, handle_signals=False)
    assert store.list_runs() == []
    monkeypatch.setenv("PLANCTL_API_TEST_TOKEN", "api-s3cret")
    outcome = planner.apply_plan(loaded, store, handle_signals=False)
    assert outcome.exit_code == 0
    assert (tmp_path / "used").read_text() == "api-s3cret"


def test_the_embedding_example_runs() -> None:
    """examples/api/embed.py previews, applies with a listener, rolls back a failure and
    cleans up after itself, exiting 0."""
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "api" / "embed.py")],
                          capture_output=True, text=True, timeout=180, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT / "tests")
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    for line in ("preview: 4 commands would change, exit code 10 with --detailed-exitcode",
                 "  FAILED         clone[disk1]",
                 "  REVERT_SKIPPED clone[disk1] [ROLLBACK_FLOW]",
                 "  REVERTED       add_vm [ROLLBACK_FLOW]",
                 "apply: ROLLED_BACK, exit code 1",
                 "apply: STOPPED, exit code 2",
                 "  leftover add_vm (vm/vm-7): changed by the run",
                 "rollback: ROLLED_BACK, exit code 0",
                 "apply: SUCCEEDED, exit code 0",
                 "preview after apply: 0 commands would change, exit code 0 with "
                 "--detailed-exitcode"):
        assert line in out.splitlines(), f"{line!r} not in:\n{out}"
    assert out.index("REVERTED       add_vm") > out.index("REVERTED       clone[disk0]")
    assert not (ROOT / "tests" / ".planctl").exists()


def test_a_run_pauses_full_collections_and_gives_the_callers_gc_back(tmp_path: Path) -> None:
    """During a run the oldest generation is not collected automatically (its scans grow
    with the run and find nothing), the young ones are; afterwards the embedding program's
    own thresholds and frozen objects are as they were, whether the run succeeded or not."""
    import gc

    plan = write(tmp_path, """\
        name: gc
        commands:
          - id: a
            run: {command: ["true"]}
            inverse: {command: ["true"]}
          - id: b
            needs: a
            exists: {command: ["false"]}
            run: {command: ["false"]}
            inverse: {command: ["true"]}
        """)
    loaded = planner.load_plan(plan)
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    seen: list[tuple[int, ...]] = []
    gc.set_threshold(500, 7, 9)
    try:
        store = planner.SQLiteStore(tmp_path / "state.db")
        try:
            outcome = planner.apply_plan(loaded, store, handle_signals=False,
                                         listener=lambda _e: seen.append(gc.get_threshold()))
        finally:
            store.close()
        assert outcome.status == "ROLLED_BACK"
        assert seen and all(t == (500, 7, 1 << 30) for t in seen)
        assert gc.get_threshold() == (500, 7, 9)
        assert gc.get_freeze_count() == frozen
    finally:
        gc.set_threshold(*before)


def test_overlapping_runs_in_threads_give_the_gc_thresholds_back_once_both_end() -> None:
    """Runs on two threads overlap: full collections stay paused until the last one ends,
    and the thresholds then are those from before the first (not the paused ones)."""
    import gc

    from planner.executor import _full_collections_paused

    before = gc.get_threshold()
    gc.set_threshold(600, 8, 12)
    try:
        first, second = _full_collections_paused(), _full_collections_paused()
        first.__enter__()
        second.__enter__()
        assert gc.get_threshold() == (600, 8, 1 << 30)
        first.__exit__(None, None, None)
        assert gc.get_threshold() == (600, 8, 1 << 30)
        second.__exit__(None, None, None)
        assert gc.get_threshold() == (600, 8, 12)
    finally:
        gc.set_threshold(*before)


def test_runs_that_keep_overlapping_still_get_a_full_collection(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A service whose runs never all end at once would never collect in full: the end of
    a run that overlaps another collects once the pause is FULL_COLLECTION_EVERY old."""
    import gc

    import planner.executor as executor

    full: list[int] = []

    def heard(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and info["generation"] == 2:
            full.append(1)

    gc.callbacks.append(heard)
    try:
        monkeypatch.setattr(executor, "FULL_COLLECTION_EVERY", 3600.0)
        first, second = executor._full_collections_paused(), executor._full_collections_paused()
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        assert not full  # the pause is young: no full collection yet
        third = executor._full_collections_paused()
        third.__enter__()
        monkeypatch.setattr(executor, "FULL_COLLECTION_EVERY", 0.0)
        second.__exit__(None, None, None)
        assert full == [1]  # third still runs: the end of second collected
        third.__exit__(None, None, None)
    finally:
        gc.callbacks.remove(heard)


def test_calling_the_api_from_a_running_event_loop_is_a_usage_error(tmp_path: Path) -> None:
    """apply_plan, rollback_run, resume_run and preview_plan run their own event loop: from
    a coroutine (pytest-asyncio, Jupyter, an async web handler) each raises a UsageError
    saying to use a worker thread, before anything is written; through
    asyncio.to_thread the same calls work."""
    loaded = planner.load_plan(write(tmp_path, TOUCH_PLAN))
    store = planner.SQLiteStore(tmp_path / "state.db")

    async def host() -> list[str]:
        messages = []
        for call in (lambda: planner.apply_plan(loaded, store),
                     lambda: planner.rollback_run(store, "no-such-run"),
                     lambda: planner.resume_run(store, "no-such-run"),
                     lambda: planner.preview_plan(loaded)):
            with pytest.raises(planner.UsageError) as raised:
                call()
            assert raised.value.exit_code == 3
            messages.append(str(raised.value))
        assert store.list_runs() == [] and not (tmp_path / "touched").exists()
        outcome = await asyncio.to_thread(planner.apply_plan, loaded, store,
                                          handle_signals=False)
        assert outcome.status == "SUCCEEDED"
        return messages

    try:
        messages = asyncio.run(host())
        assert len(store.list_runs()) == 1 and (tmp_path / "touched").exists()
    finally:
        store.close()
    for name, message in zip(("apply_plan", "rollback_run", "resume_run", "preview_plan"),
                             messages, strict=True):
        assert message == (f"{name}() cannot be called from a running asyncio event loop: "
                           f"it runs one of its own; from async code, call it in a worker "
                           f"thread: await asyncio.to_thread(planner.{name}, ...)")


def test_overlapping_runs_of_plans_in_one_directory_keep_it_on_sys_path(
        tmp_path: Path) -> None:
    """Two threads apply plans of the same directory; the first to start ends first, while
    the second has yet to import the module its `python` step names from that directory:
    the directory stays on sys.path until the last of them ends (the first run's end took
    it away: `module not found`), and is gone afterwards."""
    import threading

    hold = "touch {0}-started; until [ -e {0}-go ]; do sleep 0.02; done"
    (tmp_path / "first.yaml").write_text(textwrap.dedent(f"""\
        name: first
        commands:
          - id: hold
            run: {{command: [sh, -c, '{hold.format("first")}']}}
        """))
    (tmp_path / "second.yaml").write_text(textwrap.dedent(f"""\
        name: second
        commands:
          - id: hold
            run: {{command: [sh, -c, '{hold.format("second")}']}}
          - id: call
            needs: hold
            run: {{python: "api_shared_dir_helpers:answer"}}
        """))
    (tmp_path / "api_shared_dir_helpers.py").write_text("def answer():\n    return 42\n")
    plans = {name: planner.load_plan(tmp_path / f"{name}.yaml") for name in ("first", "second")}
    outcomes: dict[str, planner.RunOutcome] = {}

    def apply(name: str) -> None:
        outcomes[name] = planner.apply_plan(plans[name], planner.MemoryStore())

    def wait_for(name: str) -> None:
        for _ in range(3000):
            if (tmp_path / name).exists():
                return
            threading.Event().wait(0.02)
        raise AssertionError(f"{name} never appeared")

    first = threading.Thread(target=apply, args=("first",))
    second = threading.Thread(target=apply, args=("second",))
    try:
        first.start()
        wait_for("first-started")
        second.start()
        wait_for("second-started")
        (tmp_path / "first-go").touch()
        first.join(60)
        (tmp_path / "second-go").touch()
        second.join(60)
    finally:
        (tmp_path / "first-go").touch()
        (tmp_path / "second-go").touch()
        sys.modules.pop("api_shared_dir_helpers", None)
    assert outcomes["first"].status == "SUCCEEDED"
    assert outcomes["second"].errors == {} and outcomes["second"].status == "SUCCEEDED"
    assert plans["second"].plan.base_dir not in sys.path


@pytest.mark.parametrize(("options", "message"), [
    ({"max_parallel": -1}, "ApplyOptions(max_parallel=-1): a whole number of steps, 1 or more"),
    ({"max_parallel": 0}, "ApplyOptions(max_parallel=0): a whole number of steps, 1 or more"),
    ({"max_parallel": "3"}, "ApplyOptions(max_parallel='3'): a whole number of steps, 1 or "
                            "more"),
    ({"on_failure": "continue"}, "ApplyOptions(on_failure='continue'): 'rollback' or 'stop'"),
    ({"lock_timeout": -5}, "ApplyOptions(lock_timeout=-5): seconds, 0 or more"),
    ({"lock_timeout": float("nan")}, "ApplyOptions(lock_timeout=nan): seconds, 0 or more"),
    ({"run_id": 7}, "ApplyOptions(run_id=7): a string"),
])
def test_bad_apply_options_are_a_usage_error_before_anything_runs(
        tmp_path: Path, options: dict[str, object], message: str) -> None:
    """ApplyOptions the CLI would refuse (`--max-parallel 0`, a negative `--lock-timeout`)
    raise UsageError naming the option: max_parallel=-1 used to start nothing and wait for
    ever, '3' to fail with a TypeError after recording a RUNNING run, an unknown on_failure
    to go on after a failure as no setting does."""
    with pytest.raises(planner.UsageError) as raised:
        planner.ApplyOptions(**options)  # type: ignore[arg-type]
    assert str(raised.value) == message and raised.value.exit_code == 3
    if "max_parallel" in options:  # preview_plan's too
        with pytest.raises(planner.UsageError, match=r"^ApplyOptions\(max_parallel="):
            planner.preview_plan(planner.load_plan(write(tmp_path, CHAIN)),
                                 max_parallel=options["max_parallel"])  # type: ignore[arg-type]
    assert planner.ApplyOptions(max_parallel=1, on_failure="stop", lock_timeout=0.5,
                                run_id="r-1").max_parallel == 1


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_apply_with_the_run_id_of_a_recorded_run_is_a_usage_error(
        tmp_path: Path, kind: str) -> None:
    """ApplyOptions(run_id=...) naming a run the store has already is a UsageError before
    anything is written; it used to surface the store's own error (sqlite3.IntegrityError,
    ValueError) after taking the recorded run's lock, so that run then read as still
    running and could not be rolled back."""
    loaded = planner.load_plan(write(tmp_path, TOUCH_PLAN))
    store = planner.SQLiteStore(tmp_path / "state.db") if kind == "sqlite" \
        else planner.MemoryStore()
    options = planner.ApplyOptions(run_id="fixed-1")
    try:
        assert planner.apply_plan(loaded, store, options=options,
                                  handle_signals=False).status == "SUCCEEDED"
        events = store.get_events("fixed-1")
        with pytest.raises(planner.UsageError) as raised:
            planner.apply_plan(loaded, store, options=options, handle_signals=False)
        assert str(raised.value) == ("run fixed-1 exists already in the state store: each "
                                     "apply needs a run_id of its own")
        assert store.get_events("fixed-1") == events and store.list_locks() == []
        undone = planner.rollback_run(store, "fixed-1", handle_signals=False)
        assert undone.status == "ROLLED_BACK" and not (tmp_path / "touched").exists()
    finally:
        store.close()


def test_handling_signals_gives_the_callers_wakeup_fd_back(tmp_path: Path) -> None:
    """On the main thread, apply_plan's SIGINT/SIGTERM handlers take the signal wakeup fd
    (signal.set_wakeup_fd) for its loop: afterwards the caller's is back, as its handlers
    are (it used to be left unset, so a program woken by it - a GUI's loop, another event
    loop - no longer heard of its signals)."""
    import signal
    import socket

    loaded = planner.load_plan(write(tmp_path, """\
        name: wakeup
        commands:
          - id: touch
            run: {command: [touch, touched]}
        """))
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    before = signal.set_wakeup_fd(writer.fileno())
    try:
        outcome = planner.apply_plan(loaded, planner.MemoryStore())
        assert outcome.status == "SUCCEEDED"
        assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
    finally:
        assert signal.set_wakeup_fd(before) == writer.fileno()
        reader.close()
        writer.close()


def test_ctrl_c_without_handle_signals_stops_the_run_resumably_then_raises(
        tmp_path: Path) -> None:
    """handle_signals=False on the main thread of a host that left SIGINT to Python: the
    host still gets its KeyboardInterrupt, and the run has stopped as a signal stops it -
    in-flight step cancelled, INTERRUPTED, its locks kept for resume_run - rather than
    being left RUNNING with its locks held by the live host (another process's resume then
    said it was still running), so it resumes at once."""
    write(tmp_path, """\
        name: ctrl-c
        commands:
          - id: hold
            entity: thing
            run: {command: [sh, -c, 'touch started; until [ -e go ]; do sleep 0.02; done']}
            inverse: {command: ["true"]}
        """)
    host = tmp_path / "host.py"
    host.write_text(textwrap.dedent("""\
        import os, signal, sys, threading, time
        import planner

        def press_ctrl_c():
            while not os.path.exists("started"):
                time.sleep(0.02)
            os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=press_ctrl_c, daemon=True).start()
        store = planner.SQLiteStore("state.db")
        try:
            planner.apply_plan(planner.load_plan("plan.yaml"), store, handle_signals=False)
        except KeyboardInterrupt:
            run = store.get_run(store.last_run_id(), plan=False)
            locks = sorted((lock.entity, lock.heartbeat_at) for lock in store.list_locks())
            print("KeyboardInterrupt", run.status, locks)
        """))
    done = subprocess.run([sys.executable, str(host)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "KeyboardInterrupt INTERRUPTED [('thing', 0.0)]"
    (tmp_path / "go").touch()
    store = planner.SQLiteStore(tmp_path / "state.db")
    try:
        run_id = store.last_run_id()
        assert run_id is not None
        assert planner.resume_run(store, run_id, handle_signals=False).status == "SUCCEEDED"
    finally:
        store.close()


def test_a_run_applying_on_one_thread_cannot_be_driven_from_another(tmp_path: Path) -> None:
    """A service applies a run on one thread; rollback_run and resume_run of that run from
    another thread of the same process (each with its store) raise LockedError 'still
    running' and change nothing, as from another process. The store's lock check tells
    executors apart by pid only: the rollback used to run the inverse under the live apply,
    which then died on a duplicate event (sqlite3.IntegrityError)."""
    import threading

    loaded = planner.load_plan(write(tmp_path, """\
        name: twin
        commands:
          - id: hold
            run: {command: [sh, -c, 'touch started; i=0; until [ -e go ] || [ $i = 1500 ];
                            do sleep 0.02; i=$((i+1)); done']}
            inverse: {command: [rm, started]}
        """))
    outcomes: list[planner.RunOutcome] = []

    def apply() -> None:
        store = planner.SQLiteStore(tmp_path / "state.db")
        try:
            outcomes.append(planner.apply_plan(loaded, store))
        finally:
            store.close()

    applying = threading.Thread(target=apply)
    applying.start()
    store = planner.SQLiteStore(tmp_path / "state.db")
    try:
        for _ in range(3000):
            if (tmp_path / "started").exists():
                break
            threading.Event().wait(0.02)
        run_id = store.last_run_id()
        assert run_id is not None
        events = store.get_events(run_id)
        for call in (planner.rollback_run, planner.resume_run):
            with pytest.raises(planner.LockedError) as raised:
                call(store, run_id)
            assert str(raised.value) == (f"run {run_id} is still running (pid {os.getpid()} "
                                         f"on {socket.gethostname()}: this process, another "
                                         f"thread)")
        assert store.get_events(run_id) == events and (tmp_path / "started").exists()
    finally:
        (tmp_path / "go").touch()
        applying.join(60)
    try:
        assert [o.status for o in outcomes] == ["SUCCEEDED"]
        assert planner.rollback_run(store, run_id).status == "ROLLED_BACK"
    finally:
        store.close()


def test_a_listener_that_exits_is_removed_and_the_run_goes_on(tmp_path: Path) -> None:
    """A listener that raises SystemExit (sys.exit, argparse) or KeyboardInterrupt is
    treated as one raising any other exception, as docs/embedding.md promises: it is
    removed, a warning says why, and the run ends as it would have. It used to tear the run
    down: apply_plan raised, and the run was left RUNNING with its lock held."""
    loaded = planner.load_plan(write(tmp_path, """\
        name: exits
        commands:
          - id: first
            run: {command: [touch, first]}
          - id: second
            needs: first
            run: {command: [touch, second]}
        """))
    for raised in (SystemExit(5), KeyboardInterrupt()):
        heard: list[EventRecord] = []

        def listener(event: EventRecord, raised: BaseException = raised,
                     heard: list[EventRecord] = heard) -> None:
            heard.append(event)
            if event.kind == "command":
                raise raised

        store = planner.SQLiteStore(tmp_path / "state.db")
        try:
            outcome = planner.apply_plan(loaded, store, listener=listener,
                                         handle_signals=False)
            assert outcome.status == "SUCCEEDED"
            assert store.list_locks() == []
            warnings = [e.data["message"] for e in store.get_events(outcome.run_id)
                        if e.kind == "warning"]
        finally:
            store.close()
        assert warnings == [f"event listener removed after it raised "
                            f"{type(raised).__name__}: {raised}"]
        assert [e.kind for e in heard] == ["run", "command"]
