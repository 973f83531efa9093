"""The project lock: one running system per project folder.

A system owns its project's ``.minions/`` folder — the workflow store, the log file, the control
socket — so a second system started in the same folder would share the store with the first
and fight over the rest. :func:`minions.run` takes :class:`ProjectLock` before anything starts
and holds it for the system's life; a second ``run(...)`` in the same folder is refused with
:class:`ProjectBusyError`, naming the first one's pid.

The lock is a :class:`~minions.core.file_lock.FileLock` (``flock(2)``) on
``.minions/system.lock``. The kernel releases it when its holder ends, however it ends, so a
system killed with SIGKILL leaves no stale lock behind: the file stays, but the next system
locks it at once. (Forked children do not keep it: a fork shares the descriptor, and each
isolated child releases every inherited descriptor first thing.) The file holds the holder's
pid, for the error message only.

The project lock keeps two ``run()`` systems out of one folder; the state store has a lock of
its own, beside its file (``minions.workflows.sqlite``), which every way of starting a system
takes — ``run()``, ``Runtime`` and ``Gru`` — and ``minions workflows cancel`` too.

While a system holds the lock, a control socket file it finds is stale by definition (only the
lock holder listens there), so :class:`~minions.ops.control.ControlServer` replaces it without
probing it.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from ..core.errors import RuntimeStateError
from ..core.file_lock import FileLock
from ..core.private import PRIVATE_DIR_NAME, private_dir

__all__ = ["LOCK_NAME", "ProjectBusyError", "ProjectLock"]

LOCK_NAME = "system.lock"


class ProjectBusyError(RuntimeStateError):
    """Another system runs in the project folder (it holds the project lock)."""


class ProjectLock:
    """The lock of one project folder; see the module docstring."""

    def __init__(self, project_dir: Path) -> None:
        self.project_dir = project_dir
        self.path = project_dir / PRIVATE_DIR_NAME / LOCK_NAME
        self._lock = FileLock(self.path)

    def __repr__(self) -> str:
        return f"<ProjectLock {self.path} {'held' if self.held else 'free'}>"

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._lock.held

    def acquire(self) -> None:
        """Take the lock, or raise :class:`ProjectBusyError` at once if another system has it."""
        if self.held:
            return
        private_dir(self.path.parent, root=self.project_dir)  # checked: PrivateDirectoryError
        try:
            taken = self._lock.acquire()
        except OSError as exc:
            raise RuntimeStateError(
                f"cannot lock {self.path}: {exc}; check the folder's permissions"
            ) from exc
        if not taken:
            holder = self._lock.holder
            who = f" (pid {holder})" if holder else ""
            raise ProjectBusyError(
                f"another Minions system{who} is running in {self.project_dir}: stop it first "
                f"('minions stop --project {self.project_dir}'), or run this one in another "
                "project folder (--project DIR or $MINIONS_PROJECT_DIR)"
            )

    def release(self) -> None:
        """Let the lock go (the kernel does it too when the process ends)."""
        self._lock.release()

    def __enter__(self) -> ProjectLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
