"""Background tasks: ``self.safe_create_task(coro, name=None)`` on any component, in process.

A task the component starts is supervised — its exception is the component's crash, and the
restart policy applies — and belongs to the incarnation: it is cancelled with ``run()`` and
drained before ``shutdown()`` runs; one that does not end within its grace is left behind and
reported as ``TaskCancellationTimeoutError``. The method cannot be overridden.
(``tests/isolated/test_isolated_tasks.py`` holds the same rules for a component in a child.)
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from minions import Backoff, ComponentState, DefinitionError, Minion, Resource, Runtime
from minions.core.tasks import BackgroundTasks, shutdown_supervised
from minions.exceptions import TaskCancellationError, TaskCancellationTimeoutError
from minions.testing import FakeClock

pytestmark = pytest.mark.anyio

LIMIT = 5.0
NO_JITTER = Backoff(initial=1.0, factor=2.0, cap=30.0, jitter=0.0)


class Logs:
    """Captured log events, and a way to wait for one without polling."""

    def __init__(self) -> None:
        self.entries: list[MutableMapping[str, Any]] = []
        self._changed = asyncio.Event()

    def __call__(self, logger: object, method: str, event: MutableMapping[str, Any]) -> Any:
        self._changed.set()
        return event

    def of(self, name: str) -> list[MutableMapping[str, Any]]:
        return [e for e in self.entries if e["event"] == name]

    async def until(self, predicate: Callable[[], bool]) -> None:
        with anyio.fail_after(LIMIT):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def logs() -> Iterator[Logs]:
    watch = Logs()
    with capture_logs(processors=[merge_contextvars, watch]) as entries:
        watch.entries = entries
        yield watch


class Journal:
    """What the components did, in order, and events the test waits on, per component."""

    entries: ClassVar[list[str]] = []
    fail: ClassVar[defaultdict[str, asyncio.Event]]
    started: ClassVar[defaultdict[str, asyncio.Event]]
    release: ClassVar[asyncio.Event]


@pytest.fixture(autouse=True)
def journal() -> Iterator[type[Journal]]:
    Journal.entries = []
    Journal.fail = defaultdict(asyncio.Event)
    Journal.started = defaultdict(asyncio.Event)
    Journal.release = asyncio.Event()
    yield Journal


async def started(owner: str) -> None:
    with anyio.fail_after(LIMIT):
        await Journal.started[owner].wait()
    Journal.started[owner].clear()


def runtime(tmp_path: Path, clock: FakeClock) -> Runtime:
    return Runtime(project_dir=tmp_path, environ={}, clock=clock, rng=random.Random(7))


async def poll(owner: str) -> None:
    """A background loop: fails when told to, records its cancellation."""
    Journal.entries.append(f"{owner}.poll started")
    Journal.started[owner].set()
    try:
        await Journal.fail[owner].wait()
    except asyncio.CancelledError:
        Journal.entries.append(f"{owner}.poll cancelled")
        raise
    raise ConnectionError(f"{owner} lost its feed")


class Feed(Resource, backoff=NO_JITTER):
    """A resource without run(): its background task is its life."""

    async def startup(self) -> None:
        self.task = self.safe_create_task(poll("Feed"), name="feed-poll")

    async def shutdown(self) -> None:
        Journal.entries.append(f"Feed.shutdown (task done: {self.task.done()})")


class Trader(Minion, backoff=NO_JITTER, restart="permanent"):
    feed: Feed

    async def run(self) -> None:
        self.safe_create_task(poll("Trader"))  # named after the coroutine: "poll"
        await asyncio.Event().wait()

    async def shutdown(self) -> None:
        Journal.entries.append("Trader.shutdown")


async def test_a_failing_background_task_crashes_its_resource_and_restarts_it(
    tmp_path: Path, logs: Logs
) -> None:
    """The exception of a resource's task is the resource's crash: it is logged with the
    task's name, counted, and the resource restarts — its dependents stopped first."""
    clock = FakeClock()
    async with runtime(tmp_path, clock) as rt:
        await rt.start(Trader)
        await started("Feed")
        await started("Trader")
        Journal.fail["Feed"].set()
        await logs.until(lambda: bool(logs.of("component.restarting")))
        Journal.fail["Feed"].clear()
        crashed = [e for e in logs.of("component.crashed") if e["component"] == "Feed"]
        assert crashed[0]["reason"] == (
            "background task 'feed-poll' raised ConnectionError: Feed lost its feed"
        )
        assert isinstance(crashed[0]["exc_info"], ConnectionError)
        with anyio.fail_after(LIMIT):
            await clock.advance_to_next()
        await logs.until(lambda: rt.status()["Trader"].state is ComponentState.RUNNING)
        status = rt.status()["Feed"]
        assert status.restarts == 1 and status.crash_causes == {"raised": 1}
        assert rt.status()["Trader"].crashes == 0
    # The dependent stopped first, its own task drained before its shutdown().
    first_run = Journal.entries[: Journal.entries.index("Trader.shutdown") + 1]
    assert first_run[-2:] == ["Trader.poll cancelled", "Trader.shutdown"]
    assert Journal.entries.count("Feed.poll started") == 2


async def test_a_failing_background_task_crashes_its_minion(tmp_path: Path, logs: Logs) -> None:
    """A minion's task raising crashes the minion even though its run() is fine."""
    clock = FakeClock()
    async with runtime(tmp_path, clock) as rt:
        await rt.start(Lonely)
        await started("Lonely")
        Journal.fail["Lonely"].set()
        await logs.until(lambda: bool(logs.of("component.crashed")))
        (crashed,) = logs.of("component.crashed")
        assert crashed["component"] == "Lonely"
        assert (
            crashed["reason"]
            == "background task 'poll' raised ConnectionError: Lonely lost its feed"
        )
        await logs.until(lambda: rt.status()["Lonely"].state is not ComponentState.RUNNING)
    assert rt.status()["Lonely"].crashes == 1


class Lonely(Minion):
    async def startup(self) -> None:
        self.safe_create_task(poll("Lonely"))

    async def run(self) -> None:
        await asyncio.Event().wait()


class Tidy(Resource):
    """Tasks that end, are cancelled by the component, or start during shutdown()."""

    async def startup(self) -> None:
        self.quick = self.safe_create_task(self.answer(), name="answer")
        self.dropped = self.safe_create_task(asyncio.Event().wait(), name="dropped")
        self.dropped.cancel()
        self.long = self.safe_create_task(poll("Tidy"), name="long")

    async def answer(self) -> int:
        return 42

    async def shutdown(self) -> None:
        Journal.entries.append(f"Tidy.shutdown (long done: {self.long.done()})")
        self.late = self.safe_create_task(self.flush(), name="flush")
        await asyncio.sleep(0)  # it starts, and is still running when shutdown() returns

    async def flush(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            Journal.entries.append("Tidy.flush cancelled")


async def test_tasks_are_cancelled_and_drained_before_shutdown_and_after_it(
    tmp_path: Path, logs: Logs
) -> None:
    """Tasks that return or that the component cancels itself are no crash; at stop the
    running ones are cancelled and waited for before shutdown(), and those shutdown() starts
    are drained after it. safe_create_task returns the asyncio.Task, named as asked."""
    async with runtime(tmp_path, FakeClock()) as rt:
        await rt.start(Tidy)
        await started("Tidy")
        tidy = rt.instances()["Tidy"]
        assert isinstance(tidy, Tidy)
        assert await tidy.quick == 42 and tidy.quick.get_name() == "answer"
        assert tidy.dropped.cancelled() and rt.status()["Tidy"].crashes == 0
    assert Journal.entries == [
        "Tidy.poll started",
        "Tidy.poll cancelled",
        "Tidy.shutdown (long done: True)",
        "Tidy.flush cancelled",
    ]
    assert tidy.late.cancelled() and logs.of("component.crashed") == []
    with pytest.raises(RuntimeError, match="Tidy has stopped"):
        tidy.safe_create_task(tidy.answer())


class Stubborn(Resource, stop_timeout=0.4):
    """Its task swallows its cancellation: it cannot be drained."""

    async def startup(self) -> None:
        self.safe_create_task(self.hold(), name="stubborn-loop")

    async def hold(self) -> None:
        Journal.started["Stubborn"].set()
        while True:
            try:
                await Journal.release.wait()
                return
            except asyncio.CancelledError:
                Journal.entries.append("ignored a cancellation")

    async def shutdown(self) -> None:
        Journal.entries.append("Stubborn.shutdown")


async def test_a_task_that_does_not_end_when_cancelled_is_a_task_cancellation_timeout(
    tmp_path: Path, logs: Logs
) -> None:
    """A task still running its grace after being cancelled is left behind: the stop goes on
    (shutdown() runs) and reports TaskCancellationTimeoutError, naming the task."""
    async with runtime(tmp_path, FakeClock()) as rt:
        await rt.start(Stubborn)
        await started("Stubborn")
    (left,) = logs.of("component.task_left_behind")
    assert left["component"] == "Stubborn" and left["task"] == "stubborn-loop"
    assert "'stubborn-loop' was still running 0.1 s after it was cancelled" in left["reason"]
    assert Journal.entries == ["ignored a cancellation", "Stubborn.shutdown"]
    Journal.release.set()  # let the abandoned task end, so the test leaves nothing running


async def test_shutdown_supervised_raises_task_cancellation_timeout_error() -> None:
    """The error itself: raised by the drain after shutdown() ran, naming the task and the
    grace; a TaskCancellationError and a TimeoutError."""
    tasks = BackgroundTasks("Owner")
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue

    ran: list[str] = []

    async def shutdown() -> None:
        ran.append("shutdown")

    task = tasks.create(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    with pytest.raises(TaskCancellationTimeoutError) as caught:
        await shutdown_supervised(tasks, shutdown, grace=0.05)
    error = caught.value
    assert isinstance(error, TaskCancellationError) and isinstance(error, TimeoutError)
    assert (error.label, error.timeout) == ("stubborn", 0.05)
    assert ran == ["shutdown"] and tasks.left_behind == [task]
    release.set()
    with anyio.fail_after(LIMIT):
        await task


def test_safe_create_task_cannot_be_overridden() -> None:
    """A component class defining safe_create_task is rejected (a TypeError, as in the
    original), whatever its base."""
    from minions import Pipeline

    for base in (Minion, Resource, Pipeline):
        with pytest.raises(TypeError, match=r"Custom\.safe_create_task cannot be overridden"):
            type("Custom", (base,), {"safe_create_task": lambda self, coro, name=None: None})
    with pytest.raises(DefinitionError):
        type("Custom", (Resource,), {"safe_create_task": None})


async def test_safe_create_task_takes_a_coroutine() -> None:
    """Passing the function instead of calling it is a TypeError that shows how to call it."""
    with pytest.raises(TypeError, match=r"call the async function"):
        Tidy().safe_create_task(Tidy().answer)  # type: ignore[arg-type]


class Brief(Minion):
    """Its run() returns at once, leaving a task behind that fails."""

    async def run(self) -> None:
        self.safe_create_task(self.boom(), name="late-boom")

    async def boom(self) -> None:
        raise LookupError("nothing to look up")


async def test_a_task_failing_after_run_returned_is_logged_not_lost(
    tmp_path: Path, logs: Logs
) -> None:
    """A minion whose run() returned has completed; a task of it failing afterwards cannot
    crash it any more, and is logged rather than lost."""
    async with runtime(tmp_path, FakeClock()) as rt:
        await rt.start(Brief)
        await logs.until(lambda: bool(logs.of("component.task_failed")))
        (failed,) = logs.of("component.task_failed")
        assert (failed["component"], failed["task"]) == ("Brief", "late-boom")
        assert failed["reason"] == "LookupError: nothing to look up"
        await logs.until(lambda: rt.status()["Brief"].state is ComponentState.COMPLETED)
    assert rt.status()["Brief"].crashes == 0
