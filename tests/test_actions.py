"""The built-in actions, run for real: subprocesses, an HTTP server on 127.0.0.1, imports."""

from __future__ import annotations

import asyncio
import gzip
import http.server
import os
import socket
import stat
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import helpers_actions
import pytest
from asyncjobs import AsyncJobsServer

import planner
from planner import actions
from planner.actions import SHELL_QUOTE, SUBPROCESS, ActionContext, ActionResult
from planner.actions._process import OUTPUT_KEPT, run_process
from planner.actions.command import ACTION as COMMAND
from planner.actions.http import ACTION as HTTP
from planner.actions.http import aclose_clients
from planner.actions.python import ACTION as PYTHON
from planner.actions.python import resolve
from planner.actions.shell import ACTION as SHELL

HELPERS = helpers_actions.__name__
REPO = Path(__file__).resolve().parents[1]


def context(cwd: Path | str, **options: Any) -> ActionContext:
    """A context as the executor builds it, PLANCTL_* variables included."""
    env = {
        "PLANCTL_RUN_ID": "run-1",
        "PLANCTL_COMMAND_ID": "clone[disk0]",
        "PLANCTL_EXECUTION_REASON": "REGULAR_FLOW",
        "PLANCTL_IDEMPOTENCY_KEY": "key-1",
        **options.pop("env", {}),
    }
    return ActionContext(
        run_id="run-1",
        command_id="clone[disk0]",
        execution_reason="REGULAR_FLOW",
        idempotency_key="key-1",
        cwd=str(cwd),
        env=env,
        **options,
    )


def run(action: actions.Action, args: Any, ctx: ActionContext) -> ActionResult:
    async def main() -> ActionResult:
        try:
            return await action.run(args, ctx)
        finally:
            await aclose_clients()

    return asyncio.run(main())


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")


def gone(pid: int, within: float = 3.0) -> bool:
    """Whether ``pid`` is dead, allowing its parent (init) a moment to reap it."""
    deadline = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > deadline:
            os.kill(pid, 9)  # do not leave it behind even when the test fails
            return False
        time.sleep(0.02)
    return True


def read_pid(path: Path, within: float = 5.0) -> int:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        text = path.read_text().strip() if path.exists() else ""
        if text:
            return int(text)
        time.sleep(0.01)
    raise AssertionError(f"{path} was never written")


@contextmanager
def closed_port() -> Iterator[int]:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    yield port


@contextmanager
def silent_server() -> Iterator[str]:
    """A URL whose server accepts connections but never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/slow"


@contextmanager
def raw_server(answer: Callable[[socket.socket], None]) -> Iterator[str]:
    """A URL on 127.0.0.1 whose server reads each request's head, then lets ``answer`` write
    whatever bytes it likes on the connection (a misbehaving server)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)

    def serve(conn: socket.socket) -> None:
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                data = conn.recv(65536)
                if not data:
                    return
                head += data
            with suppress(OSError):  # the client may hang up first
                answer(conn)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/x"
    finally:
        listener.close()


# Capabilities and registry


def test_capabilities_declare_subprocess_and_shell_quoting() -> None:
    """command and shell start subprocesses; only shell asks the core for shell quoting;
    only python can end at once (the core may run it inline)."""
    assert COMMAND.capabilities == frozenset({SUBPROCESS})
    assert SHELL.capabilities == frozenset({SUBPROCESS, SHELL_QUOTE})
    assert HTTP.capabilities == frozenset()
    assert PYTHON.capabilities == frozenset({actions.STARTS_SYNC})
    for name, action in [("command", COMMAND), ("shell", SHELL), ("http", HTTP),
                         ("python", PYTHON)]:
        assert actions.get(name) is action
        assert isinstance(action, actions.Action)
        assert action.schema == actions.builtin_schema(name)


def test_http_module_imports_httpx_lazily() -> None:
    """Importing the http action (as validation does) does not import httpx."""
    code = "import sys, planner.actions.http; assert 'httpx' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# command


def test_command_ok_returns_rc_and_output(tmp_path: Path) -> None:
    """A command exiting 0 is ok and its rc, stdout and stderr are in the data."""
    result = run(COMMAND, ["sh", "-c", "echo out; echo err >&2"], context(tmp_path))
    assert result.ok and result.error is None
    assert result.data == {"rc": 0, "stdout": "out\n", "stderr": "err\n"}


def test_command_argv_items_are_converted_to_strings(tmp_path: Path) -> None:
    """Numbers become their text and booleans become true/false."""
    result = run(COMMAND, ["echo", 3, True, False, 1.5], context(tmp_path))
    assert result.data["stdout"] == "3 true false 1.5\n"


def test_command_nonzero_exit_fails_with_last_stderr_line(tmp_path: Path) -> None:
    """A non-zero exit is a failure whose error names the status and the last stderr line."""
    script = "echo progress >&2; echo 'disk full' >&2; echo >&2; exit 3"
    result = run(COMMAND, ["sh", "-c", script], context(tmp_path))
    assert not result.ok
    assert result.data["rc"] == 3
    assert result.error == "exit status 3: disk full"


def test_command_error_trims_long_stderr(tmp_path: Path) -> None:
    """A huge stderr line is shortened in the error but kept whole in the data."""
    result = run(COMMAND, ["sh", "-c", "printf '%05000d\\n' 0 >&2; exit 1"], context(tmp_path))
    assert result.error is not None and len(result.error) < 600
    assert result.error.endswith("...")
    assert len(result.data["stderr"]) == 5001


def test_command_exit_without_stderr(tmp_path: Path) -> None:
    """A failure with an empty stderr says just the exit status."""
    result = run(COMMAND, ["false"], context(tmp_path))
    assert result.error == "exit status 1"


def test_command_parses_json_stdout(tmp_path: Path) -> None:
    """Stdout holding a JSON object or array is also exposed as ``json``."""
    result = run(COMMAND, ["echo", '  {"uuid": "u-1", "disks": [1, 2]}'], context(tmp_path))
    assert result.data["json"] == {"uuid": "u-1", "disks": [1, 2]}
    assert run(COMMAND, ["echo", "[1, 2]"], context(tmp_path)).data["json"] == [1, 2]


def test_command_without_json_stdout_has_no_json(tmp_path: Path) -> None:
    """Plain text, scalars and broken JSON leave ``json`` out."""
    for text in ["hello", "42", "{not json"]:
        assert "json" not in run(COMMAND, ["echo", text], context(tmp_path)).data


def test_command_decodes_invalid_utf8_with_replacement(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 become replacement characters instead of an exception."""
    result = run(COMMAND, ["printf", "a\\377b"], context(tmp_path))
    assert result.data["stdout"] == "a\ufffdb"


def test_command_feeds_stdin(tmp_path: Path) -> None:
    """``stdin`` is written to the program's standard input."""
    result = run(COMMAND, ["cat"], context(tmp_path, stdin="line 1\nline 2\n"))
    assert result.data["stdout"] == "line 1\nline 2\n"


def test_command_without_stdin_reads_nothing(tmp_path: Path) -> None:
    """Without ``stdin`` the program's standard input is empty, so it never waits on it."""
    result = run(COMMAND, ["cat"], context(tmp_path, timeout=5))
    assert result.ok and result.data["stdout"] == ""


def test_command_ignoring_large_stdin_does_not_hang(tmp_path: Path) -> None:
    """A program that exits without reading a large stdin still gives a result."""
    result = run(COMMAND, ["true"], context(tmp_path, stdin="x" * 1_000_000, timeout=10))
    assert result.ok


def test_command_env_merges_over_os_environ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The context env (PLANCTL_* included) is added to, and overrides, the parent's env."""
    monkeypatch.setenv("INHERITED", "from-parent")
    monkeypatch.setenv("OVERRIDDEN", "parent")
    script = (
        'printf "%s\\n" "$INHERITED" "$OVERRIDDEN" "$PLANCTL_RUN_ID" "$PLANCTL_COMMAND_ID" '
        '"$PLANCTL_EXECUTION_REASON" "$PLANCTL_IDEMPOTENCY_KEY"'
    )
    ctx = context(tmp_path, env={"OVERRIDDEN": "plan"})
    result = run(COMMAND, ["sh", "-c", script], ctx)
    assert result.data["stdout"].splitlines() == [
        "from-parent", "plan", "run-1", "clone[disk0]", "REGULAR_FLOW", "key-1",
    ]


def test_command_runs_in_cwd(tmp_path: Path) -> None:
    """The program runs in the context's working directory, and relative paths start there."""
    script = tmp_path / "store"
    script.write_text("#!/bin/sh\npwd\n")
    script.chmod(0o755)
    result = run(COMMAND, ["./store"], context(tmp_path))
    assert result.ok, result.error
    assert result.data["stdout"].strip() == str(tmp_path.resolve())


def test_command_not_found(tmp_path: Path) -> None:
    """A missing program is a failure with rc 127 and a clear error, not an exception."""
    result = run(COMMAND, ["./x"], context(tmp_path))
    assert not result.ok
    assert result.error == "command not found: ./x"
    assert result.data["rc"] == 127
    assert run(COMMAND, ["no-such-program-planctl"], context(tmp_path)).data["rc"] == 127


def test_command_not_executable(tmp_path: Path) -> None:
    """A file without the execute bit is a failure with rc 126."""
    script = tmp_path / "store"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    result = run(COMMAND, ["./store"], context(tmp_path))
    assert not result.ok
    assert result.data["rc"] == 126
    assert result.error is not None and "./store" in result.error


def test_command_empty_program_or_directory_is_named(tmp_path: Path) -> None:
    """An empty program name and a directory given as the program say so (both used to
    read 'permission denied (not executable?)', the empty one with nothing after it)."""
    (tmp_path / "tools").mkdir()
    empty = run(COMMAND, [""], context(tmp_path))
    assert (empty.error, empty.data["rc"]) == ("command not found: the program name is empty",
                                               127)
    directory = run(COMMAND, ["./tools", "x"], context(tmp_path))
    assert (directory.error, directory.data["rc"]) == (
        "is a directory, not a program: ./tools", 126)


def test_command_missing_cwd(tmp_path: Path) -> None:
    """A working directory that does not exist is named in the error."""
    missing = tmp_path / "gone"
    result = run(COMMAND, ["true"], context(missing))
    assert not result.ok
    assert result.error == f"working directory not found: {missing}"


def test_command_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    """After the timeout the program and everything it spawned are killed and reaped, not
    awaited: the background child never gets to write its `done` file."""
    pids, done = tmp_path / "pids", tmp_path / "done"
    script = f"echo started; (sleep 30; touch {done}) & echo $! > {pids}; wait"
    result = run(COMMAND, ["sh", "-c", script], context(tmp_path, timeout=0.5))
    assert not result.ok
    assert result.error == "timed out after 0.5s"
    assert result.data["timed_out"] is True
    assert result.data["stdout"] == "started\n"  # output produced before the timeout is kept
    assert gone(read_pid(pids))
    assert not done.exists()


def test_command_timeout_escalates_to_sigkill(tmp_path: Path) -> None:
    """A group that ignores SIGTERM is killed with SIGKILL after the grace period."""
    pids = tmp_path / "pids"
    script = f"trap '' TERM; sleep 30 & echo $! > {pids}; wait; wait"
    result = asyncio.run(
        run_process(["sh", "-c", script], context(tmp_path, timeout=0.3), grace=0.3)
    )
    assert result.data["timed_out"] is True
    assert result.data["rc"] == -9
    assert gone(read_pid(pids))


def test_command_cancellation_kills_the_whole_process_group(tmp_path: Path) -> None:
    """Cancelling the action kills the program and its children, then re-raises."""
    leader, child = tmp_path / "leader", tmp_path / "child"
    script = f"echo $$ > {leader}; sleep 30 & echo $! > {child}; wait"

    async def main() -> None:
        task = asyncio.create_task(COMMAND.run(["sh", "-c", script], context(tmp_path)))
        while not (child.exists() and child.read_text().strip()):
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert gone(read_pid(leader))
    assert gone(read_pid(child))


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc (Linux)")
def test_command_timeout_and_cancellation_kill_what_left_the_group(tmp_path: Path) -> None:
    """A process the program started in a session of its own (setsid), so out of reach of
    the group's signals, is killed too on timeout and on cancellation (found by the
    PLANCTL_SPAWN_ID it inherited): it used to go on, so that a rollback could run beside
    it. It is SIGKILLed after the grace when it ignores SIGTERM. A process of the same
    command started by another program (a worker an earlier `run` left for its `poll`) is
    left alone."""
    worker, escaped = tmp_path / "worker", tmp_path / "escaped"
    ctx = context(tmp_path)
    start_worker = f"setsid sh -c 'echo $$ > {worker}; exec sleep 60' > /dev/null 2>&1 &"
    assert run(SHELL, start_worker, ctx).ok
    escape = (f"setsid sh -c 'trap \"\" TERM; echo $$ > {escaped}; sleep 60; sleep 60' "
              "> /dev/null 2>&1 & sleep 60")
    try:
        result = asyncio.run(run_process(["sh", "-c", escape],
                                         context(tmp_path, timeout=0.5), grace=0.3))
        assert result.data["timed_out"] is True
        assert gone(read_pid(escaped))
        escaped.unlink()

        async def cancelled() -> None:
            task = asyncio.create_task(run_process(["sh", "-c", escape], ctx, grace=0.3))
            while not (escaped.exists() and escaped.read_text().strip()):
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(cancelled())
        assert gone(read_pid(escaped))
        assert alive(read_pid(worker))
    finally:
        os.kill(read_pid(worker), 9)


def test_command_is_not_held_by_a_daemon_that_keeps_its_output_open(tmp_path: Path) -> None:
    """A process that left the program's group (setsid) and inherited its stdout does not
    keep the command waiting for EOF once the program and its group have ended: the
    result is the program's, with what it printed (it used to wait as long as the daemon
    lived: here longer than the 20 s bound, which fails the test instead of hanging it)."""
    daemon = tmp_path / "daemon"
    script = f"setsid sh -c 'echo $$ > {daemon}; exec sleep 60' & echo started; exit 3"

    async def main() -> ActionResult:
        return await asyncio.wait_for(
            run_process(["sh", "-c", script], context(tmp_path), grace=0.2), 20)

    try:
        result = asyncio.run(main())
    finally:
        os.kill(read_pid(daemon), 9)
    assert (result.ok, result.error, result.data["rc"]) == (False, "exit status 3", 3)
    assert result.data["stdout"] == "started\n"


def test_command_waits_for_a_background_child_of_its_group_holding_output(
        tmp_path: Path) -> None:
    """A background child still in the program's group that holds stdout is waited for,
    as a shell's `$(...)` would: what it prints after the program exited is kept."""
    script = "(sleep 0.3; echo late) & echo early"
    result = asyncio.run(run_process(["sh", "-c", script], context(tmp_path), grace=0.05))
    assert result.ok
    assert result.data["stdout"] == "early\nlate\n"


def test_command_output_past_the_limit_keeps_its_first_and_last_part(tmp_path: Path) -> None:
    """A program printing three times OUTPUT_KEPT on each stream leaves a result of the
    first and last half of that, around a note of how much was left out: the result row
    stays bounded (a program printing a few hundred MB of bytes used to make a row past
    SQLite's limit, and planctl then ended with an internal error at every resume). The
    error still quotes stderr's last line."""
    size = 3 * OUTPUT_KEPT
    script = (f"{{ printf START; head -c {size} /dev/zero | tr '\\0' o; printf END; }}; "
              f"{{ printf 'warming up\\n'; head -c {size} /dev/zero; "
              "printf '\\nfatal: disk full\\n'; } >&2; exit 1")
    result = asyncio.run(run_process(["sh", "-c", script], context(tmp_path)))
    stdout, stderr = result.data["stdout"], result.data["stderr"]
    half = OUTPUT_KEPT // 2
    note = f"\n[... {size + 8 - OUTPUT_KEPT} bytes left out by planctl ...]\n"
    assert stdout == "START" + "o" * (half - 5) + note + "o" * (half - 3) + "END"
    note = f"\n[... {size + 29 - OUTPUT_KEPT} bytes left out by planctl ...]\n"
    assert stderr == "warming up\n" + "\0" * (half - 11) + note + "\0" * (half - 18) \
        + "\nfatal: disk full\n"
    assert result.error == "exit status 1: fatal: disk full"


# Arrives (a file of its own in here/), then waits for all 20 to have arrived: only 20
# programs running at once all succeed. A bounded wait, so a failure cannot hang: the first
# to give up leaves gave_up, and the others then give up at once.
_MEET = """\
touch "here/$1"
tries=0
while [ "$(ls here | wc -l)" -lt 20 ]; do
  [ -e gave_up ] && exit 1
  tries=$((tries + 1))
  [ "$tries" -gt 1200 ] && { touch gave_up; exit 1; }
  sleep 0.05
done
"""


def test_command_runs_many_concurrently(tmp_path: Path) -> None:
    """Many commands on one loop run side by side rather than one after another: twenty
    programs that each wait for all the others to have started all succeed."""
    (tmp_path / "here").mkdir()

    async def main() -> list[ActionResult]:
        ctx = context(tmp_path)
        return await asyncio.gather(*(COMMAND.run(["sh", "-c", _MEET, "sh", str(i)], ctx)
                                      for i in range(20)))

    results = asyncio.run(main())
    assert [(r.ok, r.error) for r in results] == [(True, None)] * 20
    assert not (tmp_path / "gave_up").exists()


# shell


def test_shell_runs_script_with_pipes(tmp_path: Path) -> None:
    """A shell script with pipes and redirections runs under /bin/sh."""
    result = run(SHELL, "printf 'b\\na\\nc\\n' | sort | head -n 2", context(tmp_path))
    assert result.ok
    assert result.data["stdout"] == "a\nb\n"


def test_shell_failure_reports_stderr(tmp_path: Path) -> None:
    """A failing script reports its exit status and last stderr line."""
    result = run(SHELL, "echo 'no such image' >&2; exit 4", context(tmp_path))
    assert not result.ok
    assert result.error == "exit status 4: no such image"


def test_shell_timeout(tmp_path: Path) -> None:
    """A shell script is killed at its timeout like a command."""
    result = run(SHELL, "sleep 30", context(tmp_path, timeout=0.2))
    assert result.data["timed_out"] is True


# http


def test_http_get_returns_status_headers_text_and_json(
    tmp_path: Path, async_jobs_server: AsyncJobsServer
) -> None:
    """A GET answered with 2xx is ok, with lower-case response headers and parsed JSON."""
    result = run(HTTP, {"url": async_jobs_server.url + "/echo"}, context(tmp_path))
    assert result.ok, result.error
    assert result.data["status"] == 200
    assert result.data["headers"]["content-type"] == "application/json"
    assert result.data["json"]["method"] == "GET"
    assert result.data["text"].startswith("{")


def test_a_lower_case_http_method_is_sent_upper_case(
        tmp_path: Path, async_jobs_server: AsyncJobsServer) -> None:
    """A plan may write `method: post` (the schema takes any case): the run loads, and the
    request is sent as POST."""
    (tmp_path / "plan.yaml").write_text(
        "name: lower-case-method\n"
        "commands:\n"
        "  - id: post\n"
        f"    run: {{http: {{method: post, url: '{async_jobs_server.url}/echo', json: {{}}}}}}\n"
        "    changes: false\n"
        "    outputs: {method: '{{ result.json.method }}'}\n", encoding="utf-8")
    store = planner.SQLiteStore(tmp_path / "state.db")
    try:
        outcome = planner.apply_plan(planner.load_plan(tmp_path / "plan.yaml"), store,
                                     handle_signals=False)
        assert outcome.status == "SUCCEEDED", outcome.errors
        assert store.get_commands(outcome.run_id)["post"].outputs == {"method": "POST"}
    finally:
        store.close()


def test_http_post_sends_json(tmp_path: Path, async_jobs_server: AsyncJobsServer) -> None:
    """``json`` is sent as a JSON body with the method given."""
    args = {"method": "POST", "url": async_jobs_server.url + "/echo", "json": {"vm": "vm-42"}}
    result = run(HTTP, args, context(tmp_path))
    assert result.data["json"]["method"] == "POST"
    assert result.data["json"]["json"] == {"vm": "vm-42"}
    assert result.data["json"]["headers"]["Content-Type"] == "application/json"


def test_http_post_sends_raw_body(tmp_path: Path, async_jobs_server: AsyncJobsServer) -> None:
    """``body`` is sent as is, with the plan's headers."""
    args = {
        "method": "PUT",
        "url": async_jobs_server.url + "/echo",
        "body": '{"raw": true}',
        "headers": {"Content-Type": "application/json", "X-Trace": "t-1"},
    }
    result = run(HTTP, args, context(tmp_path))
    assert result.data["json"]["json"] == {"raw": True}
    assert result.data["json"]["headers"]["X-Trace"] == "t-1"


def test_http_sends_idempotency_key(tmp_path: Path, async_jobs_server: AsyncJobsServer) -> None:
    """Every request carries the command's key as the Idempotency-Key header."""
    run(HTTP, {"url": async_jobs_server.url + "/echo"}, context(tmp_path))
    method, path, headers = async_jobs_server.requests[-1]
    assert (method, path) == ("GET", "/echo")
    assert headers["Idempotency-Key"] == "key-1"


def test_http_plan_idempotency_key_wins(
    tmp_path: Path, async_jobs_server: AsyncJobsServer
) -> None:
    """An Idempotency-Key set by the plan (any case) is sent instead of the command's."""
    args = {"url": async_jobs_server.url + "/echo", "headers": {"idempotency-key": "mine"}}
    result = run(HTTP, args, context(tmp_path))
    sent = {k.lower(): v for k, v in result.data["json"]["headers"].items()}
    assert sent["idempotency-key"] == "mine"
    assert sum(k.lower() == "idempotency-key" for k in result.data["json"]["headers"]) == 1


def test_http_unexpected_status_fails(tmp_path: Path, async_jobs_server: AsyncJobsServer) -> None:
    """A status other than the expected one fails, naming both, and keeps the response."""
    args = {"method": "POST", "url": async_jobs_server.url + "/jobs", "json": {}, "status": 201}
    result = run(HTTP, args, context(tmp_path))
    assert not result.ok
    assert result.data["status"] == 202
    assert result.error is not None
    assert result.error.startswith(
        f"HTTP 202 Accepted from POST {async_jobs_server.url}/jobs (expected 201)"
    )


def test_http_expected_status_list(tmp_path: Path, async_jobs_server: AsyncJobsServer) -> None:
    """A list of expected statuses accepts any of them, 404 included."""
    args = {"url": async_jobs_server.url + "/jobs/nope", "status": [200, 404]}
    assert run(HTTP, args, context(tmp_path)).ok


def test_http_non_2xx_fails_by_default(
    tmp_path: Path, async_jobs_server: AsyncJobsServer
) -> None:
    """Without ``status``, a 404 fails with the body's start in the error."""
    result = run(HTTP, {"url": async_jobs_server.url + "/jobs/nope"}, context(tmp_path))
    assert not result.ok
    assert result.error == (
        f"HTTP 404 Not Found from GET {async_jobs_server.url}/jobs/nope: "
        '{"error": "no job nope"}'
    )


def test_http_connection_refused(tmp_path: Path) -> None:
    """A refused connection is a failure with a clear error, not an exception."""
    with closed_port() as port:
        result = run(HTTP, {"url": f"http://127.0.0.1:{port}/jobs"}, context(tmp_path))
    assert not result.ok
    assert result.error == f"connection refused: http://127.0.0.1:{port}/jobs"


def test_http_timeout(tmp_path: Path) -> None:
    """A server that never answers fails after the operation's timeout."""
    with silent_server() as url:
        result = run(HTTP, {"url": url}, context(tmp_path, timeout=0.3))
    assert not result.ok
    assert result.data == {"timed_out": True}
    assert result.error == f"timed out after 0.3s: GET {url}"


def test_http_bad_url(tmp_path: Path) -> None:
    """An unsupported URL is a failure, not an exception."""
    result = run(HTTP, {"url": "ftp://example.invalid/x"}, context(tmp_path))
    assert not result.ok
    assert result.error is not None and "UnsupportedProtocol" in result.error


def test_http_error_hides_url_credentials(tmp_path: Path) -> None:
    """User info and query strings of the URL stay out of error messages."""
    with closed_port() as port:
        url = f"http://user:pw@127.0.0.1:{port}/x?token=s3cret"
        result = run(HTTP, {"url": url}, context(tmp_path))
    assert result.error == f"connection refused: http://127.0.0.1:{port}/x?..."


def test_http_errors_show_the_url_as_written(tmp_path: Path) -> None:
    """Error messages quote the scheme, host and path as the plan wrote them, never a
    re-spelled form (lower-cased), which the masking of secrets would not recognise."""
    result = run(HTTP, {"url": "http://Zq9SECRETz.invalid/x"}, context(tmp_path))
    assert result.error is not None
    assert result.error.startswith("cannot resolve host Zq9SECRETz.invalid: "), result.error
    with closed_port() as port:
        url = f"HTTP://user:pw@127.0.0.1:{port}/Some/Path?token=s3cret#Frag"
        result = run(HTTP, {"url": url, "method": "options"}, context(tmp_path))
    assert result.error == f"connection refused: HTTP://127.0.0.1:{port}/Some/Path?..."


@pytest.mark.parametrize("port", ["99999", "65536", "0", "-1", "abc"])
def test_http_invalid_port_names_the_request(tmp_path: Path, port: str) -> None:
    """A port out of range or not a number fails with a message naming the method and the
    URL, not an exception group from deep in the connection code."""
    for host in ("127.0.0.1", "localhost", "h"):
        url = f"http://{host}:{port}/x"
        result = run(HTTP, {"url": url, "method": "put"}, context(tmp_path))
        assert not result.ok
        assert result.error == f"PUT {url}: invalid port", result.error


def test_http_result_has_no_request_headers(
    tmp_path: Path, async_jobs_server: AsyncJobsServer
) -> None:
    """Request headers, which may carry secrets, never appear in the result."""
    args = {
        "method": "POST",
        "url": async_jobs_server.url + "/jobs",
        "json": {"name": "copy"},
        "headers": {"Authorization": "Bearer s3cret"},
    }
    result = run(HTTP, args, context(tmp_path))
    assert result.ok
    assert "s3cret" not in repr(result)
    assert async_jobs_server.requests[-1][2]["Authorization"] == "Bearer s3cret"


@pytest.mark.parametrize(("name", "value", "problem"), [
    ("Authorization", "Bearer s3cret\n", "the value holds a line break or another character"
     " a header cannot (a secret read with its trailing newline?)"),
    ("Authorization", "Bearer s3cret\r\nX-Admin: yes", "the value holds a line break or"
     " another character a header cannot (a secret read with its trailing newline?)"),
    ("X-Token", "s3cret\x00", "the value holds a line break or another character a header"
     " cannot (a secret read with its trailing newline?)"),
    ("X-Token", "s3\\cret ", "the value starts or ends with a space or tab"),
    ("X-Token", "\ts3cret", "the value starts or ends with a space or tab"),
    ("X-Token", "s3cr\xe9t", "the value has a character that is not ASCII"),
])
def test_http_invalid_header_value_is_named_never_quoted(
        tmp_path: Path, name: str, value: str, problem: str) -> None:
    """A header value HTTP cannot carry (a secret read with its trailing newline, say)
    fails the action naming the header and what is wrong, never quoting the value: httpx's
    own error quoted it escaped (`b'Bearer s3cret\\n'`), a spelling the masking of secrets
    does not recognise, so the secret was printed and stored. Nothing is sent."""
    contacted: list[bool] = []

    def answer(conn: socket.socket) -> None:
        contacted.append(True)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    with raw_server(answer) as url:
        result = run(HTTP, {"url": url, "headers": {name: value}}, context(tmp_path))
    assert result == ActionResult(False, {}, f"GET {url}: invalid request: header {name}: "
                                  + problem)
    assert contacted == []


def test_http_invalid_header_name_fails_the_action(tmp_path: Path) -> None:
    """A header name that is not an HTTP token fails the action, saying so."""
    with closed_port() as port:
        url = f"http://127.0.0.1:{port}/x"
        result = run(HTTP, {"url": url, "headers": {"Bad Name": "v"}}, context(tmp_path))
    assert result.error == f"GET {url}: invalid request: header name 'Bad Name' is not valid"


def test_http_header_values_with_inner_spaces_and_tabs_are_sent(
        tmp_path: Path, async_jobs_server: AsyncJobsServer) -> None:
    """Spaces and tabs inside a value, punctuation and an empty value are all valid."""
    headers = {"X-A": "a \t b", "X-B": "", "X-C": "\\!\"#$%&'()*+,-./:;<=>?@[]^_`{|}~"}
    result = run(HTTP, {"url": async_jobs_server.url + "/echo", "headers": headers},
                 context(tmp_path))
    assert result.ok
    sent = async_jobs_server.requests[-1][2]
    assert (sent["X-A"], sent["X-B"], sent["X-C"]) == (headers["X-A"], "", headers["X-C"])


def test_http_async_job_created_and_polled_to_the_end(
    tmp_path: Path, async_jobs_server: AsyncJobsServer
) -> None:
    """A job is created (202 + Location), polled through 503s until it succeeds."""
    base = async_jobs_server.url

    async def main() -> tuple[ActionResult, list[ActionResult]]:
        try:
            ctx = context(tmp_path, timeout=5)
            created = await HTTP.run(
                {"method": "POST", "url": base + "/jobs",
                 "json": {"duration": 0.3, "name": "copy-image"}},
                ctx,
            )
            async_jobs_server.flaky_polls = 2
            polls = []
            for _ in range(200):
                poll = await HTTP.run({"url": base + created.data["json"]["href"]}, ctx)
                polls.append(poll)
                if poll.ok and poll.data["json"]["status"] != "running":
                    break
                await asyncio.sleep(0.02)
            return created, polls
        finally:
            await aclose_clients()

    created, polls = asyncio.run(main())
    assert created.ok and created.data["status"] == 202
    job_id = created.data["json"]["id"]
    assert created.data["headers"]["location"] == f"/jobs/{job_id}"
    assert [p.data["status"] for p in polls[:2]] == [503, 503]
    assert not polls[0].ok
    assert polls[-1].data["json"] == {"id": job_id, "status": "succeeded", "name": "copy-image"}
    assert polls[2].data["json"]["status"] == "running"  # polled while it ran
    assert all(h["Idempotency-Key"] == "key-1" for _, _, h in async_jobs_server.requests)


def test_http_async_job_failure_and_cancel(
    tmp_path: Path, async_jobs_server: AsyncJobsServer
) -> None:
    """A failing job ends failed; DELETE cancels a running job; a repeated key reuses a job."""
    base = async_jobs_server.url
    failing = run(HTTP, {"method": "POST", "url": base + "/jobs",
                         "json": {"duration": 0, "fail": True}}, context(tmp_path))
    href = failing.data["json"]["href"]
    assert run(HTTP, {"url": base + href}, context(tmp_path)).data["json"]["status"] == "failed"

    # another command, so another idempotency key
    ctx = ActionContext(run_id="run-1", command_id="c2", execution_reason="REGULAR_FLOW",
                        idempotency_key="key-2", cwd=str(tmp_path))
    args = {"method": "POST", "url": base + "/jobs", "json": {"duration": 30}}
    slow = run(HTTP, args, ctx)
    again = run(HTTP, args, ctx)
    assert slow.data["status"] == 202 and again.data["status"] == 200
    assert again.data["json"]["id"] == slow.data["json"]["id"]
    href = slow.data["json"]["href"]
    cancelled = run(HTTP, {"method": "DELETE", "url": base + href}, ctx)
    assert cancelled.ok and cancelled.data["json"]["status"] == "cancelled"
    assert not run(HTTP, {"method": "DELETE", "url": base + href}, ctx).ok  # 409


def test_http_client_is_shared_per_loop(
    tmp_path: Path, async_jobs_server: AsyncJobsServer
) -> None:
    """Requests on one loop share one client; aclose_clients closes it."""
    from planner.actions import http

    async def main() -> None:
        await HTTP.run({"url": async_jobs_server.url + "/echo"}, context(tmp_path))
        client = http._clients[asyncio.get_running_loop()]
        await HTTP.run({"url": async_jobs_server.url + "/echo"}, context(tmp_path))
        assert http._clients[asyncio.get_running_loop()] is client
        await aclose_clients()
        assert asyncio.get_running_loop() not in http._clients
        assert client.is_closed

    asyncio.run(main())


def test_http_timeout_bounds_the_whole_request(tmp_path: Path) -> None:
    """The timeout bounds the whole request: a server that trickles its body, a byte at a
    time well within httpx's per-read timeout, fails it all the same (it used to run for as
    long as the server kept sending)."""
    def trickle(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(100):  # about 5s, far beyond the timeout
            conn.sendall(b"1\r\nx\r\n")
            time.sleep(0.05)
        conn.sendall(b"0\r\n\r\n")

    with raw_server(trickle) as url:
        result = run(HTTP, {"url": url}, context(tmp_path, timeout=0.5))
    assert result == ActionResult(False, {"timed_out": True}, f"timed out after 0.5s: GET {url}")


def _body(kind: str, size: int) -> Callable[[socket.socket], None]:
    """A server's answer: a body of ``size`` bytes, with a Content-Length, chunked, or
    gzip-compressed (far smaller on the wire than once decoded)."""
    def answer(conn: socket.socket) -> None:
        if kind == "length":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size)
            conn.sendall(b"x" * size)
        elif kind == "chunked":
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            for start in range(0, size, 65536):
                chunk = b"x" * min(65536, size - start)
                conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            conn.sendall(b"0\r\n\r\n")
        else:
            body = gzip.compress(b"x" * size)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    return answer


@pytest.mark.parametrize("kind", ["length", "chunked", "gzip"])
def test_http_response_body_is_capped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    """A body larger than MAX_BODY (once decoded) fails the action, naming the limit, and
    is not kept (it used to be read whole into memory and the state store, however large);
    a body of exactly MAX_BODY is read whole."""
    from planner.actions import http

    monkeypatch.setattr(http, "MAX_BODY", 1024 * 1024)
    with raw_server(_body(kind, http.MAX_BODY + 1)) as url:
        result = run(HTTP, {"url": url}, context(tmp_path, timeout=20))
    assert not result.ok
    assert result.error == f"GET {url}: response body larger than 1 MiB"
    assert result.data["status"] == 200 and "text" not in result.data
    with raw_server(_body(kind, http.MAX_BODY)) as url:
        result = run(HTTP, {"url": url}, context(tmp_path, timeout=20))
    assert result.ok and result.data["text"] == "x" * http.MAX_BODY


def test_http_endless_body_stops_at_the_cap(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server that sends a body without end fails the action at the cap, not at the
    timeout (the client hangs up and the server's writes fail)."""
    from planner.actions import http

    monkeypatch.setattr(http, "MAX_BODY", 1024 * 1024)

    def endless(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 65536
        for _ in range(1024):  # 64 times the cap: endless as far as the client can tell
            conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        conn.sendall(b"0\r\n\r\n")

    with raw_server(endless) as url:
        result = run(HTTP, {"url": url}, context(tmp_path, timeout=60))
    assert result.error == f"GET {url}: response body larger than 1 MiB"


def test_http_connection_reset_mid_body_says_so(tmp_path: Path) -> None:
    """A connection reset in the middle of the body fails the action with the reason (it
    said only `ReadError: `, httpx's exception having no message of its own)."""
    def reset(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nabc")
        time.sleep(0.1)  # the client has read the head: the reset comes mid-body
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    with raw_server(reset) as url:
        result = run(HTTP, {"url": url}, context(tmp_path, timeout=20))
    assert result == ActionResult(
        False, {}, f"GET {url}: ReadError: [Errno 104] Connection reset by peer")


def test_http_closed_mid_body_says_so(tmp_path: Path) -> None:
    """A server that closes the connection before the end of the body it announced fails
    the action with a one-line reason."""
    def short(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nabc")

    with raw_server(short) as url:
        result = run(HTTP, {"url": url}, context(tmp_path, timeout=20))
    assert result.error == (f"GET {url}: RemoteProtocolError: peer closed connection without "
                            "sending complete message body (received 3 bytes, expected 1000)")


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_http_redirect_is_not_followed(tmp_path: Path, code: int) -> None:
    """A redirect, even to another origin, is not followed: the credentials in the request
    headers never reach the other server. It fails the action unless `status` lists it,
    and `result.headers.location` says where it points."""
    elsewhere: list[bytes] = []

    def other(conn: socket.socket) -> None:
        elsewhere.append(b"request")
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    with raw_server(other) as target:
        def redirect(conn: socket.socket) -> None:
            conn.sendall(b"HTTP/1.1 %d Moved\r\nLocation: %s\r\nContent-Length: 0\r\n\r\n"
                         % (code, target.replace("127.0.0.1", "localhost").encode()))

        with raw_server(redirect) as url:
            args: dict[str, Any] = {"url": url, "headers": {"Authorization": "Bearer s3cret"}}
            failed = run(HTTP, args, context(tmp_path))
            accepted = run(HTTP, {**args, "status": code}, context(tmp_path))
    assert failed.error == f"HTTP {code} Moved from GET {url}"
    assert accepted.ok
    assert accepted.data["headers"]["location"] == target.replace("127.0.0.1", "localhost")
    assert elsewhere == []


def test_http_non_utf8_body_is_decoded_with_replacement(tmp_path: Path) -> None:
    """A body that is not valid in its charset is text all the same, undecodable bytes as
    U+FFFD; a declared charset is honoured."""
    def latin(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\ncaf\xe9 \xff")

    def declared(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=latin-1\r\n"
                     b"Content-Length: 4\r\n\r\ncaf\xe9")

    with raw_server(latin) as url:
        result = run(HTTP, {"url": url}, context(tmp_path))
    assert result.ok and result.data["text"] == "caf\ufffd \ufffd"
    with raw_server(declared) as url:
        result = run(HTTP, {"url": url}, context(tmp_path))
    assert result.ok and result.data["text"] == "caf\xe9"


# python


def test_python_sync_function(tmp_path: Path) -> None:
    """A sync function is called with the kwargs and its return value is ``value``."""
    args = {"function": f"{HELPERS}:add", "kwargs": {"a": 2, "b": 3}}
    result = run(PYTHON, args, context(tmp_path))
    assert result == ActionResult(True, {"value": 5})


def test_python_async_function(tmp_path: Path) -> None:
    """A coroutine function is awaited."""
    args = {"function": f"{HELPERS}:slow_echo", "kwargs": {"value": [1, 2]}}
    assert run(PYTHON, args, context(tmp_path)).data == {"value": [1, 2]}


def test_python_string_form_takes_no_kwargs(tmp_path: Path) -> None:
    """The ``module:function`` string form calls the function without arguments."""
    result = run(PYTHON, f"{HELPERS}:explode", context(tmp_path))
    assert result.error == "ValueError: bad disk"


def test_python_dict_result_keys_are_exposed(tmp_path: Path) -> None:
    """A dict return value's keys are also top-level data keys."""
    args = {"function": f"{HELPERS}:make_vm", "kwargs": {"name": "vm-42"}}
    result = run(PYTHON, args, context(tmp_path))
    assert result.data == {
        "uuid": "uuid-vm-42", "name": "vm-42", "value": {"uuid": "uuid-vm-42", "name": "vm-42"},
    }


def test_python_exception_is_a_failure(tmp_path: Path) -> None:
    """An exception gives ok False, "Type: message" and the type name, without a traceback."""
    args = {"function": f"{HELPERS}:explode", "kwargs": {"message": "no space left"}}
    result = run(PYTHON, args, context(tmp_path))
    assert result == ActionResult(False, {"exception": "ValueError"}, "ValueError: no space left")


def test_python_own_timeout_error_is_an_exception(tmp_path: Path) -> None:
    """A TimeoutError raised by the function is reported as its exception, not a timeout."""
    result = run(PYTHON, f"{HELPERS}:own_timeout", context(tmp_path, timeout=5))
    assert result.error == "TimeoutError: remote side timed out"


def test_python_async_timeout(tmp_path: Path) -> None:
    """An async function still running at the timeout is cancelled."""
    args = {"function": f"{HELPERS}:slow_echo", "kwargs": {"value": 1, "delay": 30}}
    result = run(PYTHON, args, context(tmp_path, timeout=0.1))
    assert result == ActionResult(False, {"timed_out": True}, "timed out after 0.1s")


@pytest.mark.parametrize("args", [
    {"function": f"{HELPERS}:slow_echo", "kwargs": {"value": [1, 2]}},  # async
    {"function": f"{HELPERS}:make_vm", "kwargs": {"name": "vm-42"}},  # sync
    {"function": f"{HELPERS}:explode_later", "kwargs": {"message": "gone"}},  # async raises
    f"{HELPERS}:explode",  # sync raises
    f"{HELPERS}:missing",  # cannot be found
    {"function": f"{HELPERS}:slow_echo", "kwargs": {"value": 1, "delay": 30}},  # timed out
])
def test_python_prepared_call_does_what_start_does_each_time(tmp_path: Path, args: Any
                                                             ) -> None:
    """``prepare`` (the polls of an async task) gives a call that returns what ``start``
    does with the same arguments, each time it is made."""
    ctx = context(tmp_path, timeout=0.2)
    if "delay" not in str(args):
        ctx = context(tmp_path)  # no timeout: the async function is awaited directly

    async def settle(started: ActionResult | Any) -> ActionResult:
        return started if isinstance(started, ActionResult) else await started

    async def main() -> tuple[list[ActionResult], ActionResult]:
        call = PYTHON.prepare(args, ctx)
        return [await settle(call()) for _ in range(3)], await settle(PYTHON.start(args, ctx))

    made, started = asyncio.run(main())
    assert made == [started] * 3


@pytest.mark.parametrize(
    ("path", "error"),
    [
        (f"{HELPERS}:missing", f"module {HELPERS} has no function 'missing'"),
        ("planctl_no_such_module:f", "module not found: planctl_no_such_module"),
        (f"{HELPERS}.sub:f", f"module not found: {HELPERS}.sub"),
        (f"{HELPERS}:not_callable", f"{HELPERS}:not_callable is not callable"),
        ("no_colon", "expected `module:function`, got 'no_colon'"),
    ],
)
def test_python_bad_path(tmp_path: Path, path: str, error: str) -> None:
    """A function that cannot be found is a failure with a clear message."""
    result = run(PYTHON, path, context(tmp_path))
    assert result == ActionResult(False, {}, error)


def test_python_function_is_cached() -> None:
    """A function is imported once and then served from the cache."""
    assert resolve(f"{HELPERS}:add") is resolve(f"{HELPERS}:add") is helpers_actions.add


@pytest.mark.parametrize(("kind", "why"), [
    ("tuple-key", "keys must be str, int, float, bool or None, not tuple"),
    ("huge-int", "Exceeds the limit (4300 digits) for integer string conversion"),
    ("itself", "it contains itself, or is nested too deeply"),
    ("unprintable", "str() of a _Unprintable raised ValueError: no text"),
    ("nan", "Out of range float values are not JSON compliant"),
])
@pytest.mark.parametrize("function", ["unstorable", "unstorable_later"])
def test_python_value_without_json_form_is_a_failure(tmp_path: Path, kind: str, why: str,
                                                     function: str) -> None:
    """A return value the state store cannot write as JSON fails the action, saying why,
    from a plain function or a coroutine function alike."""
    path = f"{HELPERS}:{function}"
    result = run(PYTHON, {"function": path, "kwargs": {"kind": kind}}, context(tmp_path))
    assert not result.ok and result.data == {}
    prefix = f"python {path} returned a value planctl cannot store as JSON: "
    assert result.error is not None and result.error.startswith(prefix + why), result.error


def test_python_error_with_a_lone_surrogate_is_escaped(tmp_path: Path) -> None:
    """An exception message holding a lone surrogate (a file name that is not UTF-8) is
    reported with it escaped: UTF-8 text, storable and printable."""
    result = run(PYTHON, f"{HELPERS}:surrogate", context(tmp_path))
    assert result.error == "RuntimeError: cannot open disk-\\udcff.img"


def test_http_json_is_standard_json_only(tmp_path: Path) -> None:
    """A body with NaN (which Python's parser takes, the state store cannot write) is no
    `json`, only `text`."""
    body = b'{"ratio": NaN}'

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        result = run(HTTP, {"url": url}, context(tmp_path))
    finally:
        server.shutdown()
        server.server_close()
    assert result.ok and result.data["text"] == body.decode()
    assert "json" not in result.data


@pytest.mark.parametrize(("function", "kwargs", "error"), [
    ("exits", {}, "SystemExit: 5"),
    ("exits_later", {}, "SystemExit: 6"),
    ("interrupts", {}, "KeyboardInterrupt"),
])
@pytest.mark.parametrize("prepared", [False, True])
def test_python_system_exit_and_keyboard_interrupt_are_failures(
        tmp_path: Path, function: str, kwargs: dict[str, Any], error: str,
        prepared: bool) -> None:
    """``sys.exit()`` (argparse, say) or KeyboardInterrupt raised by the function fails the
    action, naming the function, called directly or prepared (the polls of a task)."""
    path = f"{HELPERS}:{function}"
    args = {"function": path, "kwargs": kwargs}

    async def main() -> ActionResult:
        started = PYTHON.prepare(args, context(tmp_path))() if prepared else PYTHON.start(
            args, context(tmp_path, timeout=5))
        return started if isinstance(started, ActionResult) else await started

    result = asyncio.run(main())
    assert result == ActionResult(False, {"exception": error.partition(":")[0]},
                                  f"python {path} raised {error}")


def test_python_module_exiting_at_import_is_a_failure(tmp_path: Path) -> None:
    """A module that calls ``sys.exit()`` when imported (a script) cannot be resolved."""
    (tmp_path / "planctl_exits_at_import.py").write_text("import sys\nsys.exit(2)\n")
    sys.path.insert(0, str(tmp_path))
    try:
        result = run(PYTHON, "planctl_exits_at_import:f", context(tmp_path))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("planctl_exits_at_import", None)
    assert result == ActionResult(False, {},
                                  "cannot import planctl_exits_at_import: SystemExit: 2")
