"""The state store contract, run against every store Minions ships.

The contract tests are parametrised over ``InMemoryStateStore`` and ``SQLiteStateStore`` (a real
file in ``tmp_path``), so the in-memory store users test with behaves like the real one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from minions.core.errors import MinionsError
from minions.workflows.sqlite.store import SQLiteStateStore
from minions.workflows.state_store import (
    InMemoryStateStore,
    NoOpStateStore,
    StateStore,
    StateStoreClosed,
    StateStoreCorrupt,
    StateStoreDamaged,
    StateStoreError,
    StateStoreFull,
    StateStoreLocked,
    StateStoreReadOnly,
    StateStoreUnavailable,
    StoredContext,
    StoredWorkflowContext,
    UnsupportedSchema,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StateStore]:
    """Each kind of durable-or-not store, started, and shut down after the test."""
    subject: StateStore
    if request.param == "memory":
        subject = InMemoryStateStore()
    else:
        subject = SQLiteStateStore(tmp_path / "state.sqlite3")
    await subject.startup()
    try:
        yield subject
    finally:
        await subject.shutdown()


async def test_save_then_get_returns_the_row(store: StateStore) -> None:
    """A saved context comes back byte for byte, filed under its workflow and orchestration."""
    with anyio.fail_after(10):
        await store.save_context("wf-1", "orch-a", b"\x00\x01 blob")
        rows = await store.get_all_contexts()
    assert rows == [StoredContext("wf-1", "orch-a", b"\x00\x01 blob")]


async def test_save_replaces_and_keeps_first_save_order(store: StateStore) -> None:
    """Saving an existing workflow replaces its bytes but keeps its place: resume order is the
    order workflows started, not the order of their latest checkpoint."""
    with anyio.fail_after(10):
        await store.save_context("wf-1", "orch", b"one")
        await store.save_context("wf-2", "orch", b"two")
        await store.save_context("wf-1", "orch", b"one, step 2")
        rows = await store.get_all_contexts()
    assert [(r.workflow_id, r.context) for r in rows] == [
        ("wf-1", b"one, step 2"),
        ("wf-2", b"two"),
    ]


async def test_get_by_orchestration_filters(store: StateStore) -> None:
    """Only the rows of the asked orchestration come back; an unknown one gives an empty list."""
    with anyio.fail_after(10):
        await store.save_context("wf-1", "orch-a", b"a1")
        await store.save_context("wf-2", "orch-b", b"b1")
        await store.save_context("wf-3", "orch-a", b"a2")
        a_rows = await store.get_contexts_for_orchestration("orch-a")
        b_rows = await store.get_contexts_for_orchestration("orch-b")
        none = await store.get_contexts_for_orchestration("orch-z")
    assert [r.workflow_id for r in a_rows] == ["wf-1", "wf-3"]
    assert [r.workflow_id for r in b_rows] == ["wf-2"]
    assert none == []


async def test_delete_removes_and_missing_delete_is_fine(store: StateStore) -> None:
    """Deleting removes the row; deleting a workflow that has no row is not an error."""
    with anyio.fail_after(10):
        await store.save_context("wf-1", "orch", b"x")
        await store.save_context("wf-2", "orch", b"y")
        await store.delete_context("wf-1")
        await store.delete_context("never-saved")
        rows = await store.get_all_contexts()
    assert [r.workflow_id for r in rows] == ["wf-2"]


async def test_bytes_like_contexts_are_stored_as_bytes(store: StateStore) -> None:
    """bytearray and memoryview are accepted and come back as bytes."""
    with anyio.fail_after(10):
        await store.save_context("wf-1", "orch", bytearray(b"ba"))
        await store.save_context("wf-2", "orch", memoryview(b"mv"))
        rows = await store.get_all_contexts()
    assert [r.context for r in rows] == [b"ba", b"mv"]
    assert all(type(r.context) is bytes for r in rows)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        ((1, "orch", b"x"), "workflow_id"),
        (("wf", None, b"x"), "orchestration_id"),
        (("wf", "orch", {"not": "bytes"}), "context"),
        (("wf", "orch", "a str"), "context"),
    ],
)
async def test_bad_arguments_raise_type_error_naming_the_parameter(
    store: StateStore, args: tuple[object, object, object], named: str
) -> None:
    """Wrong argument types are refused before anything is written, naming the parameter."""
    with pytest.raises(TypeError, match=f"save_context\\({named}=") as info:
        await store.save_context(*args)  # type: ignore[arg-type]
    if named == "context":
        assert "encode it with the checkpoint codec" in str(info.value)
    with anyio.fail_after(10):
        assert await store.get_all_contexts() == []


async def test_use_after_shutdown_raises_closed_and_shutdown_is_idempotent(
    store: StateStore,
) -> None:
    """After shutdown every operation raises StateStoreClosed; a second shutdown is harmless."""
    with anyio.fail_after(10):
        await store.save_context("wf-1", "orch", b"x")
        await store.shutdown()
        await store.shutdown()
    with pytest.raises(StateStoreClosed, match="shutdown"):
        await store.save_context("wf-2", "orch", b"y")
    with pytest.raises(StateStoreClosed):
        await store.get_all_contexts()
    with pytest.raises(StateStoreClosed):
        await store.delete_context("wf-1")


async def test_every_shipped_store_satisfies_the_protocol(tmp_path: Path) -> None:
    """The three shipped stores are StateStores, checked structurally at runtime."""
    sqlite_store = SQLiteStateStore(tmp_path / "state.sqlite3")
    try:
        for candidate in (InMemoryStateStore(), NoOpStateStore(), sqlite_store):
            assert isinstance(candidate, StateStore)
    finally:
        await sqlite_store.aclose()


async def test_a_user_store_plugs_in_by_subclassing_or_by_shape() -> None:
    """A user's store needs only the four methods; subclassing inherits no-op lifecycle hooks."""

    class ByShape:
        async def save_context(
            self, workflow_id: str, orchestration_id: str, context: bytes
        ) -> None:
            return None

        async def delete_context(self, workflow_id: str) -> None:
            return None

        async def get_contexts_for_orchestration(
            self, orchestration_id: str
        ) -> list[StoredContext]:
            return []

        async def get_all_contexts(self) -> list[StoredContext]:
            return []

        async def startup(self) -> None:
            return None

        async def shutdown(self) -> None:
            return None

    class BySubclass(StateStore):
        def __init__(self) -> None:
            self.rows: dict[str, StoredContext] = {}

        async def save_context(
            self, workflow_id: str, orchestration_id: str, context: bytes
        ) -> None:
            self.rows[workflow_id] = StoredContext(workflow_id, orchestration_id, context)

        async def delete_context(self, workflow_id: str) -> None:
            self.rows.pop(workflow_id, None)

        async def get_contexts_for_orchestration(
            self, orchestration_id: str
        ) -> list[StoredContext]:
            return [r for r in self.rows.values() if r.orchestration_id == orchestration_id]

        async def get_all_contexts(self) -> list[StoredContext]:
            return list(self.rows.values())

    assert isinstance(ByShape(), StateStore)
    mine = BySubclass()
    assert isinstance(mine, StateStore)
    await mine.startup()
    await mine.save_context("wf", "orch", b"x")
    await mine.shutdown()
    assert await mine.get_all_contexts() == [StoredContext("wf", "orch", b"x")]
    assert not isinstance(object(), StateStore)


async def test_in_memory_store_fails_on_request_then_recovers() -> None:
    """fail_next makes the next saves raise a retryable error and change nothing; then the
    store works again. Custom errors and other operations can be failed too."""
    store = InMemoryStateStore()
    store.fail_next("save", times=2)
    for _ in range(2):
        with pytest.raises(StateStoreUnavailable, match="fail_next") as info:
            await store.save_context("wf-1", "orch", b"x")
        assert info.value.retryable
    assert store.contexts == {}
    await store.save_context("wf-1", "orch", b"x")
    assert store.saves == 1
    assert store.contexts == {"wf-1": StoredContext("wf-1", "orch", b"x")}

    store.fail_next("read", error=StateStoreCorrupt("damaged on purpose"))
    with pytest.raises(StateStoreCorrupt, match="on purpose"):
        await store.get_all_contexts()
    store.fail_next("delete")
    with pytest.raises(StateStoreUnavailable):
        await store.delete_context("wf-1")
    assert "wf-1" in store.contexts
    await store.delete_context("wf-1")
    assert store.deletes == 1
    assert repr(store) == "<InMemoryStateStore open, 0 checkpoints>"


def test_in_memory_fail_next_rejects_bad_requests() -> None:
    """An unknown operation or a non-positive count is a clear ValueError."""
    store = InMemoryStateStore()
    with pytest.raises(ValueError, match="'save', 'delete' or 'read'"):
        store.fail_next("write")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least 1"):
        store.fail_next("save", times=0)


async def test_in_memory_store_can_start_with_rows() -> None:
    """Rows given to the constructor are there from the start (to test resuming)."""
    seeded = [StoredContext("wf-1", "orch", b"a"), StoredContext("wf-2", "other", b"b")]
    store = InMemoryStateStore(seeded)
    assert await store.get_contexts_for_orchestration("orch") == seeded[:1]


async def test_noop_store_forgets_everything_but_checks_arguments() -> None:
    """The no-op store accepts valid saves and returns nothing; bad arguments still fail."""
    store = NoOpStateStore()
    await store.save_context("wf-1", "orch", b"x")
    await store.delete_context("wf-1")
    assert await store.get_all_contexts() == []
    assert await store.get_contexts_for_orchestration("orch") == []
    with pytest.raises(TypeError):
        await store.save_context("wf-1", "orch", 42)  # type: ignore[arg-type]
    await store.shutdown()


def test_error_tree_groups_by_what_the_caller_does() -> None:
    """Every store error is a MinionsError; only environment failures are retryable."""
    for cls in (
        StateStoreClosed,
        StateStoreUnavailable,
        StateStoreLocked,
        StateStoreFull,
        StateStoreReadOnly,
        StateStoreDamaged,
        StateStoreCorrupt,
        UnsupportedSchema,
    ):
        assert issubclass(cls, StateStoreError)
        assert issubclass(cls, MinionsError)
    for cls in (StateStoreLocked, StateStoreFull, StateStoreReadOnly):
        assert issubclass(cls, StateStoreUnavailable)
        assert cls.retryable
    for cls in (StateStoreCorrupt, UnsupportedSchema):
        assert issubclass(cls, StateStoreDamaged)
        assert not cls.retryable
    assert not StateStoreClosed.retryable


def test_stored_workflow_context_is_the_compatible_name() -> None:
    """The original API's record name refers to the same frozen record."""
    assert StoredWorkflowContext is StoredContext
    row = StoredContext("wf", "orch", b"x")
    with pytest.raises(AttributeError):
        row.context = b"y"  # type: ignore[misc]
