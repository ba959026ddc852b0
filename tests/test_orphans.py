"""orphans: reading /proc for the processes a dead executor left running. Parsing and the scan
are checked on a fake /proc tree; one test finds a real process by its environment."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from planner.orphans import Orphan, alive, parse_environ, parse_stat, scan

RUN = "20261130-101010-abcdef"


def _stat(pid: int, name: str = "sh", state: str = "S", started: int = 4242) -> bytes:
    # pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime
    # stime cutime cstime priority nice threads itrealvalue starttime vsize ...
    rest = ["1", str(pid), str(pid), "0", "-1", "4194304"] + ["0"] * 12 + [str(started)]
    return f"{pid} ({name}) {state} {' '.join(rest)} 1000 200 0\n".encode()


def _environ(**values: str) -> bytes:
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in values.items())


def _ours(command: str, reason: str = "REGULAR_FLOW", run: str = RUN) -> bytes:
    return _environ(PATH="/bin", PLANCTL_RUN_ID=run, PLANCTL_COMMAND_ID=command,
                    PLANCTL_EXECUTION_REASON=reason, PLANCTL_IDEMPOTENCY_KEY="k")


def _proc(root: Path, pid: int, environ: bytes | None, stat: bytes | None) -> None:
    folder = root / str(pid)
    folder.mkdir()
    if environ is not None:
        (folder / "environ").write_bytes(environ)
    if stat is not None:
        (folder / "stat").write_bytes(stat)


def test_parse_environ_keeps_the_planctl_variables() -> None:
    """Only PLANCTL_* names are kept; values may hold `=`; an entry without `=` is ignored."""
    raw = _environ(HOME="/root", PLANCTL_RUN_ID=RUN, PLANCTL_COMMAND_ID="copy[a=b]") \
        + b"PLANCTL_BROKEN\0"
    assert parse_environ(raw) == {"PLANCTL_RUN_ID": RUN, "PLANCTL_COMMAND_ID": "copy[a=b]"}
    assert parse_environ(b"") == {}


def test_parse_stat_reads_name_state_and_start_time() -> None:
    """The name may hold spaces and parentheses: fields are counted from the last `)`."""
    assert parse_stat(_stat(12, "sh", "S", 777)) == ("sh", "S", 777)
    assert parse_stat(_stat(12, "my (odd) name", "Z", 5)) == ("my (odd) name", "Z", 5)


@pytest.mark.parametrize("raw", [b"", b"12 sh S 1", b"12 (sh) S 1 2 3", b"garbage)"])
def test_parse_stat_refuses_what_is_not_a_stat_line(raw: bytes) -> None:
    assert parse_stat(raw) is None


def test_scan_indexes_the_run_s_processes_by_command_and_reason(tmp_path: Path) -> None:
    """One pass: processes of the run by (command, reason); not another run's, not a
    zombie, not one without a command id, not the caller, not an unreadable one."""
    _proc(tmp_path, 10, _ours("f"), _stat(10, "sh"))
    _proc(tmp_path, 11, _ours("f"), _stat(11, "sleep", started=99))
    _proc(tmp_path, 12, _ours("f", "ROLLBACK_FLOW"), _stat(12, "rm"))
    _proc(tmp_path, 13, _ours("g", run=RUN + "0"), _stat(13))  # another run, same prefix
    _proc(tmp_path, 14, _ours("f"), _stat(14, state="Z"))  # a zombie still readable
    _proc(tmp_path, 15, _environ(PLANCTL_RUN_ID=RUN), _stat(15))  # no command id
    _proc(tmp_path, 16, _ours("f"), _stat(16))  # the caller itself
    _proc(tmp_path, 17, None, _stat(17))  # no environ (gone, or not readable)
    (tmp_path / "18").mkdir()
    (tmp_path / "18" / "environ").mkdir()  # reading it fails: skipped
    _proc(tmp_path, 19, _ours("f"), None)  # ended between the two reads
    _proc(tmp_path, 20, b"", _stat(20, state="Z"))  # a zombie: empty environ
    (tmp_path / "self").mkdir()

    found = scan(RUN, besides=16, proc=tmp_path)

    assert {k: sorted(v, key=lambda o: o.pid) for k, v in found.items()} == {
        ("f", "REGULAR_FLOW"): [Orphan(10, "sh", 4242), Orphan(11, "sleep", 99)],
        ("f", "ROLLBACK_FLOW"): [Orphan(12, "rm", 4242)],
    }


def test_scan_without_proc_finds_nothing(tmp_path: Path) -> None:
    """No /proc (not Linux): nothing to wait for."""
    assert scan(RUN, proc=tmp_path / "missing") == {}


def test_alive_needs_the_same_start_time_and_no_zombie(tmp_path: Path) -> None:
    """A pid reused by a later process, a zombie and a process gone all count as ended."""
    _proc(tmp_path, 10, None, _stat(10, started=50))
    _proc(tmp_path, 11, None, _stat(11, state="Z", started=50))
    assert alive(Orphan(10, "sh", 50), proc=tmp_path)
    assert not alive(Orphan(10, "sh", 49), proc=tmp_path)
    assert not alive(Orphan(11, "sh", 50), proc=tmp_path)
    assert not alive(Orphan(12, "sh", 50), proc=tmp_path)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc (Linux)")
def test_scan_finds_a_real_process_and_its_child_by_their_environment() -> None:
    """A child started by the process inherits its environment and is found with it."""
    run = f"test-{os.getpid()}"
    env = {**os.environ, "PLANCTL_RUN_ID": run, "PLANCTL_COMMAND_ID": "c",
           "PLANCTL_EXECUTION_REASON": "REGULAR_FLOW"}
    proc = subprocess.Popen(["sh", "-c", "sleep 30 & echo $!; wait"], env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        found = scan(run, besides=os.getpid())
        assert sorted(o.pid for o in found[("c", "REGULAR_FLOW")]) == sorted([proc.pid, child])
        assert scan(run, besides=proc.pid).keys() == {("c", "REGULAR_FLOW")}
        assert all(alive(o) for o in found[("c", "REGULAR_FLOW")])
    finally:
        subprocess.run(["kill", str(child)], check=False)
        proc.wait(timeout=10)
    assert not any(alive(o) for o in found[("c", "REGULAR_FLOW")])
    assert scan(run) == {}
