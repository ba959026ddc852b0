"""The `python` action."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import ActionContext, ActionResult, builtin_schema


class PythonAction:
    name = "python"
    schema: Mapping[str, Any] = builtin_schema("python")
    capabilities: frozenset[str] = frozenset()

    async def run(self, args: Any, context: ActionContext) -> ActionResult:
        raise NotImplementedError("executing actions arrives with planctl apply")


ACTION = PythonAction()
