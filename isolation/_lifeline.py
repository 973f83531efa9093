"""The lifeline: a forked process that dies as soon as the process that forked it dies.

Isolated children must never outlive the runtime, even when the runtime is killed with SIGKILL
and gets no chance to clean up. Linux offers exactly this with ``prctl(PR_SET_PDEATHSIG)``: the
kernel sends a chosen signal to a process when its parent thread exits. Both links of the chain
hold it — the zygote dies with the parent, each child dies with the zygote — so killing the
parent takes the whole tree down within moments.

The setting is racy on its own: if the parent died between ``fork()`` and ``prctl()``, the
child was already re-parented and the signal will never come. So after setting it we compare
``getppid()`` with the pid the parent had before forking, and leave at once when they differ.
Heartbeats from the parent are the second line of defence, for a parent that is alive but gone
silent.

``prctl`` is looked up once, when this module is imported, so that the fork path never touches
the dynamic loader. Elsewhere than on Linux there is no such function: the module still imports
(``import minions`` must work everywhere), :data:`available` is false, and isolation refuses to
start with a clear error (``isolation._platform``).
"""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable

__all__ = ["available", "die_with_parent"]

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[[int, int, int, int, int], int] | None:
    # The interpreter is linked against libc, so its own symbol table has prctl; loading it at
    # import time means the restart path (zygote fork, child fork) never touches the dynamic
    # loader.
    try:
        function = ctypes.CDLL(None, use_errno=True).prctl
    except (AttributeError, OSError):
        return None  # not Linux
    function.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
    function.restype = ctypes.c_int
    prctl: Callable[[int, int, int, int, int], int] = function
    return prctl


_prctl = _load_prctl()


def available() -> bool:
    """Whether this platform offers the lifeline (Linux's ``prctl(PR_SET_PDEATHSIG)``)."""
    return _prctl is not None


def die_with_parent(expected_parent: int, sig: int = signal.SIGKILL) -> None:
    """Arrange for ``sig`` to end this process when its parent dies; exit now if it already has.

    ``expected_parent`` is the pid of the process that forked us, read *before* the fork.
    """
    if _prctl is None:
        raise OSError("prctl(PR_SET_PDEATHSIG) is not available: isolated children need Linux")
    if _prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_PDEATHSIG) failed: {os.strerror(err)}")
    if os.getppid() != expected_parent:
        # The parent is already gone; nobody will ever read what we would produce.
        os._exit(1)
