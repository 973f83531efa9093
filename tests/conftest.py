"""Suite-wide guarantees: every test leaves no child process behind.

A test that starts processes (isolated components, zygotes, subprocess-driven programs) must
reap them all before it ends, even when it fails. The autouse fixture below checks this after
every test, kills whatever is left (so one leak cannot cascade into later tests) and fails the
test that leaked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import psutil
import pytest

LEAK_GRACE_SECONDS = 5.0


def _live_children() -> list[psutil.Process]:
    alive: list[psutil.Process] = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child)
        except psutil.NoSuchProcess:
            continue
    return alive


@pytest.fixture
def anyio_backend() -> str:
    """Minions runs on asyncio (pyzmq's async API is asyncio's), so async tests do too."""
    return "asyncio"


@pytest.fixture(autouse=True)
def no_leftover_processes() -> Iterator[None]:
    """Fail the test if any child process of the test runner outlives it."""
    yield
    leftover = _live_children()
    if not leftover:
        return
    # Children that are already on their way out get a bounded grace period: wait on their
    # exit (not a sleep), then kill whatever remains so later tests start clean.
    _, still_alive = psutil.wait_procs(leftover, timeout=LEAK_GRACE_SECONDS)
    for proc in still_alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(still_alive, timeout=LEAK_GRACE_SECONDS)
    if still_alive:
        described = ", ".join(f"{p.pid} ({' '.join(_cmdline(p))[:120]})" for p in still_alive)
        pytest.fail(f"test left {len(still_alive)} child process(es) running: {described}")


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return ["?"]


@pytest.fixture
def open_fds() -> Iterator[None]:
    """Fail the test if it leaves file descriptors open in the test process.

    Opt-in: request it in tests that create sockets, pipes or pidfds.
    """
    before = set(os.listdir("/proc/self/fd"))
    yield
    after = set(os.listdir("/proc/self/fd"))
    leaked = sorted(after - before, key=int)
    details = []
    for fd in leaked:
        try:
            details.append(f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
        except OSError:
            continue
    if details:
        pytest.fail("test left file descriptors open: " + "; ".join(details))
