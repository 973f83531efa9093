"""Saved workflows, read from a state store file without the program that saved them.

``minions workflows`` reads the file when no system answers in the project folder, and the
control socket (:mod:`.workflow_ops`) reads a running system's SQLite store through it too: on
a connection of its own, in a worker thread, so a request neither waits behind the system's
commits nor holds up its event loop. A checkpoint is read generically
(:func:`minions.workflows.checkpoint.read_plain`): its header, its history and its event and
context as the plain data they were saved as, without importing the user's types.

Only reading: the file is opened read-only, and no file is created or changed.

* When no ``-wal`` file lies beside it (its system closed it, or none ran), it is opened
  ``immutable``: SQLite reads the database file alone and creates no ``-wal`` or ``-shm`` file
  (a plain read-only open would, and leave them behind, owned by the reader). Should a ``-wal``
  file appear meanwhile — a system started during the read — the read is made again as below.
* Otherwise a system uses it, or one ended without closing it: it is opened ``mode=ro``, which
  also reads the workflows committed in the ``-wal`` file, beside a system writing to it without
  blocking it (in WAL mode readers and the writer do not wait for each other). That open uses
  the ``-shm`` file the system made; a reader who cannot read it (another user) gets a clear
  error.

How much is read: a listing stops after ``limit`` rows, oldest first, and says whether there
were more; one workflow is read by its id (the table's key); an id given by its first or last
characters is matched against the ids alone.

Which file: ``--store PATH``, else the ``path`` of the ``[WorkflowStore]`` table of the
project's config file (``$MINIONS_CONFIG``, else ``minions.toml``;
``MINIONS_WORKFLOWSTORE__PATH`` overrides it, as for a running system), else
``<project>/.minions/state.sqlite3``.
"""

from __future__ import annotations

import base64
import math
import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from ..core.config import ConfigSource
from ..core.errors import MinionsError
from ..workflows.board import workflow_row
from ..workflows.checkpoint import CheckpointError, read_header, read_plain
from ..workflows.sqlite.schema import (
    APPLICATION_ID,
    SCHEMA_VERSION,
    SELECT_ALL,
    SELECT_IDS,
    SELECT_ONE,
)
from ..workflows.sqlite.store import default_state_path
from ..workflows.state_store import StoredContext
from ..workflows.store import WorkflowStoreConfig
from ..workflows.workflow_id import created
from .settings import CONFIG_ENV

__all__ = [
    "LIST_LIMIT",
    "StoreReadError",
    "describe",
    "detail",
    "match_workflow",
    "place",
    "plain",
    "saved_ids",
    "saved_row",
    "scan_rows",
    "scan_saved",
    "store_path",
]

#: How many workflows one listing shows at most (``minions workflows`` says when there are more).
LIST_LIMIT = 1000
#: How long a read waits for a lock another connection holds (a checkpoint of the WAL).
_BUSY_MS = 2000

T = TypeVar("T")
#: Describes a row for a listing, or drops it (``None``): see :func:`scan_rows`.
Keep = Callable[[StoredContext], dict[str, Any] | None]


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


def saved_ids(path: Path) -> list[str]:
    """The ids of the workflows saved in the store file ``path``."""
    return _read(path, lambda conn: [str(w) for (w,) in conn.execute(SELECT_IDS)])


def saved_row(path: Path, workflow_id: str) -> StoredContext | None:
    """The checkpoint of ``workflow_id`` in the store file ``path`` (``None``: not saved)."""

    def query(conn: sqlite3.Connection) -> StoredContext | None:
        found = conn.execute(SELECT_ONE, (workflow_id,)).fetchone()
        return None if found is None else StoredContext(str(found[0]), str(found[1]), found[2])

    return _read(path, query)


def scan_saved(path: Path, keep: Keep, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """:func:`scan_rows` over the checkpoints of the store file ``path``, oldest first."""

    def query(conn: sqlite3.Connection) -> tuple[list[dict[str, Any]], bool]:
        return scan_rows(
            (StoredContext(str(w), str(o), bytes(c)) for w, o, c in conn.execute(SELECT_ALL)),
            keep,
            limit,
        )

    return _read(path, query)


def scan_rows(
    rows: Iterable[StoredContext], keep: Keep, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """The first ``limit`` rows that ``keep`` describes (it returns ``None`` for one to leave
    out), and whether there were more."""
    found: list[dict[str, Any]] = []
    for row in rows:
        shown = keep(row)
        if shown is None:
            continue
        if len(found) == limit:
            return found, True
        found.append(shown)
    return found, False


def _read(path: Path, query: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``query`` on the store file, read-only, creating nothing (module docstring)."""
    if not path.is_file():
        raise StoreReadError(
            f"no state store at {path}: nothing was saved there yet (or name the file with "
            "--store PATH)"
        )
    wal = path.with_name(path.name + "-wal")
    if not wal.exists():
        try:
            result = _query(path, query, immutable=True)
        except StoreReadError:
            if not wal.exists():
                raise
        else:
            if not wal.exists():
                return result
        # A system opened the file during the read: read it again as its reader.
    return _query(path, query, immutable=False)


def _query(path: Path, query: Callable[[sqlite3.Connection], T], *, immutable: bool) -> T:
    mode = "ro&immutable=1" if immutable else "ro"
    uri = f"file:{urllib.parse.quote(str(path.absolute()))}?mode={mode}"
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
        return query(conn)
    except sqlite3.Error as exc:
        raise StoreReadError(f"cannot read the state store {path}: {exc}") from exc
    finally:
        conn.close()


def describe(row: StoredContext, now: float, state: str = "saved") -> dict[str, Any]:
    """A saved checkpoint as a row of ``minions workflows`` (the board's row shape), from its
    header alone.

    ``state`` is what the caller knows (``saved``, or ``stranded``); a checkpoint marked
    failed is ``failed``, one that cannot be read ``corrupt``.
    """
    born = created(row.workflow_id, now)
    shown = workflow_row(
        workflow_id=row.workflow_id,
        orchestration_id=row.orchestration_id,
        minion=None,
        minion_identity=None,
        state="corrupt",
        step_index=None,
        step=None,
        steps=None,
        created=born,
        now=now,
        attempts=None,
        last_error=None,
    )
    try:
        header = read_header(row.context, workflow_id=row.workflow_id)
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


def place(
    shown: dict[str, Any], minions: Mapping[str, str], running: Collection[str]
) -> dict[str, Any]:
    """Complete a checkpoint's row (:func:`describe`) with what a running system knows: the
    component name of each running minion by identity (``minions``), and the orchestrations
    that run (``running``). A saved checkpoint of a running minion whose orchestration does not
    run is ``stranded`` (``retry`` adopts it)."""
    name = minions.get(shown["minion_identity"] or "")
    if name is not None:
        shown["minion"] = name
        if shown["state"] == "saved" and shown["orchestration_id"] not in running:
            shown["state"] = "stranded"
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
