"""The `shell` action: run a script with /bin/sh."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._process import run_process
from .base import SHELL_QUOTE, SUBPROCESS, ActionContext, ActionResult, builtin_schema

SHELL = "/bin/sh"


class ShellAction:
    """Run a script with ``/bin/sh -c``; its templated values arrive already shell-quoted.

    Same result as the `command` action.
    """

    name = "shell"
    schema: Mapping[str, Any] = builtin_schema("shell")
    capabilities: frozenset[str] = frozenset({SUBPROCESS, SHELL_QUOTE})

    async def run(self, args: Any, context: ActionContext) -> ActionResult:
        return await run_process([SHELL, "-c", str(args)], context)


ACTION = ShellAction()
