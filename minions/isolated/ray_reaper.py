"""Ends every process of a local Ray instance, found by its private directory.

Every process a local Ray instance runs — its control store, raylet, agents, workers — keeps
files open in the instance's temporary directory, which Minions makes private to that instance;
nothing else does. So :func:`reap` ends exactly those processes, and no other Ray instance on
the machine (``ray stop --force`` would end them all).

Run as a program (by path, with ``python -I``: it imports nothing but the standard library),
it is the *watchdog* of a runtime that started a local Ray: ``ray_reaper.py DIR PID``, with
its standard input the read end of a pipe whose write end only the runtime holds. When the
runtime stops Ray itself, it writes ``disarm`` and closes the pipe, and the watchdog leaves;
when the runtime dies without doing so (even by SIGKILL), the pipe reads end-of-file and the
watchdog reaps the instance and removes its directory — otherwise Ray's processes would linger
for a minute or more.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
from collections.abc import Collection

__all__ = ["DISARM", "holders", "reap"]

#: What the runtime writes to the watchdog's pipe once it has stopped Ray itself.
DISARM = b"disarm"
#: Ray may start a process while the directory is scanned: scan this many times at most.
_ROUNDS = 5


def holders(directory: str, exclude: Collection[int] = ()) -> list[int]:
    """Processes with an open file or their working directory inside ``directory``."""
    prefix = os.path.realpath(directory).rstrip("/") + "/"
    me = os.getpid()
    found: list[int] = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid == me or pid in exclude:
            continue
        try:
            links = [os.readlink(f"/proc/{pid}/cwd")]
            links += [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue  # gone, or not ours to look at
        if any(link.startswith(prefix) for link in links):
            found.append(pid)
    return found


def reap(directory: str, exclude: Collection[int] = ()) -> list[int]:
    """SIGKILL every process holding ``directory`` open (see :func:`holders`); the pids."""
    killed: list[int] = []
    for _ in range(_ROUNDS):
        pids = holders(directory, exclude)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    return killed


def _watch(directory: str, runtime_pid: int) -> int:
    if sys.stdin.buffer.read() == DISARM:
        return 0  # the runtime stopped Ray and cleaned up itself
    killed = reap(directory, exclude=(runtime_pid,))
    shutil.rmtree(directory, ignore_errors=True)
    if killed:
        print(f"minions: ended {len(killed)} process(es) of a local Ray", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(_watch(sys.argv[1], int(sys.argv[2])))
