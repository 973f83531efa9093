"""The isolation wire: proxied calls and streams between two processes, beside their floors.

Every figure is measured in the same run, on the same machine, against a baseline doing the
same work, and printed as one table (row, ours, baseline, ratio):

- call round trip: an asyncio child calls a method served by its asyncio parent through a
  proxy (a short string argument and result, validated against the annotations), one call at a
  time. Floor: raw pyzmq asyncio REQ/REP over ipc:// between two processes, same payload.
  Median of individual calls. Target: ratio <= 1.3.

Figures and floors are measured alternately, three times each, and the medians compared: on a
shared machine the load changes between runs, and alternating exposes both to it alike.
- pipelined calls: the same call with 64 in flight (64 coroutines calling in a loop). Floor:
  raw asyncio DEALER/ROUTER with 64 in flight (futures resolved by a reader task). Target:
  ratio >= 3, from coalescing every message of a loop pass into one ZeroMQ message.
- stream items: a proxied async generator, consumed as fast as possible, and by a slow
  consumer (about 50 us of work per item). Floors: raw DEALER messages pushed without flow
  control; the same slow consumer reading a local async generator.
- the same call through multiprocessing.managers (sync, pickle), Pyro5 with its msgpack
  serializer and a Ray actor, each as installed (``not available`` otherwise); they are
  baselines for comparison only, never dependencies of Minions.

Children are spawned by this script (``--child``) and stopped before it exits; everything
listens on ipc:// in a private temporary directory or on 127.0.0.1.

Run: ``scripts/bench rpc`` (or ``python benchmarks/bench_rpc.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio

# Run as a script, this file's directory is on sys.path, not the project's.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from isolation import Peer  # noqa: E402

PAYLOAD = "ETH/USD@3012.25"
CALLS = 3000  # timed sequential calls per transport (after WARMUP)
WARMUP = 500
IN_FLIGHT = 64
PIPELINED_CALLS = 20_000  # per round
ROUNDS = 3  # timed rounds per throughput figure, within one child
REPEATS = 3  # each figure and its floor, measured alternately
STREAM_ITEMS = 50_000
SLOW_ITEMS = 5_000
SLOW_WORK_SECONDS = 50e-6


class Bench:
    """The resource the parent serves."""

    async def echo(self, value: str) -> str:
        return value

    async def ticks(self, count: int) -> AsyncIterator[int]:
        for index in range(count):
            yield index


def busy(seconds: float) -> None:
    """The slow consumer's work: CPU, not sleep, so it is the same with and without a wire."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


# -- child side ---------------------------------------------------------------------------------


async def child_raw_reqrep(endpoint: str) -> dict[str, float]:
    context = zmq.asyncio.Context()
    socket = context.socket(zmq.REQ)
    socket.connect(endpoint)
    payload = PAYLOAD.encode()
    samples = []
    for index in range(WARMUP + CALLS):
        start = time.perf_counter()
        await socket.send(payload)
        await socket.recv()
        if index >= WARMUP:
            samples.append(time.perf_counter() - start)
    await socket.send(b"stop")
    await socket.recv()
    socket.close(linger=0)
    context.term()
    return {"us": median_us(samples)}


async def child_raw_pipelined(endpoint: str) -> dict[str, float]:
    context = zmq.asyncio.Context()
    socket = context.socket(zmq.DEALER)
    socket.connect(endpoint)
    loop = asyncio.get_running_loop()
    waiting: dict[bytes, asyncio.Future[bytes]] = {}
    payload = PAYLOAD.encode()

    async def reader() -> None:
        while True:
            key, value = await socket.recv_multipart()
            waiting.pop(key).set_result(value)

    async def worker(worker_id: int, calls: int) -> None:
        for index in range(calls):
            key = f"{worker_id}:{index}".encode()
            future = waiting[key] = loop.create_future()
            await socket.send_multipart([key, payload])
            await future

    reading = asyncio.create_task(reader())
    rates = []
    for round_ in range(ROUNDS + 1):
        start = time.perf_counter()
        per_worker = PIPELINED_CALLS // IN_FLIGHT
        await asyncio.gather(*(worker(w, per_worker) for w in range(IN_FLIGHT)))
        if round_:  # the first round warms up
            rates.append(per_worker * IN_FLIGHT / (time.perf_counter() - start))
    reading.cancel()
    await socket.send_multipart([b"stop", b""])
    socket.close(linger=0)
    context.term()
    return {"per_s": statistics.median(rates)}


async def child_raw_stream(endpoint: str) -> dict[str, float]:
    context = zmq.asyncio.Context()
    socket = context.socket(zmq.DEALER)
    socket.connect(endpoint)
    rates = []
    for _ in range(ROUNDS):
        await socket.send(str(STREAM_ITEMS).encode())
        start = time.perf_counter()
        while await socket.recv() != b"end":
            pass
        rates.append(STREAM_ITEMS / (time.perf_counter() - start))
    await socket.send(b"stop")
    socket.close(linger=0)
    context.term()
    return {"per_s": statistics.median(rates)}


@contextlib.asynccontextmanager
async def child_peer(endpoint: str) -> AsyncIterator[Any]:
    context = zmq.asyncio.Context()
    socket = context.socket(zmq.PAIR)
    socket.connect(endpoint)
    peer = Peer(socket, component="bench-parent")
    run = asyncio.create_task(peer.run())
    try:
        yield peer.proxy("bench", Bench)
    finally:
        peer.send_control("done")
        await peer.aclose()
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        socket.close(linger=1000)
        context.term()


async def child_peer_call(endpoint: str) -> dict[str, float]:
    async with child_peer(endpoint) as bench:
        samples = []
        for index in range(WARMUP + CALLS):
            start = time.perf_counter()
            await bench.echo(PAYLOAD)
            if index >= WARMUP:
                samples.append(time.perf_counter() - start)
        return {"us": median_us(samples)}


async def child_peer_pipelined(endpoint: str) -> dict[str, float]:
    async with child_peer(endpoint) as bench:

        async def worker(calls: int) -> None:
            for _ in range(calls):
                await bench.echo(PAYLOAD)

        rates = []
        for round_ in range(ROUNDS + 1):
            per_worker = PIPELINED_CALLS // IN_FLIGHT
            start = time.perf_counter()
            await asyncio.gather(*(worker(per_worker) for _ in range(IN_FLIGHT)))
            if round_:
                rates.append(per_worker * IN_FLIGHT / (time.perf_counter() - start))
        return {"per_s": statistics.median(rates)}


async def child_peer_stream(endpoint: str) -> dict[str, float]:
    async with child_peer(endpoint) as bench:
        fast, slow = [], []
        for _ in range(ROUNDS):
            start = time.perf_counter()
            async for _item in bench.ticks(STREAM_ITEMS):
                pass
            fast.append(STREAM_ITEMS / (time.perf_counter() - start))
        for _ in range(ROUNDS):
            start = time.perf_counter()
            async for _item in bench.ticks(SLOW_ITEMS):
                busy(SLOW_WORK_SECONDS)
            slow.append(SLOW_ITEMS / (time.perf_counter() - start))
        return {"fast_per_s": statistics.median(fast), "slow_per_s": statistics.median(slow)}


def child_pyro(_endpoint: str) -> None:
    import Pyro5.api  # type: ignore[import-untyped,unused-ignore]

    Pyro5.config.SERIALIZER = "msgpack"

    @Pyro5.api.expose  # type: ignore[misc,unused-ignore]
    class PyroEcho:
        def echo(self, value: str) -> str:
            return value

    daemon = Pyro5.api.Daemon(host="127.0.0.1")
    uri = daemon.register(PyroEcho())
    print(json.dumps({"uri": str(uri)}), flush=True)
    daemon.requestLoop()


CHILDREN: dict[str, Callable[[str], Any]] = {
    "raw-reqrep": child_raw_reqrep,
    "raw-pipelined": child_raw_pipelined,
    "raw-stream": child_raw_stream,
    "peer-call": child_peer_call,
    "peer-pipelined": child_peer_pipelined,
    "peer-stream": child_peer_stream,
}


def child_main(mode: str, endpoint: str) -> None:
    if mode == "pyro":
        child_pyro(endpoint)
        return
    result = asyncio.run(CHILDREN[mode](endpoint))
    print(json.dumps(result), flush=True)


# -- parent side --------------------------------------------------------------------------------


async def run_child(mode: str, endpoint: str, serve: Callable[[], Any]) -> dict[str, float]:
    """Start the child for ``mode``, serve it until it exits, return what it measured."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--child", mode, endpoint, stdout=subprocess.PIPE, cwd=ROOT
    )
    serving = asyncio.ensure_future(serve())
    try:
        assert process.stdout is not None
        out = await process.stdout.read()
        await process.wait()
        if process.returncode != 0:
            raise RuntimeError(f"child {mode} failed with exit code {process.returncode}")
        result: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
        await asyncio.wait_for(serving, 10)
        return result
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)


async def serve_raw_rep(socket: zmq.asyncio.Socket) -> None:
    while True:
        message = await socket.recv()
        await socket.send(message)
        if message == b"stop":
            return


async def serve_raw_router(socket: zmq.asyncio.Socket) -> None:
    while True:
        identity, key, value = await socket.recv_multipart()
        if key == b"stop":
            return
        await socket.send_multipart([identity, key, value])


async def serve_raw_stream(socket: zmq.asyncio.Socket) -> None:
    item = b"\x92\x06\x01"  # a small msgpack value, like a stream item
    while True:
        request = await socket.recv()
        if request == b"stop":
            return
        for _ in range(int(request)):
            await socket.send(item)
        await socket.send(b"end")


async def serve_peer(socket: zmq.asyncio.Socket) -> None:
    done = asyncio.Event()
    peer = Peer(socket, component="bench-child", on_control=lambda kind, body: done.set())
    peer.serve("bench", Bench(), Bench)
    run = asyncio.create_task(peer.run())
    try:
        await done.wait()
    finally:
        await peer.aclose()
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)


async def measure(mode: str, socket_type: int, serve: Callable[[Any], Any], ipc: Path) -> Any:
    context = zmq.asyncio.Context()
    socket = context.socket(socket_type)
    endpoint = f"ipc://{ipc}/{mode}"
    socket.bind(endpoint)
    try:
        return await run_child(mode, endpoint, lambda: serve(socket))
    finally:
        socket.close(linger=0)
        context.term()


async def slow_local_floor() -> float:
    bench = Bench()
    start = time.perf_counter()
    async for _ in bench.ticks(SLOW_ITEMS):
        busy(SLOW_WORK_SECONDS)
    return SLOW_ITEMS / (time.perf_counter() - start)


# -- third-party baselines (never dependencies) -------------------------------------------------


class ManagedEcho:
    def echo(self, value: str) -> str:
        return value


def managers_call_us() -> float:
    from multiprocessing.managers import BaseManager

    class Manager(BaseManager):
        pass

    Manager.register("Echo", ManagedEcho)
    manager = Manager(address=("127.0.0.1", 0))
    manager.start()
    try:
        echo = manager.Echo()  # type: ignore[attr-defined]
        return sequential_us(lambda: echo.echo(PAYLOAD))
    finally:
        manager.shutdown()


def sequential_us(call: Callable[[], Any]) -> float:
    samples = []
    for index in range(WARMUP + CALLS):
        start = time.perf_counter()
        call()
        if index >= WARMUP:
            samples.append(time.perf_counter() - start)
    return median_us(samples)


def pyro_call_us() -> float | None:
    try:
        import Pyro5.api  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return None
    Pyro5.config.SERIALIZER = "msgpack"
    process = subprocess.Popen(
        [sys.executable, __file__, "--child", "pyro", "-"], stdout=subprocess.PIPE, cwd=ROOT
    )
    try:
        assert process.stdout is not None
        uri = json.loads(process.stdout.readline())["uri"]
        with Pyro5.api.Proxy(uri) as proxy:
            return sequential_us(lambda: proxy.echo(PAYLOAD))
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def ray_call_us() -> float | None:
    try:
        import ray
    except ImportError:
        return None

    @ray.remote
    class RayEcho:
        def echo(self, value: str) -> str:
            return value

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        _node_ip_address="127.0.0.1",
    )
    try:
        actor = RayEcho.remote()  # type: ignore[attr-defined]
        return sequential_us(lambda: ray.get(actor.echo.remote(PAYLOAD)))
    finally:
        ray.shutdown()


# -- the table ----------------------------------------------------------------------------------


async def measure_wire(ipc: Path) -> dict[str, Any]:
    """Each figure beside its floor, alternating them REPEATS times so that a change of load on
    the machine hits both alike; the median of each is kept."""
    runs: dict[str, list[float]] = {}

    def keep(name: str, value: float) -> None:
        runs.setdefault(name, []).append(value)

    for _ in range(REPEATS):
        keep("raw_call", (await measure("raw-reqrep", zmq.REP, serve_raw_rep, ipc))["us"])
        keep("call", (await measure("peer-call", zmq.PAIR, serve_peer, ipc))["us"])
        raw = await measure("raw-pipelined", zmq.ROUTER, serve_raw_router, ipc)
        keep("raw_pipelined", raw["per_s"])
        keep("pipelined", (await measure("peer-pipelined", zmq.PAIR, serve_peer, ipc))["per_s"])
        raw = await measure("raw-stream", zmq.DEALER, serve_raw_stream, ipc)
        keep("raw_stream", raw["per_s"])
        stream = await measure("peer-stream", zmq.PAIR, serve_peer, ipc)
        keep("stream", stream["fast_per_s"])
        keep("slow_stream", stream["slow_per_s"])
        keep("slow_floor", await slow_local_floor())
    return {name: statistics.median(values) for name, values in runs.items()}


def row(name: str, ours: float | None, baseline: float | None, unit: str, target: str) -> str:
    def show(value: float | None) -> str:
        return "not available" if value is None else f"{value:,.1f} {unit}"

    ratio = "-" if ours is None or baseline is None else f"{ours / baseline:.2f}x"
    return f"{name:<44} {show(ours):>18} {show(baseline):>18} {ratio:>8}  {target}"


def main() -> None:
    ipc = Path(tempfile.mkdtemp(prefix="minions-bench-"))
    os.chmod(ipc, 0o700)
    try:
        figures = asyncio.run(measure_wire(ipc))
    finally:
        shutil.rmtree(ipc, ignore_errors=True)
    managers = managers_call_us()
    pyro = pyro_call_us()
    ray_us = ray_call_us()
    call = figures["call"]
    print(
        f"\nbench_rpc: medians; payload {PAYLOAD!r}; {os.cpu_count()} CPUs; "
        f"Python {sys.version.split()[0]}"
    )
    print(f"{'row':<44} {'ours':>18} {'baseline':>18} {'ratio':>8}  target")
    lines = [
        row("call round trip vs raw REQ/REP", call, figures["raw_call"], "us", "<= 1.3x"),
        row(
            f"pipelined calls, {IN_FLIGHT} in flight, vs raw DEALER/ROUTER",
            figures["pipelined"],
            figures["raw_pipelined"],
            "/s",
            ">= 3x",
        ),
        row(
            "stream items, fast consumer, vs raw push",
            figures["stream"],
            figures["raw_stream"],
            "/s",
            "(raw has no flow control)",
        ),
        row(
            "stream items, slow consumer, vs local gen",
            figures["slow_stream"],
            figures["slow_floor"],
            "/s",
            "~1x: the consumer is the limit",
        ),
        row("call round trip vs multiprocessing.managers", call, managers, "us", "lower is ours"),
        row("call round trip vs Pyro5 (msgpack)", call, pyro, "us", "lower is ours"),
        row("call round trip vs Ray actor", call, ray_us, "us", "lower is ours"),
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "--child":
        child_main(sys.argv[2], sys.argv[3])
    else:
        main()
