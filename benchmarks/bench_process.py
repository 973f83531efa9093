"""Isolated children: how fast a crash is seen, how fast a child is back, what an idle one costs.

Each figure is printed beside a floor measured in the same run on the same machine, and as a
ratio to it:

- crash -> detected: SIGKILL an isolated child, until ``wait()`` returns its ``ChildExit``
  (pidfd wake-up, zygote status, pending calls failed, channel closed). Floor: SIGKILL a bare
  forked child and wait for its pidfd to become readable on the event loop.
- crash -> restarted and READY: SIGKILL a child that has been running for a moment, see it
  die, spawn a new one, until ``spawn()`` returns. Floor: ``os.fork()`` until the child's first
  byte arrives over a pipe. Target: at most 2x. Measured twice: with the zygote's warm spare
  (the default) and with every child forked on demand (``Zygote.start(spare=False)``).
- idle memory: USS and RSS of an idle isolated child, and of the zygote's waiting spare. Floor:
  a bare forked child holding a ZeroMQ socket.

Run: ``scripts/bench process`` (or ``python benchmarks/bench_process.py``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import psutil
import zmq

# Run as a script, this file's directory is on sys.path, not the project's; put the project's
# first so that its packages are found however the project is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isolation import ChildSpec, Isolation, Zygote, spawn

ROUNDS = 30
#: How long a child runs before it is crashed: long enough for the zygote to make its spare.
RUNNING_SECONDS = 0.1
SPEC = ChildSpec(
    "Idle",
    "__main__:Idle",  # the zygote is forked after this module ran: the class is warm
    isolation=Isolation(heartbeat_interval=0.5, heartbeat_timeout=5.0),
)


class Idle:
    """The component under test: a resource that does nothing until it is stopped."""

    def __init__(self, proxies: object, payload: object) -> None:
        pass

    async def ping(self) -> str:
        return "pong"


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def _bare_fork(body: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:  # the bare child
        try:
            body()
        finally:
            os._exit(0)
    return pid


def _park() -> None:
    signal.pause()


async def floor_crash_detected() -> float:
    pid = _bare_fork(_park)
    pidfd = os.pidfd_open(pid)
    try:
        start = time.perf_counter()
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        await _readable(pidfd)
        elapsed = time.perf_counter() - start
    finally:
        os.close(pidfd)
        _reap(pid)
    return elapsed


async def floor_fork_first_message() -> float:
    read_end, write_end = os.pipe()
    start = time.perf_counter()
    pid = _bare_fork(lambda: os.write(write_end, b"!") and None)
    os.close(write_end)
    await _readable(read_end)
    os.read(read_end, 1)
    elapsed = time.perf_counter() - start
    os.close(read_end)
    _reap(pid)
    return elapsed


def _reap(pid: int) -> None:
    os.waitpid(pid, 0)


def floor_memory() -> tuple[int, int]:
    read_end, write_end = os.pipe()

    def hold_socket() -> None:
        context = zmq.Context()
        socket = context.socket(zmq.PAIR)
        socket.connect("ipc:///nonexistent/bench.sock")
        os.write(write_end, b"!")
        signal.pause()

    pid = _bare_fork(hold_socket)
    os.read(read_end, 1)
    try:
        info = psutil.Process(pid).memory_full_info()
        return info.uss, info.rss
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(read_end)
        os.close(write_end)


async def crash_detected(zygote: Zygote) -> float:
    child = await spawn(zygote, SPEC, {})
    start = time.perf_counter()
    os.kill(child.pid, signal.SIGKILL)
    await child.wait()
    return time.perf_counter() - start


async def crash_restarted(zygote: Zygote) -> float:
    child = await spawn(zygote, SPEC, {})
    await asyncio.sleep(RUNNING_SECONDS)
    start = time.perf_counter()
    os.kill(child.pid, signal.SIGKILL)
    await child.wait()
    replacement = await spawn(zygote, SPEC, {})
    elapsed = time.perf_counter() - start
    await replacement.stop()
    return elapsed


async def isolated_memory(zygote: Zygote) -> tuple[tuple[int, int], tuple[int, int]]:
    """(USS, RSS) of an idle isolated child, and of the zygote's spare."""
    child = await spawn(zygote, SPEC, {})
    await asyncio.sleep(RUNNING_SECONDS)
    try:
        info = psutil.Process(child.pid).memory_full_info()
        spares = [p for p in psutil.Process(zygote.pid).children() if p.pid != child.pid]
        spare = spares[0].memory_full_info() if spares else info
        return (info.uss, info.rss), (spare.uss, spare.rss)
    finally:
        await child.stop()


async def _median(measure: Callable[[], Awaitable[float]]) -> float:
    await measure()  # warm-up
    return statistics.median([await measure() for _ in range(ROUNDS)])


def _row(name: str, value: float, floor: float, unit: str = "ms", scale: float = 1e3) -> None:
    print(
        f"  {name:<34} {value * scale:9.2f} {unit}   floor {floor * scale:8.2f} {unit}"
        f"   ratio {value / floor:5.2f}x"
    )


async def main(run_dir: Path) -> None:
    print(f"bench_process: median of {ROUNDS} rounds, Python {sys.version.split()[0]}")
    zygote = Zygote.start(run_dir=run_dir)
    cold = Zygote.start(run_dir=run_dir, spare=False)
    try:
        detected = await _median(lambda: crash_detected(zygote))
        detected_floor = await _median(floor_crash_detected)
        _row("crash -> detected (ChildExit)", detected, detected_floor)
        fork_floor = await _median(floor_fork_first_message)
        restarted = await _median(lambda: crash_restarted(zygote))
        _row("crash -> restarted, READY (spare)", restarted, fork_floor)
        restarted_cold = await _median(lambda: crash_restarted(cold))
        _row("crash -> restarted, READY (fork)", restarted_cold, fork_floor)
        (uss, rss), (spare_uss, _) = await isolated_memory(zygote)
        floor_uss, floor_rss = floor_memory()
        _row("idle child memory (USS)", uss, floor_uss, "MiB", 1 / 2**20)
        _row("idle child memory (RSS)", rss, floor_rss, "MiB", 1 / 2**20)
        _row("waiting spare memory (USS)", spare_uss, floor_uss, "MiB", 1 / 2**20)
    finally:
        await zygote.aclose()
        await cold.aclose()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as run_dir:
        asyncio.run(main(Path(run_dir)))
