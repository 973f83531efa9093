"""Every way a child can die is detected at once, described in words, and cleaned up.

Each test crashes a real child while the parent has a call pending on it. The parent keeps
running, the call fails with ComponentCrashed, the ChildExit says what happened, and no
process or file descriptor is left behind.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import anyio
import pytest

from isolation import ChildSpec, ComponentCrashed, Isolation, Zygote, spawn
from tests.isolation._targets import Crasher, Echo

pytestmark = pytest.mark.anyio


CRASHES: list[tuple[str, dict[str, Any], str, str, int | None, int | None]] = [
    # kind, limits, reason, cause, exit_code, signal
    ("exit", {}, "died", "exited with status 3", 3, None),
    ("sigkill", {}, "died", "killed by SIGKILL", None, signal.SIGKILL),
    ("segfault", {}, "died", "killed by SIGSEGV", None, signal.SIGSEGV),
    ("memory", {"memory_mb": 64}, "memory", "exceeded memory limit 64 MiB", 0, None),
    (
        "cpu",
        {"cpu_seconds": 1, "heartbeat_timeout": 30},
        "cpu",
        "exceeded CPU limit 1 s",
        None,
        None,
    ),
    ("hang", {"heartbeat_timeout": 0.5}, "hung", "no heartbeat for 0.5 s; killed", None, 9),
]


@pytest.mark.parametrize(
    ("kind", "limits", "reason", "cause", "exit_code", "signum"),
    CRASHES,
    ids=[crash[0] for crash in CRASHES],
)
async def test_crash_is_detected_and_described(
    open_fds: None,
    zygote: Zygote,
    kind: str,
    limits: dict[str, Any],
    reason: str,
    cause: str,
    exit_code: int | None,
    signum: int | None,
) -> None:
    """The crash kind maps to its reason and cause; the pending call fails with ComponentCrashed."""
    isolation = Isolation(**{"heartbeat_interval": 0.1, **limits})
    spec = ChildSpec(
        "Crasher", "tests.isolation._targets:Crasher", payload=kind, isolation=isolation
    )
    with anyio.fail_after(20):
        child = await spawn(zygote, spec, {}, on_output=lambda *line: None)
        pending = asyncio.ensure_future(child.proxy(Crasher).hold())
        end = await child.wait()
        with pytest.raises(ComponentCrashed, match=f"Crasher {cause}"):
            await pending
    assert (end.reason, end.cause, end.exit_code) == (reason, cause, exit_code)
    if signum is not None:
        assert end.signal == signum
    if kind == "cpu":
        assert end.signal in (signal.SIGXCPU, signal.SIGKILL)
    await _still_spawns(zygote)


@pytest.mark.parametrize("kind", ["garbage", "oversized"])
async def test_bad_frames_kill_the_child(open_fds: None, zygote: Zygote, kind: str) -> None:
    """A child that writes a malformed or oversized frame is killed with reason "protocol"."""
    spec = ChildSpec("Crasher", "tests.isolation._targets:Crasher", payload=kind)
    with anyio.fail_after(20):
        child = await spawn(zygote, spec, {}, on_output=lambda *line: None)
        pending = asyncio.ensure_future(child.proxy(Crasher).hold())
        end = await child.wait()
        with pytest.raises(ComponentCrashed):
            await pending
    assert end.reason == "protocol"
    assert end.cause.startswith("sent a malformed frame: ") and end.cause.endswith("; killed")
    assert end.signal == signal.SIGKILL
    await _still_spawns(zygote)


async def test_open_stream_fails_when_the_child_dies(open_fds: None, zygote: Zygote) -> None:
    """A stream being consumed when the child is killed ends with ComponentCrashed."""
    spec = ChildSpec("Crasher", "tests.isolation._targets:Crasher", payload="sigkill")
    with anyio.fail_after(20):
        child = await spawn(zygote, spec, {})
        crasher = child.proxy(Crasher)
        ticks = crasher.ticks()
        assert await ticks.__anext__() == 1
        holding = asyncio.ensure_future(crasher.hold())  # the crash starts once this arrives
        with pytest.raises(ComponentCrashed, match="Crasher killed by SIGKILL"):
            await ticks.__anext__()
        with pytest.raises(ComponentCrashed):
            await holding
        end = await child.wait()
    assert (end.reason, end.signal) == ("died", signal.SIGKILL)


async def _still_spawns(zygote: Zygote) -> None:
    """The parent and its zygote are unharmed: a new child starts and answers."""
    with anyio.fail_after(10):
        child = await spawn(zygote, ChildSpec("Echo", "tests.isolation._targets:Echo"), {})
        assert await child.proxy(Echo).echo("still here") == "still here"
        await child.stop()
