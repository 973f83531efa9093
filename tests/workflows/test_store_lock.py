"""One system per state store file: the store's own lock, whatever starts the system.

Two systems on one store would both resume the same checkpoints, so both would run the same
workflows. The SQLite store locks ``<file>.lock`` when it opens; a second store on the file —
in this process (a second ``Runtime``), or in another process (a real child here) — is refused
with ``StateStoreInUse`` naming the holder, and a holder killed with SIGKILL leaves no stale lock.
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import anyio
import pytest

from minions import Gru, Runtime
from minions.exceptions import StartupError, StateStoreInUse
from minions.implementations import SQLiteStateStore
from minions.workflows.sqlite.store import default_state_path

from .test_board import Steps

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_store_threads")]

LIMIT = 30.0

HOLDER = """
import asyncio, sys
from minions.implementations import SQLiteStateStore

async def main():
    store = SQLiteStateStore(sys.argv[1])
    await store.startup()
    print("open", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_a_second_store_on_one_file_is_refused_until_the_first_closes(
    tmp_path: Path,
) -> None:
    """In one process, a second store on the same file is refused (saying it is this
    process's), and opens once the first one is closed."""
    path = tmp_path / "state.sqlite3"
    with anyio.fail_after(LIMIT):
        async with SQLiteStateStore(path) as first:
            await first.save_context("wf-1", "orch", b"saved")
            second = SQLiteStateStore(path)
            try:
                with pytest.raises(StateStoreInUse, match="this process") as refused:
                    await second.get_all_contexts()
                assert str(path) in str(refused.value) and not refused.value.retryable
            finally:
                await second.aclose()
        async with SQLiteStateStore(path) as again:
            assert [row.workflow_id for row in await again.get_all_contexts()] == ["wf-1"]


async def test_a_second_runtime_on_the_same_store_does_not_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second ``Runtime`` whose workflow minions would use the same store file (the project's
    default one) fails to start, with the reason; the first runs on."""
    monkeypatch.setenv("MINIONS_PROJECT_DIR", str(tmp_path))
    with anyio.fail_after(LIMIT):
        async with Runtime(project_dir=tmp_path) as first:
            await first.start(Steps)
            async with Runtime(project_dir=tmp_path) as second:
                with pytest.raises(StartupError, match="in use by another Minions system"):
                    await second.start(Steps)
            assert first.status()["Steps"].state.value == "running"


async def test_a_store_held_by_another_process_is_refused_and_freed_when_it_is_killed(
    tmp_path: Path,
) -> None:
    """While another process has the store open, ``Gru.create`` on it is refused, naming that
    process; once it is killed with SIGKILL, the store opens at once (no stale lock)."""
    path = default_state_path(tmp_path)
    with anyio.fail_after(LIMIT):
        async with await anyio.open_process([sys.executable, "-c", HOLDER, str(path)]) as holder:
            try:
                assert holder.stdout is not None
                assert (await holder.stdout.receive()).strip() == b"open"
                with pytest.raises(StateStoreInUse, match=f"pid {holder.pid}"):
                    await Gru.create(logger=None, metrics=None, project_dir=tmp_path)
            finally:
                holder.kill()
                await holder.wait()
        assert holder.returncode == -signal.SIGKILL
        gru = await Gru.create(logger=None, metrics=None, project_dir=tmp_path)
        await gru.shutdown()
