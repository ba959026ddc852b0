"""Functions the benchmarks' plans call through the `python` action."""

from __future__ import annotations

import asyncio
import time
from typing import Any

_JOBS: dict[str, float] = {}


def noop() -> None:
    """Does nothing: the chain benchmark measures the engine, not the work."""


def fail() -> None:
    raise RuntimeError("planned failure")


def start_job(name: str, seconds: float) -> dict[str, Any]:
    """Start a simulated remote job that finishes ``seconds`` from now; returns its handle."""
    _JOBS[name] = time.monotonic() + seconds
    return {"id": name}


async def job_status(handle: str) -> dict[str, Any]:
    """Poll a simulated job."""
    await asyncio.sleep(0)
    return {"done": time.monotonic() >= _JOBS[handle]}
