"""The Action protocol: what every built-in or plugin action declares and implements."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "FAILURES",
    "SHELL_QUOTE",
    "STARTS_SYNC",
    "SUBPROCESS",
    "Action",
    "ActionContext",
    "ActionResult",
    "SyncStart",
    "builtin_schema",
    "plan_schema",
]

# Capability: the action starts a subprocess, so `env`, `cwd` and `stdin` apply to it and
# it receives the PLANCTL_* environment variables.
SUBPROCESS = "subprocess"
# Capability: the core renders this action's templates with shell quoting (every templated
# value is quoted for where it stands: one word, or escaped inside quotes), because the
# arguments are a script for /bin/sh.
SHELL_QUOTE = "shell-quote"
# Capability: the action also has ``start`` (see ``SyncStart``), which finishes quick work
# at once: the executor then runs it inline, without a task and loop turns of its own.
STARTS_SYNC = "starts-sync"

# What a plan's own code (a python function, a plugin action) may raise that fails its
# step, never the run: any exception, and SystemExit and KeyboardInterrupt, which
# `sys.exit()` or argparse inside a function raise. Not asyncio.CancelledError: that is
# how planctl itself stops a step (timeout, interruption).
FAILURES: tuple[type[BaseException], ...] = (Exception, SystemExit, KeyboardInterrupt)


@cache
def plan_schema() -> Mapping[str, Any]:
    """The JSON Schema of plans shipped in the package (built-in actions included)."""
    text = resources.files("planner").joinpath("schemas").joinpath("plan.schema.json").read_text(
        "utf-8"
    )
    schema: Mapping[str, Any] = json.loads(text)
    return schema


def builtin_schema(name: str) -> Mapping[str, Any]:
    """The argument schema of a built-in action, as written in the plan schema."""
    schema: Mapping[str, Any] = plan_schema()["$defs"][f"action.{name}"]
    return schema


@dataclass(frozen=True, slots=True)
class ActionContext:
    """Everything an action may use besides its arguments."""

    run_id: str
    command_id: str
    execution_reason: str
    idempotency_key: str
    cwd: str
    env: Mapping[str, str] = field(default_factory=dict)
    stdin: str | None = None
    timeout: float | None = None
    plan_dir: str | None = None  # the plan's directory, on sys.path (last) during its run
    # The text with the run's secrets masked as ***: for an action that quotes an excerpt
    # of what it got in an error, to mask it before cutting it short (a secret cut in
    # two would no longer be recognised, and its first characters shown).
    mask: Callable[[str], str] = str


@dataclass(frozen=True, slots=True)
class ActionResult:
    """What an action returns; ``data`` is exposed to templates as ``result``."""

    ok: bool
    data: Mapping[str, Any]
    error: str | None = None


@runtime_checkable
class Action(Protocol):
    """An action: a name, an argument schema, capabilities, and a coroutine that runs it."""

    name: str
    schema: Mapping[str, Any]
    capabilities: frozenset[str]

    async def run(self, args: Any, context: ActionContext) -> ActionResult: ...


class SyncStart(Protocol):
    """What an action with the ``starts-sync`` capability adds to ``Action``."""

    def start(self, args: Any, context: ActionContext
              ) -> ActionResult | Coroutine[Any, Any, ActionResult]:
        """Do what ``run`` does: return its result when the work ended at once, else the
        coroutine that finishes it (awaited exactly once, like ``run``)."""
        ...

    # Optional: ``prepare(args, context)`` returns a function of no arguments that does
    # what ``start(args, context)`` does, for a call made many times (the polls of an async
    # task), doing once what does not change between calls.
