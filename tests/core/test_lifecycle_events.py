"""Lifecycle events: the runtime announces each step of each component's life, as data, to its
lifecycle listeners (what the dashboard's timeline is made of), and each status names the
component's dependencies (what the dashboard's graph is drawn from).

Time is a :class:`~minions.testing.FakeClock`; tests wait on the events themselves, each wait
bounded.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from structlog.testing import capture_logs

from minions import Backoff, Intensity, LifecycleEvent, Minion, Resource, Runtime
from minions.testing import FakeClock

pytestmark = pytest.mark.anyio

LIMIT = 5.0
NO_JITTER = Backoff(initial=1.0, factor=2.0, cap=30.0, jitter=0.0)

failures: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)


class Feed(Resource, backoff=NO_JITTER, intensity=Intensity(max_restarts=1, within=60)):
    """Runs until ``failures["Feed"]`` is set, then raises."""

    async def run(self) -> None:
        await failures["Feed"].wait()
        failures["Feed"].clear()
        raise ConnectionError("feed closed")


class Strategy(Minion):
    def __init__(self, feed: Feed, also: Feed) -> None:
        self.feed = feed

    async def run(self) -> None:
        await asyncio.Event().wait()


class Journal:
    """A lifecycle listener that keeps every event and lets a test wait for one."""

    def __init__(self) -> None:
        self.events: list[LifecycleEvent] = []
        self._changed = asyncio.Event()

    def __call__(self, event: LifecycleEvent) -> None:
        self.events.append(event)
        self._changed.set()

    def steps(self, component: str | None = None) -> list[str]:
        return [e.kind for e in self.events if component is None or e.component == component]

    async def until(self, predicate: Callable[[], bool]) -> None:
        with anyio.fail_after(LIMIT):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture(autouse=True)
def _reset() -> None:
    failures.clear()


def runtime(tmp_path: Path, clock: FakeClock) -> Runtime:
    return Runtime(project_dir=tmp_path, environ={}, clock=clock, rng=random.Random(7))


async def test_a_crash_and_its_restart_are_announced_with_their_causes(tmp_path: Path) -> None:
    """Start, crash (with its cause and error), the dependent stopped because of it, the
    backoff restart, and the dependent brought back: each is one event, in the order taken."""
    clock = FakeClock()
    journal = Journal()
    async with runtime(tmp_path, clock) as rt:
        rt.add_lifecycle_listener(journal)
        await rt.start(Strategy)
        assert journal.steps() == ["starting", "started", "starting", "started"]
        assert [e.component for e in journal.events] == ["Feed", "Feed", "Strategy", "Strategy"]
        journal.events.clear()

        failures["Feed"].set()
        await journal.until(lambda: "restarting" in journal.steps("Feed"))
        crashed = next(e for e in journal.events if e.kind == "crashed")
        assert crashed.component == "Feed"
        assert crashed.cause == "raised"
        assert crashed.reason is not None and "ConnectionError: feed closed" in crashed.reason
        restarting = next(e for e in journal.events if e.kind == "restarting")
        assert restarting.delay == 1.0
        stopped = next(e for e in journal.events if e.component == "Strategy")
        assert stopped.kind == "stopping"
        assert stopped.reason == "its dependency Feed is restarting"

        with anyio.fail_after(LIMIT):
            assert await clock.advance_to_next() == 1.0
        await journal.until(lambda: journal.steps("Strategy")[-1:] == ["started"])
        assert journal.steps("Feed") == ["crashed", "restarting", "starting", "started"]
        assert journal.steps("Strategy") == [
            "stopping",
            "stopped",
            "restarting",
            "starting",
            "started",
        ]
        assert all(e.at.tzinfo is not None for e in journal.events)
        assert journal.events == sorted(journal.events, key=lambda e: e.at)


async def test_giving_up_and_stopping_are_announced(tmp_path: Path) -> None:
    """Past its restart intensity a component is given up, with the reason; the runtime's stop
    announces each component stopping and stopped."""
    clock = FakeClock()
    journal = Journal()
    async with runtime(tmp_path, clock) as rt:
        rt.add_lifecycle_listener(journal)
        await rt.start(Feed)
        failures["Feed"].set()
        await journal.until(lambda: "restarting" in journal.steps())
        with anyio.fail_after(LIMIT):
            await clock.advance_to_next()
        await journal.until(lambda: journal.steps().count("started") == 2)
        failures["Feed"].set()
        await journal.until(lambda: "given_up" in journal.steps())
        given_up = journal.events[-1]
        assert given_up.kind == "given_up"
        assert given_up.reason is not None and given_up.reason.startswith(
            "more than 1 restarts within 60"
        )
        journal.events.clear()
        await rt.restart(Feed)
    assert journal.steps() == ["restarting", "starting", "started", "stopping", "stopped"]
    assert journal.events[-1].reason == "runtime stopping"


async def test_a_failing_listener_is_logged_and_the_others_still_hear(tmp_path: Path) -> None:
    """A listener that raises cannot break supervision or deafen the other listeners; a removed
    listener hears nothing more."""

    def broken(event: LifecycleEvent) -> None:
        raise ValueError("listener bug")

    journal = Journal()
    removed = Journal()
    with capture_logs() as logs:
        async with runtime(tmp_path, FakeClock()) as rt:
            rt.add_lifecycle_listener(broken)
            rt.add_lifecycle_listener(journal)
            rt.add_lifecycle_listener(removed)
            rt.remove_lifecycle_listener(removed)
            rt.remove_lifecycle_listener(removed)  # twice: no error
            await rt.start(Feed)
            assert rt.status()["Feed"].state.value == "running"
    assert journal.steps() == ["starting", "started", "stopping", "stopped"]
    assert removed.events == []
    failed = [e for e in logs if e["event"] == "lifecycle.listener_failed"]
    assert len(failed) == 4


async def test_each_status_names_the_components_it_depends_on(tmp_path: Path) -> None:
    """``ComponentStatus.dependencies``: the injected resources' names, each once."""
    async with runtime(tmp_path, FakeClock()) as rt:
        await rt.start(Strategy)
        status = rt.status()
        assert status["Strategy"].dependencies == ("Feed",)
        assert status["Feed"].dependencies == ()
