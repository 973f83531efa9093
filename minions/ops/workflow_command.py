"""``minions workflows``: look at durable workflows and act on one.

::

    minions workflows [ORCHESTRATION] [--json]   the workflows in flight and saved
    minions workflows show ID [--json]           one workflow's checkpoint: event, context, step
    minions workflows retry ID                   resume it now
    minions workflows cancel ID                  abort it (counted as aborted), delete it

``ORCHESTRATION`` keeps the workflows whose orchestration id starts with it or whose minion it
names; ``ID`` is a workflow id, or its first or last characters (4 or more) if no other id
starts or ends with them. (An id starts with its creation time, so workflows created together
share their first characters: give the last ones.)

With a system running in the project folder the answers come from it (its control socket, see
:mod:`.workflow_ops`): the workflows its minions hold, with their state, step, age, attempts and
last error, and every other checkpoint of its stores. With none, ``workflows`` and ``show``
read the state store file directly, read-only (:mod:`.saved_workflows`): what was saved, with
the history each checkpoint records (attempts, last error, failed). ``retry`` needs the running
system (the system resumes every saved workflow when it starts); ``cancel`` without one (or
with ``--store PATH``) takes the store's own lock — the one every system using the file holds,
so it is refused while one does, and no system can open the store meanwhile — and deletes the
checkpoint, which is how a workflow that crashes its minion at every resume is discarded before
the next start.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from ..workflows.board import row_matches
from ..workflows.sqlite.store import SQLiteStateStore
from ..workflows.state_store import StateStoreInUse, StoredContext
from .client import ControlClient, ControlError, NoSystemError
from .saved_workflows import (
    LIST_LIMIT,
    StoreReadError,
    describe,
    detail,
    match_workflow,
    saved_ids,
    saved_row,
    scan_saved,
    store_path,
)
from .top import format_duration

__all__ = ["ACTIONS", "add_arguments", "main"]

ACTIONS = ("show", "retry", "cancel")
_COLUMNS = ("WORKFLOW", "ORCHESTRATION", "MINION", "STEP", "STATE", "AGE", "ATTEMPTS", "LAST ERROR")
_RIGHT = frozenset({"AGE", "ATTEMPTS"})


class UsageProblem(Exception):
    """The words after ``workflows`` do not form a command (exit status 2)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "words",
        nargs="*",
        metavar="ORCHESTRATION | show ID | retry ID | cancel ID",
        help="a filter for the list, or an action on one workflow",
    )
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")
    parser.add_argument(
        "--store",
        metavar="PATH",
        help=(
            "use this state store file, whether a system runs or not: list and show read it "
            "without changing it; cancel deletes from it when no system uses it"
        ),
    )


def main(args: argparse.Namespace, project: Path, timeout: float) -> int:
    """Run ``minions workflows`` for ``project``; raises ``ControlError`` and
    ``StoreReadError`` for one-line problems and :class:`UsageProblem`."""
    action, target = _parse(args.words)
    client = ControlClient(project, timeout=timeout)
    store = Path(args.store).resolve() if args.store else None
    if action is None:
        return _list(client, project, store, target, as_json=args.json)
    assert target is not None
    if action == "show":
        return _show(client, project, store, target, as_json=args.json)
    if action == "retry":
        answer = _live(client, "workflow_retry", target, store, needs="retry")
    else:
        answer = None if store else _try_live(client, "workflow_cancel", target)
        if answer is None:
            return _cancel_offline(store or store_path(project), target)
    print(answer["message"])
    return 0


def _parse(words: list[str]) -> tuple[str | None, str | None]:
    if words and words[0] in ACTIONS:
        if len(words) != 2:
            raise UsageProblem(f"usage: minions workflows {words[0]} ID")
        return words[0], words[1]
    if len(words) > 1:
        raise UsageProblem(
            "usage: minions workflows [ORCHESTRATION] | show ID | retry ID | cancel ID"
        )
    return None, words[0] if words else None


def _try_live(client: ControlClient, op: str, name: str | None) -> Any:
    """The running system's answer, or ``None`` when no system runs in the folder."""
    try:
        return client.request(op, name)
    except NoSystemError:
        return None


def _live(client: ControlClient, op: str, name: str, store: Path | None, needs: str) -> Any:
    answer = None if store else _try_live(client, op, name)
    if answer is None:
        raise ControlError(
            f"{needs} needs the system running in {client.project_dir}, and none is (a system "
            f"resumes every saved workflow when it starts: 'minions run ...'; a workflow kept as "
            f"failed is retried with 'minions workflows {needs} ID' once it runs)"
        )
    return answer


# -- list -----------------------------------------------------------------------------------------


def _list(
    client: ControlClient, project: Path, store: Path | None, wanted: str | None, *, as_json: bool
) -> int:
    answer = None if store else _try_live(client, "workflows", wanted)
    source: dict[str, Any] = {"project": str(project), "live": answer is not None, "store": None}
    if answer is not None and answer["stores"]:
        rows, more = answer["workflows"], bool(answer.get("more"))
        title = f"{project}  live"
    else:
        path = store or store_path(project)
        missing = store is None and not path.exists()  # nothing was ever saved there
        rows, more = ([], False) if missing else _saved(path, wanted)
        running = " (the system runs no workflow minions)" if answer is not None else ""
        title = f"{project}  store {path}{' (none yet)' if missing else ''}{running}"
        source["store"] = str(path)
    if as_json:
        print(json.dumps({**source, "workflows": rows, "more": more}, indent=2))
        return 0
    print(title)
    print()
    if not rows:
        print("No workflows in flight or saved." if not wanted else f"No workflows of {wanted!r}.")
        return 0
    for line in _table([_cells(r) for r in rows]):
        print(line)
    if more:
        print(
            f"... and more: only the first {len(rows)} are shown; name an orchestration or a "
            "minion to see the others"
        )
    return 0


def _saved(path: Path, wanted: str | None) -> tuple[list[dict[str, Any]], bool]:
    now = time.time()

    def keep(row: StoredContext) -> dict[str, Any] | None:
        shown = describe(row, now)
        return shown if not wanted or row_matches(shown, wanted) else None

    rows, more = scan_saved(path, keep, LIST_LIMIT)
    rows.sort(key=lambda r: (r["orchestration_id"], r["created"] or 0, r["workflow_id"]))
    return rows, more


def _cells(row: dict[str, Any]) -> list[str]:
    step = row.get("step") or "-"
    if row.get("step_index") is not None:
        total = f"/{row['steps']}" if row.get("steps") else ""
        step = f"{row['step_index'] + 1}{total} {step}"
    attempts = row.get("attempts")
    error = row.get("last_error") or ""
    return [
        str(row["workflow_id"]),
        str(row["orchestration_id"])[:8],
        str(row.get("minion") or "-"),
        step,
        str(row["state"]),
        format_duration(row.get("age_seconds")),
        "-" if attempts is None else str(attempts),
        " ".join(error.split()) or "-",
    ]


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(_COLUMNS)]
    lines = []
    for cells in [list(_COLUMNS), *rows]:
        parts = [
            cell.rjust(w) if column in _RIGHT else cell.ljust(w)
            for cell, w, column in zip(cells[:-1], widths, _COLUMNS, strict=False)
        ]
        lines.append("  ".join([*parts, cells[-1]]).rstrip())
    return lines


# -- show -----------------------------------------------------------------------------------------


def _show(
    client: ControlClient, project: Path, store: Path | None, wanted: str, *, as_json: bool
) -> int:
    shown = None if store else _try_live(client, "workflow", wanted)
    source = "live"
    if shown is None:
        path = store or store_path(project)
        row = saved_row(path, wanted) or saved_row(path, match_workflow(wanted, saved_ids(path)))
        if row is None:  # deleted since its id was read
            raise StoreReadError(f"workflow {wanted!r} is no longer saved in {path}")
        shown = detail(row, time.time())
        shown["checkpoint_saved"] = True
        source = f"store {path}"
    if as_json:
        print(json.dumps({"live": source == "live", **shown}, indent=2))
        return 0
    print("\n".join(_described(shown, source)))
    return 0


def _described(shown: dict[str, Any], source: str) -> list[str]:
    step = shown.get("step") or "-"
    if shown.get("step_index") is not None:
        of = f" of {shown['steps']}" if shown.get("steps") else ""
        step = f"{shown['step_index'] + 1}{of}: {step}"
    minion = shown.get("minion") or "-"
    if shown.get("minion_identity") and shown["minion_identity"] != minion:
        minion += f"  (identity {shown['minion_identity']})"
    attempts = shown.get("attempts")
    lines = [
        f"workflow       {shown['workflow_id']}",
        f"orchestration  {shown['orchestration_id']}",
        f"minion         {minion}",
        f"state          {shown['state']}  ({source})",
        f"next step      {step}",
        f"age            {format_duration(shown.get('age_seconds'))}",
        f"attempts       {'-' if attempts is None else attempts}",
        f"last error     {shown.get('last_error') or '-'}",
    ]
    if shown.get("resumable") is False:
        lines.append(f"cannot resume  {shown.get('problem')}")
    if not shown.get("checkpoint_saved"):
        lines.append("checkpoint     none saved yet")
        return lines
    if "event" not in shown or shown.get("event_type") is None:
        return lines  # a corrupt checkpoint: its error is the last error
    lines += [
        f"checkpoint     format {shown.get('format')}, {shown.get('size_bytes')} bytes, saved "
        "before its next step",
        "",
        f"event ({shown.get('event_type')}):",
        _indented(shown.get("event")),
        "",
        f"context ({shown.get('context_type')}):",
        _indented(shown.get("context")),
    ]
    return lines


def _indented(value: Any) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return "\n".join("  " + line for line in text.splitlines())


# -- cancel without a running system ---------------------------------------------------------------


def _cancel_offline(path: Path, wanted: str) -> int:
    saved_ids(path)  # a clear error for a missing file, or one that is not a Minions store
    workflow_id = asyncio.run(_delete(path, wanted))
    print(
        f"workflow {workflow_id} cancelled: its checkpoint is deleted from {path} (no system was "
        "using it, so nothing was counted)"
    )
    return 0


async def _delete(path: Path, wanted: str) -> str:
    """Delete the checkpoint ``wanted`` names, under the store's lock; its workflow id."""
    store = SQLiteStateStore(path)
    try:
        try:
            await store.startup()
        except StateStoreInUse as exc:
            raise ControlError(
                f"{exc}. To cancel a workflow of a running system, ask that system: 'minions "
                "workflows cancel ID --project DIR' with its project folder"
            ) from None
        rows = await store.get_all_contexts()
        workflow_id = match_workflow(wanted, [row.workflow_id for row in rows])
        await store.delete_context(workflow_id)
    finally:
        await store.aclose()
    return workflow_id
