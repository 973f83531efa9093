"""Components the Ray tests run as Ray actors: in a module, so that Ray workers import them."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import ClassVar

from isolation import Isolation
from minions import Backoff, Minion, Pipeline, ReplicaInfo, Resource, idempotent, minion_step

FAST = Backoff(initial=0.01, cap=0.05, jitter=0.0)
ON_RAY = Isolation(backend="ray", replicas=2, num_cpus=0, start_timeout=60)


class Notes(Resource):
    """In the test process: what the Ray replicas report."""

    seen: ClassVar[list[tuple[str, int]]] = []
    wanted: ClassVar[int] = 0
    enough: ClassVar[asyncio.Event]

    async def note(self, what: str, pid: int) -> int:
        self.seen.append((what, pid))
        if len(self.seen) >= self.wanted:
            self.enough.set()
        return len(self.seen)


def reset_notes(wanted: int) -> None:
    Notes.seen, Notes.wanted, Notes.enough = [], wanted, asyncio.Event()


class Pricer(Resource, isolated=ON_RAY, backoff=FAST):
    """A replicated resource on Ray that also calls back into the test process."""

    def __init__(self, notes: Notes, replica: ReplicaInfo) -> None:
        self._notes = notes
        self._replica = replica

    async def price(self, pair: str, amount: int) -> dict[str, object]:
        return {
            "pair": pair,
            "total": amount * 3,
            "pid": os.getpid(),
            "replica": self._replica.index,
        }

    @idempotent
    async def where(self) -> int:
        return os.getpid()

    async def tell(self, what: str) -> int:
        count: int = await self._notes.note(what, os.getpid())
        return count

    async def ticks(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i
            await asyncio.sleep(0)

    async def fail(self) -> None:
        raise ValueError("refused on Ray")


@dataclass(frozen=True)
class Order:
    number: int


@dataclass
class OrderContext:
    total: int = 0


class Orders(Pipeline[Order]):
    count: ClassVar[int] = 20

    def __init__(self) -> None:
        self._next = 0

    async def produce_event(self) -> Order:
        if self._next >= self.count:
            await asyncio.Event().wait()
        self._next += 1
        return Order(self._next - 1)


class Filler(Minion[Order, OrderContext], isolated=ON_RAY, backoff=FAST):
    """A workflow minion whose steps run on Ray actors."""

    orders: Orders
    notes: Notes

    @minion_step
    async def price(self) -> None:
        self.context.total = self.event.number * 10

    @minion_step
    async def book(self) -> None:
        await self.notes.note(f"booked {self.event.number} {self.context.total}", os.getpid())
