"""The heartbeat system: a pipeline, a shared resource, a workflow minion and a service."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import pydantic

from minions import Minion, Pipeline, Resource, minion_step

#: A heartbeat handled later than this after it was sent counts as late.
LATE_AFTER = 0.05


@dataclass(frozen=True)
class Heartbeat:
    sequence: int
    sent_at: float


@dataclass
class BeatCheck:
    """What the workflow learns about one heartbeat, checkpointed between its steps."""

    delay: float = 0.0
    late: bool = False


class BeatSettings(pydantic.BaseModel):
    """The ``[Heartbeats]`` table of minions.toml (``MINIONS_HEARTBEATS__INTERVAL`` overrides)."""

    interval: float = 0.2


class Heartbeats(Pipeline[Heartbeat]):
    config: BeatSettings

    def __init__(self) -> None:
        self._sequence = 0

    async def produce_event(self) -> Heartbeat:
        await asyncio.sleep(self.config.interval)
        self._sequence += 1
        return Heartbeat(self._sequence, time.time())


class BeatLog(Resource):
    """Shared by the workflow minion (which records) and the reporter (which reads)."""

    def __init__(self) -> None:
        self.recorded = 0
        self.late = 0
        self.changed = asyncio.Event()

    async def record(self, beat: Heartbeat, late: bool) -> int:
        self.recorded += 1
        self.late += late
        self.changed.set()
        return self.recorded


class CheckBeat(Minion[Heartbeat, BeatCheck]):
    """A workflow per heartbeat: measure it, then record it."""

    beats: Heartbeats  # the pipeline this minion takes its events from
    log: BeatLog

    @minion_step
    async def measure(self) -> None:
        self.context.delay = max(0.0, time.time() - self.event.sent_at)
        self.context.late = self.context.delay > LATE_AFTER

    @minion_step
    async def record(self) -> None:
        count = await self.log.record(self.event, self.context.late)
        print(f"heartbeat {self.event.sequence} recorded ({count} so far)", flush=True)


class Reporter(Minion):
    """A plain service minion on the same resource."""

    def __init__(self, log: BeatLog) -> None:
        self._log = log

    async def run(self) -> None:
        reported = 0
        while True:
            await self._log.changed.wait()
            self._log.changed.clear()
            if self._log.recorded >= reported + 5:
                reported = self._log.recorded
                print(f"report: {reported} heartbeats, {self._log.late} late", flush=True)
