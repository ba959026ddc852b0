"""Registry of actions: the built-ins and those registered under the ``planctl.actions`` group."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from functools import cache

from .base import (
    FAILURES,
    SHELL_QUOTE,
    STARTS_SYNC,
    SUBPROCESS,
    Action,
    ActionContext,
    ActionResult,
    SyncStart,
    builtin_schema,
    plan_schema,
)

__all__ = [
    "BUILTIN",
    "ENTRY_POINT_GROUP",
    "FAILURES",
    "SHELL_QUOTE",
    "STARTS_SYNC",
    "SUBPROCESS",
    "Action",
    "ActionContext",
    "ActionResult",
    "SyncStart",
    "builtin_schema",
    "get",
    "names",
    "plan_schema",
    "plugins",
]

ENTRY_POINT_GROUP = "planctl.actions"
BUILTIN = ("command", "shell", "http", "python")


@cache
def _builtin(name: str) -> Action:
    action: Action = importlib.import_module(f"{__name__}.{name}").ACTION
    return action


@cache
def plugins() -> Mapping[str, Action]:
    """Third-party actions; loaded only when a plan names an action that is not built in."""
    from importlib.metadata import entry_points  # ~10 ms to import: only when needed

    found: dict[str, Action] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in BUILTIN:
            continue  # built-ins cannot be replaced behind the user's back
        try:
            loaded = ep.load()
            action = loaded() if isinstance(loaded, type) else loaded
        except SystemExit as exc:  # sys.exit() in a plugin must not end planctl silently
            raise RuntimeError(f"entry point {ep.value!r} raised SystemExit: {exc}") from exc
        if not isinstance(action, Action):
            raise TypeError(f"entry point {ep.value!r} is not a planctl Action")
        found[ep.name] = action
    return found


def get(name: str) -> Action | None:
    """The action called ``name``, or None."""
    if name in BUILTIN:
        return _builtin(name)
    return plugins().get(name)


def names() -> list[str]:
    return [*BUILTIN, *sorted(plugins())]
