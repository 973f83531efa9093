"""Reading a state store file without its program: read-only, creating no file, bounded.

Each test writes a real SQLite store with ``SQLiteStateStore`` in its own ``tmp_path``.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import pytest

from minions.implementations import SQLiteStateStore
from minions.ops.saved_workflows import (
    StoreReadError,
    saved_ids,
    saved_row,
    scan_rows,
    scan_saved,
)
from minions.workflows.sqlite.schema import UPSERT
from minions.workflows.state_store import StoredContext

pytestmark = pytest.mark.anyio

LIMIT = 10.0


def files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def ids(row: StoredContext) -> dict[str, Any]:
    return {"workflow_id": row.workflow_id}


async def saved(path: Path, *workflow_ids: str) -> None:
    with anyio.fail_after(LIMIT):
        async with SQLiteStateStore(path) as store:
            for workflow_id in workflow_ids:
                await store.save_context(workflow_id, "orch", workflow_id.encode())


async def test_a_closed_store_is_read_without_creating_or_changing_a_file(tmp_path: Path) -> None:
    """A store its system closed has no -wal file; reading it leaves none behind, nor a -shm
    file, and changes no byte of it."""
    path = tmp_path / "state.sqlite3"
    await saved(path, "wf-1", "wf-2")
    before = (files(tmp_path), hashlib.sha256(path.read_bytes()).hexdigest())
    assert saved_ids(path) == ["wf-1", "wf-2"]
    assert saved_row(path, "wf-2") == StoredContext("wf-2", "orch", b"wf-2")
    assert saved_row(path, "wf-3") is None
    assert scan_saved(path, ids, 10) == ([{"workflow_id": "wf-1"}, {"workflow_id": "wf-2"}], False)
    assert (files(tmp_path), hashlib.sha256(path.read_bytes()).hexdigest()) == before


async def test_a_store_in_use_is_read_with_what_its_system_committed(tmp_path: Path) -> None:
    """While a system has the store open, what it committed (still in its -wal file) is read,
    beside it and without its lock."""
    path = tmp_path / "state.sqlite3"
    with anyio.fail_after(LIMIT):
        async with SQLiteStateStore(path) as store:
            await store.save_context("wf-1", "orch", b"one")
            await store.save_context("wf-2", "orch", b"two")
            await store.delete_context("wf-1")
            assert saved_ids(path) == ["wf-2"]
            assert saved_row(path, "wf-2") == StoredContext("wf-2", "orch", b"two")


async def test_a_system_that_opens_the_store_during_a_read_is_read_again(tmp_path: Path) -> None:
    """A read of a closed store that a system opens and writes meanwhile is made again as that
    system's reader: it sees what the system committed."""
    path = tmp_path / "state.sqlite3"
    await saved(path, "wf-1")
    writer: list[sqlite3.Connection] = []

    def keep(row: StoredContext) -> dict[str, Any]:
        if not writer:  # a system starts, and commits, while the first row is read
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute(UPSERT, ("wf-2", "orch", b"two"))
            writer.append(conn)
        return ids(row)

    try:
        rows, more = scan_saved(path, keep, 10)
        assert (tmp_path / "state.sqlite3-wal").exists()
    finally:
        for conn in writer:
            conn.close()
    assert (rows, more) == ([{"workflow_id": "wf-1"}, {"workflow_id": "wf-2"}], False)


def test_a_listing_stops_at_its_limit_and_says_there_is_more() -> None:
    """Rows the caller leaves out do not count; past ``limit`` kept rows it stops."""
    rows = [StoredContext(f"wf-{n}", "orch", b"x") for n in range(10)]

    def odd(row: StoredContext) -> dict[str, Any] | None:
        return ids(row) if int(row.workflow_id[3:]) % 2 else None

    assert scan_rows(rows, odd, 5) == ([ids(r) for r in rows[1::2]], False)
    assert scan_rows(rows, odd, 4) == ([ids(r) for r in rows[1:8:2]], True)


def test_a_missing_or_foreign_file_is_a_clear_error(tmp_path: Path) -> None:
    """A file that is not there, or another program's database, is one clear error."""
    with pytest.raises(StoreReadError, match="no state store at"):
        saved_ids(tmp_path / "none.sqlite3")
    foreign = tmp_path / "other.sqlite3"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    with pytest.raises(StoreReadError, match="not a Minions state store"):
        saved_ids(foreign)
    assert files(tmp_path) == ["other.sqlite3"]
