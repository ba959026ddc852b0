"""planctl: run declarative plans that roll back everything a failed run changed.

The Python API mirrors the command line (see docs/embedding.md)::

    import planner

    loaded = planner.load_plan("plan.yaml", variables={"vm": "vm-7"})
    print(planner.format_preview(planner.preview_plan(loaded)))       # planctl plan
    store = planner.SQLiteStore(".planctl/state.db")
    outcome = planner.apply_plan(loaded, store, listener=print)       # planctl apply
    if outcome.leftovers:
        outcome = planner.rollback_run(store, outcome.run_id)         # planctl rollback
    print(outcome.status, outcome.exit_code)

Names are imported lazily so that ``planctl --help`` stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .errors import (
        Diagnostic,
        LockedError,
        PlanctlError,
        PlanError,
        StateError,
        UsageError,
    )
    from .executor import (
        ApplyOptions,
        Leftover,
        Listener,
        RunOutcome,
        apply_plan,
        resolve_secrets,
        resume_run,
        rollback_run,
    )
    from .loader import LoadedPlan, load_plan, load_text
    from .preview import PlannedCommand, PlanPreview, format_preview, preview_plan
    from .sqlite_store import SQLiteStore
    from .store import EventRecord, MemoryStore, Store

__all__ = [
    "ApplyOptions",
    "Diagnostic",
    "EventRecord",
    "Leftover",
    "Listener",
    "LoadedPlan",
    "LockedError",
    "MemoryStore",
    "PlanError",
    "PlanPreview",
    "PlanctlError",
    "PlannedCommand",
    "RunOutcome",
    "SQLiteStore",
    "StateError",
    "Store",
    "UsageError",
    "__version__",
    "apply_plan",
    "format_preview",
    "load_plan",
    "load_text",
    "preview_plan",
    "resolve_secrets",
    "resume_run",
    "rollback_run",
]

_WHERE = {
    "ApplyOptions": "executor", "Leftover": "executor", "Listener": "executor",
    "RunOutcome": "executor", "apply_plan": "executor", "resolve_secrets": "executor",
    "resume_run": "executor", "rollback_run": "executor",
    "LoadedPlan": "loader", "load_plan": "loader", "load_text": "loader",
    "PlanPreview": "preview", "PlannedCommand": "preview", "format_preview": "preview",
    "preview_plan": "preview",
    "SQLiteStore": "sqlite_store", "EventRecord": "store", "MemoryStore": "store",
    "Store": "store",
    "Diagnostic": "errors", "LockedError": "errors", "PlanError": "errors",
    "PlanctlError": "errors", "StateError": "errors", "UsageError": "errors",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'planner' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
