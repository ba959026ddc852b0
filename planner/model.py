"""The plan as frozen values: Plan, CommandSpec, Operation, AsyncSpec and their settings."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import Path

__all__ = [
    "OPERATION_OPTIONS",
    "AsyncSpec",
    "CommandSpec",
    "Operation",
    "Plan",
    "SecretSpec",
    "Settings",
    "parse_duration",
]

# Keys of an operation that are not its action.
OPERATION_OPTIONS = frozenset(
    {"async", "timeout", "retries", "delay", "backoff", "failed_when", "env", "cwd", "stdin"}
)

_DURATION_PART = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)\s*")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: float | int | str) -> float:
    """Seconds from ``2.5``, ``"500ms"``, ``"1m30s"``; the schema has checked the shape."""
    if isinstance(value, int | float):
        return float(value)
    total, pos = 0.0, 0
    while pos < len(value):
        match = _DURATION_PART.match(value, pos)
        if not match:
            raise ValueError(f"not a duration: {value!r}")
        total += float(match[1]) * _UNIT[match[2]]
        pos = match.end()
    return total


@dataclass(frozen=True, slots=True)
class AsyncSpec:
    """How to follow a remote task that ``run`` started: its handle, poll and end tests."""

    handle: str
    poll: Operation
    until: str | bool
    failed_when: str | bool | None = None
    interval: float = 1.0
    max_interval: float = 30.0
    backoff: float = 1.5
    timeout: float = 3600.0
    cancel: Operation | None = None


@dataclass(frozen=True, slots=True)
class Operation:
    """One action invocation (``run``, ``inverse``, ``exists``, ``poll``, ``cancel``)."""

    action: str
    args: Any
    path: Path
    async_: AsyncSpec | None = None
    timeout: float | None = None
    retries: int = 0
    delay: float = 1.0
    backoff: float = 2.0
    failed_when: str | bool | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    stdin: str | None = None


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """A command as written in the plan (before loop expansion)."""

    id: str
    path: Path
    parent: str | None = None
    name: str | None = None
    description: str | None = None
    entity: str | None = None
    needs: tuple[str, ...] = ()
    for_each: str | list[Any] | None = None
    loop_var: str = "item"
    when: str | bool | None = None
    exists: Operation | None = None
    run: Operation | None = None
    inverse: Operation | None = None
    irreversible: bool = False
    changes: bool = True
    outputs: Mapping[str, Any] = field(default_factory=dict)
    children: tuple[CommandSpec, ...] = ()

    @property
    def undoable(self) -> bool:
        """Whether a successful run leaves something an inverse must remove."""
        return self.run is not None and self.changes and not self.irreversible


@dataclass(frozen=True, slots=True)
class Settings:
    max_parallel: int = 16
    on_failure: str = "rollback"
    lock_timeout: float = 0.0


@dataclass(frozen=True, slots=True)
class SecretSpec:
    name: str
    env: str | None = None
    file: str | None = None
    optional: bool = False


@dataclass(frozen=True)
class Plan:
    """A loaded, checked plan. ``base_dir`` anchors relative paths (cwd of subprocesses)."""

    name: str
    file: str
    base_dir: str
    commands: tuple[CommandSpec, ...]
    vars: Mapping[str, Any] = field(default_factory=dict)
    secrets: Mapping[str, SecretSpec] = field(default_factory=dict)
    settings: Settings = field(default_factory=Settings)
    description: str | None = None
    source: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def walk(self) -> Iterator[CommandSpec]:
        """Every command, depth first, in plan order."""
        stack = list(reversed(self.commands))
        while stack:
            command = stack.pop()
            yield command
            stack.extend(reversed(command.children))
