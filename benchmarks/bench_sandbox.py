"""Sandboxed children beside plain isolated ones, and a flood of legal messages from a child.

Every figure is measured in the same run, on the same machine, against a plain isolated child
doing the same work, and printed as one table (row, sandboxed, plain, ratio, target):

- start to READY: ``spawn()`` until it returns a READY child, with the zygote's warm spare, for
  a child of the component's sandbox zygote vs one of the runtime's zygote. Target: <= 1.3x.
  Printed apart: what starting each zygote costs once (the sandbox zygote is a fresh
  interpreter that enters the sandbox and imports the program; the runtime's is a fork).
- proxied call round trip: the parent calls a method of the child (a short string argument and
  result), one call at a time; median. Target: <= 1.05x.
- idle memory: USS of an idle child, and of each zygote.
- parent event-loop lag while one (sandboxed) child floods the parent with legal messages —
  frames of a million CANCELs, 20,000 streams opened without credit, 5,000 calls that never
  answer, 20,000 log events: how late a callback scheduled every millisecond runs, p99 and max.
  Baseline: the same probe while the child is idle. Target: max <= 10 ms. Beside it, the longest
  piece of work the parent did in one go for the flood, in its own thread's CPU time: what the
  protocol's slices bound (the rest of a late callback is the machine's other threads and
  processes having the CPU).

Figures and baselines are measured alternately, so that both see the same load on a shared
machine. Everything listens on ipc:// in a private temporary directory.

Run: ``scripts/bench sandbox`` (or ``python benchmarks/bench_sandbox.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil
import zmq
import zmq.asyncio

# Run as a script, this file's directory is on sys.path, not the project's; put the project's
# first so that its packages are found however the project is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isolation import ChildSpec, Isolation, Sandbox, Zygote, spawn
from isolation._protocol import Kind, build_frames, pack
from isolation._rpc import Peer
from isolation._sandbox.kernel import probe_kernel
from isolation._transport import Transport
from minions.isolated.sandboxes import start_sandbox

ROUNDS = 15  # spawns of each kind
CALLS = 2000  # timed sequential calls per child, in blocks alternating between the two
BLOCK = 200
WARMUP = 200
#: Quiet time after a spawn, for the zygote to make its next spare (it waits 50 ms).
SPARE_SETTLE_SECONDS = 0.2
FLOOD = {"cancels": 1_000_000, "streams": 20_000, "calls": 5_000, "logs": 20_000}


class Service:
    """What the parent serves the child: a call that never answers, a stream never credited."""

    async def hold(self) -> None:
        await asyncio.Event().wait()

    async def ticks(self) -> AsyncIterator[int]:
        while True:
            yield 1
            await asyncio.sleep(1)


class Worker:
    """The component under test, plain or sandboxed."""

    def __init__(self, proxies: object, payload: object) -> None:
        pass

    async def echo(self, value: str) -> str:
        return value

    async def flood(self, kind: str, count: int) -> None:
        """Write legal messages behind the wire layer's back, as hostile code could."""
        channel = _channel()
        base = 10**12 * (1 + list(FLOOD).index(kind))
        if kind == "cancels":
            frame = _frame(pack(Kind.CANCEL, base + i) for i in range(count))
            for _ in range(3):
                zmq.Socket.send(channel, frame)
            return
        if kind == "streams":
            messages = (
                pack(Kind.STREAM_OPEN, base + i, "svc", "ticks", [], {}, 0) for i in range(count)
            )
        elif kind == "calls":
            messages = (pack(Kind.CALL, base + i, "svc", "hold", [], {}) for i in range(count))
        else:
            messages = (
                pack(Kind.CONTROL, 0, "log", {"event": "x", "logger": f"n{i}", "level": "info"})
                for i in range(count)
            )
        zmq.Socket.send(channel, _frame(messages))


def _frame(messages: Any) -> bytes:
    (frame,) = build_frames(list(messages), 1 << 30)
    return frame


def _channel() -> zmq.Socket[Any]:
    return next(
        obj
        for obj in gc.get_objects()
        if isinstance(obj, zmq.asyncio.Socket)
        and not obj.closed
        and obj.get(zmq.LAST_ENDPOINT).startswith(b"ipc://")
    )


def _spec(sandbox: Sandbox | None) -> ChildSpec:
    return ChildSpec(
        "Worker",
        "__main__:Worker",
        services={"svc": "__main__:Service"},
        payload={"component": "__main__:Worker"},
        isolation=Isolation(sandbox=sandbox),
    )


PLAIN, SANDBOXED = _spec(None), _spec(Sandbox())


def _quiet(*args: object) -> None:
    return None


def _start(zygote: Zygote, spec: ChildSpec) -> Any:
    return spawn(zygote, spec, {"svc": Service()}, on_output=_quiet, on_log=_quiet)


async def start_to_ready(zygote: Zygote, spec: ChildSpec) -> float:
    await asyncio.sleep(SPARE_SETTLE_SECONDS)  # the spare is ready again, as in a real restart
    started = time.perf_counter()
    child = await _start(zygote, spec)
    elapsed = time.perf_counter() - started
    await child.stop()
    return elapsed


async def round_trips(proxy: Any, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        await proxy.echo("ETH/USD@3012.25")
        times.append(time.perf_counter() - started)
    return times


def uss(pid: int) -> int:
    return int(psutil.Process(pid).memory_full_info().uss)


class LagProbe:
    """Records how late a callback scheduled every millisecond runs."""

    def __init__(self) -> None:
        self.samples: list[float] = []

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.001
            await asyncio.sleep(0.001)
            self.samples.append(loop.time() - due)


@contextlib.contextmanager
def longest_work() -> Any:
    """The longest call, in this thread's CPU time, of what handles a channel's frames."""
    longest = [0.0]
    originals = [(Transport, "_on_readable"), (Peer, "_handle_rest")]
    saved = [getattr(owner, name) for owner, name in originals]

    def timed(method: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(self: Any, *args: Any) -> Any:
            started = time.thread_time()
            try:
                return method(self, *args)
            finally:
                longest[0] = max(longest[0], time.thread_time() - started)

        return wrapper

    for (owner, name), method in zip(originals, saved, strict=True):
        setattr(owner, name, timed(method))
    try:
        yield longest
    finally:
        for (owner, name), method in zip(originals, saved, strict=True):
            setattr(owner, name, method)


async def lag_during(action: Callable[[], Any], seconds: float) -> list[float]:
    probe = LagProbe()
    task = asyncio.ensure_future(probe.run())
    try:
        started = time.perf_counter()
        await action()
        await asyncio.sleep(max(0.0, seconds - (time.perf_counter() - started)))
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return probe.samples


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


def row(name: str, ours: str, base: str, ratio: str, target: str) -> None:
    print(f"{name:52s} {ours:>14s} {base:>14s} {ratio:>8s}  {target}")


async def main(project: Path) -> None:
    run_dir = project / ".minions" / "run"
    started = time.perf_counter()
    plain_zygote = Zygote.start(run_dir=run_dir)
    plain_boot = time.perf_counter() - started
    started = time.perf_counter()
    sandbox_zygote = await start_sandbox(
        SANDBOXED, project_dir=project, run_dir=run_dir, on_output=_quiet
    )
    sandbox_boot = time.perf_counter() - started
    try:
        kinds = [(sandbox_zygote, SANDBOXED), (plain_zygote, PLAIN)]
        for zygote, spec in kinds:  # warm both paths once
            await start_to_ready(zygote, spec)
        starts: dict[str, list[float]] = {"sandboxed": [], "plain": []}
        for _ in range(ROUNDS):
            for (zygote, spec), name in zip(kinds, starts, strict=True):
                starts[name].append(await start_to_ready(zygote, spec))
        children = [await _start(zygote, spec) for zygote, spec in kinds]
        gc.freeze()  # as run() does once the system has started
        proxies = [child.proxy(Worker) for child in children]
        for proxy in proxies:
            await round_trips(proxy, WARMUP)
        rtts: list[list[float]] = [[], []]
        for _ in range(CALLS // BLOCK):
            for index, proxy in enumerate(proxies):
                rtts[index] += await round_trips(proxy, BLOCK)
        await asyncio.sleep(0.5)  # idle
        memory = [uss(child.pid) for child in children]
        zygote_memory = [uss(sandbox_zygote.pid), uss(plain_zygote.pid)]
        with longest_work() as idle_work:
            idle = await lag_during(lambda: asyncio.sleep(0), 2.0)

        async def flood() -> None:
            for kind, count in FLOOD.items():
                await proxies[0].flood(kind, count)
            await proxies[0].echo("after the flood")  # answered after all it sent before

        with longest_work() as flood_work:
            flooded = await lag_during(flood, 2.0)
        for child in children:
            await child.stop()
    finally:
        await sandbox_zygote.aclose()
        await plain_zygote.aclose()

    kernel = probe_kernel()
    print(
        f"\nbench_sandbox: medians; {os.cpu_count()} CPUs; Python {sys.version.split()[0]}; "
        f"Landlock ABI {kernel.landlock_abi}; {'root' if os.geteuid() == 0 else 'not root'}"
    )
    row("row", "sandboxed", "plain", "ratio", "target")
    ours, base = statistics.median(starts["sandboxed"]), statistics.median(starts["plain"])
    row(
        "start to READY (warm spare)",
        f"{ours * 1e3:.2f} ms",
        f"{base * 1e3:.2f} ms",
        f"{ours / base:.2f}x",
        "<= 1.3x",
    )
    ours, base = statistics.median(rtts[0]), statistics.median(rtts[1])
    row(
        "proxied call round trip",
        f"{ours * 1e6:.1f} us",
        f"{base * 1e6:.1f} us",
        f"{ours / base:.2f}x",
        "<= 1.05x",
    )
    row(
        "idle child USS",
        f"{memory[0] / 2**20:.1f} MiB",
        f"{memory[1] / 2**20:.1f} MiB",
        f"{memory[0] / memory[1]:.2f}x",
        "",
    )
    row(
        "zygote USS (once per sandboxed component / system)",
        f"{zygote_memory[0] / 2**20:.1f} MiB",
        f"{zygote_memory[1] / 2**20:.1f} MiB",
        f"{zygote_memory[0] / zygote_memory[1]:.2f}x",
        "",
    )
    row(
        "zygote start (once per sandboxed component / system)",
        f"{sandbox_boot * 1e3:.0f} ms",
        f"{plain_boot * 1e3:.1f} ms",
        f"{sandbox_boot / plain_boot:.0f}x",
        "",
    )
    print(f"\nparent event-loop lag while one child floods it ({', '.join(FLOOD)}):")
    row("row", "flood", "idle", "", "target")
    row("lag p99", f"{p99(flooded) * 1e3:.2f} ms", f"{p99(idle) * 1e3:.2f} ms", "", "")
    row("lag max", f"{max(flooded) * 1e3:.2f} ms", f"{max(idle) * 1e3:.2f} ms", "", "<= 10 ms")
    row(
        "longest work for the channel in one go (CPU)",
        f"{flood_work[0] * 1e3:.2f} ms",
        f"{idle_work[0] * 1e3:.2f} ms",
        "",
        "",
    )


if __name__ == "__main__":
    logging.disable(logging.CRITICAL)
    directory = Path(tempfile.mkdtemp(prefix="bench-sandbox-"))
    try:
        asyncio.run(main(directory))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
