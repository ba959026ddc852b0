"""Run one subprocess for an action and turn its outcome into an ActionResult."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import signal
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

from .. import orphans
from .base import ActionContext, ActionResult

__all__ = ["KILL_GRACE", "OUTPUT_KEPT", "run_process"]

# Seconds a process group gets between SIGTERM and SIGKILL.
KILL_GRACE = 2.0
# Longest stderr excerpt quoted in an error message.
_ERROR_EXCERPT = 500
_CHUNK = 64 * 1024
# Bytes of stdout, and of stderr, kept in a result: past this, the first and the last
# half of it, around a note of what was left out. Bounds planctl's memory and the state
# row (written as ASCII JSON, up to 6 bytes a byte) however much a program prints.
OUTPUT_KEPT = 32 * 1024 * 1024
# Bytes kept past each cut of an output longer than that, so that a secret straddling a cut
# is masked whole before the cut is made (a secret longer than this is not).
_MARGIN = 64 * 1024
# Seconds between looks at whether a program whose output has not ended has exited.
_WATCH = 0.1


async def run_process(
    argv: Sequence[str], context: ActionContext, *, grace: float = KILL_GRACE
) -> ActionResult:
    """Run ``argv`` in its own session; on timeout or cancellation kill its whole group.

    The result's data holds ``rc``, ``stdout`` and ``stderr`` (text, of ``OUTPUT_KEPT``
    bytes at most), plus ``json`` when stdout is a JSON object or array, and
    ``timed_out: True`` after a timeout. A program
    that cannot be started gives ``ok=False`` with rc 127 (not found) or 126 (not
    executable), as a shell would, instead of raising.
    """
    if not argv:
        return ActionResult(False, {"rc": 127, "stdout": "", "stderr": ""}, "empty command")
    stdin = context.stdin
    spawn_id = uuid.uuid4().hex
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=context.cwd,
            env={**os.environ, **context.env, orphans.SPAWN: spawn_id},
            # A session of its own makes the child a group leader, so killpg reaches
            # everything it spawned, and a Ctrl-C on our terminal does not hit it directly.
            start_new_session=True,
        )
    except (OSError, ValueError) as exc:
        rc, message = _spawn_error(exc, argv[0], context.cwd)
        return ActionResult(False, {"rc": rc, "stdout": "", "stderr": ""}, message)

    out, err = _Output(), _Output()
    assert proc.stdout is not None and proc.stderr is not None
    tasks = [
        asyncio.create_task(_drain(proc.stdout, out)),
        asyncio.create_task(_drain(proc.stderr, err)),
    ]
    if stdin is not None:
        tasks.append(asyncio.create_task(_feed(proc, stdin.encode("utf-8"))))
    timed_out = False
    try:
        async with asyncio.timeout(context.timeout):
            ended = await _outlasted(proc, tasks, grace)
            rc = ended if ended is not None else await proc.wait()
    except TimeoutError:
        timed_out = True
        await _kill_group(proc, grace, _strays(proc, spawn_id))
        # Once the group is dead the pipes reach EOF, unless something escaped the group
        # (setsid) and holds them open: do not wait for it.
        await asyncio.wait(tasks, timeout=grace)
        rc = proc.returncode if proc.returncode is not None else -signal.SIGKILL
    except BaseException:  # cancellation: leave nothing behind, then let it propagate
        try:
            await _kill_group(proc, grace, _strays(proc, spawn_id))
        finally:
            for task in tasks:
                task.cancel()
        raise
    finally:
        for task in tasks:
            task.cancel()
        if any(not task.done() for task in tasks):
            _release(proc)

    stdout, stderr = out.text(context.mask), err.text(context.mask)
    data: dict[str, Any] = {"rc": rc, "stdout": stdout, "stderr": stderr}
    parsed = _json_of(stdout)
    if parsed is not None:
        data["json"] = parsed[0]
    if timed_out:
        data["timed_out"] = True
        return ActionResult(False, data, f"timed out after {context.timeout:g}s")
    if rc == 0:
        return ActionResult(True, data)
    return ActionResult(False, data, _exit_error(rc, context.mask(stderr)))


async def _outlasted(proc: asyncio.subprocess.Process, tasks: list[asyncio.Task[None]],
                     grace: float) -> int | None:
    """Wait for the program's output to end (EOF on stdout and stderr, stdin fed).

    A background process of its group that keeps the pipes open is waited for, as by a
    shell's ``$(...)``. Once the whole group has ended, a process that left it (setsid, a
    daemon) and still holds a pipe is given ``grace`` to close it, then no longer waited
    for: its exit status is returned then, else None (the output ended)."""
    pending = set(tasks)
    while True:
        # asyncio.wait, unlike gather, leaves the readers running when interrupted,
        # so a timed-out result still carries the output produced so far.
        _, pending = await asyncio.wait(pending, timeout=_WATCH)
        if not pending:
            return None
        rc = proc.returncode
        if rc is not None and not _group_alive(proc.pid):
            _, pending = await asyncio.wait(pending, timeout=grace)
            return rc if pending else None


def _release(proc: asyncio.subprocess.Process) -> None:
    """Close our ends of the pipes a process outside the group still holds: it gets
    EOF or EPIPE rather than blocking on a pipe nobody reads, and no descriptor leaks."""
    transport = getattr(proc, "_transport", None)  # asyncio has no public way to do it
    if transport is not None:
        transport.close()


class _Output:
    """What a program printed on one stream: all of it up to ``OUTPUT_KEPT`` bytes, else
    the first and the last half of that."""

    def __init__(self) -> None:
        self.head = bytearray()
        self.after_head = bytearray()  # the _MARGIN bytes after the head
        self.tail: deque[bytes] = deque()  # the last half, and _MARGIN bytes before it
        self.tail_size = 0
        self.left_out = 0

    def add(self, chunk: bytes) -> None:
        room = OUTPUT_KEPT // 2 - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if not chunk:
            return
        if len(self.after_head) < _MARGIN:
            self.after_head += chunk[:_MARGIN - len(self.after_head)]
        self.tail.append(chunk)
        self.tail_size += len(chunk)
        while self.tail_size - len(self.tail[0]) >= OUTPUT_KEPT // 2 + _MARGIN:
            self.tail_size -= len(self.tail[0])
            self.left_out += len(self.tail.popleft())

    def text(self, mask: Callable[[str], str] = str) -> str:
        """All of it, or its first and last halves; with ``mask`` (the run's secrets masked)
        applied to each half and the bytes past its cut before the cut is made."""
        tail = b"".join(self.tail)
        if self.left_out or len(self.head) + len(tail) > OUTPUT_KEPT:
            half = OUTPUT_KEPT // 2
            cut = len(tail) - half
            left_out = self.left_out + cut
            if mask is str:
                first, last = bytes(self.head), tail[cut:]
            else:  # a secret straddling a cut is masked whole, not cut in two
                first = _masked_cut(bytes(self.head + self.after_head), mask,
                                    end=True).encode()[:half]
                last = _masked_cut(tail, mask, end=False).encode()[-half:]
            return (first.decode("utf-8", errors="replace")
                    + f"\n[... {left_out} bytes left out by planctl ...]\n"
                    + last.decode("utf-8", errors="replace"))
        return (self.head + tail).decode("utf-8", errors="replace")


def _masked_cut(data: bytes, mask: Callable[[str], str], *, end: bool) -> str:
    """``data`` masked, short of where a secret may be cut in two (its end, or its start):
    the text the masking of all of it and of all but _MARGIN / 2 bytes there agree on (a
    secret so cut is masked in neither; one where the shorter stops, in one only)."""
    whole = mask(data.decode("utf-8", errors="replace"))
    cut = data[:len(data) - _MARGIN // 2] if end else data[_MARGIN // 2:]
    short = mask(cut.decode("utf-8", errors="replace"))
    if not end:
        whole, short = whole[::-1], short[::-1]
    lo, hi = 0, min(len(whole), len(short))
    while lo < hi:  # the longest common prefix, by halves: the strings may be long
        mid = (lo + hi + 1) // 2
        if whole[:mid] == short[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return whole[:lo] if end else whole[:lo][::-1]


async def _drain(stream: asyncio.StreamReader, sink: _Output) -> None:
    # Chunk by chunk into the caller's buffer, so a cancelled read keeps what it got.
    while chunk := await stream.read(_CHUNK):
        sink.add(chunk)


async def _feed(proc: asyncio.subprocess.Process, data: bytes) -> None:
    assert proc.stdin is not None
    try:
        proc.stdin.write(data)
        await proc.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the program did not read all of its input; its exit status tells the rest
    finally:
        proc.stdin.close()


async def _kill_group(proc: asyncio.subprocess.Process, grace: float,
                      strays: list[orphans.Orphan]) -> None:
    """SIGTERM the process group and ``strays``, SIGKILL whatever is left after ``grace``,
    await the leader."""
    pgid = proc.pid  # the leader of a new session: its pid is the group id
    _signal_group(pgid, signal.SIGTERM)
    _signal_strays(strays, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    try:
        while (_group_alive(pgid) or any(orphans.alive(s) for s in strays)) \
                and loop.time() < deadline:
            await asyncio.sleep(0.02)
    finally:
        # Also when cancelled again while waiting: SIGKILL cannot be ignored.
        _signal_group(pgid, signal.SIGKILL)
        _signal_strays(strays, signal.SIGKILL)
    # Wait for the child watcher to reap the leader. Not proc.wait(): it also waits for
    # the pipes to close, which a process that escaped the group (setsid) may hold open.
    deadline = loop.time() + grace
    while proc.returncode is None and loop.time() < deadline:
        await asyncio.sleep(0.01)


def _strays(proc: asyncio.subprocess.Process, spawn_id: str) -> list[orphans.Orphan]:
    """Processes the program started that left its group (setsid, a daemon), out of reach
    of the group's signals: found by the PLANCTL_SPAWN_ID they inherited (Linux only)."""
    return [o for o in orphans.spawned(spawn_id) if _pgid(o.pid) not in (proc.pid, None)]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _signal_strays(strays: list[orphans.Orphan], sig: int) -> None:
    for stray in strays:
        if orphans.alive(stray):  # still the same process, not a later one with its pid
            with suppress(OSError):  # gone meanwhile, or no longer ours to signal
                os.kill(stray.pid, sig)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass  # the whole group is gone already
    except PermissionError:
        pass  # a member changed its credentials (setuid); nothing more we may do


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _spawn_error(exc: OSError | ValueError, program: str, cwd: str) -> tuple[int, str]:
    if isinstance(exc, ValueError):  # e.g. an embedded NUL byte
        return 127, f"cannot run {program}: {exc}"
    if isinstance(exc, FileNotFoundError) and exc.filename == cwd and exc.filename != program:
        return 127, f"working directory not found: {cwd}"
    if not program:
        return 127, "command not found: the program name is empty"
    if isinstance(exc, FileNotFoundError):
        return 127, f"command not found: {program}"
    if isinstance(exc, PermissionError) and "/" in program \
            and os.path.isdir(os.path.join(cwd, program)):
        return 126, f"is a directory, not a program: {program}"
    if isinstance(exc, PermissionError):
        return 126, f"permission denied (not executable?): {program}"
    if exc.errno == errno.ENOEXEC:
        return 126, f"not an executable (missing #! line?): {program}"
    return 126, f"cannot run {program}: {exc.strerror or exc}"


def _exit_error(rc: int, stderr: str) -> str:
    if rc < 0:
        try:
            head = f"killed by signal {signal.Signals(-rc).name}"
        except ValueError:
            head = f"killed by signal {-rc}"
    else:
        head = f"exit status {rc}"
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return head
    last = lines[-1]
    if len(last) > _ERROR_EXCERPT:
        last = last[: _ERROR_EXCERPT - 3] + "..."
    return f"{head}: {last}"


def _json_of(text: str) -> tuple[Any] | None:
    """``(value,)`` when ``text`` is a JSON object or array, else None."""
    if not text.lstrip().startswith(("{", "[")):
        return None  # cheap test first: most output is not JSON
    try:
        return (json.loads(text),)
    except ValueError:
        return None
