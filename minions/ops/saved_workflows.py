"""Saved workflows, read from a state store file without the program that saved them.

``minions workflows`` uses this when no system answers in the project folder, and the control
socket (:mod:`.workflow_ops`) to describe checkpoints no running minion holds. A checkpoint is
read generically (:func:`minions.workflows.checkpoint.read_plain`): its header, its history and
its event and context as the plain data they were saved as, without importing the user's types.

The file is opened read-only (an SQLite ``mode=ro`` URI) and only read: it cannot be changed or
corrupted, and a system writing to it meanwhile is not blocked (in WAL mode readers and the
writer do not wait for each other). Which file: ``--store PATH``, else the ``path`` of the
``[WorkflowStore]`` table of the project's config file (``$MINIONS_CONFIG``, else
``minions.toml``; ``MINIONS_WORKFLOWSTORE__PATH`` overrides it, as for a running system), else
``<project>/.minions/state.sqlite3``.
"""

from __future__ import annotations

import base64
import math
import os
import sqlite3
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..core.config import ConfigSource
from ..core.errors import MinionsError
from ..workflows.checkpoint import CheckpointError, read_plain
from ..workflows.sqlite.schema import APPLICATION_ID, SCHEMA_VERSION, SELECT_ALL
from ..workflows.sqlite.store import default_state_path
from ..workflows.state_store import StoredContext
from ..workflows.store import WorkflowStoreConfig
from ..workflows.workflow_id import created
from .settings import CONFIG_ENV

__all__ = [
    "StoreReadError",
    "describe",
    "detail",
    "match_workflow",
    "plain",
    "read_saved",
    "store_path",
]

#: How long a read waits for a lock another connection holds (a checkpoint of the WAL).
_BUSY_MS = 2000


class StoreReadError(MinionsError):
    """The state store file cannot be read (missing, another program's, damaged)."""


def store_path(project: Path, environ: Mapping[str, str] | None = None) -> Path:
    """The state store file of the system in ``project`` (see the module docstring)."""
    env = os.environ if environ is None else environ
    config = env.get(CONFIG_ENV)
    try:
        source = ConfigSource.load(config, project)
        table = source.build("WorkflowStore", WorkflowStoreConfig, env)
    except MinionsError as exc:
        raise StoreReadError(
            f"cannot tell where the state store is: {exc}; name it with --store PATH"
        ) from exc
    if isinstance(table, WorkflowStoreConfig) and table.path:
        path = Path(table.path)
        return path if path.is_absolute() else project / path
    return default_state_path(project)


def read_saved(path: Path) -> list[StoredContext]:
    """Every checkpoint in the store file ``path``, oldest first, read-only."""
    if not path.is_file():
        raise StoreReadError(
            f"no state store at {path}: nothing was saved there yet (or name the file with "
            "--store PATH)"
        )
    uri = f"file:{urllib.parse.quote(str(path.absolute()))}?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=_BUSY_MS / 1000)
    except sqlite3.Error as exc:
        raise StoreReadError(f"cannot open the state store {path}: {exc}") from exc
    try:
        (app,) = conn.execute("PRAGMA application_id").fetchone()
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if app != APPLICATION_ID:
            raise StoreReadError(f"{path} is not a Minions state store (application id {app:#x})")
        if version > SCHEMA_VERSION:
            raise StoreReadError(
                f"{path} was written by a newer Minions (schema {version}); use that version's "
                "minions command"
            )
        rows = conn.execute(SELECT_ALL).fetchall()
    except sqlite3.Error as exc:
        raise StoreReadError(f"cannot read the state store {path}: {exc}") from exc
    finally:
        conn.close()
    return [StoredContext(str(w), str(o), bytes(c)) for w, o, c in rows]


def describe(row: StoredContext, now: float, state: str = "saved") -> dict[str, Any]:
    """A saved checkpoint as a row of ``minions workflows`` (the board's row shape).

    ``state`` is what the caller knows (``saved``, or ``stranded``); a checkpoint marked
    failed is ``failed``, one that cannot be read ``corrupt``.
    """
    born = created(row.workflow_id, now)
    shown: dict[str, Any] = {
        "workflow_id": row.workflow_id,
        "orchestration_id": row.orchestration_id,
        "minion": None,
        "minion_identity": None,
        "state": "corrupt",
        "step_index": None,
        "step": None,
        "steps": None,
        "created": born,
        "age_seconds": round(now - born, 3) if born is not None else None,
        "attempts": None,
        "last_error": None,
    }
    try:
        header, _, _ = read_plain(row.context, workflow_id=row.workflow_id)
    except CheckpointError as exc:
        shown["last_error"] = str(exc)
        return shown
    shown.update(
        minion=header.minion,
        minion_identity=header.minion,
        state="failed" if header.failed else state,
        step_index=header.next_step_index,
        step=header.next_step,
        attempts=header.attempts,
        last_error=header.last_error,
    )
    return shown


def detail(row: StoredContext, now: float, state: str = "saved") -> dict[str, Any]:
    """:func:`describe` and the checkpoint's content: event and context as saved."""
    shown = describe(row, now, state)
    try:
        header, event, context = read_plain(row.context, workflow_id=row.workflow_id)
    except CheckpointError:
        return shown
    shown.update(
        format=header.format,
        event_type=header.event_type,
        context_type=header.context_type,
        event=plain(event),
        context=plain(context),
        size_bytes=len(row.context),
    )
    return shown


def match_workflow(wanted: str, known: list[str]) -> str:
    """The one id of ``known`` that is ``wanted``, or starts or ends with it (4 characters or
    more)."""
    if wanted in known:
        return wanted
    if len(wanted) < 4:
        raise StoreReadError(
            f"no workflow {wanted!r}; give its id, or 4 or more of its first or last characters"
        )
    found = [w for w in known if w.startswith(wanted) or w.endswith(wanted)]
    if len(found) == 1:
        return found[0]
    if found:
        raise StoreReadError(
            f"{len(found)} workflows start or end with {wanted!r}; give more of the id"
        )
    raise StoreReadError(
        f"no workflow {wanted!r} in flight or saved; 'minions workflows' lists them"
    )


def plain(value: Any) -> Any:
    """``value`` as JSON-ready data: string keys, lists, base64 for bytes, strings for non-finite
    floats."""
    if isinstance(value, dict):
        return {_key(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, bytes | bytearray | memoryview):
        return "base64:" + base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _key(key: Any) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, tuple):
        return ",".join(_key(k) for k in key)
    return str(key)
