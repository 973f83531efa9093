"""A module naming its pipeline and minion with module-level variables, as the original
``minions`` project's module-path form expects (``start_orchestration("pkg.mod", "pkg.mod")``)."""

from dataclasses import dataclass

from minions import Minion, Pipeline, minion_step


@dataclass
class Ping:
    n: int = 0


@dataclass
class PingCtx:
    done: bool = False


class PingPipeline(Pipeline[Ping]):
    produced = 0

    async def produce_event(self) -> Ping:
        PingPipeline.produced += 1
        return Ping(PingPipeline.produced)


class PingMinion(Minion[Ping, PingCtx]):
    max_in_flight = 4

    @minion_step
    async def mark(self) -> None:
        self.context.done = True


class SpareMinion(Minion[Ping, PingCtx]):
    @minion_step
    async def mark(self) -> None:
        self.context.done = True


pipeline = PingPipeline
minion = PingMinion
