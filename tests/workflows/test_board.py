"""The workflow board and the runner's actions on it: what ``minions workflows`` sees and does.

Each test runs a real ``Runtime`` with a workflow minion whose steps wait at gates the test
opens (module-level ``Gates``, reset per test), over a real ``InMemoryStateStore`` or SQLite
file bound as Gru binds its store. Every wait is on an event or a counter, under
``anyio.fail_after``.
"""

from __future__ import annotations

import asyncio
import random
import types
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from minions import Minion, Pipeline, Runtime, WorkflowStore, minion_step
from minions.core.identity import identity_of
from minions.implementations import InMemoryStateStore, NoOpLogger, SQLiteStateStore
from minions.ops.workflow_ops import answer_workflow_op
from minions.workflows.board import WorkflowActionError, WorkflowEntry
from minions.workflows.checkpoint import Checkpoint, checkpoint_codec, read_header
from minions.workflows.runner import orchestration_id
from minions.workflows.state_store import StoredContext
from minions.workflows.store import PersistenceRetry, StoreServices, WorkflowStatistics
from minions.workflows.workflow_id import new_workflow_id

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_store_threads")]

LIMIT = 10.0


class Gates:
    """Events fed to the pipeline, and the gates steps wait at."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[Ev] = asyncio.Queue()
        self.open: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.reached: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self.failing: set[int] = set()
        self.log: list[str] = []
        #: Set when the pipeline is asked for an event: a minion subscribed, so its runner has
        #: loaded (and admitted) its saved workflows.
        self.asked = asyncio.Event()

    async def at(self, name: str) -> None:
        self.log.append(name)
        self.reached[name].set()
        await self.open[name].wait()


gates = Gates()


@pytest.fixture(autouse=True)
def fresh_gates() -> Iterator[None]:
    global gates
    gates = Gates()
    yield


@dataclass
class Ev:
    n: int


@dataclass
class Ctx:
    trail: list[str] = field(default_factory=list)


class Jobs(Pipeline[Ev]):
    async def produce_event(self) -> Ev:
        gates.asked.set()
        return await gates.events.get()


class Steps(Minion[Ev, Ctx]):
    jobs: Jobs

    @minion_step
    async def first(self) -> None:
        self.context.trail.append("first")
        await gates.at(f"first:{self.event.n}")

    @minion_step
    async def second(self) -> None:
        if self.event.n in gates.failing:
            raise ValueError(f"job {self.event.n} refused")
        await gates.at(f"second:{self.event.n}")


class Narrow(Minion[Ev, Ctx]):
    """One workflow at a time."""

    max_in_flight = 1
    jobs: Jobs

    @minion_step
    async def first(self) -> None:
        await gates.at(f"first:{self.event.n}")


class Stubborn(Minion[Ev, Ctx]):
    """Makes every checkpoint durable before its step."""

    persistence_policy = "idle-until-persisted"
    jobs: Jobs

    @minion_step
    async def first(self) -> None:
        await gates.at(f"first:{self.event.n}")


def binding(state_store: Any, **settings: Any) -> tuple[type[WorkflowStore], StoreServices]:
    services = StoreServices(
        state_store=state_store, owns_store=False, **{"logger": NoOpLogger(), **settings}
    )
    cls = types.new_class(
        "BoundStore",
        (WorkflowStore,),
        {"name": "WorkflowStore"},
        lambda ns: ns.update(provided=services),
    )
    return cls, services


def oid(minion: type[Any]) -> str:
    return orchestration_id(identity_of(minion), identity_of(Jobs))


async def until(services: StoreServices, minion: type[Any], check: Any) -> WorkflowStatistics:
    with anyio.fail_after(LIMIT):
        return await services.counters_for(oid(minion)).wait_until(check)


async def reached(name: str) -> None:
    with anyio.fail_after(LIMIT):
        await gates.reached[name].wait()


def only_entry(services: StoreServices) -> WorkflowEntry:
    (entry,) = services.board.entries()
    return entry


def saved(minion: type[Any], n: int, *, step: int = 0) -> StoredContext:
    """A checkpoint of ``minion`` for event ``n`` at ``step``, as a store row."""
    workflow_id = new_workflow_id(random.Random(n))
    blob = checkpoint_codec(Ev, Ctx).encode(
        Checkpoint(oid(minion), workflow_id, identity_of(minion), Ev(n), Ctx(), step)
    )
    return StoredContext(workflow_id, oid(minion), blob)


async def test_the_board_follows_a_workflow_step_by_step(tmp_path: Path) -> None:
    """A running workflow is on the board with its step, attempt and age; it leaves the board
    when it ends. Retrying a running workflow is refused: there is nothing to retry."""
    store_cls, services = binding(InMemoryStateStore())
    async with Runtime(project_dir=tmp_path) as rt:
        await rt.start(Steps, store_cls)
        await gates.events.put(Ev(1))
        await reached("first:1")
        entry = only_entry(services)
        row = entry.row(entry.created or 0)
        assert (row["state"], row["step"], row["step_index"], row["steps"]) == (
            "running",
            "first",
            0,
            2,
        )
        assert (row["attempts"], row["last_error"], row["minion"]) == (1, None, "Steps")
        with pytest.raises(WorkflowActionError, match=r"is running .*nothing to retry") as caught:
            await entry.owner.retry(entry.workflow_id)
        assert caught.value.kind == "refused"
        gates.open["first:1"].set()
        await reached("second:1")
        assert only_entry(services).step_index == 1
        gates.open["second:1"].set()
        await until(services, Steps, lambda s: s.succeeded == 1)
        assert services.board.entries() == []


async def test_keep_failed_parks_a_failed_workflow_and_a_retry_resumes_it(
    tmp_path: Path,
) -> None:
    """With keep_failed, a failed workflow's last checkpoint stays, marked failed with the
    error: counted as failed, not resumed by the next start, shown as failed; ``retry`` runs
    it again from the step that failed (attempt 2) and it can then succeed."""
    gates.failing.add(2)
    gates.open["first:2"].set()
    path = tmp_path / "state.sqlite3"
    async with SQLiteStateStore(path) as store:
        store_cls, services = binding(store, keep_failed=True)
        async with Runtime(project_dir=tmp_path) as rt:
            await rt.start(Steps, store_cls)
            await gates.events.put(Ev(2))
            # Two checkpoints, then the failed one kept.
            await until(services, Steps, lambda s: s.failed == 1 and s.checkpoints_saved == 3)
            assert only_entry(services).state == "failed"
            (row,) = await store.get_all_contexts()
            header = read_header(row.context)
            assert (header.failed, header.next_step_index, header.attempts) == (True, 1, 1)
            assert header.last_error == "ValueError: job 2 refused"

        store_cls, services = binding(store, keep_failed=True)
        gates.asked.clear()
        async with Runtime(project_dir=tmp_path) as rt:
            await rt.start(Steps, store_cls)
            with anyio.fail_after(LIMIT):
                await gates.asked.wait()
            entry = only_entry(services)
            assert (entry.state, entry.attempts, entry.last_error) == (
                "failed",
                1,
                "ValueError: job 2 refused",
            )
            assert services.counters_for(oid(Steps)).snapshot().resumed == 0
            gates.failing.clear()
            message = await entry.owner.retry(entry.workflow_id)
            assert "resumed at step 'second' (attempt 2)" in message
            await reached("second:2")
            assert only_entry(services).attempts == 2
            gates.open["second:2"].set()
            await until(services, Steps, lambda s: s.succeeded == 1)
        assert await store.get_all_contexts() == []
    assert gates.log.count("first:2") == 1, "the retry resumed at the step that failed"


async def test_cancel_ends_a_running_workflow_as_aborted(tmp_path: Path) -> None:
    """``cancel`` stops a running workflow in its step: counted as aborted (not interrupted),
    its checkpoint deleted, its later steps never run; the minion keeps running."""
    store = InMemoryStateStore()
    store_cls, services = binding(store)
    async with Runtime(project_dir=tmp_path) as rt:
        await rt.start(Steps, store_cls)
        await gates.events.put(Ev(3))
        await reached("first:3")
        entry = only_entry(services)
        message = await entry.owner.cancel(entry.workflow_id)
        assert message.endswith("cancelled in step 'first': counted as aborted")
        # cancel() returned once the workflow's task ended, its delete included.
        stats = services.counters_for(oid(Steps)).snapshot()
        assert (stats.aborted, stats.interrupted, stats.failed, stats.in_flight) == (1, 0, 0, 0)
        assert store.contexts == {} and services.board.entries() == []
        await gates.events.put(Ev(4))
        await reached("first:4")  # the minion goes on with the next event
    assert "second:3" not in gates.log


async def test_a_workflow_waiting_for_room_can_be_cancelled_but_not_retried(
    tmp_path: Path,
) -> None:
    """Saved workflows beyond max_in_flight wait at start; ``retry`` of one says it waits for
    room, ``cancel`` aborts it before it resumes."""
    rows = [saved(Narrow, 5), saved(Narrow, 6)]
    store = InMemoryStateStore(rows)
    store_cls, services = binding(store)
    async with Runtime(project_dir=tmp_path) as rt:
        await rt.start(Narrow, store_cls)
        await reached("first:5")
        waiting = services.board.get(rows[1].workflow_id)
        assert waiting is not None and waiting.state == "waiting"
        with pytest.raises(WorkflowActionError, match=r"waits for room.*max_in_flight=1"):
            await waiting.owner.retry(waiting.workflow_id)
        message = await waiting.owner.cancel(waiting.workflow_id)
        assert "cancelled before it resumed: counted as aborted" in message
        assert rows[1].workflow_id not in store.contexts
        gates.open["first:5"].set()
        stats = await until(services, Narrow, lambda s: s.succeeded == 1)
        assert (stats.aborted, stats.resumed) == (1, 1)
    assert "first:6" not in gates.log


async def test_retry_wakes_a_workflow_waiting_to_retry_its_checkpoint(tmp_path: Path) -> None:
    """Under idle-until-persisted a refused checkpoint is retried after a backoff; the board
    shows the workflow as retrying with the store's error, and ``retry`` cuts the wait short."""
    store = InMemoryStateStore()
    slow = PersistenceRetry(delay_seconds=600, max_delay_seconds=600, jitter_ratio=0)
    store_cls, services = binding(store, retry=slow)
    async with Runtime(project_dir=tmp_path) as rt:
        await rt.start(Stubborn, store_cls)
        store.fail_next("save")
        await gates.events.put(Ev(7))
        await until(services, Stubborn, lambda s: s.checkpoint_failures == 1)
        entry = only_entry(services)
        assert entry.state == "retrying"
        assert (entry.last_error or "").startswith("checkpoint not saved, retrying:")
        message = await entry.owner.retry(entry.workflow_id)
        assert "retries its checkpoint (before step 'first') now" in message
        await reached("first:7")  # long before the 600 s backoff
        assert only_entry(services).state == "running"
        gates.open["first:7"].set()
        await until(services, Stubborn, lambda s: s.succeeded == 1)


async def test_a_resumed_workflow_records_its_next_attempt(tmp_path: Path) -> None:
    """Resuming a workflow saves its checkpoint again with one more attempt, before the step
    runs, so a workflow that keeps crashing its program shows how often it was tried."""
    path = tmp_path / "state.sqlite3"
    async with SQLiteStateStore(path) as store:
        for attempt in (1, 2, 3):
            gates.reached["first:8"].clear()
            store_cls, services = binding(store)
            async with Runtime(project_dir=tmp_path) as rt:
                await rt.start(Steps, store_cls)
                if attempt == 1:
                    await gates.events.put(Ev(8))
                await reached("first:8")
                (row,) = await store.get_all_contexts()
                assert read_header(row.context).attempts == attempt
                assert only_entry(services).attempts == attempt
            # leaving the runtime interrupts the workflow: its checkpoint stays
    assert gates.log == ["first:8"] * 3


# -- operators' actions that overlap: one owner per workflow, decided before any await --------


async def kept_failed(services: StoreServices, n: int) -> WorkflowEntry:
    """Run job ``n`` until it fails and is kept (its second step raises); its entry."""
    gates.failing.add(n)
    gates.open[f"first:{n}"].set()
    await gates.events.put(Ev(n))
    await until(services, Steps, lambda s: s.failed == 1 and s.checkpoints_saved == 3)
    gates.failing.clear()
    entry = only_entry(services)
    assert entry.state == "failed"
    return entry


async def test_two_retries_at_once_run_a_failed_workflow_once(tmp_path: Path) -> None:
    """Two ``retry`` requests served at the same time (two terminals, a double click): the
    first resumes the failed workflow, the second is refused because it runs; its step runs
    once."""
    async with SQLiteStateStore(tmp_path / "state.sqlite3") as store:
        store_cls, services = binding(store, keep_failed=True)
        async with Runtime(project_dir=tmp_path) as rt:
            await rt.start(Steps, store_cls)
            entry = await kept_failed(services, 2)
            first, second = await asyncio.gather(
                entry.owner.retry(entry.workflow_id),
                entry.owner.retry(entry.workflow_id),
                return_exceptions=True,
            )
            assert isinstance(first, str) and "resumed at step 'second'" in first
            assert isinstance(second, WorkflowActionError) and second.kind == "refused"
            assert "is running" in str(second)
            assert services.counters_for(oid(Steps)).snapshot().in_flight == 1
            await reached("second:2")
            gates.open["second:2"].set()
            stats = await until(services, Steps, lambda s: s.succeeded == 1)
            assert (stats.resumed, stats.in_flight) == (1, 0)
        assert await store.get_all_contexts() == []
    assert gates.log.count("second:2") == 1, gates.log


@pytest.mark.parametrize("first", ["retry", "cancel"])
async def test_retry_and_cancel_at_once_never_bring_a_discarded_workflow_back(
    tmp_path: Path, first: str
) -> None:
    """``retry`` and ``cancel`` of a failed workflow at the same time: whichever comes first,
    the other sees what it did — a cancel after the retry cancels the resumed workflow before
    its step runs (counted as aborted), a retry after the cancel is refused — and the
    checkpoint ends deleted, never saved again."""
    async with SQLiteStateStore(tmp_path / "state.sqlite3") as store:
        store_cls, services = binding(store, keep_failed=True)
        async with Runtime(project_dir=tmp_path) as rt:
            await rt.start(Steps, store_cls)
            entry = await kept_failed(services, 3)
            owner, workflow_id = entry.owner, entry.workflow_id
            gates.open["second:3"].set()
            actions = {"retry": owner.retry(workflow_id), "cancel": owner.cancel(workflow_id)}
            second = "cancel" if first == "retry" else "retry"
            answers = dict(
                zip(
                    (first, second),
                    await asyncio.gather(actions[first], actions[second], return_exceptions=True),
                    strict=True,
                )
            )
            stats = services.counters_for(oid(Steps)).snapshot()
            if first == "retry":
                assert "resumed at step 'second'" in str(answers["retry"])
                assert "cancelled in step 'second': counted as aborted" in str(answers["cancel"])
                assert (stats.resumed, stats.aborted) == (1, 1)
            else:
                assert "discarded" in str(answers["cancel"])
                assert isinstance(answers["retry"], WorkflowActionError)
                assert "not held" in str(answers["retry"])
                assert (stats.resumed, stats.aborted) == (0, 0)
            assert services.board.entries() == []
        assert await store.get_all_contexts() == []
    assert "second:3" not in gates.log


class SlowLoad(InMemoryStateStore):
    """An in-memory store whose reads of an orchestration wait for ``gate`` (a slow disk)."""

    def __init__(self, rows: list[StoredContext]) -> None:
        super().__init__(rows)
        self.gate, self.loading = asyncio.Event(), asyncio.Event()

    async def get_contexts_for_orchestration(self, orchestration_id: str) -> list[StoredContext]:
        self.loading.set()
        rows = await super().get_contexts_for_orchestration(orchestration_id)
        await self.gate.wait()
        return rows


async def test_a_checkpoint_being_loaded_is_neither_adopted_nor_deleted(tmp_path: Path) -> None:
    """While a minion loads its checkpoints, ``retry`` and ``cancel`` of one of them (not on
    the board yet) are refused — the minion may be about to hold it; once loaded, it runs
    once."""
    row = saved(Steps, 7, step=1)
    store = SlowLoad([row])
    gates.open["second:7"].set()
    store_cls, services = binding(store)
    async with Runtime(project_dir=tmp_path) as rt:
        start = asyncio.ensure_future(rt.start(Steps, store_cls))
        with anyio.fail_after(LIMIT):
            await store.loading.wait()
        for op in ("workflow_retry", "workflow_cancel"):
            with pytest.raises(WorkflowActionError, match="still loading") as refused:
                await answer_workflow_op(rt, op, row.workflow_id)
            assert refused.value.kind == "refused"
        store.gate.set()
        await start
        stats = await until(services, Steps, lambda s: s.succeeded == 1)
        assert (stats.resumed, stats.aborted) == (1, 0)
    assert gates.log.count("second:7") == 1, gates.log


class Deaf(Minion[Ev, Ctx], stop_timeout=0.2):
    """A step that keeps going when cancelled, until the test lets it end."""

    jobs: Jobs

    @minion_step
    async def first(self) -> None:
        try:
            await gates.at(f"first:{self.event.n}")
        except asyncio.CancelledError:
            await gates.at(f"deaf:{self.event.n}")


async def test_an_abandoned_runner_does_not_take_its_successors_workflow_off_the_board(
    tmp_path: Path,
) -> None:
    """A restart abandons a runner whose step ignores its cancellation; the next incarnation
    resumes the workflow. When the old step finally ends, the workflow stays on the board as
    its new runner's: ``retry`` and ``cancel`` still reach it."""
    store = InMemoryStateStore()
    store_cls, services = binding(store)
    async with Runtime(project_dir=tmp_path) as rt:
        await rt.start(Deaf, store_cls)
        await gates.events.put(Ev(9))
        await reached("first:9")
        old = only_entry(services).owner
        await rt.restart(Deaf)  # abandons the old run() after stop_timeout
        await until(services, Deaf, lambda s: s.resumed == 1)
        entry = only_entry(services)
        assert entry.owner is not old and entry.state == "running"
        gates.open["deaf:9"].set()
        await until(services, Deaf, lambda s: s.succeeded == 1)  # the old step ended
        assert services.board.get(entry.workflow_id) is entry
        message = await entry.owner.cancel(entry.workflow_id)
        assert "counted as aborted" in message


class Handing(Pipeline[Ev]):
    """Says when it has handed an event over (the minion then holds it, waiting for room)."""

    async def produce_event(self) -> Ev:
        event = await gates.events.get()
        gates.reached[f"handed:{event.n}"].set()
        return event


class Cramped(Minion[Ev, Ctx], stop_timeout=2.0):
    """One workflow at a time, every checkpoint made durable, a grace longer than the stop."""

    max_in_flight = 1
    persistence_policy = "idle-until-persisted"
    stop_grace = 30.0
    jobs: Handing

    @minion_step
    async def first(self) -> None:
        await gates.at(f"first:{self.event.n}")


async def test_saving_the_event_in_hand_leaves_time_to_cancel_within_the_stop_timeout(
    tmp_path: Path,
) -> None:
    """At a stop, a minion with no room for the event in hand saves it as deferred; when the
    store refuses that save, the wait for it ends early enough that the running workflow is
    cancelled (interrupted, its checkpoint kept) before the host's stop timeout gives up on the
    minion."""
    store = InMemoryStateStore()
    quick = PersistenceRetry(delay_seconds=0.01, max_delay_seconds=0.01, jitter_ratio=0)
    store_cls, services = binding(store, retry=quick)
    counters = services.counters_for(orchestration_id(identity_of(Cramped), identity_of(Handing)))
    async with Runtime(project_dir=tmp_path) as rt:
        await rt.start(Cramped, store_cls)
        await gates.events.put(Ev(1))
        await reached("first:1")
        await gates.events.put(Ev(2))
        await reached("handed:2")  # no room for it: its delivery waits
        store.fail_next("save", times=1_000_000)
        with anyio.fail_after(LIMIT):
            await rt.stop(Cramped)
        # run() ended within the stop timeout, so its wind-down is done, not abandoned.
        assert counters.snapshot().interrupted == 1
    assert "first:2" not in gates.log
