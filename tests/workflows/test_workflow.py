"""Workflow minions on the runtime: definition checks, the step-by-step driver, outcomes,
persistence policies, pipelines, and the ``run(...)``/``Runtime`` form.

Components are module-level classes (their annotations must resolve). A per-test ``Board`` (a
module global reset by a fixture) feeds events to the pipelines and records what steps saw; the
checkpoints go to a real ``InMemoryStateStore`` (or SQLite file) shared through a
``WorkflowStore`` binding, as ``Gru`` does. Every wait is on an event or a counter, bounded by
``anyio.fail_after``.
"""

import asyncio
import dataclasses
import types
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pydantic
import pytest

from minions import (
    AbortWorkflow,
    ComponentState,
    DefinitionError,
    Minion,
    Pipeline,
    Runtime,
    RuntimeStateError,
    WorkflowStore,
    minion_id,
    minion_step,
)
from minions.core.identity import identity_of
from minions.exceptions import PersistenceError, StateStoreCorrupt
from minions.implementations import InMemoryStateStore, NoOpLogger, SQLiteStateStore
from minions.testing import FakeClock
from minions.workflows.checkpoint import Checkpoint, checkpoint_codec, read_header
from minions.workflows.runner import config_identity, orchestration_id
from minions.workflows.steps import step_names
from minions.workflows.store import StoreServices, WorkflowCounters, WorkflowStatistics

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_store_threads")]

LIMIT = 10.0


# -- the board: per-test shared state ----------------------------------------------------------


class Board:
    """Feeds events to the test pipelines and records what steps saw."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[Any] = asyncio.Queue()
        self.log: list[tuple[str, int]] = []
        self.gates: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.reached: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.seen: list[Any] = []
        self.produce_errors = 0
        self.wrong_type = 0
        self.taken: list[int] = []
        self.took = asyncio.Event()

    async def take(self) -> Any:
        """The next queued event, noting that a pipeline took it."""
        event = await self.events.get()
        self.taken.append(getattr(event, "n", -1))
        self.took.set()
        return event

    async def until_taken(self, n: int) -> None:
        while n not in self.taken:
            self.took.clear()
            await self.took.wait()

    async def arrive(self, name: str) -> None:
        """Mark ``name`` reached, then wait for its gate (tests open gates they want passed)."""
        self.reached[name].set()
        await self.gates[name].wait()


board = Board()


@pytest.fixture(autouse=True)
def fresh_board() -> Iterator[None]:
    global board
    board = Board()
    yield


# -- events, contexts, pipelines --------------------------------------------------------------


@dataclass
class Ev:
    n: int


@dataclass
class Ctx:
    seen: int = 0
    trail: list[str] = field(default_factory=list)


class Feed(Pipeline[Ev]):
    async def produce_event(self) -> Ev:
        event: Ev = await board.take()
        return event


class OtherFeed(Pipeline[Ev]):
    async def produce_event(self) -> Ev:
        event: Ev = await board.events.get()
        return event


class FlakyFeed(Pipeline[Ev]):
    """Fails on event numbers below zero, returns a wrong type for n == 0."""

    async def produce_event(self) -> Ev:
        event: Ev = await board.events.get()
        if event.n < 0:
            board.produce_errors += 1
            raise ConnectionError(f"feed hiccup {event.n}")
        if event.n == 0:
            board.wrong_type += 1
            return {"n": 0}  # type: ignore[return-value]
        return event


class InstantFeed(Pipeline[Ev]):
    """Never awaits: without the loop's yield it would starve everything else."""

    count = 0

    async def produce_event(self) -> Ev:
        InstantFeed.count += 1
        return Ev(InstantFeed.count)


# -- minions ---------------------------------------------------------------------------------


class TwoSteps(Minion[Ev, Ctx]):
    feed: Feed

    @minion_step
    async def first(self) -> None:
        self.context.seen = self.event.n
        self.context.trail.append("first")
        board.log.append(("first", self.event.n))

    @minion_step
    async def second(self) -> None:
        self.context.trail.append("second")
        board.log.append(("second", self.event.n))
        board.seen.append((self.event.n, list(self.context.trail), self.workflow_handle))


class Gated(Minion[Ev, Ctx]):
    """Each step reports where it is and waits for its gate: 'one', 'two', 'three'."""

    feed: Feed
    stop_grace = 0.0

    @minion_step
    async def one(self) -> None:
        board.log.append(("one", self.event.n))
        await board.arrive(f"one:{self.event.n}")

    @minion_step
    async def two(self) -> None:
        board.log.append(("two", self.event.n))
        await board.arrive(f"two:{self.event.n}")

    @minion_step
    async def three(self) -> None:
        board.log.append(("three", self.event.n))


class Outcomes(Minion[Ev, Ctx]):
    """n % 3 == 0 succeeds, 1 aborts in step one, 2 fails in step two."""

    feed: Feed

    @minion_step
    async def one(self) -> None:
        board.log.append(("one", self.event.n))
        if self.event.n % 3 == 1:
            raise AbortWorkflow

    @minion_step
    async def two(self) -> None:
        board.log.append(("two", self.event.n))
        if self.event.n % 3 == 2:
            raise ValueError(f"bad event {self.event.n}")

    @minion_step
    async def three(self) -> None:
        board.log.append(("three", self.event.n))


class Base(Minion[Ev, Ctx]):
    feed: Feed

    @minion_step
    async def b1(self) -> None:
        board.log.append(("b1", 0))

    @minion_step
    async def b2(self) -> None:
        board.log.append(("b2", 0))


class Derived(Base):
    @minion_step
    async def d1(self) -> None:
        board.log.append(("d1", 0))

    @minion_step
    async def b1(self) -> None:  # overrides keep their place
        board.log.append(("b1-override", 0))

    @minion_step
    async def d0(self) -> None:
        board.log.append(("d0", 0))


class IdleOnOutage(Minion[Ev, Ctx]):
    feed: Feed
    persistence_policy = "idle-until-persisted"

    @minion_step
    async def only(self) -> None:
        board.log.append(("only", self.event.n))


class ContinueOnOutage(Minion[Ev, Ctx]):
    feed: Feed
    persistence_policy = "continue-on-failure"

    @minion_step
    async def first(self) -> None:
        board.log.append(("first", self.event.n))

    @minion_step
    async def second(self) -> None:
        board.log.append(("second", self.event.n))


@dataclass
class LooseCtx:
    count: int = 0


class BadContextIdle(Minion[Ev, LooseCtx]):
    """Puts a string into an int field: the checkpoint cannot be encoded."""

    feed: Feed
    persistence_policy = "idle-until-persisted"

    @minion_step
    async def spoil(self) -> None:
        self.context.count = "many"  # type: ignore[assignment]
        board.log.append(("spoil", self.event.n))

    @minion_step
    async def after(self) -> None:
        board.log.append(("after", self.event.n))


class BadContextContinue(BadContextIdle):
    persistence_policy = "continue-on-failure"


class Limited(Minion[Ev, Ctx]):
    feed: Feed
    max_in_flight = 3
    stop_grace = 0.0

    @minion_step
    async def hold(self) -> None:
        board.log.append(("hold", self.event.n))
        await board.arrive(f"hold:{self.event.n}")


class FanA(Minion[Ev, Ctx]):
    feed: Feed

    @minion_step
    async def step(self) -> None:
        board.log.append(("A", self.event.n))


class FanB(Minion[Ev, Ctx]):
    feed: Feed

    @minion_step
    async def step(self) -> None:
        board.log.append(("B", self.event.n))


class OnFlaky(Minion[Ev, Ctx]):
    feed: FlakyFeed

    @minion_step
    async def step(self) -> None:
        board.log.append(("flaky", self.event.n))


class OnInstant(Minion[Ev, Ctx]):
    feed: InstantFeed
    max_in_flight = 1_000_000  # never full: only the pipeline's own yield lets others run

    @minion_step
    async def step(self) -> None:
        board.log.append(("instant", self.event.n))


class Replacer(Minion[Ev, Ctx]):
    feed: Feed
    stop_grace = 0.0

    @minion_step
    async def replace(self) -> None:
        self.context = Ctx(seen=self.event.n * 10, trail=["replaced"])

    @minion_step
    async def hold(self) -> None:
        await board.arrive(f"hold:{self.event.n}")


@dataclass
class NewCtx:
    seen: int = 0
    extra: str = ""


@minion_id("evolving")
class EvolvingNew(Minion[Ev, NewCtx], restart="temporary"):
    feed: Feed

    @minion_step
    async def step(self) -> None:
        board.log.append(("new", self.event.n))


@dataclass
class Knob:
    value: int = 0


class Knobbed(Minion[Ev, Ctx]):
    """A workflow minion with a config; step ``one`` waits for its gate."""

    feed: Feed
    config: Knob
    stop_grace = 0.0

    @minion_step
    async def one(self) -> None:
        board.log.append(("one", self.config.value))
        await board.arrive(f"one:{self.event.n}")

    @minion_step
    async def two(self) -> None:
        board.log.append(("two", self.config.value))


class ListLogger:
    """A workflow Logger that keeps what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[int, str, dict[str, Any]]] = []

    def log(self, level: int, event: str, **fields: Any) -> None:
        self.events.append((level, event, fields))


class NoPipeline(Minion[Ev, Ctx], restart="temporary"):
    @minion_step
    async def step(self) -> None:
        return None


class PydEvent(pydantic.BaseModel):
    n: int
    tags: list[str] = []


class PydCtx(pydantic.BaseModel):
    total: int = 0


class PydFeed(Pipeline[PydEvent]):
    async def produce_event(self) -> PydEvent:
        event: PydEvent = await board.events.get()
        return event


class PydMinion(Minion[PydEvent, PydCtx]):
    feed: PydFeed
    stop_grace = 0.0

    @minion_step
    async def add(self) -> None:
        self.context.total = self.event.n + len(self.event.tags)

    @minion_step
    async def hold(self) -> None:
        board.seen.append(self.context.model_copy())
        await board.arrive(f"pyd:{self.event.n}")


class Plain(Minion):
    """A plain minion may use the names event and context as ordinary attributes."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.context = {"plain": True}

    async def run(self) -> None:
        board.seen.append((type(self.event).__name__, self.context))


# -- helpers ---------------------------------------------------------------------------------


def binding(state_store: Any, **services: Any) -> tuple[type[WorkflowStore], StoreServices]:
    """A WorkflowStore bound to ``state_store`` (what Gru does with its own store)."""
    provided = StoreServices(
        state_store=state_store, owns_store=False, **{"logger": NoOpLogger(), **services}
    )
    cls = types.new_class(
        "TestWorkflowStore",
        (WorkflowStore,),
        {"name": "WorkflowStore"},
        lambda ns: ns.update(provided=provided),
    )
    return cls, provided


def oid(minion: type[Any], pipeline: type[Any] = Feed) -> str:
    return orchestration_id(identity_of(minion), identity_of(pipeline), "")


def counters(
    services: StoreServices, minion: type[Any], pipeline: type[Any] = Feed
) -> WorkflowCounters:
    return services.counters_for(oid(minion, pipeline))


async def until(
    services: StoreServices,
    minion: type[Any],
    check: Any,
    pipeline: type[Any] = Feed,
) -> WorkflowStatistics:
    with anyio.fail_after(LIMIT):
        return await counters(services, minion, pipeline).wait_until(check)


async def feed(*numbers: int) -> None:
    for n in numbers:
        await board.events.put(Ev(n))


# -- definition --------------------------------------------------------------------------------


def test_steps_run_in_source_order_base_class_first() -> None:
    """Steps are the @minion_step methods in class-body order, a base class's first; an
    override keeps the overridden step's place."""
    assert step_names(TwoSteps) == ("first", "second")
    assert step_names(Derived) == ("b1", "b2", "d1", "d0")
    assert step_names(Plain) == ()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "class X(Minion):\n    @minion_step\n    async def s(self): ...",
            "no event and context types",
        ),
        (
            "class X(Minion[int, Ctx]):\n    @minion_step\n    async def s(self): ...",
            "not a dataclass",
        ),
        (
            "class X(Minion[Ev, Ev]):\n    @minion_step\n    async def s(self): ...",
            "fields n have no default",
        ),
        ("class X(Minion[Ev, Ctx]):\n    @minion_step\n    def s(self): ...", "not 'async def'"),
        (
            "class X(Minion[Ev, Ctx]):\n    @minion_step\n    async def s(self, x): ...",
            "must take only 'self'",
        ),
        (
            "class X(Minion[Ev, Ctx]):\n    @minion_step\n    @staticmethod\n"
            "    async def s(): ...",
            "not a staticmethod",
        ),
        (
            "class X(Minion[Ev, Ctx]):\n    @minion_step\n    async def s(self): ...\n"
            "    async def run(self): ...",
            "defines run()",
        ),
        (
            "class X(Minion[Ev, Ctx]):\n    max_in_flight = 0\n    @minion_step\n"
            "    async def s(self): ...",
            "max_in_flight must be a positive int",
        ),
        (
            "class X(Minion[Ev, Ctx]):\n    persistence_policy = 'sometimes'\n    @minion_step\n"
            "    async def s(self): ...",
            "persistence_policy must be one of",
        ),
        (
            "class X(Minion[Ev, Unencodable]):\n    @minion_step\n    async def s(self): ...",
            "cannot checkpoint",
        ),
        (
            "class X(TwoSteps):\n    async def first(self): ...",
            "overrides a workflow step without @minion_step",
        ),
        ("class X(Pipeline[Ev]):\n    async def run(self): ...", "overrides run()"),
    ],
)
def test_bad_definitions_fail_at_the_class_statement(body: str, message: str) -> None:
    """Each mistake is a DefinitionError raised by the class statement, saying what to do."""
    namespace = {
        "Minion": Minion,
        "Pipeline": Pipeline,
        "minion_step": minion_step,
        "Ev": Ev,
        "Ctx": Ctx,
        "TwoSteps": TwoSteps,
        "Unencodable": Unencodable,
    }
    with pytest.raises(DefinitionError, match=message):
        exec(body, namespace)


@dataclass
class Unencodable:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def test_event_and_context_are_per_workflow_and_only_inside_steps() -> None:
    """Outside a running step, the workflow attributes say where they are available; a plain
    minion keeps 'event' and 'context' as ordinary attributes."""
    minion = TwoSteps.__new__(TwoSteps)
    for name in ("event", "context", "workflow_handle"):
        with pytest.raises(RuntimeStateError, match="only available inside a @minion_step"):
            getattr(minion, name)
    plain = Plain()
    assert isinstance(plain.event, asyncio.Event)
    assert plain.context == {"plain": True}


def test_orchestration_ids_are_deterministic_hashes_of_identities() -> None:
    """The same minion, pipeline and config give the same id in any process; any change of
    them gives another."""
    a = orchestration_id("m", "p", config_identity(Ctx(seen=1)))
    assert a == orchestration_id("m", "p", config_identity(Ctx(seen=1)))
    assert len(a) == 32 and int(a, 16) >= 0
    assert a != orchestration_id("m", "p", config_identity(Ctx(seen=2)))
    assert a != orchestration_id("m", "q", config_identity(Ctx(seen=1)))
    assert oid(TwoSteps) == oid(TwoSteps) != oid(TwoSteps, OtherFeed)


# -- the driver ---------------------------------------------------------------------------------


async def test_each_event_runs_one_workflow_with_a_fresh_context(tmp_path: Path) -> None:
    """Every event starts a workflow whose steps run in order on a context built fresh for it;
    each step had a checkpoint saved before it, and the workflow's checkpoint is gone after."""
    store = InMemoryStateStore()
    store_cls, services = binding(store)
    async with Runtime(project_dir=tmp_path) as rt:
        await rt.start(TwoSteps, store_cls)
        await feed(1, 2, 3)
        stats = await until(services, TwoSteps, lambda s: s.succeeded == 3)
    assert sorted(board.log) == sorted([(s, n) for n in (1, 2, 3) for s in ("first", "second")])
    assert sorted((n, trail) for n, trail, _ in board.seen) == [
        (n, ["first", "second"]) for n in (1, 2, 3)
    ]
    handles = {handle for _, _, handle in board.seen}
    assert len({h.workflow_id for h in handles}) == 3
    assert {h.orchestration_id for h in handles} == {oid(TwoSteps)}
    assert stats.started == 3 and stats.checkpoints_saved == 6 and stats.in_flight == 0
    assert store.saves == 6 and store.deletes == 3 and store.contexts == {}


async def test_a_checkpoint_of_the_next_step_is_committed_before_each_step(
    tmp_path: Path,
) -> None:
    """While step i runs, the store holds the workflow's checkpoint with next step i, carrying
    the context as the previous steps left it."""
    store = InMemoryStateStore()
    store_cls, services = binding(store)
    async with Runtime(project_dir=tmp_path) as rt:
        await rt.start(Gated, store_cls)
        await feed(7)
        for index, name in enumerate(("one:7", "two:7")):
            with anyio.fail_after(LIMIT):
                await board.reached[name].wait()
            (row,) = store.contexts.values()
            header = read_header(row.context, workflow_id=row.workflow_id)
            assert header.next_step_index == index
            assert header.orchestration_id == oid(Gated)
            assert header.minion == identity_of(Gated)
            board.gates[name].set()
        await until(services, Gated, lambda s: s.succeeded == 1)
    assert store.contexts == {}
    assert board.log == [("one", 7), ("two", 7), ("three", 7)]


async def test_success_abort_and_failure_are_terminal_and_counted_apart(
    tmp_path: Path,
) -> None:
    """AbortWorkflow ends a workflow as aborted (no later step runs), any other exception as
    failed (the minion keeps handling events); all three delete the checkpoint."""
    store = InMemoryStateStore()
    store_cls, services = binding(store)
    async with Runtime(project_dir=tmp_path) as rt:
        await rt.start(Outcomes, store_cls)
        await feed(3, 4, 5, 6)
        stats = await until(services, Outcomes, lambda s: s.finished == 4)
        assert rt.status()["Outcomes"].state is ComponentState.RUNNING
    assert (stats.succeeded, stats.aborted, stats.failed, stats.interrupted) == (2, 1, 1, 0)
    assert ("two", 4) not in board.log and ("three", 5) not in board.log
    assert ("three", 3) in board.log and ("three", 6) in board.log
    assert store.contexts == {} and store.deletes == 4


async def test_a_stop_interrupts_workflows_and_keeps_their_checkpoints(tmp_path: Path) -> None:
    """Stopping the runtime cancels running workflows; each keeps its checkpoint at the step it
    was in, counted as interrupted, not as a terminal outcome."""
    store = InMemoryStateStore()
    store_cls, services = binding(store)
    async with Runtime(project_dir=tmp_path) as rt:
        await rt.start(Gated, store_cls)
        await feed(1, 2)
        with anyio.fail_after(LIMIT):
            await board.reached["one:1"].wait()
            await board.reached["one:2"].wait()
        board.gates["one:2"].set()
        with anyio.fail_after(LIMIT):
            await board.reached["two:2"].wait()
    stats = counters(services, Gated).snapshot()
    assert (stats.interrupted, stats.finished, stats.in_flight) == (2, 0, 0)
    steps = sorted((read_header(row.context).next_step_index) for row in store.contexts.values())
    assert steps == [0, 1]


async def test_saved_workflows_resume_at_their_next_step_before_new_events(
    tmp_path: Path,
) -> None:
    """A new runtime on the same store resumes each saved workflow at the step it was in, with
    its event and context, before it takes any new event."""
    path = tmp_path / "state.sqlite3"
    async with SQLiteStateStore(path) as store:
        store_cls, _ = binding(store)
        async with Runtime(project_dir=tmp_path) as rt:
            await rt.start(Gated, store_cls)
            await feed(1)
            with anyio.fail_after(LIMIT):
                await board.reached["one:1"].wait()
            board.gates["one:1"].set()
            with anyio.fail_after(LIMIT):
                await board.reached["two:1"].wait()
    assert board.log == [("one", 1), ("two", 1)]
    board.log.clear()
    board.gates["two:1"].set()
    board.gates["one:2"].set()
    board.gates["two:2"].set()
    async with SQLiteStateStore(path) as store:
        store_cls, services = binding(store)
        async with Runtime(project_dir=tmp_path) as rt:
            await feed(2)  # waiting in the pipeline before the minion even starts
            await rt.start(Gated, store_cls)
            stats = await until(services, Gated, lambda s: s.succeeded == 2)
        assert await store.get_all_contexts() == []
    assert (stats.resumed, stats.started) == (1, 1)
    assert board.log[0] == ("two", 1)  # resumed at its next step, and first
    assert ("one", 1) not in board.log
    assert sorted(board.log) == sorted(
        [("two", 1), ("three", 1), ("one", 2), ("two", 2), ("three", 2)]
    )


async def test_a_pipeline_restart_interrupts_and_resumes_its_minions_workflows(
    tmp_path: Path,
) -> None:
    """Restarting the pipeline stops its workflow minion first (workflows interrupted, their
    checkpoints kept); once both are back, the workflows resume at their step."""
    store = InMemoryStateStore()
    store_cls, services = binding(store)
    async with Runtime(project_dir=tmp_path) as rt:
        await rt.start(Gated, store_cls)
        await feed(5)
        with anyio.fail_after(LIMIT):
            await board.reached["one:5"].wait()
        board.reached["one:5"].clear()
        await rt.restart(Feed)
        with anyio.fail_after(LIMIT):
            await board.reached["one:5"].wait()  # step one again: it was interrupted in it
        board.gates["one:5"].set()
        board.gates["two:5"].set()
        stats = await until(services, Gated, lambda s: s.succeeded == 1)
    assert (stats.interrupted, stats.resumed) == (1, 1)
    assert board.log == [("one", 5), ("one", 5), ("two", 5), ("three", 5)]


async def test_a_stopped_minion_leaves_its_pipeline_with_no_event_in_hand(
    tmp_path: Path,
) -> None:
    """When the last subscriber of a pipeline stops, the production under way is withdrawn: an
    event that arrives afterwards stays at its source (it is not taken, to be dropped when the
    pipeline stops) and the minion's next start takes it."""
    store_cls, services = binding(InMemoryStateStore())
    for n in (1, 2):
        board.gates[f"one:{n}"].set()
        board.gates[f"two:{n}"].set()
    async with Runtime(project_dir=tmp_path) as rt:
        await rt.start(Gated, store_cls)
        await feed(1)
        await until(services, Gated, lambda s: s.succeeded == 1)
        await rt.stop(Gated)
        await feed(2)
        with anyio.fail_after(LIMIT):
            await anyio.wait_all_tasks_blocked()
        assert board.taken == [1] and board.events.qsize() == 1
        await rt.restart(Gated)
        stats = await until(services, Gated, lambda s: s.succeeded == 2)
    assert board.taken == [1, 2] and stats.deferred == 0


async def test_an_event_in_hand_with_no_room_at_stop_is_deferred_then_run(
    tmp_path: Path,
) -> None:
    """A stop while the pipeline holds an event its minion has no room for (max_in_flight):
    after the grace the event is saved as a deferred workflow, and the next start runs it."""
    store = InMemoryStateStore()
    store_cls, services = binding(store)
    async with Runtime(project_dir=tmp_path) as rt:
        await rt.start(Limited, store_cls)
        await feed(1, 2, 3, 4)
        with anyio.fail_after(LIMIT):
            for n in (1, 2, 3):
                await board.reached[f"hold:{n}"].wait()
            await board.until_taken(4)  # in hand, waiting for room
    stats = counters(services, Limited).snapshot()
    assert (stats.interrupted, stats.deferred) == (3, 1)
    assert len(store.contexts) == 4
    for n in (1, 2, 3, 4):
        board.gates[f"hold:{n}"].set()
    async with Runtime(project_dir=tmp_path) as rt:
        await rt.start(Limited, store_cls)
        stats = await until(services, Limited, lambda s: s.succeeded == 4)
    assert sorted(n for name, n in board.log if name == "hold") == [1, 1, 2, 2, 3, 3, 4]
    assert store.contexts == {}


async def test_a_step_may_replace_the_context(tmp_path: Path) -> None:
    """Assigning self.context replaces the workflow's context; the next checkpoint holds it."""
    store = InMemoryStateStore()
    store_cls, _ = binding(store)
    async with Runtime(project_dir=tmp_path) as rt:
        await rt.start(Replacer, store_cls)
        await feed(4)
        with anyio.fail_after(LIMIT):
            await board.reached["hold:4"].wait()
        (row,) = store.contexts.values()
    from minions.workflows.checkpoint import checkpoint_codec

    checkpoint = checkpoint_codec(Ev, Ctx).decode(row.context)
    assert checkpoint.context == Ctx(seen=40, trail=["replaced"])
    assert checkpoint.next_step_index == 1


async def test_pydantic_events_and_contexts_round_trip(tmp_path: Path) -> None:
    """Events and contexts may be pydantic models; a checkpoint brings them back as models."""
    store = InMemoryStateStore()
    store_cls, _ = binding(store)
    async with Runtime(project_dir=tmp_path) as rt:
        await rt.start(PydMinion, store_cls)
        await board.events.put(PydEvent(n=2, tags=["a", "b"]))
        with anyio.fail_after(LIMIT):
            await board.reached["pyd:2"].wait()
        (row,) = store.contexts.values()
    from minions.workflows.checkpoint import checkpoint_codec

    checkpoint = checkpoint_codec(PydEvent, PydCtx).decode(row.context)
    assert checkpoint.event == PydEvent(n=2, tags=["a", "b"])
    assert checkpoint.context == PydCtx(total=4) == board.seen[0]


# -- persistence policies -----------------------------------------------------------------------


async def test_continue_on_failure_runs_steps_through_a_store_outage(tmp_path: Path) -> None:
    """Under continue-on-failure a failed save is counted and the step runs anyway; the next
    checkpoint tries again; a failed delete is retried after the next good write."""
    store = InMemoryStateStore()
    store_cls, services = binding(store)
    async with Runtime(project_dir=tmp_path) as rt:
        await rt.start(ContinueOnOutage, store_cls)
        store.fail_next("save", times=2)
        store.fail_next("delete")
        await feed(1)
        stats = await until(services, ContinueOnOutage, lambda s: s.succeeded == 1)
        assert (stats.checkpoint_failures, stats.checkpoints_saved) == (2, 0)
        assert board.log == [("first", 1), ("second", 1)]
        assert store.deletes == 0
        await feed(2)
        stats = await until(services, ContinueOnOutage, lambda s: s.succeeded == 2)
    assert stats.checkpoints_saved == 2
    assert store.contexts == {}  # workflow 1's leftover delete went through after a good save


async def test_idle_until_persisted_waits_with_capped_jittered_backoff(tmp_path: Path) -> None:
    """Under idle-until-persisted a failing save is retried after growing, jittered delays;
    the step runs only once its checkpoint is durable."""
    store = InMemoryStateStore()
    clock = FakeClock()
    store_cls, services = binding(store, clock=clock)
    async with Runtime(project_dir=tmp_path) as rt:
        await rt.start(IdleOnOutage, store_cls)
        store.fail_next("save", times=3)
        await feed(1)
        for _ in range(3):
            with anyio.fail_after(LIMIT):
                await clock.advance_to_next()
        stats = await until(services, IdleOnOutage, lambda s: s.succeeded == 1)
    assert board.log == [("only", 1)]
    assert (stats.checkpoint_failures, stats.checkpoints_saved) == (3, 1)
    delays = clock.slept
    assert len(delays) == 3
    for attempt, delay in enumerate(delays):
        assert 0.05 * 2**attempt * 0.8 <= delay <= 0.05 * 2**attempt * 1.2


async def test_idle_until_persisted_fails_the_workflow_when_retrying_cannot_help(
    tmp_path: Path,
) -> None:
    """A store error that is not retryable is not retried: under idle-until-persisted the
    workflow fails (its step never runs) instead of waiting forever."""
    store = InMemoryStateStore()
    store_cls, services = binding(store)
    async with Runtime(project_dir=tmp_path) as rt:
        await rt.start(IdleOnOutage, store_cls)
        store.fail_next("save", error=StateStoreCorrupt("the file is damaged"))
        await feed(1)
        stats = await until(services, IdleOnOutage, lambda s: s.failed == 1)
    assert board.log == []
    assert stats.checkpoint_failures == 1


async def test_an_unencodable_context_is_never_retried(tmp_path: Path) -> None:
    """A context the codec cannot encode fails the workflow under idle-until-persisted and is
    skipped (counted) under continue-on-failure; neither retries it."""
    store = InMemoryStateStore()
    store_cls, services = binding(store)
    async with Runtime(project_dir=tmp_path) as rt:
        await rt.start(BadContextIdle, BadContextContinue, store_cls)
        await feed(1)
        idle = await until(services, BadContextIdle, lambda s: s.failed == 1)
        cont = await until(services, BadContextContinue, lambda s: s.succeeded == 1)
    assert idle.checkpoint_failures == 1 and cont.checkpoint_failures == 1
    assert sorted(board.log) == [("after", 1), ("spoil", 1), ("spoil", 1)]
    assert store.contexts == {}


def test_persistence_error_is_a_minions_error() -> None:
    """Giving up on a checkpoint is reported as a PersistenceError (a MinionsError)."""
    from minions import MinionsError

    assert issubclass(PersistenceError, MinionsError)


# -- pipelines ----------------------------------------------------------------------------------


async def test_each_event_fans_out_to_every_subscribed_minion(tmp_path: Path) -> None:
    """Two workflow minions on one pipeline share its single instance and each get every
    event."""
    store_cls, services = binding(InMemoryStateStore())
    async with Runtime(project_dir=tmp_path) as rt:
        await rt.start(FanA, FanB, store_cls)
        assert list(rt.status()).count("Feed") == 1
        await feed(1, 2)
        await until(services, FanA, lambda s: s.succeeded == 2)
        await until(services, FanB, lambda s: s.succeeded == 2)
    assert sorted(board.log) == [("A", 1), ("A", 2), ("B", 1), ("B", 2)]


async def test_max_in_flight_bounds_running_workflows_and_holds_the_pipeline(
    tmp_path: Path,
) -> None:
    """With max_in_flight = 3 a fourth event waits in the pipeline until a workflow ends."""
    store_cls, services = binding(InMemoryStateStore())
    async with Runtime(project_dir=tmp_path) as rt:
        await rt.start(Limited, store_cls)
        await feed(1, 2, 3, 4, 5)
        with anyio.fail_after(LIMIT):
            for n in (1, 2, 3):
                await board.reached[f"hold:{n}"].wait()
            await board.until_taken(4)  # the pipeline holds event 4 and waits for room
        assert board.events.qsize() == 1  # so event 5 stays queued
        assert counters(services, Limited).snapshot().in_flight == 3
        assert not board.reached["hold:4"].is_set()
        board.gates["hold:2"].set()
        with anyio.fail_after(LIMIT):
            await board.reached["hold:4"].wait()
        assert counters(services, Limited).snapshot().in_flight == 3
        for n in (1, 3, 4, 5):
            board.gates[f"hold:{n}"].set()
        stats = await until(services, Limited, lambda s: s.succeeded == 5)
    assert stats.in_flight == 0


async def test_produce_errors_and_wrong_types_are_counted_and_the_loop_goes_on(
    tmp_path: Path,
) -> None:
    """produce_event raising is logged and counted; an event of the wrong type is dropped;
    the pipeline keeps producing."""
    store_cls, services = binding(InMemoryStateStore())
    async with Runtime(project_dir=tmp_path) as rt:
        await rt.start(OnFlaky, store_cls)
        await feed(-1, 0, -2, 5)
        await until(services, OnFlaky, lambda s: s.succeeded == 1, pipeline=FlakyFeed)
        assert rt.status()["FlakyFeed"].crashes == 0
    assert board.log == [("flaky", 5)]
    assert (board.produce_errors, board.wrong_type) == (2, 1)


async def test_an_instant_pipeline_does_not_starve_the_event_loop(tmp_path: Path) -> None:
    """A produce_event that never awaits still lets other tasks run: the loop yields at least
    every 64 events."""
    InstantFeed.count = 0
    store_cls, services = binding(InMemoryStateStore())
    ticks = 0
    async with Runtime(project_dir=tmp_path) as rt:
        await rt.start(OnInstant, store_cls)
        with anyio.fail_after(LIMIT):
            while ticks < 50:
                await asyncio.sleep(0)
                ticks += 1
            stats = await until(services, OnInstant, lambda s: s.succeeded >= 100, InstantFeed)
    assert stats.succeeded >= 100 and ticks == 50


async def test_a_workflow_minion_without_a_pipeline_fails_with_a_clear_error(
    tmp_path: Path,
) -> None:
    """Run without a pipeline (none declared, none given by Gru), the minion crashes with a
    message saying how to give it one; the runtime records it."""
    store_cls, _ = binding(InMemoryStateStore())
    async with Runtime(project_dir=tmp_path) as rt:
        await rt.start(NoPipeline, store_cls)
        with anyio.fail_after(LIMIT):
            await rt.wait()  # temporary: the crash stops it for good
        status = rt.status()["NoPipeline"]
        assert status.state is ComponentState.STOPPED and status.crashes == 1
        assert "has no pipeline to take events from" in (status.last_error or "")


async def test_run_form_refuses_checkpoints_of_changed_types_saying_drain_first(
    tmp_path: Path,
) -> None:
    """Under run(...), a workflow minion whose saved checkpoints have another context type stops
    with an error that says to drain first, and leaves them in the store."""
    store = InMemoryStateStore()
    workflow = orchestration_id("evolving", identity_of(Feed), "")
    blob = checkpoint_codec(Ev, Ctx).encode(Checkpoint(workflow, "wf", "evolving", Ev(1), Ctx()))
    await store.save_context("wf", workflow, blob)
    store_cls, _ = binding(store)
    async with Runtime(project_dir=tmp_path) as rt:
        await rt.start(EvolvingNew, store_cls)
        with anyio.fail_after(LIMIT):
            await rt.wait()
        status = rt.status()["EvolvingNew"]
    assert status.crashes == 1 and "Drain the workflows" in (status.last_error or "")
    assert list(store.contexts) == ["wf"] and board.log == []


async def test_run_form_resumes_after_a_config_value_changed(tmp_path: Path) -> None:
    """Under run(...), a workflow minion is one orchestration whatever its config values: after
    a value is edited (in minions.toml or the environment), the saved workflows resume."""
    store = InMemoryStateStore()
    store_cls, services = binding(store)
    async with Runtime(project_dir=tmp_path, config={"Knobbed": {"value": 1}}) as rt:
        await rt.start(Knobbed, store_cls)
        await feed(1)
        with anyio.fail_after(LIMIT):
            await board.reached["one:1"].wait()
    assert len(store.contexts) == 1
    board.gates["one:1"].set()
    environ = {"MINIONS_KNOBBED__VALUE": "3"}
    async with Runtime(
        project_dir=tmp_path, config={"Knobbed": {"value": 2}}, environ=environ
    ) as rt:
        await rt.start(Knobbed, store_cls)
        stats = await until(services, Knobbed, lambda s: s.succeeded == 1)
    assert stats.resumed == 1 and store.contexts == {}
    assert board.log == [("one", 1), ("one", 3), ("two", 3)]


async def test_run_form_reports_workflows_stranded_under_another_orchestration(
    tmp_path: Path,
) -> None:
    """Checkpoints of the minion filed under another orchestration (another pipeline, Gru with a
    config, an older Minions) are not resumed but not forgotten in silence either: its first
    start on the store logs how many, under which ids, and how to finish or discard them."""
    store = InMemoryStateStore()
    elsewhere = orchestration_id(identity_of(Gated), identity_of(OtherFeed))
    codec = checkpoint_codec(Ev, Ctx)
    for n in (1, 2):
        blob = codec.encode(Checkpoint(elsewhere, f"wf{n}", identity_of(Gated), Ev(n), Ctx()))
        await store.save_context(f"wf{n}", elsewhere, blob)
    unrelated = orchestration_id(identity_of(Limited), identity_of(Feed))
    blob = codec.encode(Checkpoint(unrelated, "wf3", identity_of(Limited), Ev(3), Ctx()))
    await store.save_context("wf3", unrelated, blob)
    logger = ListLogger()
    store_cls, _ = binding(store, logger=logger)
    async with Runtime(project_dir=tmp_path) as rt:
        await rt.start(Gated, store_cls)
        with anyio.fail_after(LIMIT):
            await anyio.wait_all_tasks_blocked()
        await rt.restart(Gated)
        with anyio.fail_after(LIMIT):
            await anyio.wait_all_tasks_blocked()
    reports = [fields for _, event, fields in logger.events if event == "workflow.stranded"]
    assert len(reports) == 1  # once per store, not at every restart
    assert reports[0]["stranded"] == 2 and f"{elsewhere} (2)" in reports[0]["reason"]
    assert "'minions workflows retry ID' resumes one here" in reports[0]["reason"]
    assert "'minions workflows cancel ID' discards one" in reports[0]["reason"]
    assert len(store.contexts) == 3  # untouched


async def test_run_form_adopts_checkpoints_saved_under_its_former_id(tmp_path: Path) -> None:
    """Earlier builds hashed a run(...)-form minion's config values into its orchestration id.
    Its checkpoints saved under that former id, with the values it has now, are adopted at
    start: resumed, filed under the current id from their next checkpoint on, and not reported
    stranded."""
    store = InMemoryStateStore()
    current = orchestration_id(identity_of(Knobbed), identity_of(Feed))
    former = orchestration_id(identity_of(Knobbed), identity_of(Feed), config_identity(Knob(7)))
    codec = checkpoint_codec(Ev, Ctx)
    blob = codec.encode(Checkpoint(former, "wf-old", identity_of(Knobbed), Ev(8), Ctx()))
    await store.save_context("wf-old", former, blob)
    logger = ListLogger()
    store_cls, services = binding(store, logger=logger)
    async with Runtime(project_dir=tmp_path, config={"Knobbed": {"value": 7}}) as rt:
        await rt.start(Knobbed, store_cls)
        with anyio.fail_after(LIMIT):
            await board.reached["one:8"].wait()
        assert store.contexts["wf-old"].orchestration_id == current
        board.gates["one:8"].set()
        stats = await until(services, Knobbed, lambda s: s.succeeded == 1)
    assert stats.resumed == 1 and board.log == [("one", 7), ("two", 7)]
    assert store.contexts == {}
    events = {event: fields for _, event, fields in logger.events}
    assert "workflow.stranded" not in events
    assert events["workflow.adopted"]["adopted"] == 1
    assert events["workflow.adopted"]["orchestration"] == current


async def test_run_form_defaults_to_sqlite_in_the_project_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without Gru, the WorkflowStore keeps checkpoints in <project>/.minions/state.sqlite3."""
    monkeypatch.setenv("MINIONS_PROJECT_DIR", str(tmp_path))
    async with Runtime(project_dir=tmp_path) as rt:
        await rt.start(Gated)
        await feed(1)
        with anyio.fail_after(LIMIT):
            await board.reached["one:1"].wait()
    path = tmp_path / ".minions" / "state.sqlite3"
    async with SQLiteStateStore(path) as store:
        (row,) = await store.get_all_contexts()
    assert read_header(row.context).orchestration_id == oid(Gated)


def test_plain_minion_dataclass_fields_are_untouched() -> None:
    """The workflow layer adds a WorkflowStore dependency only to classes with steps."""
    assert "workflow_store" not in getattr(Plain, "__annotations__", {})
    assert TwoSteps.__annotations__["workflow_store"] is WorkflowStore
    assert dataclasses.is_dataclass(Ctx)
