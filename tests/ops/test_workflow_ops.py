"""The control socket's workflow operations, on a runtime in this process.

What ``minions workflows`` gets for checkpoints that no runner holds: one saved by another
orchestration of a running minion (*stranded*: ``retry`` adopts it), one whose minion does not
run (*saved*: ``retry`` is refused, ``cancel`` deletes it and counts it as aborted), one the
running program cannot decode.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest

from minions import Minion, Pipeline, Runtime, WorkflowStore, minion_step
from minions.core.identity import identity_of
from minions.implementations import InMemoryStateStore, NoOpLogger, SQLiteStateStore
from minions.ops.saved_workflows import LIST_LIMIT
from minions.ops.workflow_ops import answer_workflow_op
from minions.workflows.board import WorkflowActionError
from minions.workflows.checkpoint import Checkpoint, checkpoint_codec
from minions.workflows.runner import orchestration_id
from minions.workflows.state_store import StoredContext
from minions.workflows.store import StoreServices
from minions.workflows.workflow_id import new_workflow_id

pytestmark = pytest.mark.anyio

LIMIT = 10.0
reached: dict[int, asyncio.Event] = {}


@dataclass
class Ev:
    n: int


@dataclass
class Ctx:
    notes: list[str] = field(default_factory=list)


@dataclass
class OtherCtx:
    count: int = 0


class Quiet(Pipeline[Ev]):
    """Produces nothing; says when a minion subscribed (its runner has loaded its workflows)."""

    asked: asyncio.Event

    async def produce_event(self) -> Ev:
        Quiet.asked.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class Adopter(Minion[Ev, Ctx]):
    source: Quiet

    @minion_step
    async def only(self) -> None:
        self.context.notes.append("ran")
        reached[self.event.n].set()


def row_of(
    minion: str, orchestration: str, n: int, context: Any = None, *, failed: bool = False
) -> StoredContext:
    workflow_id = new_workflow_id(random.Random(n))
    context_type = Ctx if context is None else type(context)
    blob = checkpoint_codec(Ev, context_type).encode(
        Checkpoint(orchestration, workflow_id, minion, Ev(n), context or Ctx(), 0, failed=failed)
    )
    return StoredContext(workflow_id, orchestration, blob)


def bound(store: InMemoryStateStore) -> tuple[type[WorkflowStore], StoreServices]:
    services = StoreServices(state_store=store, owns_store=False, logger=NoOpLogger())
    cls = types.new_class(
        "Bound",
        (WorkflowStore,),
        {"name": "WorkflowStore"},
        lambda ns: ns.update(provided=services),
    )
    return cls, services


async def test_unheld_checkpoints_are_listed_adopted_refused_and_cancelled(
    tmp_path: Path,
) -> None:
    """A stranded checkpoint of a running minion is listed as stranded and adopted by
    ``retry`` (it then runs, filed under the runner's orchestration); a checkpoint of a minion
    that does not run is refused by ``retry`` and deleted, counted as aborted, by ``cancel``;
    ``show`` says whether the running program can resume a checkpoint."""
    reached.clear()
    reached[1] = asyncio.Event()
    Quiet.asked = asyncio.Event()
    mine = identity_of(Adopter)
    stranded = row_of(mine, "an-older-orchestration", 1)
    elsewhere = row_of("gone.Minion", "gone-orchestration", 2)
    changed = row_of(mine, "older-still", 3, OtherCtx())
    store = InMemoryStateStore([stranded, elsewhere, changed])
    store_cls, services = bound(store)
    with anyio.fail_after(LIMIT):
        async with Runtime(project_dir=tmp_path) as rt:
            await rt.start(Adopter, store_cls)
            await Quiet.asked.wait()
            listing = await answer_workflow_op(rt, "workflows", None)
            states = {r["workflow_id"]: (r["state"], r["minion"]) for r in listing["workflows"]}
            assert states == {
                stranded.workflow_id: ("stranded", "Adopter"),
                elsewhere.workflow_id: ("saved", "gone.Minion"),
                changed.workflow_id: ("stranded", "Adopter"),
            }
            assert [r["workflow_id"] for r in (await answer_workflow_op(
                rt, "workflows", "gone-orch"))["workflows"]] == [elsewhere.workflow_id]  # fmt: skip

            shown = await answer_workflow_op(rt, "workflow", changed.workflow_id[-6:])
            assert shown["resumable"] is False and "context type" in shown["problem"]
            shown = await answer_workflow_op(rt, "workflow", stranded.workflow_id)
            assert shown["resumable"] is True and shown["event"] == {"n": 1}

            adopted = await answer_workflow_op(rt, "workflow_retry", stranded.workflow_id)
            assert "resumed here at step 'only'" in adopted["message"]
            await reached[1].wait()
            runner_oid = orchestration_id(mine, identity_of(Quiet))
            counters = services.counters_for(runner_oid)
            await counters.wait_until(lambda s: s.succeeded == 1)

            with pytest.raises(WorkflowActionError, match="does not run in this system") as no:
                await answer_workflow_op(rt, "workflow_retry", elsewhere.workflow_id)
            assert no.value.kind == "refused"
            cancelled = await answer_workflow_op(rt, "workflow_cancel", elsewhere.workflow_id)
            assert "counted as aborted" in cancelled["message"]
            assert services.counters_for("gone-orchestration").snapshot().aborted == 1
            assert elsewhere.workflow_id not in store.contexts

            with pytest.raises(WorkflowActionError) as unknown:
                await answer_workflow_op(rt, "workflow", "0123456789")
            assert unknown.value.kind == "unknown_workflow"


async def test_cancelling_an_unheld_failed_or_corrupt_checkpoint_counts_nothing_again(
    tmp_path: Path,
) -> None:
    """``cancel`` of a checkpoint no runner holds deletes it; only a saved one counts as
    aborted: one kept as failed was counted when it failed, and a corrupt one never ran (even
    one of a running orchestration, which skipped it)."""
    failed = row_of("gone.Minion", "gone-orchestration", 4, failed=True)
    running = orchestration_id(identity_of(Adopter), identity_of(Quiet))
    corrupt = StoredContext(new_workflow_id(random.Random(5)), running, b"garbage")
    plain = row_of("gone.Minion", "gone-orchestration", 6)
    store = InMemoryStateStore([failed, corrupt, plain])
    store_cls, services = bound(store)
    Quiet.asked = asyncio.Event()
    with anyio.fail_after(LIMIT):
        async with Runtime(project_dir=tmp_path) as rt:
            await rt.start(Adopter, store_cls)
            await Quiet.asked.wait()
            counters = services.counters_for("gone-orchestration")
            for row, said in ((failed, "kept as failed"), (corrupt, "unreadable")):
                answer = await answer_workflow_op(rt, "workflow_cancel", row.workflow_id)
                assert f"its checkpoint ({said}) is deleted" in answer["message"]
                assert counters.snapshot().aborted == 0
            assert services.counters_for(running).snapshot().aborted == 0
            answer = await answer_workflow_op(rt, "workflow_cancel", plain.workflow_id)
            assert "counted as aborted" in answer["message"]
            assert counters.snapshot().aborted == 1
            assert store.contexts == {}


async def test_workflow_requests_do_not_wait_for_the_stores_writer(tmp_path: Path) -> None:
    """``workflows`` and ``workflow`` read an SQLite store's file on a connection of their own:
    while the store's writer waits for a lock another process holds, they answer at once with
    what is committed (they used to queue behind that write)."""
    path = tmp_path / "state.sqlite3"
    elsewhere = row_of("gone.Minion", "gone-orchestration", 7)
    Quiet.asked = asyncio.Event()
    async with SQLiteStateStore(path, busy_timeout=30.0) as store:
        await store.save_context(elsewhere.workflow_id, "gone-orchestration", elsewhere.context)
        store_cls, _ = bound(store)
        async with Runtime(project_dir=tmp_path) as rt:
            await rt.start(Adopter, store_cls)
            with anyio.fail_after(LIMIT):
                await Quiet.asked.wait()
            blocker = sqlite3.connect(path, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")  # another program holds the write lock
            try:
                saving = asyncio.ensure_future(store.save_context("wf-new", "orch", b"x"))
                with anyio.fail_after(LIMIT):
                    await anyio.wait_all_tasks_blocked()
                assert not saving.done()
                with anyio.fail_after(5.0):
                    listing = await answer_workflow_op(rt, "workflows", None)
                    shown = await answer_workflow_op(rt, "workflow", elsewhere.workflow_id[-8:])
                assert [r["workflow_id"] for r in listing["workflows"]] == [elsewhere.workflow_id]
                assert listing["more"] is False
                assert shown["event"] == {"n": 7} and shown["state"] == "saved"
                assert not saving.done()
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            with anyio.fail_after(LIMIT):
                await saving


async def test_a_listing_is_bounded(tmp_path: Path) -> None:
    """``workflows`` answers at most ``LIST_LIMIT`` rows, oldest first, and says there were
    more; a filter narrows it."""
    rows = [row_of("gone.Minion", "gone-orchestration", n) for n in range(LIST_LIMIT + 1)]
    rows.append(row_of("other.Minion", "other-orchestration", LIST_LIMIT + 1))
    store_cls, _ = bound(InMemoryStateStore(rows))
    Quiet.asked = asyncio.Event()
    with anyio.fail_after(LIMIT):
        async with Runtime(project_dir=tmp_path) as rt:
            await rt.start(Adopter, store_cls)
            await Quiet.asked.wait()
            listing = await answer_workflow_op(rt, "workflows", None)
            assert (len(listing["workflows"]), listing["more"]) == (LIST_LIMIT, True)
            assert {r["workflow_id"] for r in listing["workflows"]} == {
                r.workflow_id for r in rows[:LIST_LIMIT]
            }
            narrowed = await answer_workflow_op(rt, "workflows", "other.Minion")
            assert [r["workflow_id"] for r in narrowed["workflows"]] == [rows[-1].workflow_id]
            assert narrowed["more"] is False
