"""The lifecycle of components under a Runtime: start order, sharing, stop order and timeouts,
startup failures, status snapshots and waiting for minions to finish."""

import asyncio
import dataclasses
import functools
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from minions import (
    ComponentState,
    ComponentStatus,
    DefinitionError,
    Minion,
    Resource,
    Runtime,
    RuntimeStateError,
    StartupError,
)

pytestmark = pytest.mark.anyio

LIMIT = 5.0

calls: list[str] = []
running: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
"""Set by a component's run() once it is running, by component name."""


@pytest.fixture(autouse=True)
def _reset_calls() -> Iterator[None]:
    calls.clear()
    running.clear()
    yield
    calls.clear()
    running.clear()


def runtime(tmp_path: Path, **kwargs: Any) -> Runtime:
    return Runtime(project_dir=tmp_path, environ={}, **kwargs)


class Recorded:
    """Mixin recording construction and every hook, each with a yield inside so that an
    interleaving would show in the order."""

    def __init__(self) -> None:
        calls.append(f"{type(self).__name__}.init")

    async def startup(self) -> None:
        calls.append(f"{type(self).__name__}.startup")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        calls.append(f"{type(self).__name__}.started")

    async def shutdown(self) -> None:
        calls.append(f"{type(self).__name__}.shutdown")
        await asyncio.sleep(0)
        calls.append(f"{type(self).__name__}.shut")


class Database(Recorded, Resource):
    pass


class Cache(Recorded, Resource):
    def __init__(self, db: Database) -> None:
        super().__init__()
        self.db = db


class Feed(Recorded, Resource):
    cache: Cache

    async def run(self) -> None:
        running["Feed"].set()
        try:
            await asyncio.Event().wait()
        finally:
            calls.append("Feed.run.cancelled")


class Strategy(Recorded, Minion):
    def __init__(self, feed: Feed, cache: Cache) -> None:
        super().__init__()
        self.feed, self.cache = feed, cache

    async def run(self) -> None:
        running["Strategy"].set()
        try:
            await asyncio.Event().wait()
        finally:
            calls.append("Strategy.run.cancelled")


async def test_dependencies_start_depth_first_before_dependents_are_constructed(
    tmp_path: Path,
) -> None:
    """Each dependency's startup() completes before its dependent is even constructed."""
    with anyio.fail_after(LIMIT):
        async with runtime(tmp_path) as rt:
            await rt.start(Strategy)
            assert list(rt.status()) == ["Database", "Cache", "Feed", "Strategy"]
            started = list(calls)
    assert started == [
        "Database.init",
        "Database.startup",
        "Database.started",
        "Cache.init",
        "Cache.startup",
        "Cache.started",
        "Feed.init",
        "Feed.startup",
        "Feed.started",
        "Strategy.init",
        "Strategy.startup",
        "Strategy.started",
    ]


async def test_one_instance_per_resource_shared_by_all_dependents(tmp_path: Path) -> None:
    """Cache is needed by Feed and by Strategy: it is constructed once and both hold it."""

    class Other(Minion):
        def __init__(self, cache: Cache, db: Database) -> None:
            self.cache, self.db = cache, db

        async def run(self) -> None:
            await asyncio.Event().wait()

    with anyio.fail_after(LIMIT):
        async with runtime(tmp_path) as rt:
            await rt.start(Strategy)
            await rt.start(Other)  # added to the running system: shares what runs
    assert calls.count("Cache.init") == 1
    assert calls.count("Database.init") == 1


async def test_stop_runs_in_reverse_order_run_cancelled_before_shutdown(tmp_path: Path) -> None:
    """Stopping everything goes in reverse start order; each run() ends before its shutdown()."""
    with anyio.fail_after(LIMIT):
        async with runtime(tmp_path) as rt:
            await rt.start(Strategy)
            await running["Feed"].wait()
            await running["Strategy"].wait()
            calls.clear()
            with capture_logs() as logs:
                await rt.stop()
            assert {s.state for s in rt.status().values()} == {ComponentState.STOPPED}
    assert calls == [
        "Strategy.run.cancelled",
        "Strategy.shutdown",
        "Strategy.shut",
        "Feed.run.cancelled",
        "Feed.shutdown",
        "Feed.shut",
        "Cache.shutdown",
        "Cache.shut",
        "Database.shutdown",
        "Database.shut",
    ]
    stopped = [e["component"] for e in logs if e["event"] == "component.stopped"]
    assert stopped == ["Strategy", "Feed", "Cache", "Database"]


async def test_a_stopped_runtime_cannot_start_again(tmp_path: Path) -> None:
    """Stopping everything is final; starting again is a RuntimeStateError that says so."""
    async with runtime(tmp_path) as rt:
        await rt.stop()
        with pytest.raises(RuntimeStateError, match="create a new one"):
            await rt.start(Database)


async def test_stop_timeout_abandons_a_run_that_swallows_cancellation(tmp_path: Path) -> None:
    """A run() that ignores cancellation is abandoned after stop_timeout, logged, and the
    component still shuts down; the stop does not hang."""
    release = asyncio.Event()

    class Stubborn(Minion, stop_timeout=0.1):
        async def run(self) -> None:
            running["Stubborn"].set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                calls.append("Stubborn.swallowed")
                await release.wait()  # keeps going as if nothing happened

        async def shutdown(self) -> None:
            calls.append("Stubborn.shutdown")

    try:
        with anyio.fail_after(LIMIT):
            async with runtime(tmp_path) as rt:
                await rt.start(Stubborn)
                await running["Stubborn"].wait()
                with capture_logs() as logs:
                    before = asyncio.get_running_loop().time()
                    await rt.stop()
                    took = asyncio.get_running_loop().time() - before
                assert rt.status()["Stubborn"].state is ComponentState.STOPPED
    finally:
        release.set()
    assert calls == ["Stubborn.swallowed", "Stubborn.shutdown"]
    assert 0.1 <= took < 2.0
    timeouts = [e for e in logs if e["event"] == "component.stop_timeout"]
    assert len(timeouts) == 1
    assert timeouts[0]["component"] == "Stubborn"
    assert "did not end within 0.1 s" in timeouts[0]["reason"]
    assert "abandoned" in timeouts[0]["reason"]


async def test_shutdown_that_swallows_cancellation_is_bounded_by_stop_timeout(
    tmp_path: Path,
) -> None:
    """A shutdown() that ignores cancellation does not hang the stop: after stop_timeout it is
    logged and left behind, and the components after it still stop."""
    release = asyncio.Event()

    class Stuck(Resource, stop_timeout=0.1):
        async def shutdown(self) -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                await release.wait()

    class User(Minion):
        stuck: Stuck

        async def run(self) -> None:
            await asyncio.Event().wait()

    try:
        with anyio.fail_after(LIMIT):
            async with runtime(tmp_path) as rt:
                await rt.start(User)
                with capture_logs() as logs:
                    await rt.stop()
    finally:
        release.set()
    events = [(e["event"], e["component"]) for e in logs]
    assert ("component.shutdown_timeout", "Stuck") in events
    assert events[-1] == ("component.stopped", "Stuck")


class Broken(Recorded, Resource):
    def __init__(self, cache: Cache) -> None:
        super().__init__()

    async def startup(self) -> None:
        raise ConnectionError("exchange unreachable")


class NeedsBroken(Recorded, Minion):
    broken: Broken


async def test_startup_failure_raises_and_stops_what_started(tmp_path: Path) -> None:
    """A startup() that raises at start is a StartupError naming the component, chained to the
    original error; what this start had started is stopped again, in reverse order, and the
    runtime is left as it was."""
    with anyio.fail_after(LIMIT):
        async with runtime(tmp_path) as rt:
            with capture_logs() as logs, pytest.raises(StartupError) as caught:
                await rt.start(NeedsBroken)
            assert dict(rt.status()) == {}
    assert caught.value.component == "Broken"
    assert "Broken.startup() raised ConnectionError: exchange unreachable" in str(caught.value)
    assert isinstance(caught.value.__cause__, ConnectionError)
    assert "NeedsBroken.init" not in calls
    assert calls[-4:] == ["Cache.shutdown", "Cache.shut", "Database.shutdown", "Database.shut"]
    crashed = [e for e in logs if e["event"] == "component.crashed"]
    assert [e["component"] for e in crashed] == ["Broken"]
    assert "exchange unreachable" in crashed[0]["reason"]
    stopped = [e["component"] for e in logs if e["event"] == "component.stopped"]
    assert stopped == ["Cache", "Database"]


async def test_a_failed_start_is_undone_and_the_runtime_still_usable(tmp_path: Path) -> None:
    """After a failed start, what ran before still runs, the failed components are forgotten
    (a later start does not retry them), and wait() still works."""

    class Quick(Minion):
        db: Database

    with anyio.fail_after(LIMIT):
        async with runtime(tmp_path) as rt:
            await rt.start(Database)
            with pytest.raises(StartupError):
                await rt.start(NeedsBroken)
            assert {n: s.state for n, s in rt.status().items()} == {
                "Database": ComponentState.RUNNING
            }
            assert calls.count("Database.init") == 1  # kept running, not restarted
            await rt.start(Quick)
            await rt.wait()
            assert list(rt.status()) == ["Database", "Quick"]
            assert calls.count("Broken.init") == 1


async def test_start_adds_to_a_system_without_rerunning_what_is_at_rest(tmp_path: Path) -> None:
    """A later start starts only what it is given and their dependencies: a completed minion
    and a component stopped on purpose stay as they are."""
    ran: list[str] = []

    class Quick(Minion):
        async def run(self) -> None:
            ran.append("Quick")

    class Later(Minion):
        cache: Cache

        async def run(self) -> None:
            ran.append("Later")

    with anyio.fail_after(LIMIT):
        async with runtime(tmp_path) as rt:
            await rt.start(Quick, Feed)
            await rt.wait()
            await rt.stop(Feed)
            await rt.start(Later)
            await rt.wait()
            status = rt.status()
    assert ran == ["Quick", "Later"]
    assert status["Quick"].state is ComponentState.COMPLETED
    assert status["Feed"].state is ComponentState.STOPPED
    assert status["Later"].state is ComponentState.COMPLETED
    assert calls.count("Feed.init") == 1


async def test_constructor_failure_is_a_startup_error(tmp_path: Path) -> None:
    """An ``__init__`` that raises is reported like a failed startup()."""

    class BadInit(Minion):
        def __init__(self) -> None:
            raise ValueError("bad api key")

    async with runtime(tmp_path) as rt:
        with pytest.raises(StartupError, match=r"constructing BadInit raised ValueError: bad api"):
            await rt.start(BadInit)


async def test_startup_timeout_is_a_startup_error(tmp_path: Path) -> None:
    """A startup() longer than start_timeout fails with a message saying what to change."""

    class Slow(Resource, start_timeout=0.05):
        async def startup(self) -> None:
            await asyncio.Event().wait()

    with anyio.fail_after(LIMIT):
        async with runtime(tmp_path) as rt:
            with pytest.raises(StartupError, match=r"did not finish within 0\.05 s.*start_timeout"):
                await rt.start(Slow)


async def test_status_is_a_frozen_snapshot(tmp_path: Path) -> None:
    """status() gives, per component in start order, its kind, state, restarts, crashes, last
    error and when it started; the snapshot does not change and cannot be changed."""
    before = datetime.now(UTC)
    with anyio.fail_after(LIMIT):
        async with runtime(tmp_path) as rt:
            await rt.start(Strategy)
            status = rt.status()
            strategy = status["Strategy"]
            assert list(status) == ["Database", "Cache", "Feed", "Strategy"]
            assert isinstance(strategy, ComponentStatus)
            assert strategy.name == "Strategy"
            assert strategy.kind == "minion"
            assert status["Feed"].kind == "resource"
            assert strategy.state is ComponentState.RUNNING
            assert (strategy.restarts, strategy.crashes, strategy.last_error) == (0, 0, None)
            assert strategy.started_at is not None
            assert before <= strategy.started_at <= datetime.now(UTC)
            assert strategy.isolated is False and strategy.pid is None
            assert str(strategy) == "Strategy (minion) running, 0 restarts"
            with pytest.raises(dataclasses.FrozenInstanceError):
                strategy.state = ComponentState.FAILED  # type: ignore[misc]
            with pytest.raises(TypeError):
                status["Strategy"] = strategy  # type: ignore[index]
            assert "4 running" in repr(rt)
        # the old snapshot is unchanged by the stop
        assert strategy.state is ComponentState.RUNNING
        assert rt.status()["Strategy"].state is ComponentState.STOPPED
        assert rt.status()["Strategy"].started_at is None


async def test_wait_returns_when_every_minion_has_finished(tmp_path: Path) -> None:
    """wait() returns once every minion is at rest (not before), while resources still run."""
    go = asyncio.Event()

    class Quick(Minion):
        cache: Cache

    class Gated(Minion):
        async def run(self) -> None:
            running["Gated"].set()
            await go.wait()

    with anyio.fail_after(LIMIT):
        async with runtime(tmp_path) as rt:
            await rt.start(Quick)
            await rt.wait()  # Quick's run() returned at once
            assert rt.status()["Quick"].state is ComponentState.COMPLETED
            await rt.start(Gated)
            waiter = asyncio.ensure_future(rt.wait())
            await running["Gated"].wait()
            await asyncio.sleep(0)
            assert not waiter.done()
            go.set()
            await waiter
            status = rt.status()
            assert status["Quick"].state is ComponentState.COMPLETED
            assert status["Gated"].state is ComponentState.COMPLETED
            assert status["Cache"].state is ComponentState.RUNNING


async def test_wait_with_only_resources_returns_when_the_runtime_stops(tmp_path: Path) -> None:
    """With no minions to finish, wait() lasts until the runtime is stopped, then returns."""
    with anyio.fail_after(LIMIT):
        async with runtime(tmp_path) as rt:
            await rt.start(Database)
            waiter = asyncio.ensure_future(rt.wait())
            await asyncio.sleep(0)
            assert not waiter.done()
            await rt.stop()
            await waiter


async def test_lifecycle_events_carry_the_component_name(tmp_path: Path) -> None:
    """Lifecycle events are component.starting/started/stopping/stopped with the name, and what
    a component logs from its hooks carries its name too."""

    class Talker(Minion):
        async def startup(self) -> None:
            structlog.get_logger("user").info("talker.ready")

        async def run(self) -> None:
            structlog.get_logger("user").info("talker.running")
            running["Talker"].set()
            await asyncio.Event().wait()

    with anyio.fail_after(LIMIT), capture_logs(processors=[merge_contextvars]) as logs:
        async with runtime(tmp_path) as rt:
            await rt.start(Talker)
            await running["Talker"].wait()
    events = [(e["event"], e.get("component")) for e in logs]
    assert events == [
        ("component.starting", "Talker"),
        ("talker.ready", "Talker"),
        ("component.started", "Talker"),
        ("talker.running", "Talker"),
        ("component.stopping", "Talker"),
        ("component.stopped", "Talker"),
    ]


@pytest.mark.parametrize("hook", ["startup", "run", "shutdown"])
@pytest.mark.parametrize("base", [Resource, Minion])
def test_a_hook_defined_without_async_is_refused_when_the_class_is_defined(
    hook: str, base: type[Any]
) -> None:
    """A plain ``def run(self)`` that loops would freeze the event loop, and with it every
    other component and the signal handlers: the class statement raises a DefinitionError
    naming the class and the hook."""

    def plain(self: object) -> None:
        while True:
            pass

    with pytest.raises(DefinitionError, match=rf"^Blocking\.{hook}\(\) is not async: define it"):
        type("Blocking", (base,), {hook: plain})

    async def generator(self: object) -> Any:
        yield None

    with pytest.raises(DefinitionError, match=rf"^Yielding\.{hook}\(\) is an async generator"):
        type("Yielding", (base,), {hook: generator})


def test_async_hooks_behind_a_decorator_are_accepted() -> None:
    """A hook wrapped by a decorator that keeps ``__wrapped__`` (functools.wraps) is judged by
    the function it wraps; a sync helper method of any name is no concern of the runtime's."""

    def traced(fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*args: Any) -> Any:
            return fn(*args)

        return wrapper

    class Traced(Minion):
        @traced
        async def run(self) -> None:
            return None

        def helper(self) -> int:
            return 1

    assert Traced().helper() == 1
