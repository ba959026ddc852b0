"""The `http` action."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import ActionContext, ActionResult, builtin_schema


class HttpAction:
    name = "http"
    schema: Mapping[str, Any] = builtin_schema("http")
    capabilities: frozenset[str] = frozenset()

    async def run(self, args: Any, context: ActionContext) -> ActionResult:
        raise NotImplementedError("executing actions arrives with planctl apply")


ACTION = HttpAction()
