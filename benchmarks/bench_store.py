"""State store throughput: our SQLiteStateStore against raw sqlite3 on the same disk.

Floors, measured in this run with the same pragmas the store uses (WAL, synchronous=FULL):

- raw single-row durable transactions per second (one BEGIN/INSERT/COMMIT per row, one thread):
  the best a store can do when every save must be durable before the next one starts, if it
  may block its caller;
- the same on a bare worker thread awaited from asyncio: the floor for a store that must not
  block the event loop (each save pays a hop to the thread and one back);
- raw batched rows per second (many rows per transaction): the ceiling group commit tends to.

Then ``SQLiteStateStore`` saves per second with 1, 16 and 256 concurrent savers (tasks that each
save in a loop, awaiting every save). An idle store commits on the event loop's thread, so one
saver should come close to the blocking floor, well above the threaded one; with many savers
group commit should lift it far above the single-row floors, towards the batched ceiling.

Every row written differs from the one it replaces (a counter leads the payload): SQLite does
not write a page whose bytes did not change, so rewriting identical rows would measure commits
that never reach the disk (on the development VM: ~100,000/s instead of ~5,000/s).

Run: ``python benchmarks/bench_store.py [--seconds 2] [--payload 512]``
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import sqlite3
import tempfile
import threading
import time
from pathlib import Path

from minions.workflows.sqlite.schema import SCHEMA as _SCHEMA
from minions.workflows.sqlite.schema import UPSERT as _UPSERT
from minions.workflows.sqlite.store import SQLiteStateStore

# The raw floors use the store's own table and statement, so the comparison is like for like,
# and the same key space: each saver (or raw batch slot) cycles over this many workflow ids.
UPSERT = _UPSERT
KEYS_PER_SAVER = 100


def raw_connection(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    for statement in _SCHEMA:
        conn.execute(statement)
    return conn


def fresh(payload: bytes, count: int) -> bytes:
    """``payload`` with ``count`` in its first 8 bytes: never the bytes the row held before."""
    return count.to_bytes(8, "little") + payload[8:]


def raw_single(path: Path, seconds: float, payload: bytes) -> float:
    conn = raw_connection(path)
    count = 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(UPSERT, (f"wf-{count % KEYS_PER_SAVER}", "orch", fresh(payload, count)))
        conn.execute("COMMIT")
        count += 1
    elapsed = time.perf_counter() - started
    conn.close()
    return count / elapsed


async def raw_single_threaded(path: Path, seconds: float, payload: bytes) -> float:
    """The same transactions on a bare worker thread awaited from asyncio: the least any store
    pays that keeps the event loop free while SQLite blocks (one hop there, one back)."""
    loop = asyncio.get_running_loop()
    requests: queue.SimpleQueue[tuple[str, bytes, asyncio.Future[None]] | None] = (
        queue.SimpleQueue()
    )

    def worker() -> None:
        conn = raw_connection(path)
        while (item := requests.get()) is not None:
            key, blob, future = item
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(UPSERT, (key, "orch", blob))
            conn.execute("COMMIT")
            loop.call_soon_threadsafe(future.set_result, None)
        conn.close()

    thread = threading.Thread(target=worker)
    thread.start()
    count = 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        future = loop.create_future()
        requests.put((f"wf-{count % KEYS_PER_SAVER}", fresh(payload, count), future))
        await future
        count += 1
    elapsed = time.perf_counter() - started
    requests.put(None)
    thread.join()
    return count / elapsed


def raw_batched(path: Path, seconds: float, payload: bytes, batch: int) -> float:
    conn = raw_connection(path)
    count = 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            UPSERT,
            [
                (f"wf-{(count + i) % (batch * KEYS_PER_SAVER)}", "orch", fresh(payload, count + i))
                for i in range(batch)
            ],
        )
        conn.execute("COMMIT")
        count += batch
    elapsed = time.perf_counter() - started
    conn.close()
    return count / elapsed


async def store_saves(path: Path, seconds: float, payload: bytes, savers: int) -> tuple[float, str]:
    store = SQLiteStateStore(path)
    await store.startup()
    stop = False
    counts = [0] * savers

    async def saver(index: int) -> None:
        n = 0
        while not stop:
            await store.save_context(f"wf-{index}-{n % KEYS_PER_SAVER}", "orch", fresh(payload, n))
            n += 1
        counts[index] = n

    tasks = [asyncio.create_task(saver(i)) for i in range(savers)]
    started = time.perf_counter()
    await asyncio.sleep(seconds)  # a benchmark's measuring window, not a wait for an event
    stop = True
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    stats = store.statistics()
    await store.aclose()
    note = f"{stats.commits} commits, largest batch {stats.largest_batch}"
    return sum(counts) / elapsed, note


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring time per row")
    parser.add_argument("--payload", type=int, default=512, help="checkpoint size in bytes")
    args = parser.parse_args()
    payload = b"x" * args.payload

    with tempfile.TemporaryDirectory(prefix="bench-store-", dir=Path.cwd()) as tmp:
        root = Path(tmp)
        single = raw_single(root / "raw-single.sqlite3", args.seconds, payload)
        hop = asyncio.run(raw_single_threaded(root / "raw-hop.sqlite3", args.seconds, payload))
        batched = raw_batched(root / "raw-batched.sqlite3", args.seconds, payload, 256)
        rows: list[tuple[str, float, str]] = [
            ("raw sqlite3, 1 row per transaction", single, "floor (blocks its caller)"),
            ("raw, 1 row/txn on a thread, from asyncio", hop, "floor for a non-blocking store"),
            ("raw sqlite3, 256 rows per transaction", batched, "ceiling"),
        ]
        for savers in (1, 16, 256):
            rate, note = asyncio.run(
                store_saves(root / f"store-{savers}.sqlite3", args.seconds, payload, savers)
            )
            rows.append((f"SQLiteStateStore, {savers} concurrent savers", rate, note))

    where = Path.cwd()
    print(f"state store, {args.payload}-byte checkpoints, WAL + synchronous=FULL, files in {where}")
    print(f"{'what':<42} {'rows/s':>10} {'x floor':>8} {'x thread':>9} {'x ceiling':>10}  notes")
    for name, rate, note in rows:
        print(
            f"{name:<42} {rate:>10,.0f} {rate / single:>8.2f} {rate / hop:>9.2f} "
            f"{rate / batched:>10.3f}  {note}"
        )


if __name__ == "__main__":
    main()
