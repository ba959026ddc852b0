"""The `python` action: call a function given as ``module:function``."""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from .base import ActionContext, ActionResult, builtin_schema

__all__ = ["PythonAction", "ResolveError", "resolve"]

_functions: dict[str, Callable[..., Any]] = {}


class ResolveError(Exception):
    """The ``module:function`` of a python action cannot be imported or is not callable."""


def resolve(path: str) -> Callable[..., Any]:
    """The function named by ``path`` (``pkg.mod:func``), imported once and cached."""
    function = _functions.get(path)
    if function is not None:
        return function
    module_name, sep, attr = path.partition(":")
    if not sep or not module_name or not attr:
        raise ResolveError(f"expected `module:function`, got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == module_name or module_name.startswith(missing + "."):
            raise ResolveError(f"module not found: {module_name}") from None
        raise ResolveError(f"cannot import {module_name}: {_describe(exc)}") from None
    except Exception as exc:
        raise ResolveError(f"cannot import {module_name}: {_describe(exc)}") from None
    found: object = getattr(module, attr, None)
    if found is None:
        raise ResolveError(f"module {module_name} has no function {attr!r}")
    if not callable(found):
        raise ResolveError(f"{path} is not callable")
    _functions[path] = found
    return found


class PythonAction:
    """Call ``pkg.mod:func`` with the given keyword arguments.

    The module is imported as usual, with the plan's directory first on ``sys.path`` for
    the run (so a module kept next to the plan is found), and cached for the process.

    A coroutine function is awaited (and cancelled after the operation's timeout). A plain
    function is called directly on the event loop, which it blocks while it runs: it must
    be quick; use an ``async def`` (or a `command`) for anything slow. Data: ``value``,
    the return value, and when that is a dict, its keys too (so ``result.x`` works;
    ``value`` stays the whole return value). An exception gives ``ok=False``, error
    ``"Type: message"`` and data ``{"exception": "Type"}``.
    """

    name = "python"
    schema: Mapping[str, Any] = builtin_schema("python")
    capabilities: frozenset[str] = frozenset()

    async def run(self, args: Any, context: ActionContext) -> ActionResult:
        if isinstance(args, Mapping):
            path, kwargs = str(args["function"]), dict(args.get("kwargs") or {})
        else:
            path, kwargs = str(args), {}
        try:
            function = resolve(path)
        except ResolveError as exc:
            return ActionResult(False, {}, str(exc))
        deadline = asyncio.timeout(context.timeout)
        try:
            async with deadline:
                value = function(**kwargs)
                if inspect.isawaitable(value):  # async def, or a sync wrapper returning one
                    value = await value
        except TimeoutError as exc:
            if not deadline.expired():  # the function's own TimeoutError
                return _failure(exc)
            return ActionResult(False, {"timed_out": True}, f"timed out after {context.timeout:g}s")
        except Exception as exc:
            return _failure(exc)
        data: dict[str, Any] = {}
        if isinstance(value, dict):
            data.update(value)
        data["value"] = value
        return ActionResult(True, data)


def _failure(exc: Exception) -> ActionResult:
    return ActionResult(False, {"exception": type(exc).__name__}, _describe(exc))


def _describe(exc: BaseException) -> str:
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


ACTION = PythonAction()
