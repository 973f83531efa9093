"""The project lock: one running system per project folder.

A system owns its project's ``.minions/`` folder — the workflow store, the log file, the control
socket — so a second system started in the same folder would share the store with the first
and fight over the rest. :func:`minions.run` takes :class:`ProjectLock` before anything starts
and holds it for the system's life; a second ``run(...)`` in the same folder is refused with
:class:`ProjectBusyError`, naming the first one's pid.

The lock is ``flock(2)`` on ``.minions/system.lock``. The kernel releases it when its holder
ends, however it ends, so a system killed with SIGKILL leaves no stale lock behind: the file
stays, but the next system locks it at once. (Forked children do not keep it: a fork shares the
descriptor, and each isolated child releases every inherited descriptor first thing.) The file
holds the holder's pid, for the error message only.

While a system holds the lock, a control socket file it finds is stale by definition (only the
lock holder listens there), so :class:`~minions.ops.control.ControlServer` replaces it without
probing it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

from ..core.errors import RuntimeStateError
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
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"<ProjectLock {self.path} {'held' if self.held else 'free'}>"

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`ProjectBusyError` at once if another system has it."""
        if self._fd is not None:
            return
        private_dir(self.path.parent, root=self.project_dir)  # checked: PrivateDirectoryError
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise RuntimeStateError(
                f"cannot open the project lock {self.path}: {exc}; check the folder's permissions"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f" (pid {holder})" if holder else ""
            raise ProjectBusyError(
                f"another Minions system{who} is running in {self.project_dir}: stop it first "
                f"('minions stop --project {self.project_dir}'), or run this one in another "
                "project folder (--project DIR or $MINIONS_PROJECT_DIR)"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise RuntimeStateError(f"cannot lock {self.path}: {exc}") from exc
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Let the lock go (the kernel does it too when the process ends)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)

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


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
