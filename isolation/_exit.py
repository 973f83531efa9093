"""How a child process ended, in words a person can act on.

A child ends in one of a few ways, and ``ChildExit.reason`` names which; ``cause`` says it in a
sentence for logs and errors:

==========  ===========================================================================
returned    the component's ``run()`` returned ("run() returned")
raised      ``run()`` raised; ``error`` is the ``RemoteError`` carrying the traceback
stopped     the parent asked it to stop (gracefully or, when it did not, by escalation)
died        it exited or was killed for any other reason ("killed by SIGSEGV")
hung        it missed heartbeats and the parent killed it
protocol    it sent a frame the wire layer rejected, and the parent killed it
memory      it allocated past ``Isolation.memory_mb``
cpu         it used more than ``Isolation.cpu_seconds`` of CPU time
==========  ===========================================================================

The parent learns the first three (and "memory") from the child's own final report, the rest
from the exit status the zygote collected, and "hung"/"protocol" from its own verdict before
killing. ``describe_status`` turns a raw wait status into the last kind.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Literal

from ._limits import CPU_HARD_GRACE_SECONDS, Isolation

__all__ = ["ChildExit", "ExitReason", "describe_status", "signal_name"]

ExitReason = Literal["returned", "raised", "stopped", "died", "hung", "protocol", "memory", "cpu"]


@dataclass(frozen=True)
class ChildExit:
    """The end of a child process: why (``reason``), in words (``cause``), and the raw facts.

    ``exit_code`` is set when the process exited, ``signal`` when a signal ended it; ``error`` is
    the remote exception when ``run()`` raised.
    """

    reason: ExitReason
    cause: str
    exit_code: int | None = None
    signal: int | None = None
    error: BaseException | None = None

    def __str__(self) -> str:
        return self.cause


def signal_name(signum: int) -> str:
    """``SIGSEGV`` for 11; a plain number for signals Python has no name for."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def describe_status(status: int, *, cpu_time: float, isolation: Isolation) -> ChildExit:
    """Describe a wait status for a child that left no report of its own.

    ``cpu_time`` is the user plus system CPU time the child used, which tells a CPU-limit kill
    (SIGKILL at the hard limit) from any other SIGKILL.
    """
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        if isolation.cpu_seconds is not None and _cpu_limit_signal(signum, cpu_time, isolation):
            return ChildExit("cpu", isolation.cpu_cause(), None, signum)
        return ChildExit("died", f"killed by {signal_name(signum)}", None, signum)
    if os.WIFEXITED(status):
        code = os.WEXITSTATUS(status)
        return ChildExit("died", f"exited with status {code}", code, None)
    return ChildExit("died", f"ended with wait status {status:#x}")


def _cpu_limit_signal(signum: int, cpu_time: float, isolation: Isolation) -> bool:
    if signum == signal.SIGXCPU:
        return True
    # The kernel's SIGKILL at the hard limit comes CPU_HARD_GRACE_SECONDS after the soft one.
    assert isolation.cpu_seconds is not None
    return signum == signal.SIGKILL and cpu_time >= isolation.cpu_seconds + (
        CPU_HARD_GRACE_SECONDS - 0.5
    )
