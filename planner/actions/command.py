"""The `command` action: run an argv list without a shell."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._process import run_process
from .base import SUBPROCESS, ActionContext, ActionResult, builtin_schema


def argv_of(args: Any) -> list[str]:
    """The argv strings of rendered ``command`` arguments; booleans become true/false."""
    items = args if isinstance(args, list | tuple) else [args]
    return [("true" if item else "false") if isinstance(item, bool) else str(item)
            for item in items]


class CommandAction:
    """Run a program directly (no shell); ok when it exits with status 0.

    Data: ``rc``, ``stdout``, ``stderr``, and ``json`` when stdout is a JSON object or
    array. On timeout or cancellation the program's whole process group is killed.
    """

    name = "command"
    schema: Mapping[str, Any] = builtin_schema("command")
    capabilities: frozenset[str] = frozenset({SUBPROCESS})

    async def run(self, args: Any, context: ActionContext) -> ActionResult:
        return await run_process(argv_of(args), context)


ACTION = CommandAction()
