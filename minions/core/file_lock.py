"""File locks that the kernel releases with their holder: one holder at a time of what they guard.

A :class:`FileLock` is ``flock(2)`` on a lock file. The lock belongs to the open file
description, so it is released when its holder closes the file or ends, however it ends: a
holder killed with SIGKILL leaves no stale lock (the file stays, and the next holder locks it
at once). Two opens are two holders even in one process, so a second user of the same thing in
the same process is refused too. The descriptor is close-on-exec; a child forked by the holder
shares the lock until it closes its copy (:meth:`FileLock.forget`) or ends.

While held, the file holds the holder's pid, for messages only (``holder``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

__all__ = ["FileLock"]


class FileLock:
    """An exclusive ``flock`` on ``path``, taken without waiting; see the module docstring."""

    def __init__(self, path: Path) -> None:
        self.path = path
        #: The pid the current holder recorded, after :meth:`acquire` found the lock taken
        #: (``None``: not recorded).
        self.holder: int | None = None
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"<FileLock {self.path} {'held' if self.held else 'not held'}>"

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> bool:
        """Take the lock now, creating the file (mode 0600) if needed; ``False`` when another
        holder has it (its pid, if recorded, in ``holder``). ``OSError`` if the file cannot be
        opened (a symbolic link is not followed) or locked."""
        if self._fd is not None:
            return True
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.holder = _read_pid(fd)
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        with contextlib.suppress(OSError):  # the pid is for messages only
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.holder = None
        self._fd = fd
        return True

    def release(self) -> None:
        """Let the lock go (the kernel does it too when the holder ends)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)

    def forget(self) -> None:
        """Close this process's copy without touching the lock: for a forked child, whose
        parent still holds it (and would otherwise share it with the child until it ends)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
