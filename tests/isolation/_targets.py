"""Child-side code for the isolation tests: zygote entry points and components.

Everything here runs *in a child process* (a fork of the zygote) and is named by reference
("tests.isolation._targets:Name"). The module is imported by the test modules before the zygote
is forked, so children find it loaded, like a user's program.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from typing import Any

import structlog
import zmq
import zmq.asyncio

from isolation import DEFAULT_MAX_FRAME_BYTES

#: The pid of the process that imported this module; in a child it is the test runner's pid,
#: which shows that the child inherited the module instead of importing it again.
LOADED_IN_PID = os.getpid()


# -- zygote entry points: entry(args) -> exit code ---------------------------------------------


def exit_with(args: Mapping[str, Any]) -> int:
    return int(args["code"])


def print_and_exit(args: Mapping[str, Any]) -> int:
    print(args["stdout"])
    print(args["stderr"], file=sys.stderr)
    os.write(1, b"raw line\nno newline at the end")
    return 0


def report_loaded_pid(args: Mapping[str, Any]) -> int:
    print(f"loaded-in {LOADED_IN_PID} running-in {os.getpid()} parent {os.getppid()}")
    return 0


def segfault(args: Mapping[str, Any]) -> int:
    ctypes.string_at(0)
    return 0


def wait_for_stdin_forever(args: Mapping[str, Any]) -> int:
    signal.pause()
    return 0


# -- components: factory(proxies, payload) -> object --------------------------------------------


class Counter:
    """A parent-side service the children call."""

    def __init__(self) -> None:
        self.total = 0

    async def add(self, amount: int) -> int:
        self.total += amount
        return self.total


class Echo:
    """A resource without run(): it serves calls until it is stopped."""

    def __init__(self, proxies: Mapping[str, Any], payload: Any) -> None:
        self._counter = proxies.get("counter")
        self._payload = payload

    async def echo(self, value: str) -> str:
        return value

    async def payload(self) -> Any:
        return self._payload

    async def pid(self) -> int:
        return os.getpid()

    async def count(self, amount: int) -> int:
        assert self._counter is not None
        result: int = await self._counter.add(amount)
        return result


class Returns:
    def __init__(self, proxies: Mapping[str, Any], payload: Any) -> None:
        pass

    async def run(self) -> None:
        return None


class Raises:
    def __init__(self, proxies: Mapping[str, Any], payload: Any) -> None:
        pass

    async def run(self) -> None:
        raise ValueError("boom")


class Crasher:
    """Crashes in run() in the way ``payload`` names, once ``hold()`` has been called.

    ``hold()`` never returns, so the test has a pending call that the crash must fail.
    """

    def __init__(self, proxies: Mapping[str, Any], payload: Any) -> None:
        self._kind = payload
        self._go = asyncio.Event()

    async def hold(self) -> None:
        self._go.set()
        await asyncio.Event().wait()

    async def ticks(self) -> AsyncIterator[int]:
        """A stream that yields once, then never again."""
        yield 1
        await asyncio.Event().wait()

    async def run(self) -> None:
        await self._go.wait()
        await asyncio.sleep(0)  # let the hold() call be fully registered first
        _crash(self._kind)
        await asyncio.Event().wait()  # a bad frame is sent, not fatal: wait for the parent's kill


def _crash(kind: str) -> None:
    if kind == "exit":
        os._exit(3)
    elif kind == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif kind == "segfault":
        ctypes.string_at(0)
    elif kind == "memory":
        hoard = []
        while True:
            hoard.append(bytearray(8 * 1024 * 1024))
    elif kind in ("hang", "cpu"):
        while True:
            pass
    elif kind == "garbage":
        _send_raw(b"\xc1 this is not a frame")
    elif kind == "oversized":
        _send_raw(b"x" * (DEFAULT_MAX_FRAME_BYTES + 1))
    else:
        raise AssertionError(f"unknown crash kind {kind!r}")


def _channel_socket() -> zmq.Socket[Any]:
    """The child's channel socket, found the hard way to write behind the wire layer's back."""
    sockets = [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, zmq.asyncio.Socket)
        and not obj.closed
        and obj.get(zmq.LAST_ENDPOINT).startswith(b"ipc://")
    ]
    assert len(sockets) == 1, sockets
    return sockets[0]


def _send_raw(data: bytes) -> None:
    # The plain send of the asyncio socket's class: the frame leaves now, not on a future.
    zmq.Socket.send(_channel_socket(), data)


class BrokenConstructor:
    def __init__(self, proxies: Mapping[str, Any], payload: Any) -> None:
        raise RuntimeError("constructor exploded")


class BrokenStartup:
    def __init__(self, proxies: Mapping[str, Any], payload: Any) -> None:
        pass

    async def startup(self) -> None:
        raise KeyError("missing-setting")


class SlowStartup:
    def __init__(self, proxies: Mapping[str, Any], payload: Any) -> None:
        pass

    async def startup(self) -> None:
        print("starting up slowly")
        await asyncio.Event().wait()


class HungryStartup:
    """Allocates far past any small memory limit while starting."""

    def __init__(self, proxies: Mapping[str, Any], payload: Any) -> None:
        pass

    async def startup(self) -> None:
        self.hoard = bytearray(512 * 1024 * 1024)


class Graceful:
    """Runs until stopped; says so on stdout when shut down."""

    def __init__(self, proxies: Mapping[str, Any], payload: Any) -> None:
        pass

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def shutdown(self) -> None:
        print("graceful shutdown ran")


class Stubborn:
    """Ignores the stop request (swallows cancellation) and SIGTERM."""

    def __init__(self, proxies: Mapping[str, Any], payload: Any) -> None:
        pass

    async def startup(self) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    async def run(self) -> None:
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                print("ignoring the stop request")


class Leveled:
    """Logs at every level through both logging systems during startup, one logger with a
    level of its own below the root's."""

    def __init__(self, proxies: Mapping[str, Any], payload: Any) -> None:
        pass

    async def startup(self) -> None:
        verbose = logging.getLogger("leveled.verbose")
        verbose.setLevel(logging.DEBUG)
        for level in ("debug", "info", "warning"):
            getattr(verbose, level)(f"stdlib {level}")
            getattr(structlog.get_logger("leveled"), level)(f"structlog {level}")
        structlog.get_logger("leveled").exception("structlog exception")

    async def ping(self) -> str:
        return "pong"


class Chatty:
    """Writes to stdout, stderr and both logging systems during startup."""

    def __init__(self, proxies: Mapping[str, Any], payload: Any) -> None:
        pass

    async def startup(self) -> None:
        print("hello on stdout")
        print("hello on stderr", file=sys.stderr)
        os.write(1, b"written by a C library\n")
        logging.getLogger("chatty").warning("stdlib says %s", "hi")
        structlog.get_logger("chatty").warning("structlog says hi", answer=42, obj=object())

    async def ping(self) -> str:
        return "pong"
