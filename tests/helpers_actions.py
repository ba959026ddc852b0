"""Functions that tests of the `python` action call through ``helpers_actions:<name>``."""

from __future__ import annotations

import asyncio
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
