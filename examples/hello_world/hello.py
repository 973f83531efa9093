"""The hello-world program: one pipeline, one workflow minion, two steps."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass

from minions import Minion, Pipeline, minion_step


@dataclass
class Greeting:
    number: int
    text: str = "hello world"


@dataclass
class GreetingContext:
    """Built fresh for every greeting; saved with each checkpoint."""

    shout: str = ""


class Greetings(Pipeline[Greeting]):
    """Produces a greeting every ``interval`` seconds."""

    interval = 0.5
    _numbers = itertools.count(1)

    async def produce_event(self) -> Greeting:
        await asyncio.sleep(Greetings.interval)
        return Greeting(next(Greetings._numbers))


class Greeter(Minion[Greeting, GreetingContext]):
    @minion_step
    async def compose(self) -> None:
        self.context.shout = f"{self.event.text} #{self.event.number}"

    @minion_step
    async def say(self) -> None:
        print(self.context.shout, flush=True)
