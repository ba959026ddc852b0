"""Functions that tests of the `python` action call through ``helpers_actions:<name>``."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

calls: list[dict[str, Any]] = []


def add(a: int, b: int) -> int:
    """Return ``a + b`` (a quick sync function)."""
    calls.append({"a": a, "b": b})
    return a + b


async def slow_echo(value: Any, delay: float = 0.01) -> Any:
    """Return ``value`` after ``delay`` seconds without blocking the loop."""
    await asyncio.sleep(delay)
    return value


def make_vm(name: str) -> dict[str, Any]:
    """Return a dict, whose keys the action exposes as ``result.<key>``."""
    return {"uuid": f"uuid-{name}", "name": name}


def explode(message: str = "bad disk") -> None:
    """Raise ValueError(message)."""
    raise ValueError(message)


async def explode_later(message: str = "lost the job") -> None:
    """Raise ValueError(message) after yielding to the loop once."""
    await asyncio.sleep(0)
    raise ValueError(message)


def own_timeout() -> None:
    """Raise a TimeoutError of its own (not the action's timeout)."""
    raise TimeoutError("remote side timed out")


not_callable = 42


class _Unprintable:
    def __str__(self) -> str:
        raise ValueError("no text")


def unstorable(kind: str) -> Any:
    """Return a value the state store cannot write as JSON, of the given ``kind``."""
    if kind == "tuple-key":
        return {(1, 2): "b"}
    if kind == "huge-int":
        return 10**5000
    if kind == "itself":
        value: dict[str, Any] = {}
        value["self"] = value
        return value
    if kind == "unprintable":
        return [_Unprintable()]
    if kind == "nan":
        return {"v": float("nan")}
    raise AssertionError(kind)


async def unstorable_later(kind: str) -> Any:
    """``unstorable``, from a coroutine function."""
    await asyncio.sleep(0)
    return unstorable(kind)


def surrogate() -> None:
    """Raise with a message holding a lone surrogate (a file name that is not UTF-8)."""
    raise RuntimeError("cannot open " + os.fsdecode(b"disk-\xff.img"))


def exits(code: int = 5) -> None:
    """Call ``sys.exit(code)``, as a function using argparse may."""
    sys.exit(code)


async def exits_later(code: int = 6) -> None:
    """``exits``, from a coroutine function."""
    await asyncio.sleep(0)
    sys.exit(code)


def interrupts() -> None:
    """Raise KeyboardInterrupt."""
    raise KeyboardInterrupt
