"""SQLiteStateStore on real files: durability, group commit, error translation, closing.

Every test uses its own database under ``tmp_path``. Where a test needs the writer to be busy
(to show grouping, or pending writes at close), a second sqlite3 connection holds the
database's write lock: the store's transaction then waits in SQLite's busy handler, and the
test decides exactly when it may proceed. Nothing sleeps.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import dataclasses
import fcntl
import gc
import json
import os
import select
import signal
import sqlite3
import statistics
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import pytest

from minions.workflows.sqlite.store import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    SQLiteStateStore,
    SQLiteStoreStatistics,
    default_state_path,
)
from minions.workflows.state_store import (
    StateStoreClosed,
    StateStoreCorrupt,
    StateStoreError,
    StateStoreFull,
    StateStoreLocked,
    StateStoreReadOnly,
    StoredContext,
    UnsupportedSchema,
)

pytestmark = pytest.mark.anyio

THREAD_PREFIX = "minions-state-store"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "state.sqlite3"


@pytest.fixture
async def store(db: Path) -> AsyncIterator[SQLiteStateStore]:
    subject = SQLiteStateStore(db)
    with anyio.fail_after(10):
        await subject.startup()
    try:
        yield subject
    finally:
        await subject.aclose()


@contextlib.contextmanager
def write_lock_held(db: Path) -> Iterator[Callable[[], None]]:
    """Hold the database's write lock from another connection; yield a function releasing it
    early. It is released at the end of the block at the latest."""
    other = sqlite3.connect(db, isolation_level=None)

    def release() -> None:
        if other.in_transaction:
            other.execute("ROLLBACK")

    try:
        other.execute("BEGIN IMMEDIATE")
        yield release
    finally:
        release()
        other.close()


def raw_rows(db: Path) -> list[tuple[str, str, bytes]]:
    """The rows as another program sees them, after checking the file's integrity."""
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = conn.execute(
            "SELECT workflow_id, orchestration_id, context FROM contexts ORDER BY rowid"
        ).fetchall()
    finally:
        conn.close()
    return [(w, o, bytes(c)) for w, o, c in rows]


def overwrite(path: Path, data: bytes, offset: int = 0) -> None:
    with path.open("r+b" if path.exists() else "wb") as file:
        file.seek(offset)
        file.write(data)


def scramble_after(path: Path, offset: int) -> None:
    size = path.stat().st_size
    overwrite(path, bytes((i * 7 + 13) % 251 for i in range(size - offset)), offset=offset)


def store_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(THREAD_PREFIX)]


# -- files, schema, durability ------------------------------------------------------------------


async def test_default_path_is_the_project_state_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a path the store lives in <project>/.minions/state.sqlite3, created on start;
    the path is fixed when the store is built, not when the directory changes later."""
    monkeypatch.chdir(tmp_path)
    store = SQLiteStateStore()
    monkeypatch.chdir(Path(tmp_path.anchor))
    try:
        assert store.path == tmp_path / ".minions" / "state.sqlite3"
        assert default_state_path(tmp_path) == store.path
        with anyio.fail_after(10):
            await store.save_context("wf", "orch", b"x")
        assert store.path.is_file()
    finally:
        await store.aclose()


async def test_file_is_wal_and_versioned(store: SQLiteStateStore, db: Path) -> None:
    """The file is in WAL mode and carries Minions' application id and schema version."""
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert conn.execute("PRAGMA application_id").fetchone() == (APPLICATION_ID,)
    finally:
        conn.close()


async def test_rows_survive_closing_and_reopening(db: Path) -> None:
    """What was saved (and not deleted) is there when the file is opened again."""
    first = SQLiteStateStore(db)
    with anyio.fail_after(10):
        await first.save_context("wf-1", "orch", b"one")
        await first.save_context("wf-2", "orch", b"two")
        await first.delete_context("wf-1")
        await first.aclose()
    assert raw_rows(db) == [("wf-2", "orch", b"two")]
    second = SQLiteStateStore(db)
    try:
        with anyio.fail_after(10):
            assert await second.get_all_contexts() == [StoredContext("wf-2", "orch", b"two")]
    finally:
        await second.aclose()


KILLED_WRITER = """
import asyncio, os, signal, sys
from minions.workflows.sqlite.store import SQLiteStateStore

async def main():
    store = SQLiteStateStore(sys.argv[1])
    await asyncio.gather(
        *(store.save_context(f"wf-{i}", "orch", b"payload %d" % i) for i in range(200))
    )
    await store.delete_context("wf-0")
    await store.save_context("last", "orch", b"saved right before SIGKILL")
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


async def test_awaited_writes_survive_sigkill_right_after(db: Path) -> None:
    """A process SIGKILLed the instant its save's await returns loses nothing: the rows it
    awaited are in the file, which passes SQLite's integrity check."""
    with anyio.fail_after(30):
        result = await anyio.run_process(
            [sys.executable, "-c", KILLED_WRITER, str(db)], check=False
        )
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    rows = raw_rows(db)
    assert len(rows) == 200
    assert ("last", "orch", b"saved right before SIGKILL") in rows
    assert "wf-0" not in {w for w, _, _ in rows}
    assert ("wf-199", "orch", b"payload 199") in rows


async def test_concurrent_saves_from_many_tasks_are_all_durable(db: Path) -> None:
    """A thousand tasks saving at once each get their row committed, in fewer transactions."""
    store = SQLiteStateStore(db)
    try:
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                for i in range(1000):
                    tg.start_soon(store.save_context, f"wf-{i}", f"orch-{i % 3}", b"%d" % i)
            stats = store.statistics()
            assert len(await store.get_contexts_for_orchestration("orch-1")) == 333
    finally:
        await store.aclose()
    assert stats.rows == 1000 and stats.pending == 0
    assert stats.commits < 1000
    rows = raw_rows(db)
    assert sorted(w for w, _, _ in rows) == sorted(f"wf-{i}" for i in range(1000))


# -- group commit -------------------------------------------------------------------------------


async def test_saves_arriving_during_a_commit_share_the_next_transaction(
    store: SQLiteStateStore, db: Path
) -> None:
    """While a transaction is under way (here: waiting for a lock another connection holds),
    every save that arrives is queued and committed together in the next single transaction:
    100 saves take at most 2 commits, and each caller returns only after its row committed."""
    before = store.statistics()
    with write_lock_held(db) as release, anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for i in range(100):
                tg.start_soon(store.save_context, f"wf-{i}", "orch", b"x")
            await anyio.wait_all_tasks_blocked()
            assert store.statistics().pending == 100
            assert store.statistics().commits == before.commits
            release()
    after = store.statistics()
    assert after.pending == 0
    assert after.rows - before.rows == 100
    assert after.commits - before.commits <= 2
    assert after.largest_batch >= 50
    assert len(raw_rows(db)) == 100


async def test_an_idle_save_commits_at_once(store: SQLiteStateStore) -> None:
    """With nothing else queued a save is committed alone and immediately: no batching delay.
    (Generous bound: the median time a save spends beyond its own commit stays far below any
    batching window worth having.)"""
    before = store.statistics()
    overheads = []
    for i in range(30):
        started = time.perf_counter()
        with anyio.fail_after(5):
            await store.save_context(f"wf-{i}", "orch", b"x")
        elapsed = time.perf_counter() - started
        latency = store.statistics().last_commit_latency
        assert latency is not None
        overheads.append(elapsed - latency)
    after = store.statistics()
    assert after.commits - before.commits == 30
    assert after.largest_batch == 1
    assert statistics.median(overheads) < 0.02


async def test_writes_in_one_batch_apply_in_submission_order(
    store: SQLiteStateStore, db: Path
) -> None:
    """Saves and deletes of one workflow queued together take effect in the order submitted."""
    with write_lock_held(db) as release, anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.save_context, "wf-1", "orch", b"first")
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(store.delete_context, "wf-1")
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(store.save_context, "wf-1", "orch", b"third")
            tg.start_soon(store.save_context, "wf-2", "orch", b"kept")
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(store.delete_context, "wf-2")
            await anyio.wait_all_tasks_blocked()
            release()
    assert raw_rows(db) == [("wf-1", "orch", b"third")]


async def test_statistics_is_a_frozen_snapshot_and_repr_shows_state(db: Path) -> None:
    """statistics() cannot be changed by its reader; repr names the state and the file."""
    store = SQLiteStateStore(db)
    assert store.statistics().state == "new"
    with anyio.fail_after(10):
        await store.save_context("wf", "orch", b"x")
    stats = store.statistics()
    assert isinstance(stats, SQLiteStoreStatistics)
    assert (stats.state, stats.commits, stats.rows, stats.pending) == ("open", 1, 1, 0)
    assert stats.last_commit_latency is not None and stats.last_commit_latency > 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.commits = 5  # type: ignore[misc]
    assert repr(store) == f"<SQLiteStateStore open {db}, 1 commits, 0 pending>"
    await store.aclose()
    assert repr(store).startswith("<SQLiteStateStore closed ")


# -- errors -------------------------------------------------------------------------------------


FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_IMMUTABLE_FL = 0x80086601, 0x40086602, 0x10


def _set_immutable(path: Path, on: bool) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        flags = array.array("l", [0])
        fcntl.ioctl(fd, FS_IOC_GETFLAGS, flags, True)
        flags[0] = flags[0] | FS_IMMUTABLE_FL if on else flags[0] & ~FS_IMMUTABLE_FL
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, flags, True)
    finally:
        os.close(fd)


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[None]:
    """Make a directory unwritable, also for root (who ignores modes): the immutable flag."""
    directory.chmod(0o555)
    immutable = False
    try:
        if os.geteuid() == 0:
            try:
                _set_immutable(directory, True)
            except OSError as exc:
                pytest.skip(f"root cannot make a directory read-only here: {exc}")
            immutable = True
        yield
    finally:
        if immutable:
            _set_immutable(directory, False)
        directory.chmod(0o755)


async def test_read_only_directory_is_a_clear_error_and_heals(tmp_path: Path) -> None:
    """A store in a directory that cannot be written fails with StateStoreReadOnly naming the
    path and the fix; once the directory is writable the same store works (open is retried)."""
    directory = tmp_path / "locked-down"
    directory.mkdir()
    store = SQLiteStateStore(directory / "state.sqlite3")
    nested = SQLiteStateStore(directory / "sub" / "state.sqlite3")
    try:
        with read_only(directory):
            for subject in (store, nested):
                with anyio.fail_after(10), pytest.raises(StateStoreReadOnly) as info:
                    await subject.save_context("wf", "orch", b"x")
                assert str(subject.path) in str(info.value)
                assert "writable" in str(info.value)
                assert info.value.retryable
                assert isinstance(info.value.__cause__, sqlite3.Error | OSError)
        with anyio.fail_after(10):
            await store.save_context("wf", "orch", b"x")
            assert await store.get_all_contexts() == [StoredContext("wf", "orch", b"x")]
    finally:
        await store.aclose()
        await nested.aclose()


async def test_existing_store_in_a_directory_made_read_only(tmp_path: Path) -> None:
    """Reopening a store whose directory became read-only fails clearly (WAL needs its side
    files), instead of crashing or hanging."""
    directory = tmp_path / "later-read-only"
    directory.mkdir()
    first = SQLiteStateStore(directory / "state.sqlite3")
    with anyio.fail_after(10):
        await first.save_context("wf", "orch", b"x")
        await first.aclose()
    second = SQLiteStateStore(directory / "state.sqlite3")
    try:
        with read_only(directory), anyio.fail_after(10), pytest.raises(StateStoreReadOnly):
            await second.save_context("wf-2", "orch", b"y")
    finally:
        await second.aclose()


async def test_path_under_a_regular_file_is_a_clear_error(tmp_path: Path) -> None:
    """A path whose parent is a file cannot be created: StateStoreReadOnly, from the OSError."""
    (tmp_path / "a-file").write_text("not a directory")
    store = SQLiteStateStore(tmp_path / "a-file" / "state.sqlite3")
    try:
        with anyio.fail_after(10), pytest.raises(StateStoreReadOnly, match="a-file") as info:
            await store.startup()
        assert isinstance(info.value.__cause__, OSError)
    finally:
        await store.aclose()


async def test_garbage_file_is_reported_corrupt(db: Path) -> None:
    """A file that is not a database is StateStoreCorrupt, naming the file and what to do."""
    overwrite(db, b"definitely not an SQLite database " * 200)
    store = SQLiteStateStore(db)
    try:
        with anyio.fail_after(10), pytest.raises(StateStoreCorrupt) as info:
            await store.save_context("wf", "orch", b"x")
    finally:
        await store.aclose()
    message = str(info.value)
    assert str(db) in message and "Move the file aside" in message
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)
    assert not info.value.retryable


async def test_damaged_pages_are_reported_corrupt(db: Path) -> None:
    """A database whose header is intact but whose data pages are damaged opens, then reads
    and writes fail with StateStoreCorrupt rather than returning garbage."""
    first = SQLiteStateStore(db)
    with anyio.fail_after(10):
        for i in range(100):
            await first.save_context(f"wf-{i}", "orch", bytes(range(256)))
        await first.aclose()
    scramble_after(db, 4096)  # page 1 (header and schema) stays intact
    second = SQLiteStateStore(db)
    try:
        with anyio.fail_after(10):
            with pytest.raises(StateStoreCorrupt, match="malformed"):
                await second.get_all_contexts()
            with pytest.raises(StateStoreCorrupt):
                await second.save_context("wf-1", "orch", b"x")
    finally:
        await second.aclose()


async def test_newer_schema_is_refused(db: Path) -> None:
    """A file written by a newer Minions (higher schema version) is refused, saying so."""
    first = SQLiteStateStore(db)
    with anyio.fail_after(10):
        await first.startup()
        await first.aclose()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    store = SQLiteStateStore(db)
    try:
        with anyio.fail_after(10), pytest.raises(UnsupportedSchema, match="newer Minions"):
            await store.startup()
    finally:
        await store.aclose()


async def test_another_programs_database_is_refused(db: Path, tmp_path: Path) -> None:
    """An SQLite file Minions did not create is left untouched and refused."""
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    conn.commit()
    conn.close()
    other = tmp_path / "other-app.sqlite3"
    conn = sqlite3.connect(other)
    conn.execute("PRAGMA application_id=12345")
    conn.commit()
    conn.close()
    for path, expected in ((db, "did not create"), (other, "another program")):
        store = SQLiteStateStore(path)
        try:
            with anyio.fail_after(10), pytest.raises(UnsupportedSchema, match=expected):
                await store.startup()
        finally:
            await store.aclose()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("invoices",)]
    conn.close()


async def test_lock_held_too_long_is_retryable_and_heals(db: Path) -> None:
    """When another connection keeps the write lock past busy_timeout the save fails with a
    retryable StateStoreLocked; once the lock is gone the same store saves again."""
    store = SQLiteStateStore(db, busy_timeout=0.2)
    try:
        with anyio.fail_after(10):
            await store.startup()
        with (
            write_lock_held(db),
            anyio.fail_after(10),
            pytest.raises(StateStoreLocked, match="write lock") as info,
        ):
            await store.save_context("wf", "orch", b"x")
        assert info.value.retryable
        assert store.statistics().failed_commits == 1
        with anyio.fail_after(10):
            await store.save_context("wf", "orch", b"x")
            assert len(await store.get_all_contexts()) == 1
    finally:
        await store.aclose()


async def test_full_store_is_reported_and_keeps_working(db: Path) -> None:
    """Beyond max_bytes a save fails with StateStoreFull; rows already committed stay, and
    deletes and smaller saves still work (a full disk behaves the same way)."""
    store = SQLiteStateStore(db, max_bytes=65536)
    saved = 0
    try:
        with anyio.fail_after(20), pytest.raises(StateStoreFull, match="max_bytes") as info:
            for saved in range(100):
                await store.save_context(f"wf-{saved}", "orch", b"z" * 10_000)
        assert info.value.retryable
        with anyio.fail_after(10):
            rows = await store.get_all_contexts()
            assert len(rows) == saved
            await store.delete_context("wf-0")
            await store.save_context("small", "orch", b"fits")
    finally:
        await store.aclose()
    assert 0 < saved < 100
    assert len(raw_rows(db)) == saved


async def test_an_oversized_row_fails_alone_and_reads_still_work(db: Path) -> None:
    """When one row of a group commit does not fit, only its caller gets StateStoreFull: the
    rows batched with it are committed, and a read queued with them is answered."""
    store = SQLiteStateStore(db, max_bytes=65536)
    outcomes: dict[str, object] = {}

    async def run(name: str, operation: Callable[[], Awaitable[object]]) -> None:
        try:
            outcomes[name] = await operation()
        except StateStoreError as exc:
            outcomes[name] = exc

    try:
        with anyio.fail_after(10):
            await store.save_context("existing", "orch", b"e")
        with write_lock_held(db) as release, anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run, "small-1", lambda: store.save_context("s1", "orch", b"x"))
                await anyio.wait_all_tasks_blocked()
                # Everything below queues behind the blocked transaction: one batch.
                tg.start_soon(run, "huge", lambda: store.save_context("h", "orch", b"z" * 200_000))
                tg.start_soon(run, "small-2", lambda: store.save_context("s2", "orch", b"y"))
                tg.start_soon(run, "read", store.get_all_contexts)
                await anyio.wait_all_tasks_blocked()
                release()
    finally:
        await store.aclose()
    assert isinstance(outcomes["huge"], StateStoreFull)
    assert outcomes["small-1"] is None and outcomes["small-2"] is None
    read = outcomes["read"]
    assert isinstance(read, list) and {row.workflow_id for row in read} == {"existing", "s1", "s2"}
    assert sorted(w for w, _, _ in raw_rows(db)) == ["existing", "s1", "s2"]


def test_constructor_rejects_bad_options(db: Path) -> None:
    """A non-positive busy timeout or a tiny size cap is refused with the value named."""
    with pytest.raises(ValueError, match="busy_timeout"):
        SQLiteStateStore(db, busy_timeout=0)
    with pytest.raises(ValueError, match="max_bytes"):
        SQLiteStateStore(db, max_bytes=100)


async def test_reads_and_deletes_reject_non_string_ids(store: SQLiteStateStore) -> None:
    """Ids must be strings for every operation, with the parameter named."""
    with pytest.raises(TypeError, match="delete_context\\(workflow_id="):
        await store.delete_context(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="orchestration_id="):
        await store.get_contexts_for_orchestration(None)  # type: ignore[arg-type]


# -- closing ------------------------------------------------------------------------------------


async def test_close_commits_pending_writes_and_refuses_new_ones(db: Path) -> None:
    """Writes queued when shutdown starts are committed, their callers answered; writes after
    it raise StateStoreClosed; the thread is joined when shutdown returns."""
    store = SQLiteStateStore(db)
    with anyio.fail_after(10):
        await store.startup()
    results: dict[str, BaseException | None] = {}

    async def save(workflow_id: str) -> None:
        try:
            await store.save_context(workflow_id, "orch", b"x")
        except StateStoreError as exc:
            results[workflow_id] = exc
        else:
            results[workflow_id] = None

    with write_lock_held(db) as release, anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(save, f"wf-{i}")
            await anyio.wait_all_tasks_blocked()
            tg.start_soon(store.aclose)
            await anyio.wait_all_tasks_blocked()
            assert store.statistics().state == "closing"
            with pytest.raises(StateStoreClosed, match="create a new SQLiteStateStore"):
                await store.save_context("late", "orch", b"x")
            assert store.statistics().pending == 50
            release()
    assert results == {f"wf-{i}": None for i in range(50)}
    assert store.statistics().state == "closed"
    assert store_threads() == []
    assert len(raw_rows(db)) == 50


async def test_close_fails_pending_writes_that_cannot_commit(db: Path, open_fds: None) -> None:
    """If the queued writes cannot be committed at close, each caller gets the error: nothing is
    dropped silently, and close still finishes and joins the thread."""
    store = SQLiteStateStore(db, busy_timeout=0.2)
    with anyio.fail_after(10):
        await store.startup()
    outcomes: list[BaseException | None] = []

    async def save(workflow_id: str) -> None:
        try:
            await store.save_context(workflow_id, "orch", b"x")
        except StateStoreError as exc:
            outcomes.append(exc)
        else:
            outcomes.append(None)

    with write_lock_held(db), anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(save, f"wf-{i}")
            await anyio.wait_all_tasks_blocked()
            await store.aclose()
    assert len(outcomes) == 10
    assert all(isinstance(outcome, StateStoreLocked) for outcome in outcomes)
    assert store_threads() == []
    assert raw_rows(db) == []


async def test_close_is_idempotent_and_joins_the_thread(db: Path, open_fds: None) -> None:
    """aclose, shutdown and close can be called repeatedly; the writer thread and the file's
    descriptors are gone after."""
    store = SQLiteStateStore(db)
    with anyio.fail_after(10):
        await store.save_context("wf", "orch", b"x")
    assert len(store_threads()) == 1
    await store.aclose()
    await store.shutdown()
    store.close()
    assert store_threads() == []
    never_used = SQLiteStateStore(db)
    await never_used.aclose()
    assert never_used.statistics().state == "closed"
    with pytest.raises(StateStoreClosed):
        await never_used.startup()


async def test_async_with_opens_and_closes(db: Path) -> None:
    """``async with`` opens the file eagerly and closes it, joining the thread."""
    with anyio.fail_after(10):
        async with SQLiteStateStore(db) as store:
            await store.save_context("wf", "orch", b"x")
    assert store.statistics().state == "closed"
    assert store_threads() == []


def test_blocking_close_from_synchronous_code(db: Path) -> None:
    """close() works without an event loop, after the loop that used the store has ended."""
    store = SQLiteStateStore(db)
    asyncio.run(store.save_context("wf", "orch", b"x"))
    store.close()
    assert store_threads() == []
    assert raw_rows(db) == [("wf", "orch", b"x")]


def test_a_dropped_store_stops_its_thread(db: Path) -> None:
    """A store garbage-collected without being closed stops and joins its thread."""
    store = SQLiteStateStore(db)
    asyncio.run(store.save_context("wf", "orch", b"x"))
    assert len(store_threads()) == 1
    del store
    gc.collect()
    assert store_threads() == []
    assert raw_rows(db) == [("wf", "orch", b"x")]


def test_a_forked_child_gets_a_clear_error(db: Path) -> None:
    """A child forked after the store started cannot use it (its writer thread does not exist
    there): it gets a StateStoreError telling it to open its own store, instead of hanging."""
    store = SQLiteStateStore(db)
    asyncio.run(store.startup())
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        os.close(read_end)
        try:
            asyncio.run(store.save_context("wf", "orch", b"x"))
            message = b"no error"
        except StateStoreError as exc:
            message = str(exc).encode()
        except BaseException as exc:
            message = repr(exc).encode()
        os.write(write_end, message)
        os._exit(0)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 20)
        assert ready, "the forked child did not answer within 20 s"
        message = os.read(read_end, 4096).decode()
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
        store.close()
    assert "forked" in message and "open a new SQLiteStateStore" in message


# -- the event loop's fast path -----------------------------------------------------------------


class SteppingClock:
    """A clock that moves ``step`` seconds each time it is read: every commit the store times
    then lasts exactly ``step``, whatever the disk does."""

    def __init__(self, step: float) -> None:
        self.step = step
        self._now = 0.0
        self._lock = threading.Lock()  # read from the writer thread too

    def now(self) -> float:
        with self._lock:
            self._now += self.step
            return self._now

    async def sleep(self, seconds: float) -> None:
        raise AssertionError("the store never sleeps on its clock")


FAST_PATH_WRITER = """
import asyncio, json, os, signal, sys
from minions.workflows.sqlite.store import SQLiteStateStore

async def main():
    store = SQLiteStateStore(sys.argv[1])
    await store.startup()
    await store.save_context("wf", "orch", b"committed on the loop")
    stats = store.statistics()
    print(json.dumps({"commits": stats.commits, "loop_commits": stats.loop_commits}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


async def test_an_idle_save_commits_on_the_loop_before_its_await_returns(db: Path) -> None:
    """With nothing else being written, a save is committed on the event loop's own thread (no
    hop to the writer thread), and it is durable when its await returns: a SIGKILL right after
    still finds the row."""
    with anyio.fail_after(30):
        result = await anyio.run_process(
            [sys.executable, "-c", FAST_PATH_WRITER, str(db)], check=False
        )
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()
    assert json.loads(result.stdout) == {"commits": 1, "loop_commits": 1}
    assert raw_rows(db) == [("wf", "orch", b"committed on the loop")]


async def test_the_saves_of_one_loop_pass_are_one_transaction(store: SQLiteStateStore) -> None:
    """Saves submitted during one pass of the event loop (here: 50 tasks started together) are
    committed in a single transaction, on the loop's thread, before any of them returns."""
    before = store.statistics()
    with anyio.fail_after(10):
        await asyncio.gather(*(store.save_context(f"wf-{i}", "orch", b"x") for i in range(50)))
    after = store.statistics()
    assert (after.commits - before.commits, after.rows - before.rows) == (1, 50)
    assert after.loop_commits - before.loop_commits == 1
    assert after.largest_batch == 50 and after.pending == 0


async def test_writes_of_tasks_a_few_passes_apart_still_share_a_transaction(db: Path) -> None:
    """While each pass of the event loop adds writes, the flush waits another pass (for at most
    one commit's time: here the clock makes every commit last 5 s), so tasks that drifted out of
    step commit together again; a writer alone is committed at once."""
    store = SQLiteStateStore(db, inline_commit_limit=10.0, clock=SteppingClock(step=5.0))
    try:
        with anyio.fail_after(10):
            await store.startup()
            await store.save_context("alone", "orch", b"x")  # timed: commits take 5 s
            before = store.statistics()

            async def save_after(passes: int, workflow_id: str) -> None:
                for _ in range(passes):
                    await asyncio.sleep(0)
                await store.save_context(workflow_id, "orch", b"x")

            await asyncio.gather(*(save_after(n, f"wf-{i}") for i, n in enumerate((0, 0, 1, 2, 3))))
        after = store.statistics()
        assert (after.commits - before.commits, after.rows - before.rows) == (1, 5)
        assert after.loop_commits - before.loop_commits == 1
    finally:
        await store.aclose()


async def test_a_lock_held_elsewhere_never_blocks_the_event_loop(db: Path) -> None:
    """A commit on the loop's thread does not wait for another connection's lock: the batch goes
    to the writer thread (which waits up to busy_timeout) and the loop keeps running."""
    store = SQLiteStateStore(db, busy_timeout=30.0)
    try:
        with anyio.fail_after(10):
            await store.startup()
        with write_lock_held(db) as release, anyio.fail_after(20):
            saving = asyncio.ensure_future(store.save_context("wf", "orch", b"x"))
            started = time.perf_counter()
            for _ in range(20):
                await asyncio.sleep(0)  # each pass would stall if the loop waited for the lock
            assert time.perf_counter() - started < 5.0
            assert not saving.done() and store.statistics().pending == 1
            release()
            await saving
        stats = store.statistics()
        assert (stats.commits, stats.loop_commits, stats.failed_commits) == (1, 0, 0)
    finally:
        await store.aclose()


async def test_slow_commits_go_to_the_writer_thread_and_come_back_when_fast(db: Path) -> None:
    """Commits timed above inline_commit_limit move COMMIT off the loop's thread; a probe every
    few hundred commits notices when commits are fast again, and they come back."""
    clock = SteppingClock(step=0.05)
    store = SQLiteStateStore(db, inline_commit_limit=0.001, clock=clock)
    try:
        with anyio.fail_after(30):
            await store.startup()
            await store.save_context("wf", "orch", b"0")  # timed on the loop: 50 ms, slow
            assert store.statistics().loop_commits == 1
            for i in range(10):
                await store.save_context("wf", "orch", b"%d" % i)
            stats = store.statistics()
            assert (stats.loop_commits, stats.commits) == (1, 11)
            assert stats.commit_cost == pytest.approx(0.05)
            clock.step = 0.0
            saves = 0
            while store.statistics().loop_commits == 1:  # until the probe
                await store.save_context("wf", "orch", b"again")
                saves += 1
                assert saves <= 1000
            for i in range(10):
                await store.save_context("wf", "orch", b"%d" % i)
            stats = store.statistics()
            assert stats.loop_commits == 12 and stats.commit_cost == 0.0
            assert raw_rows(db) == [("wf", "orch", b"9")]
    finally:
        await store.aclose()


async def test_inline_commit_limit_none_keeps_every_commit_off_the_loop(db: Path) -> None:
    """With inline_commit_limit=None every transaction runs on the writer thread; batching and
    durability are unchanged."""
    store = SQLiteStateStore(db, inline_commit_limit=None)
    try:
        with anyio.fail_after(10):
            await store.startup()
            await store.save_context("wf-1", "orch", b"x")
            await asyncio.gather(*(store.save_context(f"wf-{i}", "orch", b"y") for i in range(20)))
        stats = store.statistics()
        assert (stats.commits, stats.loop_commits, stats.rows) == (2, 0, 21)
    finally:
        await store.aclose()
    with pytest.raises(ValueError, match="inline_commit_limit"):
        SQLiteStateStore(db, inline_commit_limit=-1.0)


async def test_a_deferred_delete_rides_in_the_next_transaction(store: SQLiteStateStore) -> None:
    """delete_context_soon commits nothing on its own while another write follows: it shares
    that write's transaction, and its future resolves once that committed."""
    with anyio.fail_after(10):
        await store.save_context("done", "orch", b"x")
        before = store.statistics()
        deleted = store.delete_context_soon("done")
        await store.save_context("next", "orch", b"y")
        assert deleted.done()
        await deleted
    after = store.statistics()
    assert (after.commits - before.commits, after.rows - before.rows) == (1, 2)
    assert [row.workflow_id for row in await store.get_all_contexts()] == ["next"]


async def test_a_deferred_delete_alone_commits_after_a_short_linger(
    store: SQLiteStateStore,
) -> None:
    """With no other write coming, a deferred delete commits by itself within moments; a read
    submitted after it sees it applied."""
    with anyio.fail_after(10):
        await store.save_context("a", "orch", b"x")
        await store.save_context("b", "orch", b"x")
        before = store.statistics().commits
        await store.delete_context_soon("a")
        assert store.statistics().commits == before + 1
        store.delete_context_soon("b")
        assert await store.get_all_contexts() == []
    with pytest.raises(TypeError, match="workflow_id"):
        store.delete_context_soon(7)  # type: ignore[arg-type]


async def test_closing_commits_a_deferred_delete_still_queued(db: Path) -> None:
    """A deferred delete queued just before shutdown is committed by it (not dropped), and its
    future resolves."""
    store = SQLiteStateStore(db)
    with anyio.fail_after(10):
        await store.save_context("finished", "orch", b"x")
        deleted = store.delete_context_soon("finished")
        await store.aclose()
        await deleted
    assert raw_rows(db) == []


async def test_the_wal_is_checkpointed_off_the_loop_and_stays_bounded(
    store: SQLiteStateStore, db: Path
) -> None:
    """Automatic checkpoints are off (a commit on the loop must not carry one); the writer
    thread checkpoints every few hundred commits, so the WAL file does not grow without end."""
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)  # ours is 0
    finally:
        conn.close()
    with anyio.fail_after(60):
        for i in range(3000):
            await store.save_context(f"wf-{i % 50}", "orch", b"%d" % i * 20)
    wal = db.with_name(db.name + "-wal")
    # Without checkpoints 3000 commits leave at least 3000 pages (12 MB) in the WAL.
    assert wal.stat().st_size < 8 * 1024 * 1024
    assert len(raw_rows(db)) == 50


def test_event_loops_in_two_threads_can_share_a_store(db: Path) -> None:
    """Writes from a second event loop (another thread) go to the writer thread; both loops'
    writes commit, each caller is answered on its own loop."""
    store = SQLiteStateStore(db)
    errors: list[BaseException] = []

    async def writer(prefix: str) -> None:
        for i in range(200):
            await store.save_context(f"{prefix}-{i}", "orch", b"x")
            if i % 2:
                await store.delete_context(f"{prefix}-{i}")

    def in_thread(prefix: str) -> None:
        try:
            asyncio.run(writer(prefix))
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=in_thread, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    store.close()
    assert errors == [] and not any(thread.is_alive() for thread in threads)
    rows = {w for w, _, _ in raw_rows(db)}
    assert rows == {f"{p}-{i}" for p in ("a", "b") for i in range(0, 200, 2)}
