"""Shared fixtures for the runtime-core tests: async tests run on anyio's asyncio backend."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Minions runs on asyncio (pyzmq's async API is asyncio's), so tests do too."""
    return "asyncio"
