"""The peer benchmark's workload, written against the `minions` 0.0.2 wheel's own API.

A pipeline emits small events; a minion runs a two-step workflow on each (step one copies the
event into the context, step two derives from it). The number of workflows in flight is capped
by a semaphore: the pipeline takes a slot before producing an event and the workflow's last step
gives it back, so the runtime always has about ``in_flight`` workflows to drive. The wheel
starts a pipeline before subscribing the minion to it and drops events nobody is subscribed to,
so the pipeline waits for the minion's ``startup`` hook before its first event. The peer
deletes a checkpoint after the last step returns, so a slot is handed back a moment before its
workflow's final delete; the overlap is at most one delete per slot.

Only the driver (``run_peer.py``, run by the peer venv's Python) imports this module.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from minions import Minion, Pipeline, minion_step


@dataclass
class Tick:
    n: int


@dataclass
class TwoStepCtx:
    seen: int = 0
    doubled: int = 0


class _Gate:
    """Module state shared by the pipeline and the minion (the wheel builds both itself)."""

    def __init__(self) -> None:
        self.slots: asyncio.Semaphore | None = None
        self.subscribed: asyncio.Event | None = None
        self.produced = 0
        self.completed = 0

    def configure(self, in_flight: int) -> None:
        self.slots = asyncio.Semaphore(in_flight)
        self.subscribed = asyncio.Event()
        self.produced = 0
        self.completed = 0

    def finish(self) -> None:
        self.completed += 1
        assert self.slots is not None
        self.slots.release()


gate = _Gate()


class TickPipeline(Pipeline[Tick]):
    async def produce_event(self) -> Tick:
        assert gate.slots is not None and gate.subscribed is not None, "call gate.configure()"
        await gate.subscribed.wait()
        await gate.slots.acquire()
        gate.produced += 1
        return Tick(gate.produced)


class TwoStepMinion(Minion[Tick, TwoStepCtx]):
    async def load_config(self, config_path: str) -> dict:
        return {}

    async def startup(self) -> None:
        assert gate.subscribed is not None
        gate.subscribed.set()

    @minion_step
    async def first(self) -> None:
        self.context.seen = self.event.n

    @minion_step
    async def second(self) -> None:
        self.context.doubled = self.context.seen * 2
        gate.finish()


minion = TwoStepMinion
pipeline = TickPipeline
