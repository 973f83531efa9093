"""Fixtures of the isolation tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from isolation import Zygote


@pytest.fixture
async def zygote(tmp_path: Path) -> AsyncIterator[Zygote]:
    """A zygote with its socket directory under the test's tmp_path, closed (children killed
    and reaped) after the test."""
    zygote = Zygote.start(run_dir=tmp_path / "run")
    try:
        yield zygote
    finally:
        with anyio.fail_after(15):
            await zygote.aclose()
