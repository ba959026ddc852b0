"""The `shell` action."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import SUBPROCESS, ActionContext, ActionResult, builtin_schema


class ShellAction:
    name = "shell"
    schema: Mapping[str, Any] = builtin_schema("shell")
    capabilities: frozenset[str] = frozenset({SUBPROCESS})

    async def run(self, args: Any, context: ActionContext) -> ActionResult:
        raise NotImplementedError("executing actions arrives with planctl apply")


ACTION = ShellAction()
