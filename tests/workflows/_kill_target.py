"""A workflow program for the kill-point tests, run in a real subprocess.

    python -m tests.workflows._kill_target --db STATE --counts COUNTS [--kill-point P]
                                           [--events N] [--context v1|v2]

It starts a Gru on an ``SQLiteStateStore`` at STATE with a two-step minion; each step appends a
line to COUNTS as it starts (a plain append survives SIGKILL: the kernel has the bytes). With a
kill point, the program prints ``KILLPOINT <name>`` on stdout at that exact moment and blocks on
an event that never comes, waiting for the test's SIGKILL. The store wrapper places the points
around the real store's calls; the minion places the one inside step one.

The point ``succeeded_delete_pending`` uses the plain store, whose deletes of finished workflows
are deferred: step two takes the database's write lock from a second connection, so once the
workflow is counted as succeeded its delete cannot commit, and the program announces the point.

Without a kill point it resumes what the store holds, waits until every resumed workflow has
finished, prints ``DONE <statistics as JSON>`` and shuts down. A refused start prints
``START-FAILED <reason> | <suggestion>`` and exits with status 3.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from minions import Gru, Minion, Pipeline, minion_id, minion_step
from minions.core.logs import configure_logging
from minions.implementations import SQLiteStateStore, StructlogLogger
from minions.interfaces import StateStore, StoredContext

KILL_POINTS = (
    "before_first_save",
    "after_start_save",
    "inside_step1",
    "between_steps",
    "after_second_save",
    "before_delete",
    "after_delete",
    "succeeded_delete_pending",
)


class Settings:
    kill_point: str | None = None
    counts: Path = Path("counts")
    db: Path = Path("state")
    events = 1
    #: A second connection holding the write lock, kept open until the process dies.
    blocker: sqlite3.Connection | None = None


def record(step: str, n: int) -> None:
    with Settings.counts.open("a", encoding="utf-8") as f:
        f.write(f"{step} {n}\n")


async def kill_here(point: str) -> None:
    if Settings.kill_point == point:
        print(f"KILLPOINT {point}", flush=True)
        await asyncio.Event().wait()


@dataclass
class Job:
    n: int


@dataclass
class ProgressV1:
    count: int = 0


@dataclass
class ProgressV2:
    count: int = 0
    note: str = ""


class Jobs(Pipeline[Job]):
    async def produce_event(self) -> Job:
        if Settings.events <= 0:
            await asyncio.Event().wait()
        Settings.events -= 1
        return Job(Settings.events + 1)


@minion_id("kill-target")
class TargetV1(Minion[Job, ProgressV1]):
    @minion_step
    async def step1(self) -> None:
        record("step1", self.event.n)
        self.context.count += 1
        await kill_here("inside_step1")

    @minion_step
    async def step2(self) -> None:
        record("step2", self.event.n)
        self.context.count += 1
        if Settings.kill_point == "succeeded_delete_pending":
            Settings.blocker = sqlite3.connect(Settings.db, isolation_level=None)
            Settings.blocker.execute("BEGIN IMMEDIATE")


@minion_id("kill-target")
class TargetV2(Minion[Job, ProgressV2]):
    @minion_step
    async def step1(self) -> None:
        record("step1", self.event.n)

    @minion_step
    async def step2(self) -> None:
        record("step2", self.event.n)


class KillableStore(StateStore):
    """The real SQLite store, with kill points around its writes."""

    def __init__(self, inner: SQLiteStateStore) -> None:
        self.inner = inner
        self.saves = 0

    async def save_context(self, workflow_id: str, orchestration_id: str, context: bytes) -> None:
        self.saves += 1
        if self.saves == 1:
            await kill_here("before_first_save")
        if self.saves == 2:
            await kill_here("between_steps")
        await self.inner.save_context(workflow_id, orchestration_id, context)
        if self.saves == 1:
            await kill_here("after_start_save")
        if self.saves == 2:
            await kill_here("after_second_save")

    async def delete_context(self, workflow_id: str) -> None:
        await kill_here("before_delete")
        await self.inner.delete_context(workflow_id)
        await kill_here("after_delete")

    async def get_contexts_for_orchestration(self, orchestration_id: str) -> list[StoredContext]:
        return await self.inner.get_contexts_for_orchestration(orchestration_id)

    async def get_all_contexts(self) -> list[StoredContext]:
        return await self.inner.get_all_contexts()

    async def startup(self) -> None:
        await self.inner.startup()

    async def shutdown(self) -> None:
        await self.inner.shutdown()


async def main(args: argparse.Namespace) -> int:
    Settings.kill_point = args.kill_point
    Settings.counts = Path(args.counts)
    Settings.events = args.events
    Settings.db = Path(args.db)
    store: StateStore = SQLiteStateStore(args.db)
    if args.kill_point != "succeeded_delete_pending":
        store = KillableStore(SQLiteStateStore(args.db))
    gru = await Gru.create(
        state_store=store,
        logger=StructlogLogger(),
        metrics=None,
        project_dir=Path(args.db).parent,
    )
    try:
        minion: Any = TargetV1 if args.context == "v1" else TargetV2
        saved = await store.get_all_contexts()
        result = await gru.start_orchestration(Jobs, minion)
        if not result.success:
            print(f"START-FAILED {result.reason} | {result.suggestion}", flush=True)
            return 3
        oid = result.orchestration_id or ""
        if args.kill_point == "succeeded_delete_pending":
            await gru.wait_for_workflows(oid, lambda s: s.succeeded == 1)
            await kill_here(args.kill_point)
        if args.kill_point:
            await asyncio.Event().wait()  # the test kills us at the kill point
        stats = await gru.wait_for_workflows(
            oid,
            lambda s: (
                s.resumed + s.corrupt_skipped == len(saved)
                and s.in_flight == 0
                and s.finished == s.resumed
            ),
        )
        print("DONE " + json.dumps(dataclasses.asdict(stats)), flush=True)
        return 0
    finally:
        await gru.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--counts", required=True)
    parser.add_argument("--kill-point", choices=KILL_POINTS)
    parser.add_argument("--events", type=int, default=1)
    parser.add_argument("--context", choices=["v1", "v2"], default="v1")
    # Logs to stderr (the test sends it to a file); stdout carries only the markers.
    configure_logging(project_dir=None, stream=sys.stderr, json_console=True)
    sys.exit(asyncio.run(main(parser.parse_args())))
