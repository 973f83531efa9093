"""Supervision: restart policies, backoff, restart intensity, dependency-aware restarts and the
manual restart/stop operations.

Time is a :class:`~minions.testing.FakeClock`: backoff delays are waited out by moving the clock,
never by sleeping. Tests wait for the runtime through its log events (a capture processor sets an
event on every line), each wait bounded.
"""

import asyncio
import random
from collections import defaultdict
from collections.abc import Callable, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import anyio
import pytest
from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from minions import (
    Backoff,
    ComponentOptionsError,
    ComponentState,
    Intensity,
    Minion,
    Resource,
    Runtime,
    RuntimeStateError,
    StartupError,
    UnknownComponentError,
)
from minions.testing import FakeClock

pytestmark = pytest.mark.anyio

LIMIT = 5.0
S = ComponentState
NO_JITTER = Backoff(initial=1.0, factor=2.0, cap=30.0, jitter=0.0)

calls: list[str] = []
crash: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
"""Set ``crash[name]`` to make that component's run() raise (the event is cleared on use)."""
instances: defaultdict[str, list[object]] = defaultdict(list)
"""Every instance constructed, by class name."""


class Logs:
    """Captured log events, and a way to wait for one without polling."""

    def __init__(self) -> None:
        self.entries: list[MutableMapping[str, Any]] = []
        self._changed = asyncio.Event()

    def __call__(self, logger: object, method: str, event: MutableMapping[str, Any]) -> Any:
        self._changed.set()  # a structlog processor: runs just before the capture appends
        return event

    def events(self, name: str | None = None) -> list[tuple[str, str]]:
        return [
            (e["event"], e.get("component", ""))
            for e in self.entries
            if name is None or e["event"] == name
        ]

    def count(self, event: str, component: str) -> int:
        return self.events(event).count((event, component))

    async def until(self, predicate: Callable[[], bool]) -> None:
        with anyio.fail_after(LIMIT):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def until_logged(self, event: str, component: str, count: int = 1) -> None:
        await self.until(lambda: self.count(event, component) >= count)


@pytest.fixture
def logs() -> Iterator[Logs]:
    watch = Logs()
    with capture_logs(processors=[merge_contextvars, watch]) as entries:
        watch.entries = entries
        yield watch


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    for journal in (calls, crash, instances):
        journal.clear()
    yield
    for journal in (calls, crash, instances):
        journal.clear()


def runtime(tmp_path: Path, clock: FakeClock, **kwargs: Any) -> Runtime:
    return Runtime(project_dir=tmp_path, environ={}, clock=clock, rng=random.Random(7), **kwargs)


class Recorded:
    """Records construction and hooks in ``calls``; its run() lasts until ``crash[name]``."""

    def __init__(self) -> None:
        instances[type(self).__name__].append(self)

    async def startup(self) -> None:
        calls.append(f"{type(self).__name__}.startup")

    async def run(self) -> None:
        name = type(self).__name__
        await crash[name].wait()
        crash[name].clear()
        raise RuntimeError(f"{name} lost its connection")

    async def shutdown(self) -> None:
        calls.append(f"{type(self).__name__}.shutdown")


# Database <- Cache <- Feed <- Strategy, and Strategy also needs Cache directly. Unrelated stands
# apart. Every resource restarts instantly-ish: 1 s of fake time, no jitter.


class Database(Recorded, Resource, backoff=NO_JITTER):
    pass


class Cache(Recorded, Resource, backoff=NO_JITTER):
    def __init__(self, db: Database) -> None:
        super().__init__()
        self.db = db


class Feed(Recorded, Resource, backoff=NO_JITTER):
    cache: Cache


class Strategy(Recorded, Minion, backoff=NO_JITTER):
    def __init__(self, feed: Feed, cache: Cache) -> None:
        super().__init__()
        self.feed, self.cache = feed, cache


class Unrelated(Recorded, Minion, backoff=NO_JITTER):
    pass


def states(rt: Runtime) -> dict[str, ComponentState]:
    return {name: status.state for name, status in rt.status().items()}


# -- restart policies ---------------------------------------------------------------------------


def worker(behaviour: str, restart: str) -> type[Minion]:
    """A minion whose first run() returns or raises, and whose later runs last."""

    class Worker(Minion, restart=restart, backoff=NO_JITTER):  # type: ignore[call-arg]
        async def run(self) -> None:
            calls.append("Worker.run")
            if calls.count("Worker.run") > 1:
                await asyncio.Event().wait()
            if behaviour == "raise":
                raise ValueError("bad tick")

    return Worker


@pytest.mark.parametrize(
    ("restart", "behaviour", "restarts", "final"),
    [
        ("permanent", "return", True, S.RUNNING),
        ("permanent", "raise", True, S.RUNNING),
        ("transient", "return", False, S.COMPLETED),
        ("transient", "raise", True, S.RUNNING),
        ("temporary", "return", False, S.COMPLETED),
        ("temporary", "raise", False, S.STOPPED),
    ],
)
async def test_restart_policy_table(
    tmp_path: Path,
    logs: Logs,
    restart: str,
    behaviour: str,
    restarts: bool,
    final: ComponentState,
) -> None:
    """permanent restarts after any ending, transient after a crash only, temporary never;
    a crash is counted and its error kept, a normal return is not a crash."""
    clock = FakeClock()
    async with runtime(tmp_path, clock) as rt:
        await rt.start(worker(behaviour, restart))
        if restarts:
            await clock.wait_for_sleepers(1)
            assert states(rt) == {"Worker": S.RESTARTING}
            clock.advance(1.0)
            await logs.until_logged("component.started", "Worker", 2)
        else:
            with anyio.fail_after(LIMIT):
                await rt.wait()
        status = rt.status()["Worker"]
    assert status.state is final
    assert calls.count("Worker.run") == (2 if restarts else 1)
    assert status.restarts == (1 if restarts else 0)
    if behaviour == "raise":
        assert status.crashes == 1
        assert status.last_error == "run() raised ValueError: bad tick"
        assert logs.count("component.crashed", "Worker") == 1
    else:
        assert (status.crashes, status.last_error) == (0, None)
        assert logs.count("component.crashed", "Worker") == 0
    if not restarts:
        assert clock.slept == []
        ending = "component.completed" if final is S.COMPLETED else "component.stopped"
        reason = next(e["reason"] for e in logs.entries if e["event"] == ending)
        assert f"restart={restart}" in reason


async def test_run_options_override_class_keywords(tmp_path: Path, logs: Logs) -> None:
    """``options=`` given to the runtime (by class or name) override the class keywords."""
    clock = FakeClock()
    crashy = worker("raise", "permanent")
    async with runtime(tmp_path, clock, options={"Worker": {"restart": "temporary"}}) as rt:
        await rt.start(crashy)
        with anyio.fail_after(LIMIT):
            await rt.wait()
        assert states(rt) == {"Worker": S.STOPPED}
    rt = Runtime(project_dir=tmp_path, environ={}, options={crashy: {"restart": "sometimes"}})
    async with rt:
        with pytest.raises(ComponentOptionsError, match="Worker: restart must be one of"):
            await rt.start(crashy)
        assert dict(rt.status()) == {}
    rt = Runtime(project_dir=tmp_path, environ={}, options={"Nobody": {"restart": "permanent"}})
    async with rt:
        with pytest.raises(ComponentOptionsError, match="options are given for 'Nobody'"):
            await rt.start(crashy)


async def test_a_resource_whose_run_returns_has_crashed(tmp_path: Path, logs: Logs) -> None:
    """A resource's run() is meant to last: its returning is a crash, and it is restarted."""

    class Poller(Resource, backoff=NO_JITTER):
        async def run(self) -> None:
            calls.append("Poller.run")
            if calls.count("Poller.run") > 1:
                await asyncio.Event().wait()

    clock = FakeClock()
    async with runtime(tmp_path, clock) as rt:
        await rt.start(Poller)
        await clock.advance_to_next()
        await logs.until_logged("component.started", "Poller", 2)
        status = rt.status()["Poller"]
    assert (status.crashes, status.restarts) == (1, 1)
    assert status.last_error is not None
    assert "run() returned, but a resource's run() must last" in status.last_error


async def test_resources_default_to_permanent_and_minions_to_transient(tmp_path: Path) -> None:
    """Defaults per kind: a returning minion completes, a returning resource is restarted."""

    class Done(Minion):
        pass

    class Poller(Resource):
        async def run(self) -> None:
            if not calls:
                calls.append("once")
                return
            await asyncio.Event().wait()

    clock = FakeClock()
    async with runtime(tmp_path, clock) as rt:
        await rt.start(Done, Poller)
        await clock.wait_for_sleepers(1)  # Poller waits out its backoff
        with anyio.fail_after(LIMIT):
            await rt.wait()
        assert states(rt) == {"Done": S.COMPLETED, "Poller": S.RESTARTING}


# -- backoff ------------------------------------------------------------------------------------


def always_crashing(**keywords: Any) -> type[Minion]:
    class Crasher(Minion, **keywords):
        async def run(self) -> None:
            calls.append("Crasher.run")
            raise RuntimeError("boom")

    return Crasher


async def test_backoff_delays_grow_exponentially_up_to_the_cap(tmp_path: Path, logs: Logs) -> None:
    """Delays are initial * factor ** n, capped; n counts restarts inside the window."""
    clock = FakeClock()
    crasher = always_crashing(
        backoff=Backoff(initial=0.5, factor=3.0, cap=10.0, jitter=0.0),
        max_restarts=6,
        restart_window=1000,
    )
    async with runtime(tmp_path, clock) as rt:
        await rt.start(crasher)
        for _ in range(6):
            await clock.advance_to_next()
        with anyio.fail_after(LIMIT):
            await rt.wait()
        assert states(rt) == {"Crasher": S.FAILED}
    assert clock.slept == [0.5, 1.5, 4.5, 10.0, 10.0, 10.0]
    restarting = [e for e in logs.entries if e["event"] == "component.restarting"]
    assert [e["delay"] for e in restarting] == [0.5, 1.5, 4.5, 10.0, 10.0, 10.0]
    assert [e["attempt"] for e in restarting] == [1, 2, 3, 4, 5, 6]
    assert all(e["reason"] == "run() raised RuntimeError: boom" for e in restarting)


async def test_backoff_comes_back_down_as_crashes_age_out(tmp_path: Path) -> None:
    """Once earlier restarts leave the intensity window, the delay starts from initial again."""
    clock = FakeClock()
    crasher = always_crashing(
        backoff=Backoff(initial=1.0, factor=2.0, cap=100.0, jitter=0.0),
        max_restarts=5,
        restart_window=10,
    )
    async with runtime(tmp_path, clock) as rt:
        await rt.start(crasher)
        await clock.advance_to_next()  # restart 1 at t=0 (delay 1)
        await clock.advance_to_next()  # restart 2 at t=1 (delay 2)
        await clock.wait_for_sleepers(1)  # crashed at t=3: delay 4 is pending
        clock.advance(20.0)  # far past the window: the pending delay ends too
        await clock.wait_for_sleepers(1)  # crashed at t=23, alone in its window
        assert rt.status()["Crasher"].state is S.RESTARTING
    assert clock.slept == [1.0, 2.0, 4.0, 1.0]


def test_jitter_spreads_delays_within_bounds() -> None:
    """Jitter multiplies each delay by a factor in [1 - jitter, 1 + jitter], and varies."""
    backoff = Backoff(initial=1.0, factor=2.0, cap=16.0, jitter=0.25)
    rng = random.Random(1)
    for attempt in range(8):
        base = min(16.0, 2.0**attempt)
        samples = [backoff.delay(attempt, rng) for _ in range(200)]
        assert all(base * 0.75 <= s <= base * 1.25 for s in samples)
        assert max(samples) - min(samples) > base * 0.25  # really spread, not constant
    assert backoff.delay(10_000, rng) <= 16.0 * 1.25  # huge attempts do not overflow
    assert Backoff(initial=0.0, jitter=0.5).delay(3, rng) == 0.0


async def test_jittered_restarts_use_the_runtime_rng(tmp_path: Path) -> None:
    """The runtime's seeded rng makes jittered delays reproducible and within bounds."""

    async def schedule(seed: int) -> list[float]:
        clock = FakeClock()
        crasher = always_crashing(
            backoff=Backoff(initial=1.0, factor=2.0, cap=8.0, jitter=0.5), max_restarts=4
        )
        rt = Runtime(project_dir=tmp_path, environ={}, clock=clock, rng=random.Random(seed))
        async with rt:
            await rt.start(crasher)
            for _ in range(4):
                await clock.advance_to_next()
            with anyio.fail_after(LIMIT):
                await rt.wait()
        return clock.slept

    first, again, other = await schedule(3), await schedule(3), await schedule(4)
    assert first == again != other
    for attempt, delay in enumerate(first):
        base = min(8.0, 2.0**attempt)
        assert base * 0.5 <= delay <= base * 1.5


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        ({"initial": -1}, "initial must be >= 0"),
        ({"factor": 0.5}, "factor must be >= 1"),
        ({"initial": 5, "cap": 1}, r"cap \(1\) must be >= initial"),
        ({"jitter": 1.0}, r"jitter must be in \[0, 1\)"),
        ({"jitter": float("nan")}, "jitter must be in"),
    ],
)
def test_invalid_backoff_is_a_clear_error(keywords: dict[str, float], message: str) -> None:
    """Nonsense backoff values are refused when written, with what is allowed."""
    with pytest.raises(ComponentOptionsError, match=message):
        Backoff(**keywords)


def test_invalid_class_options_name_the_class() -> None:
    """A bad class keyword is an error naming the class and listing the options."""
    with pytest.raises(ComponentOptionsError, match=r"Bad: unknown option\(s\) retsart"):

        class Bad(Minion, retsart="permanent"):  # type: ignore[call-arg]
            pass

    with pytest.raises(ComponentOptionsError, match="Worse: max_restarts must be >= 0"):

        class Worse(Minion, max_restarts=-1):
            pass

    with pytest.raises(ComponentOptionsError, match="stop_timeout must be a positive number"):

        class Worst(Minion, stop_timeout=0):
            pass

    with pytest.raises(ComponentOptionsError, match="intensity window must be > 0"):
        Intensity(within=0)


# -- intensity ----------------------------------------------------------------------------------


async def test_too_many_restarts_in_the_window_gives_the_component_up(
    tmp_path: Path, logs: Logs
) -> None:
    """At most max_restarts restarts within restart_window seconds; one more crash and the
    component is FAILED, with component.given_up logged with the reason."""
    clock = FakeClock()
    crasher = always_crashing(backoff=NO_JITTER, max_restarts=3, restart_window=60)
    async with runtime(tmp_path, clock) as rt:
        await rt.start(crasher)
        for _ in range(3):
            await clock.advance_to_next()
        with anyio.fail_after(LIMIT):
            await rt.wait()
        status = rt.status()["Crasher"]
        assert rt.given_up == ["Crasher"]
    assert status.state is S.FAILED
    assert (status.restarts, status.crashes) == (3, 4)
    assert calls.count("Crasher.run") == 4
    given_up = [e for e in logs.entries if e["event"] == "component.given_up"]
    assert len(given_up) == 1
    assert given_up[0]["component"] == "Crasher"
    assert given_up[0]["reason"] == (
        "more than 3 restarts within 60 s; last: run() raised RuntimeError: boom"
    )
    assert status.last_error == given_up[0]["reason"]


async def test_restarts_spread_beyond_the_window_are_never_given_up(tmp_path: Path) -> None:
    """Crashes 6 s apart with a 10 s window never pile up past max_restarts=2."""
    clock = FakeClock()
    crasher = always_crashing(
        backoff=Backoff(initial=6.0, factor=1.0, cap=6.0, jitter=0.0),
        max_restarts=2,
        restart_window=10,
    )
    async with runtime(tmp_path, clock) as rt:
        await rt.start(crasher)
        for _ in range(8):
            await clock.advance_to_next()
        await clock.wait_for_sleepers(1)
        status = rt.status()["Crasher"]
    assert status.state is S.RESTARTING
    assert status.restarts == 8


async def test_zero_max_restarts_gives_up_at_the_first_crash(tmp_path: Path) -> None:
    """max_restarts=0: the first crash gives the component up, without any backoff."""
    clock = FakeClock()
    async with runtime(tmp_path, clock) as rt:
        await rt.start(always_crashing(max_restarts=0))
        with anyio.fail_after(LIMIT):
            await rt.wait()
        assert states(rt) == {"Crasher": S.FAILED}
    assert clock.slept == []


# -- dependency-aware restarts ------------------------------------------------------------------


async def test_a_crashed_resource_restarts_with_its_dependents_around_it(
    tmp_path: Path, logs: Logs
) -> None:
    """When Cache crashes, Strategy then Feed stop (reverse order) before Cache shuts down; after
    the backoff Cache starts, then Feed, then Strategy, each holding the new instances. Database
    (a dependency) and Unrelated are not touched."""
    clock = FakeClock()
    async with runtime(tmp_path, clock) as rt:
        await rt.start(Strategy, Unrelated)
        assert list(rt.status()) == ["Database", "Cache", "Feed", "Strategy", "Unrelated"]
        calls.clear()
        crash["Cache"].set()
        await clock.wait_for_sleepers(1)
        assert calls == ["Strategy.shutdown", "Feed.shutdown", "Cache.shutdown"]
        assert states(rt) == {
            "Database": S.RUNNING,
            "Cache": S.RESTARTING,
            "Feed": S.RESTARTING,
            "Strategy": S.RESTARTING,
            "Unrelated": S.RUNNING,
        }
        clock.advance(1.0)
        await logs.until_logged("component.started", "Strategy", 2)
        assert calls[3:] == ["Cache.startup", "Feed.startup", "Strategy.startup"]
        status = rt.status()
        assert {n: s.state for n, s in status.items()} == dict.fromkeys(status, S.RUNNING)
        assert {n: s.restarts for n, s in status.items()} == {
            "Database": 0,
            "Cache": 1,
            "Feed": 1,
            "Strategy": 1,
            "Unrelated": 0,
        }
        assert (status["Cache"].crashes, status["Feed"].crashes) == (1, 0)
    old_cache, new_cache = instances["Cache"]
    new_feed, new_strategy = instances["Feed"][1], instances["Strategy"][1]
    assert new_cache is not old_cache
    assert new_feed.cache is new_cache  # type: ignore[attr-defined]
    assert new_strategy.cache is new_cache and new_strategy.feed is new_feed  # type: ignore[attr-defined]
    assert len(instances["Database"]) == 1 and len(instances["Unrelated"]) == 1
    assert new_cache.db is instances["Database"][0]  # type: ignore[attr-defined]
    restarting = logs.events("component.restarting")
    assert restarting == [
        ("component.restarting", "Cache"),
        ("component.restarting", "Feed"),
        ("component.restarting", "Strategy"),
    ]


async def test_a_dependent_waiting_out_its_own_backoff_follows_its_resource(
    tmp_path: Path, logs: Logs
) -> None:
    """A minion already waiting to restart when its resource crashes is started after the
    resource comes back, not on its own timer."""
    clock = FakeClock()
    async with runtime(tmp_path, clock) as rt:
        await rt.start(Strategy)
        crash["Strategy"].set()
        await clock.wait_for_sleepers(1)
        crash["Feed"].set()
        await logs.until_logged("component.restarting", "Feed")
        await clock.wait_for_sleepers(1)  # only Feed's timer; Strategy's was cancelled
        assert clock.sleepers == 1
        clock.advance(1.0)
        await logs.until_logged("component.started", "Strategy", 2)
        assert states(rt)["Strategy"] is S.RUNNING
        assert clock.sleepers == 0


async def test_a_resource_failing_to_start_again_is_a_crash(tmp_path: Path, logs: Logs) -> None:
    """A startup() that raises during a restart is a crash: backoff, then give up; the dependents
    stay down, stopped, and the rest keeps running."""

    class Flaky(Resource, backoff=NO_JITTER, max_restarts=2):
        async def startup(self) -> None:
            calls.append("Flaky.startup")
            if calls.count("Flaky.startup") > 1:
                raise ConnectionRefusedError("still down")

        async def run(self) -> None:
            raise RuntimeError("dropped")

    class User(Minion):
        flaky: Flaky

        async def run(self) -> None:
            await asyncio.Event().wait()

    clock = FakeClock()
    async with runtime(tmp_path, clock) as rt:
        await rt.start(User, Unrelated)
        await clock.advance_to_next()
        await clock.advance_to_next()
        await logs.until_logged("component.given_up", "Flaky")
        assert states(rt) == {"Flaky": S.FAILED, "User": S.STOPPED, "Unrelated": S.RUNNING}
        assert rt.status()["Flaky"].crashes == 3
    assert (
        "Flaky.startup() raised ConnectionRefusedError: still down"
        in [e["reason"] for e in logs.entries if e["event"] == "component.crashed"][-1]
    )


async def test_a_given_up_resource_stops_only_its_dependents(tmp_path: Path, logs: Logs) -> None:
    """A given-up Cache stops Strategy and Feed (not restarting them) while Database and
    Unrelated keep running; the runtime keeps going."""
    clock = FakeClock()
    options = {Cache: {"max_restarts": 0}}
    async with runtime(tmp_path, clock, options=options) as rt:
        await rt.start(Strategy, Unrelated)
        calls.clear()
        crash["Cache"].set()
        await logs.until_logged("component.given_up", "Cache")
        assert calls == ["Strategy.shutdown", "Feed.shutdown", "Cache.shutdown"]
        assert states(rt) == {
            "Database": S.RUNNING,
            "Cache": S.FAILED,
            "Feed": S.STOPPED,
            "Strategy": S.STOPPED,
            "Unrelated": S.RUNNING,
        }
        assert clock.sleepers == 0
        assert rt.given_up == ["Cache"]
        stopped = [e for e in logs.entries if e["event"] == "component.stopped"]
        assert [e["component"] for e in stopped] == ["Strategy", "Feed"]
        assert all(e["reason"] == "its dependency Cache was given up" for e in stopped)
        # Unrelated still works: it can crash and be restarted as usual.
        crash["Unrelated"].set()
        await clock.advance_to_next()
        await logs.until_logged("component.started", "Unrelated", 2)


async def test_restart_brings_a_given_up_component_and_its_dependents_back(
    tmp_path: Path, logs: Logs
) -> None:
    """rt.restart() of a FAILED component starts it with a fresh window, then its stopped
    dependents in dependency order."""
    clock = FakeClock()
    async with runtime(tmp_path, clock, options={"Cache": {"max_restarts": 0}}) as rt:
        await rt.start(Strategy, Unrelated)
        crash["Cache"].set()
        await logs.until_logged("component.given_up", "Cache")
        calls.clear()
        with anyio.fail_after(LIMIT):
            await rt.restart("Cache")
        assert calls == ["Cache.startup", "Feed.startup", "Strategy.startup"]
        assert set(states(rt).values()) == {S.RUNNING}
        assert rt.given_up == []
        assert rt.status()["Cache"].restarts == 1


async def test_manual_restart_stops_dependents_first_and_starts_them_after(
    tmp_path: Path, logs: Logs
) -> None:
    """rt.restart(Cache): Strategy, Feed, Cache stop in that order, then start in reverse."""
    clock = FakeClock()
    async with runtime(tmp_path, clock) as rt:
        await rt.start(Strategy, Unrelated)
        calls.clear()
        with anyio.fail_after(LIMIT):
            await rt.restart(Cache)
        assert calls == [
            "Strategy.shutdown",
            "Feed.shutdown",
            "Cache.shutdown",
            "Cache.startup",
            "Feed.startup",
            "Strategy.startup",
        ]
        assert set(states(rt).values()) == {S.RUNNING}
        assert rt.status()["Cache"].crashes == 0
        assert clock.slept == []  # a requested restart does not wait out a backoff
        reasons = [e["reason"] for e in logs.entries if e["event"] == "component.restarting"]
        assert reasons[0] == "restart requested"


async def test_manual_restart_of_a_minion_touches_nothing_else(tmp_path: Path) -> None:
    """Restarting a minion restarts only that minion."""
    clock = FakeClock()
    async with runtime(tmp_path, clock) as rt:
        await rt.start(Strategy, Unrelated)
        calls.clear()
        with anyio.fail_after(LIMIT):
            await rt.restart("Strategy")
        assert calls == ["Strategy.shutdown", "Strategy.startup"]


async def test_manual_stop_stops_dependents_and_nothing_restarts(
    tmp_path: Path, logs: Logs
) -> None:
    """rt.stop(Cache) stops Strategy, Feed, Cache in that order; no restart follows; the rest
    runs on; rt.restart(Cache) brings the three back."""
    clock = FakeClock()
    async with runtime(tmp_path, clock) as rt:
        await rt.start(Strategy, Unrelated)
        calls.clear()
        with anyio.fail_after(LIMIT):
            await rt.stop("Cache")
        assert calls == ["Strategy.shutdown", "Feed.shutdown", "Cache.shutdown"]
        assert states(rt) == {
            "Database": S.RUNNING,
            "Cache": S.STOPPED,
            "Feed": S.STOPPED,
            "Strategy": S.STOPPED,
            "Unrelated": S.RUNNING,
        }
        assert clock.sleepers == 0 and clock.slept == []
        assert rt.given_up == []
        calls.clear()
        with anyio.fail_after(LIMIT):
            await rt.restart(Cache)
        assert calls == ["Cache.startup", "Feed.startup", "Strategy.startup"]
        assert set(states(rt).values()) == {S.RUNNING}


async def test_manual_stop_of_a_component_waiting_to_restart_cancels_its_restart(
    tmp_path: Path,
) -> None:
    """Stopping a component in its backoff delay cancels the pending restart."""
    clock = FakeClock()
    async with runtime(tmp_path, clock) as rt:
        await rt.start(Unrelated)
        crash["Unrelated"].set()
        await clock.wait_for_sleepers(1)
        with anyio.fail_after(LIMIT):
            await rt.stop(Unrelated)
        assert clock.sleepers == 0
        assert states(rt) == {"Unrelated": S.STOPPED}
        with anyio.fail_after(LIMIT):
            await rt.wait()


async def test_restarting_a_component_whose_dependency_is_down_is_refused(
    tmp_path: Path,
) -> None:
    """A dependent cannot be restarted while its dependency is down: the error says which
    dependency and what to restart instead."""
    clock = FakeClock()
    async with runtime(tmp_path, clock, options={"Cache": {"max_restarts": 0}}) as rt:
        await rt.start(Strategy)
        await rt.stop(Cache)
        with pytest.raises(RuntimeStateError) as caught:
            await rt.restart(Feed)
    assert str(caught.value) == (
        "cannot restart Feed: its dependency Cache is stopped; restart Cache instead"
    )


async def test_a_failed_restart_raises_startup_error(tmp_path: Path) -> None:
    """rt.restart() whose startup() raises is a StartupError; the policy then applies."""

    class Fussy(Minion, backoff=NO_JITTER):
        async def startup(self) -> None:
            calls.append("Fussy.startup")
            if len(calls) > 1:
                raise OSError("port in use")

        async def run(self) -> None:
            await asyncio.Event().wait()

    clock = FakeClock()
    async with runtime(tmp_path, clock) as rt:
        await rt.start(Fussy)
        with pytest.raises(StartupError, match=r"Fussy failed to restart.*port in use"):
            await rt.restart(Fussy)
        assert states(rt) == {"Fussy": S.RESTARTING}


async def test_unknown_component_is_a_lookup_error_listing_what_runs(tmp_path: Path) -> None:
    """restart and stop of a name or class the runtime does not run: UnknownComponentError."""

    class Stranger(Minion):
        pass

    clock = FakeClock()
    async with runtime(tmp_path, clock) as rt:
        await rt.start(Unrelated)
        for operation in (rt.restart, rt.stop):
            for ref in ("Nobody", Stranger):
                with pytest.raises(UnknownComponentError) as caught:
                    await operation(ref)
                assert "runs: Unrelated" in str(caught.value)
                assert isinstance(caught.value, LookupError)
        with pytest.raises(UnknownComponentError, match="'Nobody'"):
            await rt.restart("Nobody")
        assert states(rt) == {"Unrelated": S.RUNNING}
