"""The dependency graph: injection by type annotation, bindings, and every bad-graph error.

A bad graph is a :class:`~minions.DefinitionError` raised by ``Runtime.start`` before any
component is constructed; each test checks the message names what is wrong and says what to do,
and that nothing was left running.
"""

import abc
import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from minions import (
    DefinitionError,
    DependencyCycleError,
    DependencyError,
    IdentityConflictError,
    Minion,
    Resource,
    Runtime,
    resource_id,
)

pytestmark = pytest.mark.anyio

LIMIT = 5.0

# Module-level classes: a cycle needs forward references, which only resolve at module level.


class ChainEvents(Resource):
    def __init__(self, prices: "PriceFeed") -> None:
        self.prices = prices


class PriceFeed(Resource):
    def __init__(self, events: ChainEvents) -> None:
        self.events = events


class CycleStrategy(Minion):
    def __init__(self, events: ChainEvents) -> None:
        self.events = events


class SelfLoop(Resource):
    def __init__(self, me: "SelfLoop") -> None:
        self.me = me


class Unresolvable(Minion):
    def __init__(self, feed: "NoSuchFeed") -> None:  # type: ignore[name-defined]  # noqa: F821
        self.feed = feed


class UnresolvableAttribute(Minion):
    feed: "AlsoMissing"  # type: ignore[name-defined]  # noqa: F821


constructed: list[str] = []


@pytest.fixture(autouse=True)
def _reset_constructed() -> Iterator[None]:
    constructed.clear()
    yield
    constructed.clear()


def runtime(tmp_path: Path) -> Runtime:
    return Runtime(project_dir=tmp_path, environ={})


class Idle(Minion):
    """A minion that runs until stopped."""

    async def run(self) -> None:
        await asyncio.Event().wait()


async def assert_nothing_started(rt: Runtime, tasks_before: set[asyncio.Task[object]]) -> None:
    """No component constructed, none known to the runtime, no task left behind."""
    assert constructed == []
    assert dict(rt.status()) == {}
    assert asyncio.all_tasks() == tasks_before


# -- injection ----------------------------------------------------------------------------------


async def test_constructor_parameters_receive_their_resources(tmp_path: Path) -> None:
    """Constructor parameters annotated with Resource classes receive the running instances."""
    seen: dict[str, object] = {}

    class Events(Resource):
        pass

    class Prices(Resource):
        pass

    class Strategy(Idle):
        def __init__(self, events: Events, prices: Prices) -> None:
            seen["events"], seen["prices"] = events, prices

    with anyio.fail_after(LIMIT):
        async with runtime(tmp_path) as rt:
            await rt.start(Strategy)
            assert list(rt.status()) == ["Events", "Prices", "Strategy"]
    assert type(seen["events"]) is Events
    assert type(seen["prices"]) is Prices


async def test_class_attributes_are_injected_before_init(tmp_path: Path) -> None:
    """Class-attribute annotations are set on the instance before ``__init__`` runs."""
    seen: dict[str, object] = {}

    class Prices(Resource):
        pass

    class Strategy(Idle):
        prices: Prices
        label: str = "not a dependency"

        def __init__(self) -> None:
            seen["in_init"] = self.prices

    with anyio.fail_after(LIMIT):
        async with runtime(tmp_path) as rt:
            await rt.start(Strategy)
    assert type(seen["in_init"]) is Prices
    assert list(rt.status()) == ["Prices", "Strategy"]


async def test_one_instance_shared_by_parameter_and_attribute_dependents(tmp_path: Path) -> None:
    """One instance per resource class, whichever way each dependent declares it."""
    seen: list[object] = []

    class Prices(Resource):
        def __init__(self) -> None:
            constructed.append("Prices")

    class ByParameter(Idle):
        def __init__(self, prices: Prices) -> None:
            seen.append(prices)

    class ByAttribute(Idle):
        prices: Prices

        async def startup(self) -> None:
            seen.append(self.prices)

    with anyio.fail_after(LIMIT):
        async with runtime(tmp_path) as rt:
            await rt.start(ByParameter, ByAttribute)
    assert constructed == ["Prices"]
    assert len(seen) == 2 and seen[0] is seen[1]


async def test_resources_depend_on_resources(tmp_path: Path) -> None:
    """A resource's own dependencies are resolved and started before it."""
    order: list[str] = []

    class Database(Resource):
        async def startup(self) -> None:
            order.append("Database")

    class Cache(Resource):
        def __init__(self, db: Database) -> None:
            self.db = db

        async def startup(self) -> None:
            order.append("Cache")

    class Reader(Idle):
        cache: Cache

        async def startup(self) -> None:
            order.append("Reader")
            assert type(self.cache.db) is Database

    with anyio.fail_after(LIMIT):
        async with runtime(tmp_path) as rt:
            await rt.start(Reader)
    assert order == ["Database", "Cache", "Reader"]


async def test_plain_parameters_with_defaults_stay_plain(tmp_path: Path) -> None:
    """Parameters that are not Resources keep their defaults; the runtime does not touch them."""
    seen: dict[str, object] = {}

    class Prices(Resource):
        pass

    class Strategy(Idle):
        def __init__(self, prices: Prices, retries: int = 3, label="plain", *args, **kw) -> None:  # type: ignore[no-untyped-def]
            seen.update(prices=prices, retries=retries, label=label, args=args, kw=kw)

    with anyio.fail_after(LIMIT):
        async with runtime(tmp_path) as rt:
            await rt.start(Strategy)
    assert seen["retries"] == 3
    assert seen["label"] == "plain"
    assert seen["args"] == () and seen["kw"] == {}
    assert type(seen["prices"]) is Prices


# -- bindings -----------------------------------------------------------------------------------


async def test_a_subclass_given_to_the_runtime_replaces_its_base_everywhere(tmp_path: Path) -> None:
    """``start(Strategy, FakeFeed)`` injects FakeFeed wherever PriceFeed is requested."""
    seen: list[object] = []

    class Feed(Resource):
        def __init__(self) -> None:
            constructed.append(type(self).__name__)

    class FakeFeed(Feed):
        pass

    class ByParameter(Idle):
        def __init__(self, feed: Feed) -> None:
            seen.append(feed)

    class ByAttribute(Idle):
        feed: Feed

        async def startup(self) -> None:
            seen.append(self.feed)

    with anyio.fail_after(LIMIT):
        async with runtime(tmp_path) as rt:
            await rt.start(ByParameter, ByAttribute, FakeFeed)
            assert set(rt.status()) == {"FakeFeed", "ByParameter", "ByAttribute"}
    assert constructed == ["FakeFeed"]
    assert type(seen[0]) is FakeFeed and seen[0] is seen[1]


async def test_abstract_dependency_binds_to_the_concrete_class_given(tmp_path: Path) -> None:
    """An abstract resource is satisfied by a concrete subclass passed to the runtime."""

    class Exchange(Resource, abc.ABC):
        @abc.abstractmethod
        def venue(self) -> str: ...

    class Binance(Exchange):
        def venue(self) -> str:
            return "binance"

    venues: list[str] = []

    class Trader(Idle):
        def __init__(self, exchange: Exchange) -> None:
            venues.append(exchange.venue())

    with anyio.fail_after(LIMIT):
        async with runtime(tmp_path) as rt:
            await rt.start(Trader, Binance)
    assert venues == ["binance"]


# -- bad graphs ---------------------------------------------------------------------------------


async def test_cycle_names_the_chain_and_starts_nothing(tmp_path: Path) -> None:
    """A cycle is a DependencyCycleError naming the chain, raised before anything is built."""
    before = asyncio.all_tasks()
    async with runtime(tmp_path) as rt:
        with pytest.raises(DependencyCycleError) as caught:
            await rt.start(CycleStrategy)
        await assert_nothing_started(rt, before)
    assert caught.value.chain == ["ChainEvents", "PriceFeed", "ChainEvents"]
    message = str(caught.value)
    assert "ChainEvents -> PriceFeed -> ChainEvents" in message
    assert "Break the cycle" in message
    assert isinstance(caught.value, DependencyError)


async def test_a_resource_depending_on_itself_is_a_cycle(tmp_path: Path) -> None:
    """The shortest cycle, a resource needing itself, is reported as ``SelfLoop -> SelfLoop``."""
    async with runtime(tmp_path) as rt:
        with pytest.raises(DependencyCycleError, match="SelfLoop -> SelfLoop"):
            await rt.start(SelfLoop)


async def test_missing_abstract_dependency_says_what_to_pass(tmp_path: Path) -> None:
    """An abstract resource nobody provides names the dependent, the parameter and the fix."""

    class Exchange(Resource, abc.ABC):
        @abc.abstractmethod
        def venue(self) -> str: ...

    class Trader(Idle):
        def __init__(self, exchange: Exchange) -> None:
            constructed.append("Trader")

    before = asyncio.all_tasks()
    async with runtime(tmp_path) as rt:
        with pytest.raises(DependencyError) as caught:
            await rt.start(Trader)
        await assert_nothing_started(rt, before)
    message = str(caught.value)
    assert "missing dependency Trader.exchange" in message
    assert "Exchange is abstract" in message
    assert "pass a concrete subclass" in message


async def test_two_providers_of_one_dependency_are_ambiguous(tmp_path: Path) -> None:
    """Two subclasses of a requested resource given to the runtime: say which to drop."""

    class Feed(Resource):
        pass

    class FeedA(Feed):
        pass

    class FeedB(Feed):
        pass

    class Strategy(Idle):
        feed: Feed

    async with runtime(tmp_path) as rt:
        with pytest.raises(DependencyError, match=r"ambiguous dependency Strategy\.feed") as caught:
            await rt.start(Strategy, FeedA, FeedB)
        assert dict(rt.status()) == {}
    assert "FeedA, FeedB" in str(caught.value)
    assert "pass only one" in str(caught.value)


async def test_parameter_that_is_not_a_resource_and_has_no_default(tmp_path: Path) -> None:
    """A parameter the runtime cannot provide names the class, the parameter and three fixes."""

    @dataclass
    class Settings:
        url: str

    class Strategy(Idle):
        def __init__(self, settings: Settings) -> None:
            constructed.append("Strategy")

    before = asyncio.all_tasks()
    async with runtime(tmp_path) as rt:
        with pytest.raises(DependencyError) as caught:
            await rt.start(Strategy)
        await assert_nothing_started(rt, before)
    message = str(caught.value)
    assert "Strategy.__init__ parameter 'settings: Settings'" in message
    assert "is not a Resource" in message
    assert "give it a default" in message


async def test_unannotated_parameter_without_default(tmp_path: Path) -> None:
    """An unannotated parameter without a default is reported by name."""

    class Strategy(Idle):
        def __init__(self, thing) -> None:  # type: ignore[no-untyped-def]
            pass

    async with runtime(tmp_path) as rt:
        with pytest.raises(DependencyError, match=r"parameter 'thing' has no default"):
            await rt.start(Strategy)


async def test_a_minion_as_dependency_is_refused(tmp_path: Path) -> None:
    """Minions are never dependencies: the error names the attribute and the minion."""

    class Worker(Idle):
        pass

    class ByParameter(Idle):
        def __init__(self, worker: Worker) -> None:
            constructed.append("ByParameter")

    class ByAttribute(Idle):
        worker: Worker

    before = asyncio.all_tasks()
    async with runtime(tmp_path) as rt:
        for dependent, where in (
            (ByParameter, "ByParameter.worker"),
            (ByAttribute, "ByAttribute.worker"),
        ):
            with pytest.raises(DependencyError) as caught:
                await rt.start(dependent)
            message = str(caught.value)
            assert f"{where} is annotated Worker, which is a Minion" in message
            assert "only Resources can be injected" in message
        await assert_nothing_started(rt, before)


async def test_unresolvable_annotation_is_a_clear_error(tmp_path: Path) -> None:
    """An annotation naming a class that does not exist says where and how to fix it."""
    async with runtime(tmp_path) as rt:
        with pytest.raises(DependencyError) as caught:
            await rt.start(Unresolvable)
        assert "cannot resolve the type annotations of Unresolvable.__init__" in str(caught.value)
        assert "NoSuchFeed" in str(caught.value)
        assert isinstance(caught.value.__cause__, NameError)
        with pytest.raises(DependencyError, match="AlsoMissing"):
            await rt.start(UnresolvableAttribute)
        assert dict(rt.status()) == {}


async def test_two_resources_claiming_one_identity(tmp_path: Path) -> None:
    """Two resource classes pinned to one identity: the error names both classes and the id."""

    @resource_id("price-feed")
    class FeedV1(Resource):
        def __init__(self) -> None:
            constructed.append("FeedV1")

    @resource_id("price-feed")
    class FeedV2(Resource):
        def __init__(self) -> None:
            constructed.append("FeedV2")

    class Strategy(Idle):
        old: FeedV1
        new: FeedV2

    before = asyncio.all_tasks()
    async with runtime(tmp_path) as rt:
        with pytest.raises(IdentityConflictError) as caught:
            await rt.start(Strategy)
        await assert_nothing_started(rt, before)
    message = str(caught.value)
    assert "FeedV1" in message and "FeedV2" in message
    assert "'price-feed'" in message
    assert "@resource_id" in message


def make_worker_a() -> type[Minion]:
    class Worker(Idle):
        pass

    return Worker


def make_worker_b() -> type[Minion]:
    class Worker(Idle):
        pass

    return Worker


async def test_two_components_with_one_name(tmp_path: Path) -> None:
    """Two components sharing a name: the error names both classes and how to rename one."""
    first, second = make_worker_a(), make_worker_b()
    async with runtime(tmp_path) as rt:
        with pytest.raises(DefinitionError) as caught:
            await rt.start(first, second)
        assert dict(rt.status()) == {}
    message = str(caught.value)
    assert "two components are named 'Worker'" in message
    assert "make_worker_a.<locals>.Worker" in message
    assert "make_worker_b.<locals>.Worker" in message
    assert 'name="OtherWorker"' in message

    class Named(Idle, name="Worker"):
        pass

    async with runtime(tmp_path) as rt:
        with pytest.raises(DefinitionError, match="two components are named 'Worker'"):
            await rt.start(first, Named)

    class Renamed(Idle, name="Worker2"):
        pass

    with anyio.fail_after(LIMIT):
        async with runtime(tmp_path) as rt:
            await rt.start(first, Renamed)
            assert list(rt.status()) == ["Worker", "Worker2"]


async def test_one_class_given_twice_has_one_default_identity(tmp_path: Path) -> None:
    """Classes with the same module path and qualified name share a default identity: an error
    that says to pin one with a decorator."""
    first, second = make_worker_a(), make_worker_a()
    async with runtime(tmp_path) as rt:
        with pytest.raises(IdentityConflictError, match="both claim the identity"):
            await rt.start(first, second)


async def test_not_a_component_class(tmp_path: Path) -> None:
    """Passing something that is not a component class says what to pass instead."""

    class Plain:
        pass

    async with runtime(tmp_path) as rt:
        for bad in (Plain, Minion, Resource, "Worker"):
            with pytest.raises(DefinitionError, match="is not a component") as caught:
                await rt.start(bad)  # type: ignore[arg-type]
            assert "subclass minions.Resource or minions.Minion" in str(caught.value)


async def test_a_bad_addition_leaves_the_running_system_alone(tmp_path: Path) -> None:
    """A bad graph passed to a running runtime changes nothing: what ran keeps running."""
    with anyio.fail_after(LIMIT):
        async with runtime(tmp_path) as rt:
            await rt.start(Idle)
            before = dict(rt.status())
            tasks_before = asyncio.all_tasks()
            with pytest.raises(DependencyCycleError):
                await rt.start(CycleStrategy)
            assert dict(rt.status()) == before
            assert asyncio.all_tasks() == tasks_before
            assert rt.status()["Idle"].state.value == "running"


async def test_an_addition_that_would_rewire_running_components_is_refused(
    tmp_path: Path,
) -> None:
    """Adding a subclass that would replace a resource already injected into a running component
    is refused: a running component's dependencies never change under it."""

    class Feed(Resource):
        pass

    class FakeFeed(Feed):
        pass

    class Strategy(Idle):
        feed: Feed

    with anyio.fail_after(LIMIT):
        async with runtime(tmp_path) as rt:
            await rt.start(Strategy)
            with pytest.raises(DefinitionError) as caught:
                await rt.start(FakeFeed)
            assert list(rt.status()) == ["Feed", "Strategy"]
    assert "would replace Feed, which this runtime already has" in str(caught.value)
    assert "start them in a new runtime" in str(caught.value)
