"""The SQLite store's writer: which thread commits a transaction, and when.

An fsync costs about the same for one row as for hundreds, so throughput comes from putting
many rows in one transaction; latency comes from never waiting for a batch to fill. The writer
gets both without a timer:

* **The event loop's pass is the batch.** Writes made during one pass of the event loop go
  into a buffer; the first one schedules a flush (``loop.call_soon``) that runs after every
  callback already due, so all writes of the pass — and of the tasks their commit woke — share
  one transaction. If that pass added writes after the first, the flush looks again one pass
  later, and keeps waiting while passes add writes, for at most the time a commit takes:
  groups of tasks that got out of step (a commit wakes only the tasks it carried, so a group
  split once would stay split) join again, and one writer alone is never delayed.
* **Idle: commit on the event loop's thread.** When nothing is being written, the flush runs the
  transaction right there (BEGIN, the rows, COMMIT with its fsync) and resolves the callers'
  futures directly. One workflow in flight pays no thread hop (which costs more than the commit
  itself on a fast disk), and the rows never contend for the GIL with a busy event loop.
* **Busy: batch.** While a commit runs on the writer thread, writes keep collecting in the
  buffer; when it ends, the buffer becomes the next transaction.

The loop thread never waits for anything but its own commit::

    flush ──► BEGIN IMMEDIATE (busy timeout 0) ─ lock held elsewhere ─► whole batch to the thread
                │
                ├─ apply the rows ──► COMMIT here  (commits measured fast: resolve the futures)
                │                 └─► COMMIT on the thread (commits measured slow)
                └─ any error ──► whole batch to the thread, which retries it and reports

**How long may a commit block the loop?** Every COMMIT made on the loop thread is timed (its
fsync included); while the moving average exceeds ``inline_commit_limit`` (1 ms by default)
COMMIT goes to the writer thread instead, so a slow disk costs a thread hop per commit
rather than stalled callbacks. The rows are still applied on the loop (no I/O, no lock waits),
and every few hundred commits one is made on the loop again to notice a disk that got fast
(probes back off while it stays slow). ``inline_commit_limit=None`` sends every transaction to
the thread. Whatever runs where, the contract holds: a write's future resolves only after the
transaction holding it committed, and writes apply in the order they were submitted.

The thread also runs reads (rare: an orchestration's start), the open of the file, WAL
checkpoints (every few hundred commits, so a commit on the loop never carries one) and retries
of batches that failed on the loop, each with the full ``busy_timeout``. Writes of another
event loop than the buffer's go to the thread directly.

The connection has one user at a time: the loop thread takes it only when no thread job is
queued or running, and while it holds it, anything queued for the thread is held back.

Lazy writes (``submit(..., lazy=True)``) join the buffer without scheduling a flush: they ride
in the next transaction, or are flushed alone after ``LAZY_LINGER`` seconds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeAlias

from ...core.clock import Clock
from ...core.file_lock import FileLock
from ...core.histogram import BATCH_BUCKETS, SECONDS_BUCKETS, Histogram
from ..state_store import (
    StateStoreClosed,
    StateStoreError,
    StateStoreFull,
    StateStoreInUse,
    StateStoreUnavailable,
    StoredContext,
)
from .schema import (
    DELETE_ROW,
    SELECT_ALL,
    SELECT_ORCHESTRATION,
    UPSERT,
    connection_usable,
    open_connection,
    prepare_directory,
    translate,
)

__all__ = [
    "DELETE",
    "LAZY_LINGER",
    "PING",
    "READ_ALL",
    "READ_ORCHESTRATION",
    "SAVE",
    "Writer",
    "lock_path",
]

# Operation kinds; writes sort before reads.
SAVE, DELETE, READ_ALL, READ_ORCHESTRATION, PING = range(5)
Op: TypeAlias = tuple[int, "asyncio.Future[Any]", tuple[Any, ...]]
_Outcome: TypeAlias = tuple["asyncio.Future[Any]", Any, "StateStoreError | None"]

# Jobs for the thread: operations to run as one transaction (then reads), a transaction whose
# rows the loop applied and that only needs COMMIT, and a WAL checkpoint.
_OPS, _COMMIT, _CHECKPOINT = range(3)
_Job: TypeAlias = tuple[int, list[Op]]

#: How long a lazy write waits for another write to share its transaction.
LAZY_LINGER = 0.002
#: Smoothing of the measured commit time (weight of the newest commit).
_COST_WEIGHT = 0.25
#: While commits are slow, commits between two probes on the loop: first, and at most.
_PROBE_FIRST, _PROBE_MAX = 256, 8192
#: A WAL checkpoint runs on the thread after this many commits or rows, whichever comes first.
_CHECKPOINT_COMMITS, _CHECKPOINT_ROWS = 500, 8000


def lock_path(path: Path) -> Path:
    """The store's lock file, beside it: ``state.sqlite3.lock`` for ``state.sqlite3``."""
    return path.with_name(path.name + ".lock")


class StoreState(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class _Flush(enum.Enum):
    IDLE = 0  # nothing buffered, or a new write must schedule the flush
    SCHEDULED = 1  # a call_soon (or the thread's wake-up) will run it
    WAITING = 2  # the thread is busy; the end of its job wakes the flush


class Writer:
    """Owns the connection, the buffer and the thread. Holds no reference to the store, so a
    dropped store can be finalised while the thread still runs."""

    def __init__(
        self,
        path: Path,
        busy_timeout: float,
        max_bytes: int | None,
        inline_commit_limit: float | None,
        clock: Clock,
        synchronous: str = "full",
    ) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.max_bytes = max_bytes
        self.inline_limit = inline_commit_limit
        self.clock = clock
        self.synchronous = synchronous
        # Guards everything below that both threads touch.
        self.lock = threading.Lock()
        self.state = StoreState.NEW
        self.forked = False
        self.queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.exited: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.conn: sqlite3.Connection | None = None
        #: Held from the first open until the thread ends: one system per store file.
        self.file_lock = FileLock(lock_path(path))
        #: Thread jobs queued or running; the loop commits only while there are none.
        self.jobs = 0
        #: The loop thread is using the connection; jobs for the thread wait in ``held``.
        self.loop_owned = False
        self.held: list[_Job | None] = []
        self.buffer: list[Op] = []
        self.buffer_loop: asyncio.AbstractEventLoop | None = None
        self.flush = _Flush.IDLE
        #: For the scheduled flush: the buffer's length when last looked at, and since when
        #: (loop time) it has waited; it waits while each pass adds writes (see run_flush).
        self.flush_seen = 0
        self.flush_since = 0.0
        self.linger: asyncio.TimerHandle | None = None
        #: When the oldest lazy write still in the buffer was queued (loop time).
        self.lazy_since: float | None = None
        # Commit cost (loop thread only).
        self.cost: float | None = None
        self.probe_every = _PROBE_FIRST
        self.probe_in = _PROBE_FIRST
        self.since_checkpoint = (0, 0)
        # Counters for statistics().
        self.submitted = 0
        self.settled = 0
        self.commits = 0
        self.loop_commits = 0
        self.rows = 0
        self.largest_batch = 0
        self.failed_commits = 0
        self.last_commit_latency: float | None = None
        self.commit_seconds = Histogram(SECONDS_BUCKETS)
        self.batch_rows = Histogram(BATCH_BUCKETS)

    # -- submitting (event loop threads) ------------------------------------------------------

    def submit(
        self, kind: int, args: tuple[Any, ...], *, lazy: bool = False
    ) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        op: Op = (kind, future, args)
        schedule = linger = False
        with self.lock:
            self._check_usable_locked()
            self.submitted += 1
            if kind > DELETE:
                # A read sees every write submitted before it: the buffer goes first.
                self._put_locked((_OPS, [*self._take_buffer_locked(), op]))
            elif loop is not self.buffer_loop and self.buffer and not self._buffer_loop_gone():
                self._put_locked((_OPS, [op]))  # another event loop's write: the thread's
            else:
                if loop is not self.buffer_loop:
                    self._put_stale_buffer_locked()
                    self.buffer_loop = loop
                    self.linger = None  # a timer of the previous loop ignores this one
                    if self.flush is _Flush.SCHEDULED:
                        self.flush = _Flush.IDLE  # that loop's pending flush ignores this one
                self.buffer.append(op)
                if self.flush is _Flush.IDLE:
                    if not lazy:
                        self.flush = _Flush.SCHEDULED
                        self.flush_seen = len(self.buffer)
                        self.flush_since = loop.time()
                        schedule = True
                    else:
                        if self.lazy_since is None:
                            self.lazy_since = loop.time()
                        linger = self.linger is None
        if schedule:
            loop.call_soon(self.run_flush)
        elif linger:
            self.linger = loop.call_later(LAZY_LINGER, self._linger_done)
        return future

    def _check_usable_locked(self) -> None:
        if self.forked:
            raise StateStoreError(
                f"the state store {self.path} was opened in another process (this one was "
                "forked from it); open a new SQLiteStateStore in this process"
            )
        if self.state is StoreState.NEW:
            self.thread = threading.Thread(
                target=self._run, name=f"minions-state-store:{self.path.name}", daemon=True
            )
            self.thread.start()
            self.state = StoreState.OPEN
        elif self.state is not StoreState.OPEN:
            raise StateStoreClosed(
                f"the state store {self.path} is {self.state.value}; "
                "it cannot be used after shutdown() — create a new SQLiteStateStore"
            )

    def _buffer_loop_gone(self) -> bool:
        return self.buffer_loop is not None and self.buffer_loop.is_closed()

    def _put_stale_buffer_locked(self) -> None:
        # Writes left by an event loop that closed before flushing them: the thread commits
        # them (nobody awaits them any more, but they were submitted).
        if self.buffer:
            self._put_locked((_OPS, self._take_buffer_locked()))

    def _take_buffer_locked(self) -> list[Op]:
        batch, self.buffer = self.buffer, []
        self.lazy_since = None
        if self.flush is _Flush.SCHEDULED:
            self.flush = _Flush.IDLE  # the scheduled flush will find nothing to do
        return batch

    def _put_locked(self, job: _Job | None) -> None:
        if job is not None:
            self.jobs += 1
        if self.loop_owned:
            self.held.append(job)
        else:
            self.queue.put(job)

    def _release_locked(self, first: _Job | None = None) -> asyncio.AbstractEventLoop | None:
        """The loop thread gives the connection back; ``first`` goes to the thread before any
        job held meanwhile. Returns the event loop whose flush waited for the connection."""
        self.loop_owned = False
        if first is not None:
            self.queue.put(first)
        for job in self.held:
            self.queue.put(job)
        self.held.clear()
        return self._wake_locked()

    def _schedule_now_locked(self) -> None:
        # A flush that has waited enough already (for a commit, or the linger): no more.
        self.flush = _Flush.SCHEDULED
        self.flush_seen = -1
        self.flush_since = float("-inf")

    def _wake_locked(self) -> asyncio.AbstractEventLoop | None:
        """If a flush waits for the connection and it is free now, mark the flush scheduled
        and return the loop that must run it."""
        if self.jobs or self.loop_owned or self.flush is not _Flush.WAITING:
            return None
        if self.buffer and self.state is StoreState.OPEN:
            self._schedule_now_locked()
            return self.buffer_loop
        self.flush = _Flush.IDLE
        return None

    # -- the flush (buffer loop's thread) -----------------------------------------------------

    def _linger_done(self) -> None:
        loop = asyncio.get_running_loop()
        with self.lock:
            if self.buffer_loop is not loop:
                return  # a timer of an event loop the buffer has moved away from
            self.linger = None
            if self.flush is not _Flush.IDLE or not self.buffer:
                return
            # The timer outlives the writes that armed it: count from the oldest one waiting.
            waited = loop.time() - (self.lazy_since or 0.0)
            if waited < LAZY_LINGER:
                self.linger = loop.call_later(LAZY_LINGER - waited, self._linger_done)
                return
            self._schedule_now_locked()
        self.run_flush()

    def run_flush(self) -> None:
        """Commit the buffer: here if the connection is free and commits are fast, else hand
        it to the thread (see the module docstring)."""
        loop = asyncio.get_running_loop()
        with self.lock:
            if (
                self.flush is not _Flush.SCHEDULED
                or self.state is not StoreState.OPEN
                or self.buffer_loop is not loop
            ):
                return
            if not self.buffer:
                self.flush = _Flush.IDLE
                return
            if len(self.buffer) != self.flush_seen and self._may_wait(loop):
                # The last pass added writes, so more are likely in the next one: wait a pass.
                self.flush_seen = len(self.buffer)
                loop.call_soon(self.run_flush)
                return
            if self.jobs or self.loop_owned:
                self.flush = _Flush.WAITING  # woken when the connection is free
                return
            self.flush = _Flush.IDLE
            batch = self._take_buffer_locked()
            conn = self.conn
            if conn is None or self.inline_limit is None:
                self._put_locked((_OPS, batch))
                self.flush = _Flush.WAITING
                return
            self.loop_owned = True
        try:
            self._commit_on_loop(conn, batch)
        except BaseException:
            # Not an SQLite error (those are handled): leave nothing open, let the thread redo
            # the batch (saves and deletes are idempotent), and report the surprise.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            with self.lock:
                self.jobs += 1
                self._release_locked((_OPS, batch))
                self.flush = _Flush.WAITING
            raise

    def _commit_on_loop(self, conn: sqlite3.Connection, batch: list[Op]) -> None:
        """Apply ``batch`` on the loop thread and commit it here, or hand it to the thread:
        for COMMIT only when commits are slow, whole when anything failed."""
        now = self.clock.now
        started = now()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                _apply(conn, batch)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error:
            # The lock is held elsewhere (the thread waits for it), or the rows failed (the
            # thread retries them row by row if need be, and reports): either way, the thread.
            with self.lock:
                self.jobs += 1
                self._release_locked((_OPS, batch))
                self.flush = _Flush.WAITING
            return
        if not self._commit_here():
            with self.lock:
                self.jobs += 1
                self._release_locked((_COMMIT, batch))
                self.flush = _Flush.WAITING
            return
        applied = now()
        try:
            conn.execute("COMMIT")
        except sqlite3.Error:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            with self.lock:
                self.jobs += 1
                self._release_locked((_OPS, batch))
                self.flush = _Flush.WAITING
            return
        finished = now()
        self._measure(finished - applied)
        with self.lock:
            checkpoint = self._count_commit_locked(len(batch), finished - started, on_loop=True)
            self.settled += len(batch)
            wake = self._release_locked()
            if checkpoint:
                self._put_locked((_CHECKPOINT, []))
        for _, future, _ in batch:
            if not future.done():
                future.set_result(None)
        if wake is not None:
            # Another event loop's flush waited while this one held the connection.
            with contextlib.suppress(RuntimeError):  # that loop is closed: close() commits
                wake.call_soon_threadsafe(self.run_flush)

    def _may_wait(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Whether the buffer has waited less than a commit takes (at most the inline limit):
        writes arriving meanwhile would have waited for that commit anyway."""
        window = min(self.cost or 0.0, self.inline_limit or 0.0)
        return loop.time() - self.flush_since < window

    def _commit_here(self) -> bool:
        limit = self.inline_limit
        if self.cost is None or limit is None or self.cost <= limit:
            return True
        self.probe_in -= 1
        return self.probe_in <= 0

    def _measure(self, seconds: float) -> None:
        limit = self.inline_limit
        assert limit is not None
        slow_before = self.cost is not None and self.cost > limit
        if self.cost is None or slow_before:
            # The first commit, or a probe while commits were slow: take it as it is.
            self.cost = seconds
        else:
            self.cost += _COST_WEIGHT * (seconds - self.cost)
        if self.cost <= limit:
            self.probe_every = _PROBE_FIRST
        elif slow_before:
            self.probe_every = min(self.probe_every * 2, _PROBE_MAX)
        self.probe_in = self.probe_every

    def _count_commit_locked(self, rows: int, latency: float, *, on_loop: bool) -> bool:
        """Count a commit; return whether the WAL is due for a checkpoint."""
        self.commits += 1
        self.loop_commits += on_loop
        self.rows += rows
        self.largest_batch = max(self.largest_batch, rows)
        self.last_commit_latency = latency
        self.commit_seconds.observe(latency)
        self.batch_rows.observe(rows)
        commits, total = self.since_checkpoint
        commits, total = commits + 1, total + rows
        due = commits >= _CHECKPOINT_COMMITS or total >= _CHECKPOINT_ROWS
        self.since_checkpoint = (0, 0) if due else (commits, total)
        return due

    # -- stopping -----------------------------------------------------------------------------

    def request_stop(self) -> bool:
        """Stop intake and ask the thread to finish what is queued; return whether a thread
        must be joined."""
        with self.lock:
            if self.state is StoreState.NEW:
                self.state = StoreState.CLOSED
                return False
            if self.state is StoreState.OPEN:
                self.state = StoreState.CLOSING
                self._put_stale_buffer_locked()
                self._put_locked(None)
            return self.thread is not None

    def mark_closed(self) -> None:
        with self.lock:
            self.state = StoreState.CLOSED

    def finalize(self) -> None:
        if self.request_stop() and threading.current_thread() is not self.thread:
            assert self.thread is not None
            self.thread.join(timeout=self.busy_timeout + 5.0)

    # -- the writer thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            lookahead: list[_Job | None] = []  # a job taken while merging, to run next
            while True:
                job = lookahead.pop() if lookahead else self.queue.get()
                if job is None:
                    return
                taken = 1
                if job[0] == _OPS:
                    # Operations queued back to back share one transaction.
                    ops = list(job[1])
                    while True:
                        try:
                            following = self.queue.get_nowait()
                        except queue.Empty:
                            break
                        if following is None or following[0] != _OPS:
                            lookahead.append(following)
                            break
                        ops.extend(following[1])
                        taken += 1
                    job = (_OPS, ops)
                outcomes: list[_Outcome] = []
                try:
                    outcomes = self._do(job)
                except Exception as exc:  # a bug here must not strand the waiters
                    outcomes = _failed(job[1], exc, self.path)
                self._job_done(taken, outcomes)
        finally:
            if self.conn is not None:
                # Closing cannot lose committed data; a failure here has nothing to report.
                with contextlib.suppress(sqlite3.Error):
                    self.conn.close()
                self.conn = None
            self.file_lock.release()
            self.exited.set_result(None)

    def _job_done(self, taken: int, outcomes: list[_Outcome]) -> None:
        with self.lock:
            self.jobs -= taken
            self.settled += len(outcomes)
            wake = self._wake_locked()
        _settle_from_thread(outcomes, wake, self.run_flush)

    def _do(self, job: _Job) -> list[_Outcome]:
        kind, ops = job
        if kind == _CHECKPOINT:
            self._checkpoint()
            return []
        if kind == _COMMIT:
            return self._finish_commit(ops)
        return self._process(ops)

    def _finish_commit(self, writes: list[Op]) -> list[_Outcome]:
        """COMMIT a transaction whose rows the loop applied; on failure, redo it from scratch
        (saves and deletes are idempotent) with the ordinary error handling."""
        conn = self.conn
        assert conn is not None
        started = self.clock.now()
        try:
            conn.execute("COMMIT")
        except sqlite3.Error:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            return self._process(writes)
        with self.lock:
            due = self._count_commit_locked(len(writes), self.clock.now() - started, on_loop=False)
        if due:
            self._checkpoint()
        return [(future, None, None) for _, future, _ in writes]

    def _process(self, batch: list[Op]) -> list[_Outcome]:
        outcomes: list[_Outcome] = []
        open_error: StateStoreError | None = None
        if self.conn is None:
            try:
                self._lock_store()
                self.conn = open_connection(
                    self.path, self.busy_timeout, self.max_bytes, self.synchronous
                )
            except Exception as exc:
                open_error = translate(exc, self.path, "open", self.busy_timeout)
        conn = self.conn
        if conn is not None:
            _set_busy_timeout(conn, self.busy_timeout)
        writes = [op for op in batch if op[0] <= DELETE]
        reads = [op for op in batch if op[0] > DELETE]
        if writes:
            error = open_error or self._transaction(writes)
            if isinstance(error, StateStoreFull) and len(writes) > 1:
                # One oversized row must not fail the rows that happened to share its batch.
                outcomes.extend((op[1], None, self._transaction([op])) for op in writes)
            else:
                outcomes.extend((future, None, _copy(error)) for _, future, _ in writes)
        for kind, future, args in reads:
            # A failed commit does not fail the reads: a full disk can still be read.
            if open_error is not None or self.conn is None:
                outcomes.append((future, None, _copy(open_error or self._lost())))
                continue
            try:
                outcomes.append((future, _read(self.conn, kind, args), None))
            except Exception as exc:
                err = translate(exc, self.path, "read", self.busy_timeout)
                outcomes.append((future, None, err))
        if self.conn is not None:
            _set_busy_timeout(self.conn, 0.0)
        return outcomes

    def _lock_store(self) -> None:
        """Take the store's lock before its first open, or raise ``StateStoreInUse``."""
        lock = self.file_lock
        if lock.held:
            return
        prepare_directory(self.path)
        if lock.acquire():
            return
        holder = lock.holder
        if holder == os.getpid():
            who = " (this process: a second Runtime, Gru or SQLiteStateStore on the same file)"
        else:
            who = f" (pid {holder})" if holder else ""
        raise StateStoreInUse(
            f"the state store {self.path} is in use by another Minions system{who}: a store "
            "file serves one system at a time, or both would resume the same workflows. Stop "
            "that system first, or give this one a store of its own (the path of the "
            "[WorkflowStore] table in minions.toml, or SQLiteStateStore(path))"
        )

    def _checkpoint(self) -> None:
        # Copies committed pages from the WAL into the database file, so the WAL is reused
        # rather than grown; PASSIVE never waits for other connections.
        if self.conn is not None:
            with contextlib.suppress(sqlite3.Error):  # the next one tries again
                self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _lost(self) -> StateStoreError:
        return StateStoreUnavailable(
            f"the connection to the state store {self.path} was lost after a failed write; "
            "it is reopened by the next operation: retry"
        )

    def _transaction(self, writes: list[Op]) -> StateStoreError | None:
        assert self.conn is not None
        conn = self.conn
        started = self.clock.now()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                _apply(conn, writes)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except Exception as exc:
            with self.lock:
                self.failed_commits += 1
            if not connection_usable(conn):
                # Reopened by the next batch rather than reused in an unknown state.
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
                self.conn = None
            return translate(exc, self.path, "write to", self.busy_timeout)
        with self.lock:
            due = self._count_commit_locked(len(writes), self.clock.now() - started, on_loop=False)
        if due:
            self._checkpoint()
        return None


def _apply(conn: sqlite3.Connection, writes: list[Op]) -> None:
    for kind, rows in _runs(writes):
        conn.executemany(UPSERT if kind == SAVE else DELETE_ROW, rows)


def _runs(writes: list[Op]) -> Iterable[tuple[int, list[tuple[Any, ...]]]]:
    """Group consecutive operations of one kind, so each group is one ``executemany``."""
    kind = writes[0][0]
    rows: list[tuple[Any, ...]] = []
    for op_kind, _, args in writes:
        if op_kind != kind:
            yield kind, rows
            kind, rows = op_kind, []
        rows.append(args)
    yield kind, rows


def _read(conn: sqlite3.Connection, kind: int, args: tuple[Any, ...]) -> list[StoredContext] | None:
    if kind == PING:
        return None
    if kind == READ_ALL:
        cursor = conn.execute(SELECT_ALL)
    else:
        cursor = conn.execute(SELECT_ORCHESTRATION, args)
    return [StoredContext(w, o, bytes(c)) for w, o, c in cursor.fetchall()]


def _set_busy_timeout(conn: sqlite3.Connection, seconds: float) -> None:
    with contextlib.suppress(sqlite3.Error):  # a broken connection reports at its next use
        conn.execute(f"PRAGMA busy_timeout={int(seconds * 1000):d}")


def _failed(ops: list[Op], exc: BaseException, path: Path) -> list[_Outcome]:
    error = StateStoreError(
        f"internal error in the state store writer for {path}: {exc!r}. "
        "Report this with the traceback; the store keeps serving later operations"
    )
    error.__cause__ = exc
    return [(future, None, _copy(error)) for _, future, _ in ops]


def _copy(error: StateStoreError | None) -> StateStoreError | None:
    """One exception object per waiter: raising mutates an exception's traceback."""
    if error is None:
        return None
    clone = type(error)(*error.args)
    clone.__cause__ = error.__cause__
    return clone


def _settle_from_thread(
    outcomes: list[_Outcome], wake: asyncio.AbstractEventLoop | None, flush: Callable[[], None]
) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0].get_loop(), []).append(outcome)
    if wake is not None:
        by_loop.setdefault(wake, [])
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_settle, loop, items, flush if loop is wake else None)
        except RuntimeError:
            continue  # the waiters' event loop is closed: nobody is left to answer


def _settle(
    loop: asyncio.AbstractEventLoop, outcomes: list[_Outcome], flush: Callable[[], None] | None
) -> None:
    for future, result, error in outcomes:
        if future.done():
            continue  # the caller was cancelled; its write may still have committed
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
    if flush is not None:
        # After the callbacks of the tasks just woken, so their writes join this flush.
        loop.call_soon(flush)
