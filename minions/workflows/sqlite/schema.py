"""The SQLite state file: its table, how a connection to it is opened, and what its errors mean.

One table holds the checkpoints, keyed by workflow id; ``rowid`` order is the order workflows
were first saved, which is the order they resume in. The file says it is ours with
``PRAGMA application_id`` ("MNS1") and which layout it has with ``PRAGMA user_version``; a file
of another program, or of a newer Minions, is refused rather than written to.

Connections run in WAL mode with ``synchronous=FULL`` (a commit's WAL frames are fsynced before
COMMIT returns; ``NORMAL`` when the store is told to, see ``SQLiteStateStore``) and without
automatic WAL checkpoints: the writer runs them on its own thread
(see ``.writer``), so a commit made on the event loop never carries a checkpoint's I/O.

``translate`` maps sqlite3 and OS errors to the ``StateStoreError`` tree
(``minions.workflows.state_store``), keeping the original as ``__cause__``; each message says
what happened and what to do.
"""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

from ...core.errors import PrivateDirectoryError
from ...core.private import PRIVATE_DIR_NAME, private_dir, private_file
from ..state_store import (
    StateStoreCorrupt,
    StateStoreError,
    StateStoreFull,
    StateStoreLocked,
    StateStoreReadOnly,
    StateStoreUnavailable,
    UnsupportedSchema,
)

__all__ = [
    "APPLICATION_ID",
    "DELETE_ROW",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SELECT_ALL",
    "SELECT_IDS",
    "SELECT_ONE",
    "SELECT_ORCHESTRATION",
    "UPSERT",
    "connection_usable",
    "open_connection",
    "prepare_directory",
    "translate",
]

#: Version of the table layout, kept in ``PRAGMA user_version``.
SCHEMA_VERSION = 1
#: Marks the file as a Minions state store (``PRAGMA application_id``): ASCII "MNS1".
APPLICATION_ID = 0x4D4E5331

# No index on orchestration_id: it is read only when an orchestration starts (a scan of the
# in-flight workflows is cheap), while maintaining it on every upsert cost 20x per commit.
SCHEMA = (
    """CREATE TABLE contexts (
        workflow_id      TEXT PRIMARY KEY,
        orchestration_id TEXT NOT NULL,
        context          BLOB NOT NULL
    )""",
)
UPSERT = (
    "INSERT INTO contexts (workflow_id, orchestration_id, context) VALUES (?, ?, ?) "
    "ON CONFLICT (workflow_id) DO UPDATE SET "
    "orchestration_id = excluded.orchestration_id, context = excluded.context"
)
DELETE_ROW = "DELETE FROM contexts WHERE workflow_id = ?"
SELECT_ALL = "SELECT workflow_id, orchestration_id, context FROM contexts ORDER BY rowid"
SELECT_ORCHESTRATION = (
    "SELECT workflow_id, orchestration_id, context FROM contexts "
    "WHERE orchestration_id = ? ORDER BY rowid"
)
# For the people operating a system (``minions workflows``): one workflow by its key, and the
# ids alone (read from the key's index, without the checkpoints).
SELECT_ONE = "SELECT workflow_id, orchestration_id, context FROM contexts WHERE workflow_id = ?"
SELECT_IDS = "SELECT workflow_id FROM contexts"


def prepare_directory(path: Path) -> None:
    """Create the directory of the state file at ``path`` owner-only (the project's
    ``.minions`` checked as private, see ``minions.core.private``)."""
    parent = path.parent
    if parent.name == PRIVATE_DIR_NAME:
        private_dir(parent, root=parent.parent)  # the project's own: checked, owner-only
    else:
        parent.mkdir(parents=True, exist_ok=True, mode=0o700)


def open_connection(
    path: Path, busy_timeout: float, max_bytes: int | None, synchronous: str = "full"
) -> sqlite3.Connection:
    """Open (creating if needed) the state file at ``path`` and check or create its schema.

    The connection may be used from any one thread at a time (the writer hands it between the
    event loop's thread and its own) and is left with a busy timeout of zero: whoever uses it
    sets the wait it can afford (``PRAGMA busy_timeout``).
    """
    prepare_directory(path)
    private_file(path)  # 0600 whatever the umask; SQLite gives its WAL files the same mode
    conn = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        conn.execute("PRAGMA journal_mode=WAL").fetchone()
        conn.execute(
            "PRAGMA synchronous=NORMAL" if synchronous == "normal" else "PRAGMA synchronous=FULL"
        )
        conn.execute("PRAGMA wal_autocheckpoint=0")
        if max_bytes is not None:
            (page_size,) = conn.execute("PRAGMA page_size").fetchone()
            pages = max(1, max_bytes // page_size)
            conn.execute(f"PRAGMA max_page_count={pages:d}")
        _ensure_schema(conn, path)
        conn.execute("PRAGMA busy_timeout=0")
    except BaseException:
        conn.close()
        raise
    return conn


def connection_usable(conn: sqlite3.Connection) -> bool:
    """Whether ``conn`` still answers and is outside any transaction."""
    try:
        conn.execute("SELECT 1").fetchone()
    except sqlite3.Error:
        return False
    return not conn.in_transaction


def _ensure_schema(conn: sqlite3.Connection, path: Path) -> None:
    (app_id,) = conn.execute("PRAGMA application_id").fetchone()
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if app_id == APPLICATION_ID:
        if version > SCHEMA_VERSION:
            raise UnsupportedSchema(
                f"{path} was written by a newer Minions (schema version {version}; this one "
                f"reads up to {SCHEMA_VERSION}). Upgrade Minions, or use another state file"
            )
        return
    if app_id != 0:
        raise UnsupportedSchema(
            f"{path} is an SQLite database of another program (application id {app_id:#x}); "
            "point the state store at another file"
        )
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Checked inside the write transaction: another process may have created it meanwhile.
        (app_id,) = conn.execute("PRAGMA application_id").fetchone()
        (tables,) = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if app_id == 0 and tables:
            raise UnsupportedSchema(
                f"{path} is an SQLite database that Minions did not create ({tables} schema "
                "objects); point the state store at another file"
            )
        if app_id == 0:
            for statement in SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA application_id={APPLICATION_ID:d}")
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION:d}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


# SQLite primary result codes (https://sqlite.org/rescode.html).
_SQLITE_PERM, _SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY = 3, 5, 6, 8
_SQLITE_IOERR, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 10, 11, 13, 14, 26


def translate(exc: BaseException, path: Path, doing: str, busy_timeout: float) -> StateStoreError:
    """Map a sqlite3 or OS error to ours; the original is kept as ``__cause__``."""
    if isinstance(exc, StateStoreError):
        return exc
    if isinstance(exc, PrivateDirectoryError):
        return StateStoreError(f"cannot {doing} the state store {path}: {exc}")
    detail = str(exc) or type(exc).__name__
    cls: type[StateStoreError] = StateStoreError
    message = (
        f"unexpected error while trying to {doing} the state store {path}: {detail}. "
        "Report this with the traceback"
    )
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
        cls = StateStoreLocked
        message = (
            f"cannot {doing} the state store {path}: another connection held its write lock "
            f"for more than {busy_timeout:g} s ({detail}). Only one Minions runtime may use a "
            "state file: stop the other program using it, then retry"
        )
    elif primary == _SQLITE_FULL or (isinstance(exc, OSError) and exc.errno == errno.ENOSPC):
        cls = StateStoreFull
        message = (
            f"cannot {doing} the state store {path}: the disk or the store's max_bytes limit "
            f"is full ({detail}). Free disk space or raise max_bytes, then retry"
        )
    elif primary in (_SQLITE_READONLY, _SQLITE_PERM, _SQLITE_CANTOPEN) or isinstance(
        exc, PermissionError | FileExistsError | NotADirectoryError
    ):
        cls = StateStoreReadOnly
        message = (
            f"cannot {doing} the state store {path}: the file or its directory cannot be "
            f"created or written ({detail}). Make the directory writable by this user, or "
            "point the state store at a writable path"
        )
    elif primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        cls = StateStoreCorrupt
        message = (
            f"{path} is not a usable Minions state store ({detail}). Move the file aside "
            "(a new store is created on the next start; the workflows saved in it will not "
            "resume) or restore it from a backup"
        )
    elif primary == _SQLITE_IOERR or isinstance(exc, OSError):
        cls = StateStoreUnavailable
        message = (
            f"cannot {doing} the state store {path}: the operating system reported an I/O "
            f"error ({detail}). Check the disk and its file system, then retry"
        )
    translated = cls(message)
    translated.__cause__ = exc
    return translated
