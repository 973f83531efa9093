"""What every forked process does first: shed the parent's state it must not touch.

The zygote is forked from the runtime, possibly from inside a running asyncio loop with ZeroMQ
contexts, log files and listening sockets open; each child is forked from the zygote. A fork
copies all of that, and none of it may be used on this side: the copies of sockets would keep
peers from seeing EOF, the copied event loop would refuse to let a new one start, the signal
handlers would write into the parent's wake-up pipe.

``shed_parent_state`` makes the current process clean: signal handlers back to their defaults
(SIGINT ignored — the runtime decides when children stop, not the terminal's Ctrl-C), no
signal mask, no running loop, every inherited descriptor except the ones asked for released
(pointed at /dev/null, see ``close_fds_except``), and stdin on /dev/null. Objects the parent
created are left alone: ``gc.freeze()`` moves them out of the collector's reach, and a late
close of their descriptor numbers — when one is dropped, like a log handler the child
replaces — hits /dev/null, never a descriptor of ours. Freezing also keeps the collector from
writing to the shared pages, which is what keeps forks of the zygote cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import gc
import io
import os
import resource
import signal
import sys
from collections.abc import Iterable

__all__ = ["close_fds_except", "fresh_stdio", "shed_parent_state"]

#: Most descriptor numbers probed when /proc cannot list them.
_MAX_PROBED_FDS = 65536
#: Whether the parent had faulthandler on; children turn it on again for their own stderr.
_faulthandler_wanted = False


def shed_parent_state(keep_fds: Iterable[int]) -> None:
    """Reset signals, loop and descriptors inherited through ``fork()``; keep ``keep_fds``."""
    global _faulthandler_wanted
    gc.freeze()
    # faulthandler writes to a descriptor of the parent's that is about to be closed; left on, a
    # crash would write its report into whatever file then reuses that number.
    _faulthandler_wanted = faulthandler.is_enabled()
    faulthandler.disable()
    asyncio.events._set_running_loop(None)
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)
    for signum in signal.valid_signals():
        try:
            handler = signal.getsignal(signum)
        except ValueError:
            continue
        if callable(handler):
            signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    close_fds_except({0, 1, 2, *keep_fds})
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)


def close_fds_except(keep: set[int]) -> None:
    """Release every inherited descriptor of this process not in ``keep``.

    Each one is pointed at ``/dev/null`` instead of being closed, so that its number stays
    taken. Python objects inherited from the parent still believe they own those numbers (a
    logging ``FileHandler``'s stream, a socket, a selector) and close them later, from a
    finaliser or at exit; with the numbers reused by descriptors this process opened since (its
    own event loop's epoll, its channel), that close would cut those instead.
    """
    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    try:
        for fd in _open_fds():
            if fd not in keep and fd != devnull:
                with contextlib.suppress(OSError):
                    os.dup2(devnull, fd, inheritable=False)
    finally:
        os.close(devnull)


def _open_fds() -> list[int]:
    """This process's descriptors: listed by /proc, or (in a sandbox, where /proc is out of
    reach) found by asking each number below the open-files limit."""
    try:
        return [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        pass
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    found = []
    for fd in range(min(soft, _MAX_PROBED_FDS)):
        try:
            os.fstat(fd)
        except OSError:
            continue
        found.append(fd)
    return found


def fresh_stdio() -> None:
    """Give ``sys.stdout``/``sys.stderr`` new line-buffered writers on descriptors 1 and 2.

    The inherited objects may be block-buffered (the parent's stdout was a pipe) and may hold
    text the parent had not flushed yet, which must not be written a second time from here.
    """
    sys.stdout = _line_writer(1)
    sys.stderr = _line_writer(2)
    if _faulthandler_wanted:
        faulthandler.enable(sys.stderr)


def _line_writer(fd: int) -> io.TextIOWrapper:
    raw = io.FileIO(fd, "w", closefd=False)
    return io.TextIOWrapper(
        raw, encoding="utf-8", errors="backslashreplace", line_buffering=True, write_through=True
    )
