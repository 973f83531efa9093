"""SQLiteStateStore: the default state store, one SQLite file in the project's ``.minions/``.

Durability. The database runs in WAL mode with ``synchronous=FULL``: a transaction's WAL frames
are fsynced before COMMIT returns, so a save is on disk when its await completes and survives a
SIGKILL or a power cut right after. (``synchronous="normal"`` gives up the power cut for speed;
``minions tune sqlite`` measures what it buys on a machine.)

Group commit without a timer (``.writer`` has the details). The writes made during one
pass of the event loop form one transaction. When nothing is being written, that transaction
is committed right away on the event loop's own thread — no thread hop, which on a fast disk
costs more than the commit — and the savers resume in the next pass. While a commit is under
way on the writer thread (a slow disk, a lock held by another process, a retry), writes queue
up and all go into the next transaction, so batches grow exactly as fast as callers arrive.

The trade-off of committing on the loop's thread is that the loop waits for the fsync. Each such
commit is timed, and while they average more than ``inline_commit_limit`` (1 ms) COMMIT runs on
the writer thread instead: a slow disk then costs a thread hop per commit, never stalled
callbacks. ``inline_commit_limit=None`` keeps every transaction off the loop's thread. A commit
on the loop never waits for another connection's lock (its busy timeout is zero: such a batch
goes to the thread) and never runs a WAL checkpoint (the thread does, every few hundred commits).

A caller is answered only after the transaction holding its row committed; if a batch does not
fit (``StateStoreFull``) its rows are retried one transaction each, so an oversized row fails
alone. Reads run on the writer thread and see every write submitted before them.

One system per file. The store's first open (its first operation, or ``startup()``) takes a
lock on ``<file>.lock`` beside the database (``minions.core.file_lock``: ``flock``, released by
the kernel when the process ends, however it ends) and holds it until the store is closed. A
second store on the same file — another system, a second ``Runtime`` or ``Gru`` in the same
process, ``minions workflows cancel`` while a system runs — fails with ``StateStoreInUse``
naming the holder's pid, instead of both resuming the same workflows. Readers that only look
(``minions workflows``) take no lock.

Lifecycle (``statistics().state``)::

    new ──first operation or startup()──► open ──shutdown()/aclose()/close()──► closing ──► closed

Closing stops intake (later calls raise ``StateStoreClosed``), commits what is queued (or fails
each waiter with the translated error), closes the connection and joins the thread. A store
dropped without closing is stopped by a finaliser. A forked child process cannot use its
parent's store (the writer thread does not exist there) and gets a clear error instead.

Errors from sqlite3 and the file system become ``StateStoreError`` subclasses (tree in
``minions.workflows.state_store``, translation in ``.schema``) raised ``from`` the original. A
failed open is retried by the next operation, so a transient lock or a full disk heals without a
new store.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ...core.clock import Clock, MonotonicClock
from ...core.histogram import HistogramSnapshot
from ..state_store import StateStore, StoredContext, check_context_args
from .schema import APPLICATION_ID, SCHEMA_VERSION
from .writer import DELETE, PING, READ_ALL, READ_ORCHESTRATION, SAVE, Writer

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "SQLiteStateStore",
    "SQLiteStoreStatistics",
    "Synchronous",
    "default_state_path",
]


def default_state_path(project_dir: str | os.PathLike[str] | None = None) -> Path:
    """The default store file: ``<project>/.minions/state.sqlite3`` (project = cwd if omitted)."""
    base = Path.cwd() if project_dir is None else Path(project_dir)
    return (base / ".minions" / "state.sqlite3").absolute()


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
    #: Of ``commits``, those made on the event loop's thread (the idle fast path).
    loop_commits: int = 0
    #: Every commit's duration (BEGIN to the end of COMMIT) and size in rows.
    commit_seconds: HistogramSnapshot | None = None
    batch_rows: HistogramSnapshot | None = None
    #: Moving average of the commits timed on the event loop's thread (None before the first).
    commit_cost: float | None = None


#: How a commit is made durable (``PRAGMA synchronous``): see ``SQLiteStateStore``.
Synchronous = Literal["full", "normal"]

_writers: weakref.WeakSet[Writer] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for writer in list(_writers):
        writer.forked = True
        # The lock may have been held by a thread that does not exist in the child.
        writer.lock = threading.Lock()
        # The store's file lock is the parent's: the child must not keep it after the parent.
        writer.file_lock.forget()


os.register_at_fork(after_in_child=_after_fork_in_child)


class SQLiteStateStore(StateStore):
    """The default durable state store: one SQLite file, group commit, durable on return.

    ``db_path`` defaults to ``<cwd>/.minions/state.sqlite3``; missing directories are created.
    ``busy_timeout`` bounds the wait for a write lock held by another connection, and
    ``max_bytes`` optionally caps the file's size (a write beyond it raises
    ``StateStoreFull``). ``inline_commit_limit`` is the average commit time (seconds) up to
    which commits run on the event loop's thread (``None``: never); ``clock`` times them.
    ``synchronous="normal"`` trades durability against a power cut or an OS crash for faster
    commits: the WAL is then fsynced only at checkpoints, so a save survives the process being
    killed but maybe not the machine going down (the default, ``"full"``, survives both).
    ``logger`` is accepted for compatibility with the original API and unused: the runtime
    logs store failures itself.

    The file is opened lazily by the first operation; ``await startup()`` opens it eagerly so
    a bad path fails early. Cancelling an awaiting caller does not withdraw its write.
    """

    def __init__(
        self,
        db_path: str | os.PathLike[str] | None = None,
        *,
        busy_timeout: float = 5.0,
        max_bytes: int | None = None,
        inline_commit_limit: float | None = 0.001,
        synchronous: Synchronous = "full",
        clock: Clock | None = None,
        logger: object = None,
    ) -> None:
        if busy_timeout <= 0:
            raise ValueError(f"busy_timeout must be positive seconds, got {busy_timeout!r}")
        if max_bytes is not None and max_bytes < 65536:
            raise ValueError(f"max_bytes must be at least 65536 when given, got {max_bytes!r}")
        if inline_commit_limit is not None and not inline_commit_limit >= 0:
            raise ValueError(
                "inline_commit_limit must be >= 0 seconds, or None to keep commits off the "
                f"event loop's thread; got {inline_commit_limit!r}"
            )
        if synchronous not in ("full", "normal"):
            raise ValueError(
                f"synchronous must be 'full' (durable when a save returns) or 'normal' (durable "
                f"against a crash of the process, not of the machine); got {synchronous!r}"
            )
        path = default_state_path() if db_path is None else Path(db_path).absolute()
        self._writer = Writer(
            path,
            busy_timeout,
            max_bytes,
            inline_commit_limit,
            clock or MonotonicClock(),
            synchronous,
        )
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
        with w.lock:
            return SQLiteStoreStatistics(
                state=w.state.value,
                commits=w.commits,
                rows=w.rows,
                largest_batch=w.largest_batch,
                last_commit_latency=w.last_commit_latency,
                failed_commits=w.failed_commits,
                pending=w.submitted - w.settled,
                loop_commits=w.loop_commits,
                commit_cost=w.cost,
                commit_seconds=w.commit_seconds.snapshot(),
                batch_rows=w.batch_rows.snapshot(),
            )

    async def save_context(self, workflow_id: str, orchestration_id: str, context: bytes) -> None:
        blob = check_context_args(workflow_id, orchestration_id, context)
        await self._writer.submit(SAVE, (workflow_id, orchestration_id, blob))

    async def delete_context(self, workflow_id: str) -> None:
        await self._writer.submit(DELETE, (_checked_id(workflow_id),))

    def delete_context_soon(self, workflow_id: str) -> asyncio.Future[None]:
        """Queue the delete of ``workflow_id`` to ride in the next transaction; return a future
        that resolves once it committed (or fails with the store's error).

        Nothing is committed for it alone unless no other write comes within 2 ms. Until it
        commits, a crash keeps the row. Call it from a coroutine or callback of the event loop.
        """
        future: asyncio.Future[None] = self._writer.submit(
            DELETE, (_checked_id(workflow_id),), lazy=True
        )
        return future

    async def get_contexts_for_orchestration(self, orchestration_id: str) -> list[StoredContext]:
        if not isinstance(orchestration_id, str):
            raise TypeError(
                "get_contexts_for_orchestration(orchestration_id=...) takes a str, "
                f"got {type(orchestration_id).__name__}"
            )
        rows: list[StoredContext] = await self._writer.submit(
            READ_ORCHESTRATION, (orchestration_id,)
        )
        return rows

    async def get_all_contexts(self) -> list[StoredContext]:
        rows: list[StoredContext] = await self._writer.submit(READ_ALL, ())
        return rows

    async def startup(self) -> None:
        """Open the file and check its schema now; raises the translated error if it cannot."""
        await self._writer.submit(PING, ())

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


def _checked_id(workflow_id: object) -> str:
    if not isinstance(workflow_id, str):
        raise TypeError(
            f"delete_context(workflow_id=...) takes a str, got {type(workflow_id).__name__}"
        )
    return workflow_id
