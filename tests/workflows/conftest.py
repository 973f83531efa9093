"""Shared fixtures for the workflow tests: async tests run on anyio's asyncio backend."""

from __future__ import annotations

import pytest


@pytest.fixture
def anyio_backend() -> str:
    """Minions runs on asyncio, so the workflow tests do too."""
    return "asyncio"
