"""Processes a dead executor left running, found by the PLANCTL_* variables they inherited.

planctl starts every `command`/`shell` program in a session of its own, so a kill -9 of
planctl leaves it running. Each such program, and everything it starts, inherits
``PLANCTL_RUN_ID``, ``PLANCTL_COMMAND_ID`` and ``PLANCTL_EXECUTION_REASON``: reading the
environment of every process (``/proc/PID/environ``, Linux only) finds them without any
record written beforehand. A recovery waits for them before it asks ``exists``, which
would otherwise answer for work that has not finished yet.

Elsewhere (no ``/proc``) nothing is found. A zombie has an empty environment and is not
found either; another user's process (not readable) is skipped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ENDED", "PROC", "SPAWN", "Orphan", "alive", "describe", "parse_environ", "parse_stat",
           "scan", "spawned", "stat"]

PROC = Path("/proc")
_RUN = "PLANCTL_RUN_ID"
_COMMAND = "PLANCTL_COMMAND_ID"
_REASON = "PLANCTL_EXECUTION_REASON"
ENDED = ("Z", "X")  # states of a process that no longer runs: zombie, dead
# A fresh id in the environment of each program planctl starts, and of what it starts.
SPAWN = "PLANCTL_SPAWN_ID"


@dataclass(frozen=True, slots=True)
class Orphan:
    """One process left running for a command; ``started`` (clock ticks after boot) tells
    it apart from a later process that reuses its pid."""

    pid: int
    name: str
    started: int


def parse_environ(raw: bytes) -> dict[str, str]:
    """The PLANCTL_* variables of a ``/proc/PID/environ`` (NUL-separated ``NAME=value``)."""
    found: dict[str, str] = {}
    for entry in raw.split(b"\0"):
        if entry.startswith(b"PLANCTL_"):
            name, sep, value = entry.partition(b"=")
            if sep:
                found[name.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return found


def parse_stat(raw: bytes) -> tuple[str, str, int] | None:
    """Name, state letter and start time of a ``/proc/PID/stat``; None if it is malformed.

    The name sits in parentheses and may itself hold spaces and parentheses: the fields
    are counted from the last ``)``."""
    head, sep, tail = raw.rpartition(b")")
    fields = tail.split()
    if not sep or b"(" not in head or len(fields) < 20:
        return None
    try:
        started = int(fields[19])  # field 22 of the line; fields here start at field 3
    except ValueError:
        return None
    name = head.partition(b"(")[2].decode("utf-8", "replace")
    return name, fields[0].decode("ascii", "replace"), started


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:  # gone meanwhile, another user's, or no /proc at all
        return None


def stat(pid: int, proc: Path = PROC) -> tuple[str, str, int] | None:
    """Name, state letter and start time of process ``pid``; None when it cannot be read
    (gone, or no ``/proc``)."""
    raw = _read(proc / str(pid) / "stat")
    return None if raw is None else parse_stat(raw)


def _live(name: str, value: str, proc: Path, besides: int | None = None
          ) -> Iterator[tuple[Orphan, dict[str, str]]]:
    """Live processes (but ``besides``) whose environment sets ``name`` to ``value``, with
    their environment. One pass over ``proc``; nothing where there is none."""
    try:
        entries = [e for e in os.listdir(proc) if e.isdigit()]
    except OSError:
        return
    wanted = f"{name}={value}".encode()
    for entry in entries:
        pid = int(entry)
        if pid == besides:
            continue
        raw = _read(proc / entry / "environ")
        if raw is None or wanted not in raw:  # cheap test first: most processes are not ours
            continue
        env = parse_environ(raw)
        if env.get(name) != value:
            continue
        found_stat = stat(pid, proc)
        if found_stat is not None and found_stat[1] not in ENDED:
            yield Orphan(pid, found_stat[0], found_stat[2]), env


def scan(run_id: str, *, besides: int | None = None, proc: Path = PROC
         ) -> dict[tuple[str, str], list[Orphan]]:
    """Live processes of run ``run_id``, by (command id, execution reason), but ``besides``
    (planctl's own pid). One pass over ``proc``; empty where there is none."""
    found: dict[tuple[str, str], list[Orphan]] = {}
    for orphan, env in _live(_RUN, run_id, proc, besides):
        if _COMMAND in env:
            found.setdefault((env[_COMMAND], env.get(_REASON, "")), []).append(orphan)
    return found


def spawned(spawn_id: str, *, proc: Path = PROC) -> list[Orphan]:
    """Live processes whose ``PLANCTL_SPAWN_ID`` is ``spawn_id``: one program planctl
    started and what it started, wherever they went. Empty where there is none."""
    return [orphan for orphan, _ in _live(SPAWN, spawn_id, proc)]


def alive(orphan: Orphan, *, proc: Path = PROC) -> bool:
    """Whether ``orphan`` still runs: same pid, same start time, not a zombie."""
    now = stat(orphan.pid, proc)
    return now is not None and now[2] == orphan.started and now[1] not in ENDED


def describe(orphans: list[Orphan]) -> str:
    """``pid 12 (sh), pid 13 (sleep)``: what a recovery waits for, for a message."""
    return ", ".join(f"pid {o.pid} ({o.name})" for o in orphans)
