"""SQLiteStateStore: the default state store, one SQLite file in the project's ``.minions/``.

Durability. The database runs in WAL mode with ``synchronous=FULL``: a transaction's WAL frames
are fsynced before COMMIT returns, so a save is on disk when its await completes and survives a
SIGKILL or a power cut right after.

Group commit. An fsync costs the same for one row as for hundreds, so throughput comes from
putting many rows in one transaction, but a timed batching window would make every idle save
wait. Instead one writer thread owns the connection and loops::

    take everything queued ──► BEGIN IMMEDIATE; apply in order; COMMIT ──► wake the waiters
          ▲                                                                  │
          └──────────────── saves that arrived meanwhile ◄───────────────────┘

An idle store commits a save at once (a batch of one). While a commit is under way new saves
queue up and all go into the next transaction, so batches grow exactly as fast as callers
arrive and the cost per row falls as concurrency rises. Each caller's future is settled only
after the transaction holding its row committed; if a batch does not fit (``StateStoreFull``)
its rows are retried one transaction each, so an oversized row fails alone. Reads run on the
same thread between transactions: they are rare (an orchestration's start) and see every write
already awaited.

Lifecycle (``statistics().state``)::

    new ──first operation or startup()──► open ──shutdown()/aclose()/close()──► closing ──► closed

Closing stops intake (later calls raise ``StateStoreClosed``), commits what is queued (or fails
each waiter with the translated error), closes the connection and joins the thread. A store
dropped without closing is stopped by a finaliser. A forked child process cannot use its
parent's store (the writer thread does not exist there) and gets a clear error instead.

Errors from sqlite3 and the file system become ``StateStoreError`` subclasses (tree in
``_state_store``) raised ``from`` the original. A failed open is retried by the next operation,
so a transient lock or a full disk heals without a new store.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import errno
import os
import queue
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

from ._state_store import (
    StateStore,
    StateStoreClosed,
    StateStoreCorrupt,
    StateStoreError,
    StateStoreFull,
    StateStoreLocked,
    StateStoreReadOnly,
    StateStoreUnavailable,
    StoredContext,
    UnsupportedSchema,
    check_context_args,
)

__all__ = ["SCHEMA_VERSION", "SQLiteStateStore", "SQLiteStoreStatistics", "default_state_path"]

#: Version of the table layout, kept in ``PRAGMA user_version``.
SCHEMA_VERSION = 1
#: Marks the file as a Minions state store (``PRAGMA application_id``): ASCII "MNS1".
APPLICATION_ID = 0x4D4E5331

# No index on orchestration_id: it is read only when an orchestration starts (a scan of the
# in-flight workflows is cheap), while maintaining it on every upsert cost 20x per commit.
_SCHEMA = (
    """CREATE TABLE contexts (
        workflow_id      TEXT PRIMARY KEY,
        orchestration_id TEXT NOT NULL,
        context          BLOB NOT NULL
    )""",
)
_UPSERT = (
    "INSERT INTO contexts (workflow_id, orchestration_id, context) VALUES (?, ?, ?) "
    "ON CONFLICT (workflow_id) DO UPDATE SET "
    "orchestration_id = excluded.orchestration_id, context = excluded.context"
)
_DELETE_ROW = "DELETE FROM contexts WHERE workflow_id = ?"
_SELECT_ALL = "SELECT workflow_id, orchestration_id, context FROM contexts ORDER BY rowid"
_SELECT_ORCHESTRATION = (
    "SELECT workflow_id, orchestration_id, context FROM contexts "
    "WHERE orchestration_id = ? ORDER BY rowid"
)

# Operation kinds; writes sort before reads so a batch's writes form one transaction.
_SAVE, _DELETE, _READ_ALL, _READ_ORCHESTRATION, _PING = range(5)
_Op: TypeAlias = tuple[int, "asyncio.Future[Any]", tuple[Any, ...]]
_Outcome: TypeAlias = tuple["asyncio.Future[Any]", Any, "StateStoreError | None"]


def default_state_path(project_dir: str | os.PathLike[str] | None = None) -> Path:
    """The default store file: ``<project>/.minions/state.sqlite3`` (project = cwd if omitted)."""
    base = Path.cwd() if project_dir is None else Path(project_dir)
    return (base / ".minions" / "state.sqlite3").absolute()


class StoreState(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class SQLiteStoreStatistics:
    """A snapshot of an ``SQLiteStateStore``'s activity (``statistics()``)."""

    state: str
    #: Write transactions committed, and rows (saves and deletes) they carried.
    commits: int
    rows: int
    #: Rows in the largest single transaction so far.
    largest_batch: int
    #: Seconds from BEGIN to the end of COMMIT (fsync included) of the last transaction.
    last_commit_latency: float | None
    failed_commits: int
    #: Operations submitted whose callers have not been answered yet.
    pending: int


class _Writer:
    """The thread that owns the connection. Holds no reference to the store, so a dropped
    store can be finalised while the thread still runs."""

    def __init__(self, path: Path, busy_timeout: float, max_bytes: int | None) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.max_bytes = max_bytes
        self.queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        # Guards state changes and enqueueing, so nothing is queued behind the stop marker.
        self.lock = threading.Lock()
        self.state = StoreState.NEW
        self.forked = False
        self.thread: threading.Thread | None = None
        self.exited: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.conn: sqlite3.Connection | None = None
        self.stats_lock = threading.Lock()
        self.submitted = 0
        self.settled = 0
        self.commits = 0
        self.rows = 0
        self.largest_batch = 0
        self.failed_commits = 0
        self.last_commit_latency: float | None = None

    # -- called from event loops -------------------------------------------------------------

    def submit(self, kind: int, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        with self.lock:
            if self.forked:
                raise StateStoreError(
                    f"the state store {self.path} was opened in another process (this one was "
                    "forked from it); open a new SQLiteStateStore in this process"
                )
            if self.state is StoreState.NEW:
                self._start_locked()
            elif self.state is not StoreState.OPEN:
                raise StateStoreClosed(
                    f"the state store {self.path} is {self.state.value}; "
                    "it cannot be used after shutdown() — create a new SQLiteStateStore"
                )
            self.submitted += 1
            self.queue.put((kind, future, args))
        return future

    def _start_locked(self) -> None:
        self.thread = threading.Thread(
            target=self._run, name=f"minions-state-store:{self.path.name}", daemon=True
        )
        self.thread.start()
        self.state = StoreState.OPEN

    def request_stop(self) -> bool:
        """Stop intake and ask the thread to finish; return whether a thread must be joined."""
        with self.lock:
            if self.state is StoreState.NEW:
                self.state = StoreState.CLOSED
                return False
            if self.state is StoreState.OPEN:
                self.state = StoreState.CLOSING
                self.queue.put(None)
            return self.thread is not None

    def mark_closed(self) -> None:
        with self.lock:
            self.state = StoreState.CLOSED

    def finalize(self) -> None:
        if self.request_stop() and threading.current_thread() is not self.thread:
            assert self.thread is not None
            self.thread.join(timeout=self.busy_timeout + 5.0)

    # -- the writer thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                batch: list[_Op] = []
                item = self.queue.get()
                stop = item is None
                if item is not None:
                    batch.append(item)
                    while True:
                        try:
                            item = self.queue.get_nowait()
                        except queue.Empty:
                            break
                        if item is None:
                            stop = True
                            break
                        batch.append(item)
                if batch:
                    try:
                        self._process(batch)
                    except Exception as exc:  # a bug here must not strand the waiters
                        self._fail_batch(batch, exc)
                if stop:
                    return
        finally:
            if self.conn is not None:
                # Closing cannot lose committed data; a failure here has nothing to report.
                with contextlib.suppress(sqlite3.Error):
                    self.conn.close()
                self.conn = None
            self.exited.set_result(None)

    def _process(self, batch: list[_Op]) -> None:
        outcomes: list[_Outcome] = []
        open_error: StateStoreError | None = None
        if self.conn is None:
            try:
                self.conn = self._open()
            except Exception as exc:
                open_error = _translate(exc, self.path, "open", self.busy_timeout)
        writes = [op for op in batch if op[0] <= _DELETE]
        reads = [op for op in batch if op[0] > _DELETE]
        if writes:
            error = open_error or self._commit(writes)
            if isinstance(error, StateStoreFull) and len(writes) > 1:
                # One oversized row must not fail the rows that happened to share its batch.
                outcomes.extend((op[1], None, self._commit([op])) for op in writes)
            else:
                outcomes.extend((future, None, _copy(error)) for _, future, _ in writes)
        for kind, future, args in reads:
            # A failed commit does not fail the reads: a full disk can still be read.
            if open_error is not None or self.conn is None:
                outcomes.append((future, None, _copy(open_error or self._lost())))
                continue
            try:
                outcomes.append((future, self._read(kind, args), None))
            except Exception as exc:
                err = _translate(exc, self.path, "read", self.busy_timeout)
                outcomes.append((future, None, err))
        with self.stats_lock:
            self.settled += len(batch)
        _settle_from_thread(outcomes)

    def _lost(self) -> StateStoreError:
        return StateStoreUnavailable(
            f"the connection to the state store {self.path} was lost after a failed write; "
            "it is reopened by the next operation: retry"
        )

    def _fail_batch(self, batch: list[_Op], exc: BaseException) -> None:
        error = StateStoreError(
            f"internal error in the state store writer for {self.path}: {exc!r}. "
            "Report this with the traceback; the store keeps serving later operations"
        )
        error.__cause__ = exc
        with self.stats_lock:
            self.settled += len(batch)
        _settle_from_thread([(future, None, _copy(error)) for _, future, _ in batch])

    def _commit(self, writes: list[_Op]) -> StateStoreError | None:
        assert self.conn is not None
        conn = self.conn
        started = time.perf_counter()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for kind, rows in _runs(writes):
                    conn.executemany(_UPSERT if kind == _SAVE else _DELETE_ROW, rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except Exception as exc:
            with self.stats_lock:
                self.failed_commits += 1
            if not _connection_usable(conn):
                self._drop_connection()
            return _translate(exc, self.path, "write to", self.busy_timeout)
        latency = time.perf_counter() - started
        with self.stats_lock:
            self.commits += 1
            self.rows += len(writes)
            self.largest_batch = max(self.largest_batch, len(writes))
            self.last_commit_latency = latency
        return None

    def _read(self, kind: int, args: tuple[Any, ...]) -> list[StoredContext] | None:
        assert self.conn is not None
        if kind == _PING:
            return None
        if kind == _READ_ALL:
            cursor = self.conn.execute(_SELECT_ALL)
        else:
            cursor = self.conn.execute(_SELECT_ORCHESTRATION, args)
        return [StoredContext(w, o, bytes(c)) for w, o, c in cursor.fetchall()]

    def _drop_connection(self) -> None:
        # A connection that failed beyond a rolled-back transaction is reopened by the next
        # batch rather than reused in an unknown state.
        if self.conn is not None:
            with contextlib.suppress(sqlite3.Error):
                self.conn.close()
            self.conn = None

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
            conn.execute("PRAGMA synchronous=FULL")
            if self.max_bytes is not None:
                (page_size,) = conn.execute("PRAGMA page_size").fetchone()
                pages = max(1, self.max_bytes // page_size)
                conn.execute(f"PRAGMA max_page_count={pages:d}")
            _ensure_schema(conn, self.path)
        except BaseException:
            conn.close()
            raise
        return conn


def _runs(writes: list[_Op]) -> Iterable[tuple[int, list[tuple[Any, ...]]]]:
    """Group consecutive operations of one kind, so each group is one ``executemany``."""
    kind = writes[0][0]
    rows: list[tuple[Any, ...]] = []
    for op_kind, _, args in writes:
        if op_kind != kind:
            yield kind, rows
            kind, rows = op_kind, []
        rows.append(args)
    yield kind, rows


def _connection_usable(conn: sqlite3.Connection) -> bool:
    try:
        conn.execute("SELECT 1").fetchone()
    except sqlite3.Error:
        return False
    return not conn.in_transaction


def _ensure_schema(conn: sqlite3.Connection, path: Path) -> None:
    (app_id,) = conn.execute("PRAGMA application_id").fetchone()
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if app_id == APPLICATION_ID:
        if version > SCHEMA_VERSION:
            raise UnsupportedSchema(
                f"{path} was written by a newer Minions (schema version {version}; this one "
                f"reads up to {SCHEMA_VERSION}). Upgrade Minions, or use another state file"
            )
        return
    if app_id != 0:
        raise UnsupportedSchema(
            f"{path} is an SQLite database of another program (application id {app_id:#x}); "
            "point the state store at another file"
        )
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Checked inside the write transaction: another process may have created it meanwhile.
        (app_id,) = conn.execute("PRAGMA application_id").fetchone()
        (tables,) = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if app_id == 0 and tables:
            raise UnsupportedSchema(
                f"{path} is an SQLite database that Minions did not create ({tables} schema "
                "objects); point the state store at another file"
            )
        if app_id == 0:
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA application_id={APPLICATION_ID:d}")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION:d}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


# SQLite primary result codes (https://sqlite.org/rescode.html).
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 3, 5, 6, 8
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 10, 11, 13, 14, 26


def _translate(exc: BaseException, path: Path, doing: str, busy_timeout: float) -> StateStoreError:
    """Map a sqlite3 or OS error to ours; the original is kept as ``__cause__``."""
    if isinstance(exc, StateStoreError):
        return exc
    detail = str(exc) or type(exc).__name__
    cls: type[StateStoreError] = StateStoreError
    message = (
        f"unexpected error while trying to {doing} the state store {path}: {detail}. "
        "Report this with the traceback"
    )
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
        cls = StateStoreLocked
        message = (
            f"cannot {doing} the state store {path}: another connection held its write lock "
            f"for more than {busy_timeout:g} s ({detail}). Only one Minions runtime may use a "
            "state file: stop the other program using it, then retry"
        )
    elif primary == _SQLITE_FULL or (isinstance(exc, OSError) and exc.errno == errno.ENOSPC):
        cls = StateStoreFull
        message = (
            f"cannot {doing} the state store {path}: the disk or the store's max_bytes limit "
            f"is full ({detail}). Free disk space or raise max_bytes, then retry"
        )
    elif primary in (_SQLITE_READONLY, _SQLITE_PERM, _SQLITE_CANTOPEN) or isinstance(
        exc, PermissionError | FileExistsError | NotADirectoryError
    ):
        cls = StateStoreReadOnly
        message = (
            f"cannot {doing} the state store {path}: the file or its directory cannot be "
            f"created or written ({detail}). Make the directory writable by this user, or "
            "point the state store at a writable path"
        )
    elif primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        cls = StateStoreCorrupt
        message = (
            f"{path} is not a usable Minions state store ({detail}). Move the file aside "
            "(a new store is created on the next start; the workflows saved in it will not "
            "resume) or restore it from a backup"
        )
    elif primary == _SQLITE_IOERR or isinstance(exc, OSError):
        cls = StateStoreUnavailable
        message = (
            f"cannot {doing} the state store {path}: the operating system reported an I/O "
            f"error ({detail}). Check the disk and its file system, then retry"
        )
    translated = cls(message)
    translated.__cause__ = exc
    return translated


def _copy(error: StateStoreError | None) -> StateStoreError | None:
    """One exception object per waiter: raising mutates an exception's traceback."""
    if error is None:
        return None
    clone = type(error)(*error.args)
    clone.__cause__ = error.__cause__
    return clone


def _settle_from_thread(outcomes: list[_Outcome]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, items)
        except RuntimeError:
            continue  # the waiters' event loop is closed: nobody is left to answer


def _settle(outcomes: list[_Outcome]) -> None:
    for future, result, error in outcomes:
        if future.done():
            continue  # the caller was cancelled; its write may still have committed
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)


_writers: weakref.WeakSet[_Writer] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for writer in list(_writers):
        writer.forked = True
        # The lock may have been held by a thread that does not exist in the child.
        writer.lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


class SQLiteStateStore(StateStore):
    """The default durable state store: one SQLite file, group commit, durable on return.

    ``db_path`` defaults to ``<cwd>/.minions/state.sqlite3``; missing directories are created.
    ``busy_timeout`` bounds the wait for a write lock held by another connection, and
    ``max_bytes`` optionally caps the file's size (a write beyond it raises
    ``StateStoreFull``). ``logger`` is accepted for compatibility with the original API and
    unused: the runtime logs store failures itself.

    The file is opened lazily by the first operation; ``await startup()`` opens it eagerly so
    a bad path fails early. Cancelling an awaiting caller does not withdraw its write.
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str] | None = None,
        *,
        busy_timeout: float = 5.0,
        max_bytes: int | None = None,
        logger: object = None,
    ) -> None:
        if busy_timeout <= 0:
            raise ValueError(f"busy_timeout must be positive seconds, got {busy_timeout!r}")
        if max_bytes is not None and max_bytes < 65536:
            raise ValueError(f"max_bytes must be at least 65536 when given, got {max_bytes!r}")
        path = default_state_path() if db_path is None else Path(db_path).absolute()
        self._writer = _Writer(path, busy_timeout, max_bytes)
        _writers.add(self._writer)
        self._finalizer = weakref.finalize(self, self._writer.finalize)

    @property
    def path(self) -> Path:
        """The database file."""
        return self._writer.path

    def __repr__(self) -> str:
        stats = self.statistics()
        return (
            f"<SQLiteStateStore {stats.state} {self.path}, "
            f"{stats.commits} commits, {stats.pending} pending>"
        )

    def statistics(self) -> SQLiteStoreStatistics:
        """A consistent snapshot of the store's counters."""
        w = self._writer
        with w.stats_lock:
            return SQLiteStoreStatistics(
                state=w.state.value,
                commits=w.commits,
                rows=w.rows,
                largest_batch=w.largest_batch,
                last_commit_latency=w.last_commit_latency,
                failed_commits=w.failed_commits,
                pending=w.submitted - w.settled,
            )

    async def save_context(self, workflow_id: str, orchestration_id: str, context: bytes) -> None:
        blob = check_context_args(workflow_id, orchestration_id, context)
        await self._writer.submit(_SAVE, (workflow_id, orchestration_id, blob))

    async def delete_context(self, workflow_id: str) -> None:
        if not isinstance(workflow_id, str):
            raise TypeError(
                f"delete_context(workflow_id=...) takes a str, got {type(workflow_id).__name__}"
            )
        await self._writer.submit(_DELETE, (workflow_id,))

    async def get_contexts_for_orchestration(self, orchestration_id: str) -> list[StoredContext]:
        if not isinstance(orchestration_id, str):
            raise TypeError(
                "get_contexts_for_orchestration(orchestration_id=...) takes a str, "
                f"got {type(orchestration_id).__name__}"
            )
        rows: list[StoredContext] = await self._writer.submit(
            _READ_ORCHESTRATION, (orchestration_id,)
        )
        return rows

    async def get_all_contexts(self) -> list[StoredContext]:
        rows: list[StoredContext] = await self._writer.submit(_READ_ALL, ())
        return rows

    async def startup(self) -> None:
        """Open the file and check its schema now; raises the translated error if it cannot."""
        await self._writer.submit(_PING, ())

    async def aclose(self) -> None:
        """Commit or fail what is queued, close the file and join the thread. Idempotent."""
        writer = self._writer
        if writer.request_stop():
            await asyncio.wrap_future(writer.exited)
            assert writer.thread is not None
            writer.thread.join()
        writer.mark_closed()

    async def shutdown(self) -> None:
        """The runtime's name for ``aclose()``."""
        await self.aclose()

    def close(self) -> None:
        """Blocking ``aclose()`` for code without an event loop. Idempotent."""
        writer = self._writer
        if writer.request_stop():
            assert writer.thread is not None
            writer.thread.join()
        writer.mark_closed()

    async def __aenter__(self) -> SQLiteStateStore:
        await self.startup()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
