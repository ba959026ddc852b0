"""The `python` action: call a function given as ``module:function``."""

from __future__ import annotations

import asyncio
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from ..jsondata import UnstorableError, dumps, text
from .base import FAILURES, STARTS_SYNC, ActionContext, ActionResult, builtin_schema

__all__ = ["PythonAction", "ResolveError", "resolve"]

# (plan directory, path): function, is_async
_functions: dict[tuple[str | None, str], tuple[Callable[..., Any], bool]] = {}


class ResolveError(Exception):
    """The ``module:function`` of a python action cannot be imported or is not callable."""


def resolve(path: str, plan_dir: str | None = None) -> Callable[..., Any]:
    """The function named by ``path`` (``pkg.mod:func``), imported once and cached; with
    ``plan_dir``, the module must be the plan's own when one of that name is kept there."""
    return _resolve(path, plan_dir)[0]


def _resolve(path: str, plan_dir: str | None = None) -> tuple[Callable[..., Any], bool]:
    """``resolve``, and whether the function is a coroutine function."""
    known = _functions.get((plan_dir, path))
    if known is not None:
        return known
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
    except FAILURES as exc:  # any import error is reported, sys.exit() at import too
        raise ResolveError(f"cannot import {module_name}: {_describe(exc)}") from None
    if plan_dir is not None:
        _check_plan_module(module_name, plan_dir)
    found: object = getattr(module, attr, None)
    if found is None:
        raise ResolveError(f"module {module_name} has no function {attr!r}")
    if not callable(found):
        raise ResolveError(f"{path} is not callable")
    known = _functions[plan_dir, path] = (found, inspect.iscoroutinefunction(found))
    return known


def _check_plan_module(module_name: str, plan_dir: str) -> None:
    """Python keeps one module per name in a process: when the plan's directory holds
    the module but another one of that name was imported first (by a plan in another
    directory, applied earlier in this process), calling into it would be calling another
    plan's code. Say so instead."""
    top = module_name.partition(".")[0]
    for own in (os.path.join(plan_dir, top + ".py"), os.path.join(plan_dir, top, "__init__.py")):
        if os.path.isfile(own):
            break
    else:
        return  # not kept next to the plan: an installed module, the same for every plan
    loaded = getattr(sys.modules.get(top), "__file__", None)
    if loaded is not None and os.path.realpath(loaded) == os.path.realpath(own):
        return
    if loaded is None or _on_sys_path(loaded, besides=plan_dir):
        raise ResolveError(
            f"module {top} is found first elsewhere ({loaded or 'built into Python'}: "
            f"Python's own, an installed package's or another directory's on sys.path): "
            f"this plan's own {own} cannot take its name: rename it")
    raise ResolveError(
        f"module {top} was imported from {loaded} before this plan's own {own}: a process "
        f"keeps one module per name, so plans applied from one process need distinct "
        f"module names")


def _on_sys_path(file: str, besides: str) -> bool:
    """Whether ``file`` lies under an entry of ``sys.path`` other than ``besides``."""
    file, besides = os.path.realpath(file), os.path.realpath(besides)
    for entry in sys.path:
        root = os.path.realpath(entry or os.curdir)
        if root != besides and file.startswith(root.rstrip(os.sep) + os.sep):
            return True
    return False


class PythonAction:
    """Call ``pkg.mod:func`` with the given keyword arguments.

    The module is imported as usual, with the plan's directory last on ``sys.path`` for
    the run (so a module kept next to the plan is found), and the function cached for the
    process, per plan directory. A module of the plan's directory that another of the same
    name was imported before (another plan's) is refused, not called.

    A coroutine function is awaited (and cancelled after the operation's timeout). A plain
    function is called directly on the event loop, which it blocks while it runs: it must
    be quick; use an ``async def`` (or a `command`) for anything slow. Data: ``value``,
    the return value, and when that is a dict, its keys too (so ``result.x`` works;
    ``value`` stays the whole return value). An exception gives ``ok=False``, error
    ``"Type: message"`` and data ``{"exception": "Type"}``; so do SystemExit and
    KeyboardInterrupt, with error ``"python mod:func raised SystemExit: 2"``.
    """

    name = "python"
    schema: Mapping[str, Any] = builtin_schema("python")
    # A plain function ends as soon as it is called: the executor calls it inline.
    capabilities: frozenset[str] = frozenset({STARTS_SYNC})

    async def run(self, args: Any, context: ActionContext) -> ActionResult:
        started = self.start(args, context)
        return started if isinstance(started, ActionResult) else await started

    def start(self, args: Any, context: ActionContext
              ) -> ActionResult | Coroutine[Any, Any, ActionResult]:
        """Call a plain function now; a coroutine function (or a plain one returning an
        awaitable) gives the coroutine that awaits it under the timeout."""
        path, kwargs = _call(args)
        try:
            function, is_async = _resolve(path, context.plan_dir)
        except ResolveError as exc:
            return ActionResult(False, {}, str(exc))
        if is_async:
            return _await(lambda: function(**kwargs), context.timeout, path)
        try:
            value = function(**kwargs)
        except FAILURES as exc:  # the function's error is the result
            return _failure(exc, path)
        if type(value) not in _PLAIN and inspect.isawaitable(value):
            return _await(lambda: value, context.timeout, path)  # a sync wrapper returning one
        return _success(value, path)

    def prepare(self, args: Any, context: ActionContext
                ) -> Callable[[], ActionResult | Coroutine[Any, Any, ActionResult]]:
        """``start`` with these arguments, made again and again (the polls of an async
        task): the function is found and its arguments read once."""
        path, kwargs = _call(args)
        try:
            function, is_async = _resolve(path, context.plan_dir)
        except ResolveError:
            return lambda: self.start(args, context)  # fails the same way each time
        if is_async and context.timeout is None:
            return lambda: _await_call(function, kwargs, path)
        return lambda: self.start(args, context)


def _call(args: Any) -> tuple[str, dict[str, Any]]:
    """The function's ``module:function`` and keyword arguments, from either form."""
    if type(args) is str:
        return args, {}
    if type(args) is dict or isinstance(args, Mapping):
        return str(args["function"]), dict(args.get("kwargs") or {})
    return str(args), {}


async def _await_call(function: Callable[..., Any], kwargs: dict[str, Any], path: str
                      ) -> ActionResult:
    """A coroutine function's result, with no timeout (``_await`` with one)."""
    try:
        value = await function(**kwargs)
    except FAILURES as exc:  # the function's error is the result
        return _failure(exc, path)
    return _success(value, path)


# Return values that are surely not awaitable (``inspect.isawaitable`` costs more).
_PLAIN = frozenset({type(None), bool, int, float, str, dict, list, tuple})


async def _await(call: Callable[[], Any], timeout: float | None, path: str) -> ActionResult:
    if timeout is None:
        try:
            value = call()
            if inspect.isawaitable(value):
                value = await value
        except FAILURES as exc:  # the function's error is the result
            return _failure(exc, path)
        return _success(value, path)
    deadline = asyncio.timeout(timeout)
    try:
        async with deadline:
            value = call()
            if inspect.isawaitable(value):
                value = await value
    except TimeoutError as exc:
        if not deadline.expired():  # the function's own TimeoutError
            return _failure(exc, path)
        return ActionResult(False, {"timed_out": True}, f"timed out after {timeout:g}s")
    except FAILURES as exc:  # the function's error is the result
        return _failure(exc, path)
    return _success(value, path)


def _success(value: Any, path: str) -> ActionResult:
    # Checked once, here: a value the state store cannot write would otherwise end the
    # run when the step's outcome is committed.
    try:
        dumps(value)
    except UnstorableError as exc:
        return ActionResult(False, {}, f"python {path} returned a value planctl cannot "
                                       f"store as JSON: {exc}")
    data: dict[str, Any] = {}
    if isinstance(value, dict):
        data.update(value)
    data["value"] = value
    return ActionResult(True, data)


def _failure(exc: BaseException, path: str) -> ActionResult:
    said = _describe(exc)
    if not isinstance(exc, Exception):  # SystemExit, KeyboardInterrupt: say who raised it
        said = f"python {path} raised {said}"
    return ActionResult(False, {"exception": type(exc).__name__}, said)


def _describe(exc: BaseException) -> str:
    message = text(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


ACTION = PythonAction()
