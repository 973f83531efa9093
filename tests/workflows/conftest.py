"""Shared fixtures for the workflow tests: async tests run on anyio's asyncio backend."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest


@pytest.fixture
def no_store_threads() -> Iterator[None]:
    """Fail the test if it leaves an SQLite state store's writer thread running (a store
    that was not shut down)."""
    yield
    leftover = [t.name for t in threading.enumerate() if t.name.startswith("minions-state-store")]
    assert leftover == [], f"state store threads left running: {leftover}"
