"""The control socket's workflow operations: what ``minions workflows`` asks a running system.

========================  ===========================================================
op (``name``)             answer
========================  ===========================================================
``workflows`` (filter)    ``{"stores": [...], "workflows": [row, ...], "more": bool}``:
                          the workflows runners hold (``minions.workflows.board``), then
                          the other checkpoints in the stores, oldest first, optionally
                          only those whose orchestration id starts with the filter or
                          whose minion it names; at most ``LIST_LIMIT`` rows (``more``:
                          there were more)
``workflow`` (id)         one row with the checkpoint's event and context as saved
``workflow_retry`` (id)   ``{"workflow_id", "message"}``: resumed, or woken to retry
``workflow_cancel`` (id)  ``{"workflow_id", "message"}``: aborted, checkpoint deleted
========================  ===========================================================

A row's ``state`` is the board's (``running``, ``waiting``, ``retrying``, ``failed``) for a
workflow a runner holds; for a checkpoint no runner holds, ``saved`` (its minion is not running:
it resumes when the minion starts), ``stranded`` (its minion runs, under another orchestration:
``retry`` adopts it), ``failed`` (kept for a retry while its minion is not running) or
``corrupt``. An id may be given by its first or last characters (4 or more) when no other id
starts or ends with them.

What ``retry`` and ``cancel`` do for each state is the runner's to say (``WorkflowRunner.retry``
and ``.cancel``); for a checkpoint no runner holds, ``retry`` has a runner of the same minion
adopt it (refused when none runs), and ``cancel`` deletes it, counting it as aborted when it was
``saved`` or ``stranded`` (a ``failed`` one was counted when it failed; a ``corrupt`` one never
ran). Both are refused while a runner of the store is still loading its checkpoints (it may be
about to hold that one), and ``cancel`` claims the checkpoint on the board while it deletes it,
so no runner loads or adopts it meanwhile.

The stores are read off the event loop: an SQLite store's file on a read-only connection of its
own in a worker thread (:mod:`.saved_workflows`), never through the store's writer, so a request
does not hold up checkpoint commits; one workflow is read by its id, and a listing stops at its
limit. Another store is read with its ``get_all_contexts``, and its rows described in a thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import structlog

from ..core.runtime import Runtime
from ..workflows.board import WorkflowActionError, WorkflowBoard, WorkflowOwner, row_matches
from ..workflows.checkpoint import CheckpointError, read_header
from ..workflows.sqlite.store import SQLiteStateStore
from ..workflows.state_store import StoredContext
from ..workflows.store import StoreServices, WorkflowStore
from .saved_workflows import (
    LIST_LIMIT,
    Keep,
    StoreReadError,
    describe,
    detail,
    match_workflow,
    place,
    saved_ids,
    saved_row,
    scan_rows,
    scan_saved,
)

__all__ = ["WORKFLOW_OPS", "answer_workflow_op"]

log = structlog.get_logger("minions")

T = TypeVar("T")

WORKFLOW_OPS = frozenset({"workflows", "workflow", "workflow_retry", "workflow_cancel"})


async def answer_workflow_op(runtime: Runtime, op: str, name: str | None) -> Any:
    """Answer one of :data:`WORKFLOW_OPS`; ``WorkflowActionError`` for a request that cannot
    be carried out (its ``kind`` is the control answer's error kind)."""
    stores = _stores(runtime)
    if op == "workflows":
        rows, more = await _rows(stores, name)
        return {"stores": [repr(s.state_store) for s in stores], "workflows": rows, "more": more}
    if not name:
        raise WorkflowActionError("bad_request", f"{op} needs a workflow id")
    found = await _find(stores, name)
    if op == "workflow":
        return await _detail(found)
    log.info("control.request", op=op, workflow=found.workflow_id)
    if op == "workflow_retry":
        message = await _retry(found)
    else:
        message = await _cancel(found)
    return {"workflow_id": found.workflow_id, "message": message}


def _stores(runtime: Runtime) -> list[StoreServices]:
    found: dict[int, StoreServices] = {}
    for instance in runtime.instances().values():
        if isinstance(instance, WorkflowStore):
            found.setdefault(id(instance.services), instance.services)
    return list(found.values())


# -- reading the stores: off the event loop, and off the store's writer ---------------------


async def _scan(
    services: StoreServices, keep: Keep, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """:func:`scan_rows` over a store's checkpoints, in a worker thread: an SQLite store's file
    on a read-only connection of its own, any other store from its ``get_all_contexts``."""
    path = _file(services)
    if path is not None:
        return await asyncio.to_thread(scan_saved, path, keep, limit)
    rows = await services.state_store.get_all_contexts()
    return await asyncio.to_thread(scan_rows, rows, keep, limit)


async def _saved_ids(services: StoreServices) -> list[str]:
    path = _file(services)
    if path is not None:
        return await asyncio.to_thread(saved_ids, path)
    return [row.workflow_id for row in await services.state_store.get_all_contexts()]


async def _saved_row(services: StoreServices, workflow_id: str) -> StoredContext | None:
    path = _file(services)
    if path is not None:
        return await asyncio.to_thread(saved_row, path, workflow_id)
    rows = await services.state_store.get_all_contexts()
    return next((row for row in rows if row.workflow_id == workflow_id), None)


def _file(services: StoreServices) -> Path | None:
    store = services.state_store
    return store.path if isinstance(store, SQLiteStateStore) else None


async def _read(reading: Awaitable[T]) -> T:
    """``reading``, a store file that cannot be read being the request's failure."""
    try:
        return await reading
    except StoreReadError as exc:
        raise WorkflowActionError("failed", str(exc)) from None


# -- the list ------------------------------------------------------------------------------


async def _rows(
    stores: list[StoreServices], wanted: str | None
) -> tuple[list[dict[str, Any]], bool]:
    """The workflows on the boards, then the checkpoints no runner holds, up to
    :data:`LIST_LIMIT` in all; whether there were more."""
    now = time.time()
    rows: list[dict[str, Any]] = []
    more = False
    for services in stores:
        board = services.board
        held = [e.row(now) for e in board.entries()]
        held = [r for r in held if not wanted or row_matches(r, wanted)]
        more = more or len(rows) + len(held) > LIST_LIMIT
        rows += held[: LIST_LIMIT - len(rows)]
        keep = _unheld(board, wanted, now)
        found, beyond = await _read(_scan(services, keep, LIST_LIMIT - len(rows)))
        rows += found
        more = more or beyond
    rows.sort(key=lambda r: (r["orchestration_id"], r["created"] or 0, r["workflow_id"]))
    return rows, more


def _unheld(board: WorkflowBoard, wanted: str | None, now: float) -> Keep:
    """Describes, in a worker thread, a checkpoint no runner holds (``None``: one a runner
    holds, or not ``wanted``), with what the board knows now of the minions that run."""
    held = frozenset(e.workflow_id for e in board.entries())
    minions, running = _running(board)

    def keep(row: StoredContext) -> dict[str, Any] | None:
        if row.workflow_id in held:
            return None
        shown = place(describe(row, now), minions, running)
        return shown if not wanted or row_matches(shown, wanted) else None

    return keep


def _running(board: WorkflowBoard) -> tuple[dict[str, str], frozenset[str]]:
    """The running minions' component names by identity, and their orchestration ids."""
    owners = board.owners()
    return {o.minion_identity: o.minion for o in owners}, frozenset(
        o.orchestration_id for o in owners
    )


def _same_minion(board: WorkflowBoard, identity: object) -> list[WorkflowOwner]:
    return [o for o in board.owners() if o.minion_identity == identity]


# -- one workflow --------------------------------------------------------------------------


class _Found:
    """A workflow found by id: where it is held, and its checkpoint if one is saved."""

    def __init__(
        self, services: StoreServices, workflow_id: str, row: StoredContext | None
    ) -> None:
        self.services = services
        self.workflow_id = workflow_id
        self.row = row


async def _find(stores: list[StoreServices], wanted: str) -> _Found:
    """The workflow ``wanted`` names: by its id (on a board, or one indexed read per store),
    else by its first or last characters among every id."""
    for services in stores:
        if services.board.get(wanted) is not None:
            return _Found(services, wanted, await _read(_saved_row(services, wanted)))
    for services in stores:
        row = await _read(_saved_row(services, wanted))
        if row is not None:
            return _Found(services, wanted, row)
    places: dict[str, StoreServices] = {}
    for services in stores:
        for workflow_id in await _read(_saved_ids(services)):
            places[workflow_id] = services
        for entry in services.board.entries():
            places[entry.workflow_id] = services
    try:
        workflow_id = match_workflow(wanted, list(places))
    except StoreReadError as exc:
        raise WorkflowActionError("unknown_workflow", str(exc)) from None
    services = places[workflow_id]
    return _Found(services, workflow_id, await _read(_saved_row(services, workflow_id)))


async def _detail(found: _Found) -> dict[str, Any]:
    now = time.time()
    board = found.services.board
    entry = board.get(found.workflow_id)
    row = found.row
    shown: dict[str, Any] = {"event": None, "context": None}
    if row is not None:
        shown.update(await asyncio.to_thread(detail, row, now))
        if entry is None:
            place(shown, *_running(board))
    if entry is not None:
        shown.update(entry.row(now))
    shown["checkpoint_saved"] = row is not None
    if row is None:
        return shown
    owner = entry.owner if entry is not None else board.owner_of(row.orchestration_id)
    if owner is None:
        owner = next(iter(_same_minion(board, shown.get("minion_identity"))), None)
    if owner is not None:  # can the running program resume it? (its types, its steps)
        try:
            owner.decode(row)
        except CheckpointError as exc:
            shown["resumable"], shown["problem"] = False, str(exc)
        else:
            shown["resumable"], shown["problem"] = True, None
    return shown


async def _retry(found: _Found) -> str:
    board = found.services.board
    entry = board.get(found.workflow_id)
    if entry is not None:
        return await entry.owner.retry(found.workflow_id)
    row = found.row
    assert row is not None  # found in the store, since no runner holds it
    try:
        header = read_header(row.context, workflow_id=row.workflow_id)
    except CheckpointError as exc:
        raise WorkflowActionError(
            "failed", f"cannot resume workflow {row.workflow_id}: {exc}"
        ) from exc
    _refuse_while_loading(board, row.workflow_id)
    owner = board.owner_of(row.orchestration_id)
    if owner is None:
        owners = _same_minion(board, header.minion)
        if not owners:
            raise WorkflowActionError(
                "refused",
                f"no running minion can resume workflow {row.workflow_id}: its minion "
                f"({header.minion}) does not run in this system; when it starts, it resumes its "
                "saved workflows (a stopped one: 'minions restart NAME')",
            )
        if len(owners) > 1:
            ids = ", ".join(o.orchestration_id for o in owners)
            raise WorkflowActionError(
                "refused",
                f"{len(owners)} orchestrations of {owners[0].minion} run ({ids}); workflow "
                f"{row.workflow_id} belongs to none of them, and which should adopt it is "
                "the program's choice: start its own orchestration",
            )
        owner = owners[0]
    return await owner.adopt(row)


async def _cancel(found: _Found) -> str:
    board = found.services.board
    entry = board.get(found.workflow_id)
    if entry is not None:
        return await entry.owner.cancel(found.workflow_id)
    row = found.row
    assert row is not None
    _refuse_while_loading(board, row.workflow_id)
    try:
        header = read_header(row.context, workflow_id=row.workflow_id)
    except CheckpointError:
        header = None  # corrupt: skipped by every runner, never held
    if header is not None and board.owner_of(row.orchestration_id) is not None:
        # Its orchestration runs, and every workflow of it is on the board unless it ended.
        raise WorkflowActionError(
            "refused", f"workflow {row.workflow_id} has just ended (its checkpoint is deleted)"
        )
    # Decided before the delete's await: no runner loads or adopts it meanwhile.
    if not board.claim(row.workflow_id):
        raise WorkflowActionError(
            "refused", f"workflow {row.workflow_id} is being resumed or cancelled already"
        )
    try:
        await found.services.state_store.delete_context(row.workflow_id)
    finally:
        board.unclaim(row.workflow_id)
    if header is None or header.failed:
        # Counted as failed when it failed; a corrupt one never ran here.
        what = "unreadable" if header is None else "kept as failed"
        return (
            f"workflow {row.workflow_id} discarded (no runner held it): its checkpoint "
            f"({what}) is deleted"
        )
    orchestration = {"orchestration": row.orchestration_id}
    found.services.counters_for(row.orchestration_id).add("aborted")
    found.services.metrics.inc("minions_workflows_aborted_total", labels=orchestration)
    return (
        f"workflow {row.workflow_id} cancelled (no runner held it): its checkpoint is deleted, "
        "counted as aborted"
    )


def _refuse_while_loading(board: WorkflowBoard, workflow_id: str) -> None:
    """A runner still loading may hold the checkpoint without showing it yet: refuse."""
    loading = board.loading()
    if loading:
        raise WorkflowActionError(
            "refused",
            f"cannot act on workflow {workflow_id} now: {loading[0].minion} is still loading its "
            "saved workflows; try again in a moment",
        )
