"""The workflow board: the workflows a runtime holds, as the people operating it see them.

Every ``WorkflowStore`` has one (in its ``StoreServices``). Each workflow minion's runner joins
it as the :class:`WorkflowOwner` of its orchestration and puts on it every workflow it holds,
with its step, attempts and last error:

``running``   its steps are running (or it waits for its checkpoint to be saved);
``waiting``   saved and loaded at start, waiting for room among the minion's workflows in flight;
``retrying``  waiting to retry a checkpoint the store refused (``idle-until-persisted``);
``failed``    a step raised and the store keeps failed workflows (``keep_failed``): parked,
              not resumed at start, until it is retried or cancelled.

A workflow leaves the board when it ends, and all of an owner's leave with it when its minion
stops (they are then only checkpoints in the store). The control socket (``minions workflows``)
reads the board and acts through it: ``retry`` and ``cancel`` go to the workflow's owner, and a
checkpoint no runner holds (saved by another orchestration of the same minion) can be adopted
by a runner of that minion.

One owner per workflow. An entry is put and dropped by its owner only: a runner abandoned after
its stop timeout is replaced by its minion's next runner, and cannot drop what that one holds
when its step finally ends. Whoever acts on a workflow decides
it before any ``await``: a runner takes a failed workflow out of its own memory to retry it, a
runner still loading its checkpoints (``WorkflowOwner.loaded`` is false) takes no action for
anyone, and the control socket *claims* a checkpoint no runner holds (:meth:`WorkflowBoard.claim`)
for as long as it deletes it, so no runner loads or adopts it meanwhile.

Nothing here is persisted: attempts and the last error are also written in each checkpoint's
history (``minions.workflows.checkpoint``), which is what a stopped system shows.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from ..core.clock import Clock
from ..core.errors import MinionsError
from .state_store import StoredContext
from .workflow_id import created

__all__ = [
    "WorkflowActionError",
    "WorkflowBoard",
    "WorkflowEntry",
    "WorkflowOwner",
    "WorkflowState",
    "row_matches",
    "workflow_row",
]

WorkflowState = Literal["running", "waiting", "retrying", "failed"]
#: Interruption causes remembered at most (one short string each).
_REMEMBERED = 10_000


def workflow_row(
    *,
    workflow_id: str,
    orchestration_id: str,
    minion: str | None,
    minion_identity: str | None,
    state: str,
    step_index: int | None,
    step: str | None,
    steps: int | None,
    created: float | None,
    now: float,
    attempts: int | None,
    last_error: str | None,
) -> dict[str, Any]:
    """One row of ``minions workflows --json``: a workflow on the board, or a checkpoint in a
    store (``None`` for what is not known)."""
    return {
        "workflow_id": workflow_id,
        "orchestration_id": orchestration_id,
        "minion": minion,
        "minion_identity": minion_identity,
        "state": state,
        "step_index": step_index,
        "step": step,
        "steps": steps,
        "created": created,
        "age_seconds": round(now - created, 3) if created is not None else None,
        "attempts": attempts,
        "last_error": last_error,
    }


def row_matches(row: dict[str, Any], wanted: str) -> bool:
    """Whether ``row`` is one of ``wanted``'s: its orchestration id starts with it, or it
    names the row's minion (its component name or identity)."""
    return str(row["orchestration_id"]).startswith(wanted) or wanted in (
        row["minion"],
        row["minion_identity"],
    )


class WorkflowActionError(MinionsError):
    """A ``retry`` or ``cancel`` that does not apply to the workflow as it is; ``kind`` is
    ``refused`` (its state does not allow it: the message says why) or ``failed``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class WorkflowOwner(Protocol):
    """The runner of one orchestration, as the board sees it."""

    @property
    def minion(self) -> str:
        """The minion's component name."""
        ...

    @property
    def minion_identity(self) -> str: ...

    @property
    def orchestration_id(self) -> str: ...

    @property
    def loaded(self) -> bool:
        """Whether it has loaded its saved checkpoints (until then it acts on none)."""
        ...

    async def retry(self, workflow_id: str) -> str:
        """Resume the workflow now; a sentence saying what was done."""
        ...

    async def cancel(self, workflow_id: str) -> str:
        """Abort the workflow and delete its checkpoint; a sentence saying what was done."""
        ...

    async def adopt(self, row: StoredContext) -> str:
        """Resume a checkpoint of this minion saved under another orchestration, now."""
        ...

    def decode(self, row: StoredContext) -> Any:
        """The checkpoint in the minion's own types (``Checkpoint``); raises
        ``CheckpointError`` when it cannot be."""
        ...


@dataclass
class WorkflowEntry:
    """One workflow on the board; its owner updates it as the workflow goes."""

    workflow_id: str
    owner: WorkflowOwner
    steps: tuple[str, ...]
    step_index: int
    state: WorkflowState
    attempts: int
    last_error: str | None = None
    #: When it was created (Unix seconds): from its id, else when it was first seen here.
    created: float | None = None
    #: The workflow's task while it sleeps before retrying a checkpoint (``retry`` wakes it).
    sleeping: asyncio.Task[Any] | None = None
    woken: bool = False

    def __post_init__(self) -> None:
        if self.created is None:
            self.created = created(self.workflow_id) or time.time()

    def row(self, now: float) -> dict[str, Any]:
        """The entry as plain data (a row of ``minions workflows --json``)."""
        step = self.steps[self.step_index] if 0 <= self.step_index < len(self.steps) else None
        return workflow_row(
            workflow_id=self.workflow_id,
            orchestration_id=self.owner.orchestration_id,
            minion=self.owner.minion,
            minion_identity=self.owner.minion_identity,
            state=self.state,
            step_index=self.step_index,
            step=step,
            steps=len(self.steps),
            created=self.created,
            now=now,
            attempts=self.attempts,
            last_error=self.last_error,
        )


class WorkflowBoard:
    """See the module docstring."""

    def __init__(self) -> None:
        self._entries: dict[str, WorkflowEntry] = {}
        self._owners: dict[str, WorkflowOwner] = {}
        #: Checkpoints no runner holds that the control socket is deleting (``claim``).
        self._claims: set[str] = set()
        #: Why interrupted workflows were interrupted (a child died in their step), for the
        #: runner that resumes them next; bounded, oldest first out.
        self._interrupted: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<WorkflowBoard {len(self._entries)} workflows, {len(self._owners)} owners>"

    # -- owners --------------------------------------------------------------------------------

    def join(self, owner: WorkflowOwner) -> None:
        """``owner`` runs its orchestration now. A previous owner of it (a runner its host
        abandoned after the stop timeout, still in a step) is replaced: its workflows leave the
        board, for the new owner to load."""
        previous = self._owners.get(owner.orchestration_id)
        self._owners[owner.orchestration_id] = owner
        if previous is not None and previous is not owner:
            self._drop_all(previous)

    def _drop_all(self, owner: WorkflowOwner) -> None:
        for workflow_id, entry in list(self._entries.items()):
            if entry.owner is owner:
                del self._entries[workflow_id]

    def leave(self, owner: WorkflowOwner) -> None:
        """The owner's minion stopped: it and its workflows leave the board."""
        if self._owners.get(owner.orchestration_id) is owner:
            del self._owners[owner.orchestration_id]
        self._drop_all(owner)

    def owners(self) -> list[WorkflowOwner]:
        return list(self._owners.values())

    def owner_of(self, orchestration_id: str) -> WorkflowOwner | None:
        return self._owners.get(orchestration_id)

    def loading(self) -> list[WorkflowOwner]:
        """The owners still loading their saved checkpoints."""
        return [owner for owner in self._owners.values() if not owner.loaded]

    # -- entries -------------------------------------------------------------------------------

    def held(self, workflow_id: str) -> bool:
        """Whether a runner holds the workflow, or the control socket has claimed it."""
        return workflow_id in self._entries or workflow_id in self._claims

    def put(self, entry: WorkflowEntry) -> bool:
        """Put (or update) ``entry``; ``False``, changing nothing, when another owner holds the
        workflow or it is claimed."""
        current = self._entries.get(entry.workflow_id)
        if (current is not None and current.owner is not entry.owner) or (
            entry.workflow_id in self._claims
        ):
            return False
        self._entries[entry.workflow_id] = entry
        return True

    def drop(self, workflow_id: str, owner: WorkflowOwner) -> None:
        """Take the workflow off the board if ``owner`` holds it (else change nothing)."""
        entry = self._entries.get(workflow_id)
        if entry is not None and entry.owner is owner:
            del self._entries[workflow_id]

    def claim(self, workflow_id: str) -> bool:
        """Claim a workflow no runner holds (to delete its checkpoint); whether it was free."""
        if self.held(workflow_id):
            return False
        self._claims.add(workflow_id)
        return True

    def unclaim(self, workflow_id: str) -> None:
        self._claims.discard(workflow_id)

    def get(self, workflow_id: str) -> WorkflowEntry | None:
        return self._entries.get(workflow_id)

    def entries(self) -> list[WorkflowEntry]:
        return list(self._entries.values())

    def remember(self, workflow_id: str, error: str) -> None:
        """Keep why a workflow was interrupted until :meth:`recall` (its next resume)."""
        self._interrupted[workflow_id] = error
        if len(self._interrupted) > _REMEMBERED:
            del self._interrupted[next(iter(self._interrupted))]

    def recall(self, workflow_id: str) -> str | None:
        return self._interrupted.pop(workflow_id, None)

    def note_error(self, workflow_id: str, error: str, *, retrying: bool = False) -> None:
        """Record what went wrong with a workflow; ``retrying``: it now waits to retry."""
        entry = self._entries.get(workflow_id)
        if entry is not None:
            entry.last_error = error
            if retrying:
                entry.state = "retrying"

    def note_saved(self, workflow_id: str) -> None:
        """Its checkpoint was saved: a workflow that waited to retry one runs again."""
        entry = self._entries.get(workflow_id)
        if entry is not None and entry.state == "retrying":
            entry.state = "running"

    async def pause(self, workflow_id: str, seconds: float, clock: Clock) -> None:
        """Sleep ``seconds`` before retrying a checkpoint; ``retry`` ends the sleep early."""
        entry = self._entries.get(workflow_id)
        task = asyncio.current_task()
        if entry is None or task is None:
            await clock.sleep(seconds)
            return
        entry.sleeping, entry.woken = task, False
        try:
            await clock.sleep(seconds)
        except asyncio.CancelledError:
            if not entry.woken or task.uncancel() > 0:
                raise  # a real cancellation (a stop), not only the wake-up
        finally:
            entry.sleeping, entry.woken = None, False

    def wake(self, workflow_id: str) -> bool:
        """End the retry wait of a ``retrying`` workflow now; whether it was waiting."""
        entry = self._entries.get(workflow_id)
        if entry is None or entry.sleeping is None or entry.woken:
            return False
        entry.woken = True
        entry.sleeping.cancel()
        return True
