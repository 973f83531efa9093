"""The state store contract: where workflow checkpoints live between steps.

A durable workflow commits a checkpoint before each of its steps and deletes it when the workflow
ends (DESIGN.md §3). The runtime encodes the checkpoint itself (see ``.checkpoint``); a store only
keeps opaque bytes under a workflow id, remembers which orchestration each row belongs to, and
answers two queries used when an orchestration starts again. That keeps custom stores small:
four async methods, plus optional ``startup``/``shutdown`` hooks.

The one promise every store makes: **a write is durable when its await returns.** The runtime
runs a step only after ``save_context`` returned, so a store that merely queued the row would let a
crash lose a workflow that was reported as checkpointed.

Stores shipped with Minions:

- ``SQLiteStateStore`` (``.sqlite``): the default, one file in the project's ``.minions/``;
- ``InMemoryStateStore``: dictionaries, for tests (yours and ours); it can be told to fail;
- ``NoOpStateStore``: keeps nothing (``Gru.create(state_store=None)``): workflows do not resume.

Errors, grouped by what the caller does about them::

    StateStoreError (a MinionsError)   base; ``retryable`` says whether trying again can help
    ├── StateStoreClosed               used after shutdown: a bug in the calling program
    ├── StateStoreInUse                another system (or Runtime, or Gru) has the store open
    ├── StateStoreUnavailable          the environment refused; retry later or fix it (retryable)
    │   ├── StateStoreLocked           another process holds the write lock for too long
    │   ├── StateStoreFull             the disk, or the store's size limit, is full
    │   └── StateStoreReadOnly         the file or its directory cannot be written
    └── StateStoreDamaged              the file itself is unusable: move it aside or restore it
        ├── StateStoreCorrupt          not a database, or a damaged one
        └── UnsupportedSchema          written by a newer Minions, or by another program

Checkpoint encoding errors (``CheckpointError``) live beside the codec: a blob that cannot be
decoded is not the store's fault.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from ..core.errors import MinionsError

__all__ = [
    "InMemoryStateStore",
    "NoOpStateStore",
    "StateStore",
    "StateStoreClosed",
    "StateStoreCorrupt",
    "StateStoreDamaged",
    "StateStoreError",
    "StateStoreFull",
    "StateStoreInUse",
    "StateStoreLocked",
    "StateStoreReadOnly",
    "StateStoreUnavailable",
    "StoredContext",
    "StoredWorkflowContext",
    "UnsupportedSchema",
]


class StateStoreError(MinionsError):
    """A state store operation failed; the message says what happened and what to do."""

    #: Whether the same operation may succeed if tried again later unchanged.
    retryable: bool = False


class StateStoreClosed(StateStoreError):
    """The store was shut down; the operation was not performed."""


class StateStoreInUse(StateStoreError):
    """Another system has the store open: a store serves one system at a time (two would
    resume the same workflows). Stop the other one, or give this one a store of its own."""


class StateStoreUnavailable(StateStoreError):
    """The environment refused the operation (lock, disk, permissions, I/O); retry later."""

    retryable = True


class StateStoreLocked(StateStoreUnavailable):
    """Another connection held the database's write lock longer than the busy timeout."""


class StateStoreFull(StateStoreUnavailable):
    """The disk, or the store's configured size limit, has no room for the write."""


class StateStoreReadOnly(StateStoreUnavailable):
    """The database file or its directory cannot be created or written."""


class StateStoreDamaged(StateStoreError):
    """The store's file cannot be used as it is; a person must move it aside or restore it."""


class StateStoreCorrupt(StateStoreDamaged):
    """The file is not an SQLite database, or its pages are damaged."""


class UnsupportedSchema(StateStoreDamaged):
    """The file was written by a newer Minions, or is another program's database."""


@dataclass(frozen=True, slots=True)
class StoredContext:
    """One stored checkpoint: the encoded bytes and the keys they are filed under."""

    workflow_id: str
    orchestration_id: str
    context: bytes


#: The record's name in the API Minions is compatible with.
StoredWorkflowContext = StoredContext


@runtime_checkable
class StateStore(Protocol):
    """Where workflow checkpoints are kept. Implement the four query methods to plug in your own.

    ``save_context`` inserts or replaces the row of ``workflow_id``; ``delete_context`` removes it
    (deleting a missing row is not an error). Both return only once the change is durable.
    ``get_contexts_for_orchestration`` and ``get_all_contexts`` return rows in the order their
    workflows were first saved, which is the order they are resumed in.

    Subclassing ``StateStore`` explicitly is optional; doing so inherits no-op ``startup`` and
    ``shutdown`` hooks, which the runtime awaits when it starts and stops the store.
    """

    async def save_context(self, workflow_id: str, orchestration_id: str, context: bytes) -> None:
        """Insert or replace the checkpoint of ``workflow_id``; return once it is durable."""
        ...

    async def delete_context(self, workflow_id: str) -> None:
        """Remove the checkpoint of ``workflow_id`` if present; return once that is durable."""
        ...

    async def get_contexts_for_orchestration(self, orchestration_id: str) -> list[StoredContext]:
        """Return the checkpoints filed under ``orchestration_id``, oldest workflow first."""
        ...

    async def get_all_contexts(self) -> list[StoredContext]:
        """Return every stored checkpoint, oldest workflow first."""
        ...

    async def startup(self) -> None:
        """Prepare the store (open files, check the schema). The default does nothing."""
        return None

    async def shutdown(self) -> None:
        """Finish pending writes and release resources; idempotent. The default does nothing."""
        return None


def check_context_args(workflow_id: object, orchestration_id: object, context: object) -> bytes:
    """Validate ``save_context`` arguments at the boundary; return the context as ``bytes``."""
    if not isinstance(workflow_id, str):
        raise TypeError(
            f"save_context(workflow_id=...) takes a str, got {type(workflow_id).__name__}"
        )
    if not isinstance(orchestration_id, str):
        raise TypeError(
            f"save_context(orchestration_id=...) takes a str, got {type(orchestration_id).__name__}"
        )
    if isinstance(context, bytes):
        return context
    if isinstance(context, bytearray | memoryview):
        return bytes(context)
    raise TypeError(
        "save_context(context=...) takes bytes (an encoded checkpoint), "
        f"got {type(context).__name__}; encode it with the checkpoint codec first"
    )


_Operation = Literal["save", "delete", "read"]


class InMemoryStateStore(StateStore):
    """A state store in dictionaries, for tests: fast, inspectable, and able to fail on request.

    It behaves like the SQLite store (argument checks, ordering, ``StateStoreClosed`` after
    ``shutdown``) without durability. ``fail_next`` makes the next operations of one kind raise,
    which is how a test exercises the runtime's persistence failure policies.
    """

    def __init__(self, contexts: Iterable[StoredContext] = ()) -> None:
        self._rows: dict[str, StoredContext] = {row.workflow_id: row for row in contexts}
        self._closed = False
        self._failures: dict[_Operation, list[StateStoreError]] = {
            "save": [],
            "delete": [],
            "read": [],
        }
        self.saves = 0
        self.deletes = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<InMemoryStateStore {state}, {len(self._rows)} checkpoints>"

    @property
    def contexts(self) -> dict[str, StoredContext]:
        """A copy of the stored rows by workflow id."""
        return dict(self._rows)

    def fail_next(
        self, operation: _Operation, *, times: int = 1, error: StateStoreError | None = None
    ) -> None:
        """Make the next ``times`` operations of kind ``operation`` raise ``error``.

        The default error is a retryable ``StateStoreUnavailable``. Failed writes change nothing.
        """
        if operation not in self._failures:
            raise ValueError(f"operation must be 'save', 'delete' or 'read', not {operation!r}")
        if times < 1:
            raise ValueError(f"times must be at least 1, got {times}")
        exc = error or StateStoreUnavailable(
            f"in-memory store told to fail the next {operation} (InMemoryStateStore.fail_next)"
        )
        self._failures[operation].extend([exc] * times)

    def _check(self, operation: _Operation) -> None:
        if self._closed:
            raise StateStoreClosed(
                f"cannot {operation}: the in-memory state store was shut down; "
                "create a new one or stop using it after shutdown()"
            )
        pending = self._failures[operation]
        if pending:
            raise pending.pop(0)

    async def save_context(self, workflow_id: str, orchestration_id: str, context: bytes) -> None:
        blob = check_context_args(workflow_id, orchestration_id, context)
        self._check("save")
        # Assigning to an existing key keeps its position: the order of first saves survives.
        self._rows[workflow_id] = StoredContext(workflow_id, orchestration_id, blob)
        self.saves += 1

    async def delete_context(self, workflow_id: str) -> None:
        self._check("delete")
        self._rows.pop(workflow_id, None)
        self.deletes += 1

    async def get_contexts_for_orchestration(self, orchestration_id: str) -> list[StoredContext]:
        self._check("read")
        return [row for row in self._rows.values() if row.orchestration_id == orchestration_id]

    async def get_all_contexts(self) -> list[StoredContext]:
        self._check("read")
        return list(self._rows.values())

    async def shutdown(self) -> None:
        self._closed = True


class NoOpStateStore(StateStore):
    """A store that keeps nothing: saves succeed and are forgotten, queries return nothing.

    Used when persistence is switched off (``Gru.create(state_store=None)``); workflows then
    do not survive a restart.
    """

    def __repr__(self) -> str:
        return "<NoOpStateStore>"

    async def save_context(self, workflow_id: str, orchestration_id: str, context: bytes) -> None:
        check_context_args(workflow_id, orchestration_id, context)

    async def delete_context(self, workflow_id: str) -> None:
        return None

    async def get_contexts_for_orchestration(self, orchestration_id: str) -> list[StoredContext]:
        return []

    async def get_all_contexts(self) -> list[StoredContext]:
        return []
