"""Write benchmarks of the SQLite state store, for ``minions tune sqlite`` (:mod:`.tune`).

One *run* saves ``ops`` checkpoints of ``payload_bytes`` bytes into a fresh database in a
temporary folder, ``concurrency`` at a time (a wave of concurrent saves, then the next wave, as
workflows in flight do), after ``warmup_ops`` saves that are not measured. It records each
save's latency (from the call to its durable return), the run's throughput, and the commits and
rows the store made.

Two stores are measured:

* ``SQLiteStateStore`` with a :class:`Candidate`'s settings — its real tunables:
  ``inline_commit_limit`` (how long a commit may take on the event loop's thread before commits
  move to the writer thread; ``None``: always there) and ``synchronous`` (``full``: each commit
  fsynced; ``normal``: durable against a process crash only);
* the *immediate* baseline, :class:`OneRowStore`: what a store without group commit does — one
  transaction per save, each committed on a worker thread, same file format, WAL and
  ``synchronous=FULL``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..workflows.sqlite.schema import UPSERT, open_connection
from ..workflows.sqlite.store import SQLiteStateStore, Synchronous

__all__ = ["Candidate", "OneRowStore", "RunResult", "percentile", "run_once"]


@dataclass(frozen=True)
class Candidate:
    """Settings of ``SQLiteStateStore`` to measure."""

    inline_commit_limit: float | None
    synchronous: Synchronous = "full"

    @property
    def label(self) -> str:
        limit = "never" if self.inline_commit_limit is None else f"{self.limit_ms:g}ms"
        return f"inline={limit},sync={self.synchronous}"

    @property
    def limit_ms(self) -> float | None:
        limit = self.inline_commit_limit
        return None if limit is None else round(limit * 1000, 6)


@dataclass(frozen=True)
class RunResult:
    """What one run measured."""

    label: str
    candidate: Candidate | None  # None: the immediate baseline
    ops: int
    concurrency: int
    payload_bytes: int
    elapsed_ms: float
    ops_per_sec: float
    save_p50_ms: float
    save_p95_ms: float
    commits: int
    rows_per_commit: float
    db_bytes: int


class OneRowStore:
    """The baseline: one transaction per save, committed on a worker thread (see the module
    docstring)."""

    def __init__(self, path: Path) -> None:
        self._conn = open_connection(path, 5.0, None)
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._lock = threading.Lock()
        self.commits = 0

    async def save_context(self, workflow_id: str, orchestration_id: str, blob: bytes) -> None:
        await asyncio.to_thread(self._save, workflow_id, orchestration_id, blob)

    def _save(self, workflow_id: str, orchestration_id: str, blob: bytes) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            self._conn.execute(UPSERT, (workflow_id, orchestration_id, blob))
            self._conn.execute("COMMIT")
            self.commits += 1

    def close(self) -> None:
        self._conn.close()


async def run_once(
    directory: Path,
    candidate: Candidate | None,
    *,
    label: str,
    ops: int,
    concurrency: int,
    payload_bytes: int,
    warmup_ops: int,
) -> RunResult:
    """Measure one store (``candidate``, or the baseline for ``None``) in a fresh database."""
    path = directory / f"{label.replace(':', '-').replace(',', '-').replace('=', '')}.sqlite3"
    payload = os.urandom(payload_bytes)
    latencies: list[float] = []
    if candidate is None:
        baseline = OneRowStore(path)
        try:
            await _waves(baseline, 0, warmup_ops, concurrency, payload, None)
            warmed = baseline.commits
            started = time.perf_counter()
            await _waves(baseline, warmup_ops, ops, concurrency, payload, latencies)
            elapsed = time.perf_counter() - started
            commits, rows = baseline.commits - warmed, ops
        finally:
            baseline.close()
    else:
        store = SQLiteStateStore(
            path,
            inline_commit_limit=candidate.inline_commit_limit,
            synchronous=candidate.synchronous,
        )
        try:
            await store.startup()
            await _waves(store, 0, warmup_ops, concurrency, payload, None)
            before = store.statistics()
            started = time.perf_counter()
            await _waves(store, warmup_ops, ops, concurrency, payload, latencies)
            elapsed = time.perf_counter() - started
            after = store.statistics()
            commits, rows = after.commits - before.commits, after.rows - before.rows
        finally:
            await store.aclose()
    size = sum(p.stat().st_size for p in path.parent.glob(path.name + "*") if p.is_file())
    return RunResult(
        label=label,
        candidate=candidate,
        ops=ops,
        concurrency=concurrency,
        payload_bytes=payload_bytes,
        elapsed_ms=elapsed * 1000,
        ops_per_sec=ops / elapsed if elapsed > 0 else 0.0,
        save_p50_ms=statistics.median(latencies) if latencies else 0.0,
        save_p95_ms=percentile(latencies, 0.95),
        commits=commits,
        rows_per_commit=rows / commits if commits else 0.0,
        db_bytes=size,
    )


async def _waves(
    store: SQLiteStateStore | OneRowStore,
    first: int,
    count: int,
    concurrency: int,
    payload: bytes,
    latencies: list[float] | None,
) -> None:
    async def save(i: int) -> None:
        began = time.perf_counter()
        await store.save_context(f"wf-{i}", f"orch-{i % 8}", payload)
        if latencies is not None:
            latencies.append((time.perf_counter() - began) * 1000)

    for start in range(first, first + count, concurrency):
        end = min(start + concurrency, first + count)
        await asyncio.gather(*(save(i) for i in range(start, end)))


def percentile(values: list[float], fraction: float) -> float:
    """The value below which ``fraction`` of ``values`` lie (nearest rank); 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]
