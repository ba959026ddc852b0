"""planctl: run declarative plans that roll back everything a failed run changed.

The Python API mirrors the command line::

    import planner

    loaded = planner.load_plan("plan.yaml", variables={"vm": "vm-7"})
    store = planner.SQLiteStore(".planctl/state.db")
    outcome = planner.apply_plan(loaded, store, listener=print)
    print(outcome.status, outcome.exit_code)

Names are imported lazily so that ``planctl --help`` stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .errors import LockedError, PlanctlError, PlanError, StateError, UsageError
    from .executor import ApplyOptions, RunOutcome, apply_plan
    from .loader import LoadedPlan, load_plan, load_text
    from .sqlite_store import SQLiteStore
    from .store import EventRecord, MemoryStore

__all__ = [
    "ApplyOptions",
    "EventRecord",
    "LoadedPlan",
    "LockedError",
    "MemoryStore",
    "PlanError",
    "PlanctlError",
    "RunOutcome",
    "SQLiteStore",
    "StateError",
    "UsageError",
    "__version__",
    "apply_plan",
    "load_plan",
    "load_text",
]

_WHERE = {
    "ApplyOptions": "executor", "RunOutcome": "executor", "apply_plan": "executor",
    "LoadedPlan": "loader", "load_plan": "loader", "load_text": "loader",
    "SQLiteStore": "sqlite_store", "EventRecord": "store", "MemoryStore": "store",
    "LockedError": "errors", "PlanError": "errors", "PlanctlError": "errors",
    "StateError": "errors", "UsageError": "errors",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'planner' has no attribute {name!r}")
