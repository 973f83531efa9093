"""The trading bot's components.

* :class:`ChainEvents` simulates a chain listener: swaps on a few pairs, one block at a time,
  fanned out to every subscriber through ``subscribe()``, an async generator (a stream).
* :class:`PriceFeed` keeps a price per pair up to date in the background; now and then its
  simulated upstream API fails, so the runtime restarts it and, after it, everything that
  depends on it.
* :class:`Wallet` submits simulated transactions and counts them.
* :class:`OnChainStrategy` is the minion: for each large swap, it looks up the price and trades
  against the swap's direction.
* :class:`ThirdPartyStrategy` stands for code you did not write: a momentum strategy that now
  and then crashes its whole process (a simulated segfault in a native extension). It runs
  ``isolated=True``, in a child process, so a crash costs a restart of that child and nothing
  else; it reaches the same resources through proxies.

Nothing here knows about restarts or wiring: the runtime injects ``ChainEvents``, ``PriceFeed``
and ``Wallet`` by their annotations and supervises them.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import structlog
from pydantic import BaseModel, Field

from minions import Minion, Resource

log = structlog.get_logger("trading_bot")

Pair = str


@dataclass(frozen=True)
class ChainEvent:
    """A swap seen on chain."""

    block: int
    pair: Pair
    side: Literal["buy", "sell"]
    amount: float


@dataclass(frozen=True)
class Price:
    pair: Pair
    value: float


class ChainConfig(BaseModel):
    pairs: list[Pair] = Field(default_factory=lambda: ["ETH/USDC", "BTC/USDC"])
    block_interval: float = Field(0.5, gt=0, description="seconds between simulated blocks")
    swaps_per_block: int = Field(3, ge=1)
    seed: int | None = None


class ChainEvents(Resource):
    """Simulated chain listener; every subscriber sees every event, in order."""

    config: ChainConfig

    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[ChainEvent]] = set()
        self._rng = random.Random(self.config.seed)
        self._block = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.config.block_interval)
            self._block += 1
            for _ in range(self.config.swaps_per_block):
                event = ChainEvent(
                    block=self._block,
                    pair=self._rng.choice(self.config.pairs),
                    side=self._rng.choice(("buy", "sell")),
                    amount=round(self._rng.lognormvariate(0, 1.2), 3),
                )
                for queue in list(self._subscribers):
                    await queue.put(event)  # a slow subscriber slows the chain, never loses events

    async def subscribe(self) -> AsyncIterator[ChainEvent]:
        queue: asyncio.Queue[ChainEvent] = asyncio.Queue(maxsize=256)
        self._subscribers.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers.discard(queue)


class PriceConfig(BaseModel):
    start: dict[Pair, float] = Field(
        default_factory=lambda: {"ETH/USDC": 3000.0, "BTC/USDC": 60000.0}
    )
    tick: float = Field(0.2, gt=0)
    volatility: float = Field(0.002, ge=0)
    failure_rate: float = Field(0.01, ge=0, le=1, description="chance per tick of an API outage")


class PriceFeed(Resource):
    """Prices from a simulated upstream API that fails now and then."""

    config: PriceConfig

    def __init__(self) -> None:
        self._prices = dict(self.config.start)
        self._rng = random.Random()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.config.tick)
            if self._rng.random() < self.config.failure_rate:
                raise ConnectionError("price API unreachable (simulated outage)")
            for pair, value in self._prices.items():
                self._prices[pair] = value * (1 + self._rng.gauss(0, self.config.volatility))

    async def get_price(self, pair: Pair) -> Price:
        if pair not in self._prices:
            raise KeyError(f"no price for {pair}")
        return Price(pair, round(self._prices[pair], 2))


class Wallet(Resource):
    """Submits simulated transactions."""

    def __init__(self) -> None:
        self.submitted = 0

    async def submit(self, pair: Pair, side: str, amount: float, price: float) -> str:
        self.submitted += 1
        payload = f"{self.submitted}:{pair}:{side}:{amount}:{price}".encode()
        tx = "0x" + hashlib.sha256(payload).hexdigest()[:16]
        log.info("trade.submitted", pair=pair, side=side, amount=amount, price=price, tx=tx)
        return tx


class StrategyConfig(BaseModel):
    min_amount: float = Field(2.0, gt=0, description="react to swaps at least this large")


class OnChainStrategy(Minion):
    """Fade large swaps: buy after a large sell, sell after a large buy."""

    config: StrategyConfig

    def __init__(self, events: ChainEvents, prices: PriceFeed, wallet: Wallet) -> None:
        self._events = events
        self._prices = prices
        self._wallet = wallet

    async def run(self) -> None:
        async for event in self._events.subscribe():
            if event.amount < self.config.min_amount:
                continue
            price = await self._prices.get_price(event.pair)
            side = "sell" if event.side == "buy" else "buy"
            await self._wallet.submit(event.pair, side, round(event.amount / 2, 3), price.value)


class ThirdPartyConfig(BaseModel):
    crash_rate: float = Field(0.02, ge=0, le=1, description="chance per event of a segfault")
    window: int = Field(5, ge=1, description="events per momentum window")


class ThirdPartyStrategy(Minion, isolated=True):
    """A vendor's momentum strategy: trades with a streak of same-side swaps. It crashes."""

    config: ThirdPartyConfig

    def __init__(self, events: ChainEvents, prices: PriceFeed, wallet: Wallet) -> None:
        self._events = events
        self._prices = prices
        self._wallet = wallet
        self._rng = random.Random()

    async def run(self) -> None:
        streak: list[ChainEvent] = []
        async for event in self._events.subscribe():
            if self._rng.random() < self.config.crash_rate:
                ctypes.string_at(0)  # the vendor's native code dereferences NULL
            streak = [e for e in streak if e.pair == event.pair and e.side == event.side]
            streak.append(event)
            if len(streak) < self.config.window:
                continue
            price = await self._prices.get_price(event.pair)
            await self._wallet.submit(event.pair, event.side, 0.1, price.value)
            streak.clear()
