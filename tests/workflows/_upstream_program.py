"""A program written against the original ``minions`` API, for test_upstream_program.py.

    python -m tests.workflows._upstream_program --db STATE --journal FILE [--isolated]
                                                [--first N] [--events N] [--kill-at N]
                                                [--expect N]

It uses the original's API beyond the basics: msgspec Struct events, contexts and config;
``Gru.create`` persistence settings (``idle-until-persisted`` with its retry settings, on a store
whose first two saves fail); ``@minion_step()`` and ``@minion_step(name=...)``; an
``@Resource.untracked`` method; ``self.safe_create_task`` in a pipeline, a resource and the
minion. With ``--isolated`` the minion runs in a child process (the one line that is Minions'
own: ``isolated=True``).

The pipeline produces events ``first .. first+events-1``, one workflow at a time. Each step
appends a line to the journal (a plain append survives SIGKILL). With ``--kill-at N`` the step
``confirm`` of event N calls the exchange's untracked ``ping``, which prints ``KILLPOINT N`` (in
this process, the parent, even when the minion is isolated) and blocks until the test's
SIGKILL. Otherwise the program waits until ``--expect`` workflows have succeeded, prints
``DONE <statistics as JSON>`` and shuts down.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import msgspec

from minions import Gru, Minion, Pipeline, Resource, minion_id, minion_step, pipeline_id
from minions.core.logs import configure_logging
from minions.exceptions import StateStoreUnavailable
from minions.implementations import SQLiteStateStore, StructlogLogger
from minions.interfaces import StateStore, StoredContext


class Settings:
    first = 1
    events = 0
    kill_at: int | None = None


class Order(msgspec.Struct, frozen=True):
    n: int
    pair: str
    placed: datetime.datetime


class OrderCtx(msgspec.Struct):
    price: Decimal | None = None
    confirmed: bool = False


class TraderConfig(msgspec.Struct):
    journal: str
    factor: int = 2


def write(journal: str, line: str) -> None:
    with open(journal, "a", encoding="utf-8") as f:
        f.write(line + "\n")


@pipeline_id("upstream-orders")
class Orders(Pipeline[Order]):
    async def startup(self) -> None:
        self._queue: asyncio.Queue[Order] = asyncio.Queue()
        self.safe_create_task(self._feed(), name="order-feed")

    async def _feed(self) -> None:
        placed = datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC)
        for n in range(Settings.first, Settings.first + Settings.events):
            await self._queue.put(Order(n, "ETH/USDC", placed))

    async def produce_event(self) -> Order:
        return await self._queue.get()


class Exchange(Resource):
    async def startup(self) -> None:
        self.beats = 0
        self.safe_create_task(self._heartbeat(), name="exchange-heartbeat")

    async def _heartbeat(self) -> None:
        while True:
            self.beats += 1
            await asyncio.sleep(3600)

    async def price(self, pair: str) -> Decimal:
        return Decimal("100.25")

    @Resource.untracked
    async def ping(self, n: int) -> str:
        if n == Settings.kill_at:
            print(f"KILLPOINT {n}", flush=True)
            await asyncio.Event().wait()
        return "pong"


@minion_id("upstream-trader")
class Trader(Minion[Order, OrderCtx]):
    exchange: Exchange
    config: TraderConfig
    max_in_flight = 1

    async def startup(self) -> None:
        self.warm = self.safe_create_task(self.exchange.ping(0), name="warm-up")

    @minion_step()
    async def quote(self) -> None:
        write(self.config.journal, f"quote {self.event.n}")
        self.context.price = await self.exchange.price(self.event.pair) * self.config.factor

    @minion_step(name="confirm")
    async def ask_the_exchange(self) -> None:
        write(self.config.journal, f"confirm {self.event.n}")
        self.context.confirmed = await self.exchange.ping(self.event.n) == "pong"

    @minion_step(name="book")
    async def book(self) -> None:
        price = self.context.price
        write(
            self.config.journal,
            f"book {self.event.n} {type(price).__name__}:{price} {self.context.confirmed}",
        )


@minion_id("upstream-trader-isolated")
class IsolatedTrader(Trader, isolated=True):
    """The same minion, run in a child process."""


class FlakyStore(StateStore):
    """The real SQLite store, whose first two saves fail as an outage would."""

    def __init__(self, inner: SQLiteStateStore) -> None:
        self.inner = inner
        self.failures_left = 2

    async def save_context(self, workflow_id: str, orchestration_id: str, context: bytes) -> None:
        if self.failures_left:
            self.failures_left -= 1
            raise StateStoreUnavailable("the disk is busy (a failure the program arranged)")
        await self.inner.save_context(workflow_id, orchestration_id, context)

    async def delete_context(self, workflow_id: str) -> None:
        await self.inner.delete_context(workflow_id)

    async def get_contexts_for_orchestration(self, orchestration_id: str) -> list[StoredContext]:
        return await self.inner.get_contexts_for_orchestration(orchestration_id)

    async def get_all_contexts(self) -> list[StoredContext]:
        return await self.inner.get_all_contexts()

    async def startup(self) -> None:
        await self.inner.startup()

    async def shutdown(self) -> None:
        await self.inner.shutdown()


async def main(args: argparse.Namespace) -> int:
    Settings.first, Settings.events, Settings.kill_at = args.first, args.events, args.kill_at
    gru = await Gru.create(
        state_store=FlakyStore(SQLiteStateStore(args.db)),
        logger=StructlogLogger(),
        metrics=None,
        project_dir=Path(args.db).parent,
        workflow_failure_policy="delete",
        workflow_persistence_failure_policy="idle-until-persisted",
        workflow_persistence_retry_delay_seconds=0.01,
        workflow_persistence_retry_max_delay_seconds=0.05,
        workflow_persistence_retry_backoff_multiplier=2.0,
        workflow_persistence_retry_jitter_ratio=0.1,
        workflow_persistence_retry_warning_interval_seconds=5.0,
        workflow_persistence_retry_error_after_seconds=None,
    )
    try:
        minion: Any = IsolatedTrader if args.isolated else Trader
        config = TraderConfig(journal=args.journal)
        result = await gru.start_orchestration(Orders, minion, minion_config=config)
        if not result.success:
            print(f"START-FAILED {result.reason} | {result.suggestion}", flush=True)
            return 3
        oid = result.orchestration_id or ""
        if args.kill_at is not None:
            await asyncio.Event().wait()  # the test kills us at the kill point
        stats = await gru.wait_for_workflows(oid, lambda s: s.succeeded >= args.expect)
        print("DONE " + json.dumps(dataclasses.asdict(stats)), flush=True)
        return 0
    finally:
        await gru.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--journal", required=True)
    parser.add_argument("--isolated", action="store_true")
    parser.add_argument("--first", type=int, default=1)
    parser.add_argument("--events", type=int, default=0)
    parser.add_argument("--kill-at", type=int)
    parser.add_argument("--expect", type=int, default=0)
    # Logs to stderr (the test sends it to a file); stdout carries only the markers.
    configure_logging(project_dir=None, stream=sys.stderr, json_console=True)
    sys.exit(asyncio.run(main(parser.parse_args())))
