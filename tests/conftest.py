"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from asyncjobs import AsyncJobsServer


@pytest.fixture
def async_jobs_server() -> Iterator[AsyncJobsServer]:
    """A real async-jobs HTTP server on 127.0.0.1 (see tests/asyncjobs.py), stopped afterwards."""
    with AsyncJobsServer() as server:
        yield server
