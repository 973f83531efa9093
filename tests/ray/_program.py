"""A program with a replica on Ray, run by the Ray tests in a process of its own."""

from __future__ import annotations

from minions import Minion, run
from tests.ray._targets import Pricer


class Caller(Minion):
    def __init__(self, pricer: Pricer) -> None:
        self._pricer = pricer

    async def run(self) -> None:
        quote = await self._pricer.price("ETH", 5)
        print(f"PRICED {quote['total']} by pid {quote['pid']}", flush=True)


if __name__ == "__main__":
    run(Caller)
