"""The components of the hostile-child tests: a sandboxed resource that tries every escape it is
asked to, an innocent isolated sibling, and an in-process minion on the same shared resource.

``Hostile.attempt(name, target)`` runs one attempt inside the sandbox and answers ``"done: ..."``
or ``"refused: <error> errno N"``; ``Hostile.flood(kind, count)`` writes *legal* messages to its
own channel behind the wire layer's back, as fast as it can; ``Hostile.garbage(kind)`` writes what
the protocol refuses. Nothing here is reachable but through those calls: the test decides.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import resource
import signal
import socket
import subprocess
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import msgpack  # type: ignore[import-untyped]
import zmq
import zmq.asyncio

from isolation import Isolation, Sandbox
from isolation._protocol import Kind, build_frames, pack
from minions import Minion, Resource

TICK_SECONDS = 0.002
SCRATCH = ".minions/scratch/hostile"
MAX_FILE_MB = 1
MAX_OPEN_FILES = 64

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class Ticker(Resource):
    """In the parent: a tick every 2 ms to every subscriber, into a bounded queue each.

    A subscriber whose queue is full when a tick comes misses it (``missed``): what a loop that
    stalls does to everything else that runs on it.
    """

    missed: ClassVar[int] = 0
    #: The pid of each incarnation of Hostile, as it started.
    hostiles: ClassVar[list[int]] = []
    hostile_started: ClassVar[asyncio.Event]

    def __init__(self) -> None:
        self._queues: list[asyncio.Queue[int]] = []

    async def hostile_is_up(self, pid: int) -> None:
        type(self).hostiles.append(pid)
        type(self).hostile_started.set()

    async def run(self) -> None:
        tick = 0
        while True:
            await asyncio.sleep(TICK_SECONDS)
            for queue in self._queues:
                if queue.full():
                    type(self).missed += 1
                else:
                    queue.put_nowait(tick)
            tick += 1

    async def ticks(self) -> AsyncIterator[int]:
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=200)
        self._queues.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._queues.remove(queue)

    async def hold(self) -> None:
        await asyncio.Event().wait()


class Watcher(Minion):
    """In the parent, on the same Ticker: counts ticks and gaps between them."""

    seen: ClassVar[int] = 0
    gaps: ClassVar[list[tuple[int, int]]] = []

    def __init__(self, ticker: Ticker) -> None:
        self._ticker = ticker

    async def run(self) -> None:
        last = None
        async for tick in self._ticker.ticks():
            if last is not None and tick != last + 1:
                type(self).gaps.append((last, tick))
            last = tick
            type(self).seen += 1


class Innocent(Minion, isolated=Isolation(heartbeat_interval=0.1, heartbeat_timeout=1.0)):
    """An isolated sibling (not sandboxed) reading the ticks through its proxy; a late
    heartbeat of the parent's would end it, and the supervisor would restart it."""

    def __init__(self, ticker: Ticker) -> None:
        self._ticker = ticker

    async def run(self) -> None:
        async for _ in self._ticker.ticks():
            pass


SANDBOX = Sandbox(write=[SCRATCH], max_file_mb=MAX_FILE_MB, max_open_files=MAX_OPEN_FILES)


class Hostile(Resource, isolated=Isolation(sandbox=SANDBOX)):
    """Third-party code gone bad, in a sandbox."""

    def __init__(self, ticker: Ticker) -> None:
        self._ticker = ticker

    async def startup(self) -> None:
        await self._ticker.hostile_is_up(os.getpid())

    async def attempt(self, name: str, target: Any = None) -> str:
        try:
            result = ATTEMPTS[name](target)
        except OSError as exc:
            return f"refused: {type(exc).__name__} errno {exc.errno}: {exc}"
        except Exception as exc:
            return f"refused: {type(exc).__name__}: {exc}"
        return f"done: {result!r}"[:300]

    async def ping(self) -> int:
        return os.getpid()

    async def flood(self, kind: str, count: int) -> None:
        channel = _channel()
        if kind == "cancels":
            # A million small legal messages in each frame: CANCELs of calls that do not exist.
            frame = _frame(pack(Kind.CANCEL, 10**12 + i) for i in range(count))
            for _ in range(3):
                zmq.Socket.send(channel, frame)
        elif kind == "streams":  # opened without credit: each would hold a task forever
            zmq.Socket.send(
                channel,
                _frame(
                    pack(Kind.STREAM_OPEN, 2 * 10**12 + i, "ticker", "ticks", [], {}, 0)
                    for i in range(count)
                ),
            )
        elif kind == "calls":
            zmq.Socket.send(
                channel,
                _frame(
                    pack(Kind.CALL, 3 * 10**12 + i, "ticker", "hold", [], {}) for i in range(count)
                ),
            )
        elif kind == "logs":  # a new logger name and a hostile level for each
            zmq.Socket.send(
                channel,
                _frame(
                    pack(
                        Kind.CONTROL,
                        0,
                        "log",
                        {"event": "x", "logger": f"evil.{i}", "level": "__class__"},
                    )
                    for i in range(count)
                ),
            )
        else:
            raise ValueError(kind)

    async def garbage(self, kind: str) -> None:
        channel = _channel()
        if kind == "oversized":  # 128 MiB in one frame
            zmq.Socket.send(channel, b"\x91" + b"\x00" * (128 * 1024 * 1024))
        elif kind == "timestamp":  # msgpack's timestamp extension, refused like the others
            message = msgpack.packb([1, int(Kind.CONTROL), 0, "log", msgpack.Timestamp(1, 0)])
            zmq.Socket.send(channel, b"\x91" + message)
        else:
            raise ValueError(kind)


def _frame(messages: Any) -> bytes:
    (frame,) = build_frames(list(messages), 1 << 30)
    return frame


def _channel() -> zmq.Socket[Any]:
    """This child's channel socket, found the hard way (as hostile code would)."""
    sockets = [
        obj
        for obj in gc.get_objects()
        if isinstance(obj, zmq.asyncio.Socket)
        and not obj.closed
        and obj.get(zmq.LAST_ENDPOINT).startswith(b"ipc://")
    ]
    assert len(sockets) == 1, sockets
    return sockets[0]


# -- the attempts ---------------------------------------------------------------------------


def _syscall(number: int, *args: int) -> int:
    result = _libc.syscall(ctypes.c_long(number), *(ctypes.c_long(a) for a in args))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(result)


def _read(path: str) -> str:
    with open(path, "rb") as f:
        return f.read(40).decode(errors="replace")


def _write(path: str) -> int:
    with open(path, "w") as f:
        return f.write("escaped")


def _connect_unix(path: str) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)


def _tcp(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def _tcp_to(endpoint: list[Any]) -> None:
    with socket.create_connection((endpoint[0], endpoint[1]), timeout=2):
        pass


def _listen(_: Any) -> int:
    with socket.create_server(("127.0.0.1", 0)) as server:
        return int(server.getsockname()[1])


def _udp(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"leak", ("127.0.0.1", port))


def _ptrace(pid: int) -> int:
    return _syscall(101, 16, pid, 0, 0)  # PTRACE_ATTACH


def _vm_read(pid: int) -> int:
    class IoVec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]

    buffer = ctypes.create_string_buffer(8)
    local = IoVec(ctypes.cast(buffer, ctypes.c_void_p), 8)
    remote = IoVec(0x400000, 8)
    return _syscall(310, pid, ctypes.addressof(local), 1, ctypes.addressof(remote), 1, 0)


def _pidfd_signal(pid: int) -> None:
    fd = os.pidfd_open(pid)
    try:
        signal.pidfd_send_signal(fd, 0)
    finally:
        os.close(fd)


def _fork(_: Any) -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def _thread(_: Any) -> str:
    ran: list[str] = []
    worker = threading.Thread(target=lambda: ran.append("ran"))
    worker.start()
    worker.join()
    return ran[0]


def _open_many(_: Any) -> int:
    files = []
    try:
        for _ in range(MAX_OPEN_FILES * 4):
            files.append(open(os.devnull, "rb"))  # noqa: SIM115
    finally:
        for f in files:
            f.close()
    return len(files)


def _big_file(scratch: str) -> int:
    with open(os.path.join(scratch, "big"), "wb") as f:
        return f.write(b"x" * (MAX_FILE_MB + 1) * 1024 * 1024)


def _capabilities(_: Any) -> tuple[int, int]:
    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [
            ("effective", ctypes.c_uint32),
            ("permitted", ctypes.c_uint32),
            ("inheritable", ctypes.c_uint32),
        ]

    data = (Data * 2)()
    if _libc.capget(ctypes.byref(Header(0x20080522, 0)), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    return data[0].effective | data[1].effective, data[0].permitted | data[1].permitted


def _find_secret(secret: str) -> int:
    """Look for a value everywhere this process can: its environment and every live string."""
    found = sum(secret in value for value in os.environ.values())
    found += sum(1 for obj in gc.get_objects() if isinstance(obj, str) and secret in obj)
    return found


ATTEMPTS: dict[str, Callable[[Any], Any]] = {
    "signal the runtime": lambda pid: os.kill(pid, 0),
    "signal its zygote": lambda _: os.kill(os.getppid(), 0),
    "signal a sibling": lambda pid: os.kill(pid, 0),
    "signal its process group": lambda _: os.kill(0, 0),
    "signal through a pidfd": _pidfd_signal,
    "ptrace the runtime": _ptrace,
    "read the runtime's memory": _vm_read,
    "read the runtime's environment": lambda pid: _read(f"/proc/{pid}/environ"),
    "read its own environment block": lambda _: _read("/proc/self/environ"),
    "read a file": _read,
    "list a directory": lambda path: os.listdir(path),
    "write a file": _write,
    "connect to a unix socket": _connect_unix,
    "connect to an abstract socket": lambda name: _connect_unix("\0" + name),
    "open a tcp connection": _tcp,
    "send a udp datagram": _udp,
    "connect to a host": _tcp_to,
    "listen on a tcp port": _listen,
    "resolve a host name": lambda host: socket.getaddrinfo(host, 443),
    "run a program": lambda _: subprocess.run(["/bin/true"], check=True),
    "exec a program": lambda _: os.execv("/bin/true", ["true"]),
    "fork": _fork,
    "start a thread": _thread,
    "load a kernel module": lambda _: _syscall(175, 0, 0, 0),  # init_module
    "make a user namespace": lambda _: _syscall(272, 0x10000000),  # unshare(CLONE_NEWUSER)
    "mount": lambda _: _syscall(165, 0, 0, 0, 0, 0),
    "set up io_uring": lambda _: _syscall(425, 8, 0),
    "raise its file limit": lambda _: resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096)),
    "open many files": _open_many,
    "write a huge file": _big_file,
    "write in its scratch directory": lambda scratch: _write(os.path.join(scratch, "mine")),
    "no_new_privs": lambda _: _libc.prctl(39, 0, 0, 0, 0),  # PR_GET_NO_NEW_PRIVS
    "dumpable": lambda _: _libc.prctl(3, 0, 0, 0, 0),  # PR_GET_DUMPABLE
    "capabilities": _capabilities,
    "environment": lambda _: dict(os.environ),
    "find the secret": _find_secret,
}


class Vendor(Resource, isolated=Isolation(memory_mb=512)):
    """A vendor's class as written, isolated but not sandboxed: the operator sandboxes it."""

    async def attempt(self, name: str, target: Any = None) -> str:
        return await Hostile.attempt(self, name, target)  # type: ignore[arg-type]


class Plain(Resource):
    """Not even isolated: a sandbox set by the operator isolates it too."""

    async def attempt(self, name: str, target: Any = None) -> str:
        return await Hostile.attempt(self, name, target)  # type: ignore[arg-type]
