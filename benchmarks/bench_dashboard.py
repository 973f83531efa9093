"""The dashboard: how soon a crash reaches an open page, and what following a system costs.

Each figure is printed beside a floor measured in the same run on the same machine, and as a
ratio to it:

- crash -> on the page: SIGKILL an isolated child of a system serving its own dashboard, until
  the page's event stream (read over loopback TCP, as a browser would) delivers the ``crashed``
  event. Floor: the same crash until the runtime's own lifecycle listener hears it (the
  supervisor has handled it; everything after is the dashboard's).
- one sample: a ``telemetry`` request over the control socket (what ``minions dashboard`` asks
  once a second: the status with the raw metric readings). Floor: a ``status`` request.
- following a system: CPU time of the system's process over a few seconds while it serves its
  dashboard to one open page. Floor: the same system with its control socket only.

Run: ``scripts/bench dashboard`` (or ``python benchmarks/bench_dashboard.py``).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

# Run as a script, this file's directory is on sys.path, not the project's; put the project's
# first so that its packages are found however the project is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minions import (
    Backoff,
    ControlServer,
    Dashboard,
    Intensity,
    LifecycleEvent,
    MetricsEndpoint,
    Minion,
    Resource,
    Runtime,
)
from minions.core.logs import configure_logging
from minions.ops.client import AsyncControlClient

CRASHES = 10
REQUESTS = 200
CPU_SECONDS = 10.0


class Store(Resource):
    async def get(self, key: str) -> int:
        return len(key)


class Vendor(
    Minion,
    isolated=True,
    backoff=Backoff(initial=0.01, factor=1.0, cap=0.01, jitter=0.0),
    intensity=Intensity(max_restarts=10 * CRASHES, within=60.0),
):
    """An isolated minion calling back into the parent, as a strategy would."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def run(self) -> None:
        while True:
            await self._store.get("price")
            await asyncio.sleep(0.01)


class Local(Minion):
    def __init__(self, store: Store) -> None:
        self._store = store

    async def run(self) -> None:
        await asyncio.Event().wait()


async def _open_stream(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    found = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/#token=([\w-]+)", url)
    assert found, url
    port, token = int(found.group(1)), found.group(2)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /api/events?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    )
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    return reader, writer


async def _until_crash_frame(reader: asyncio.StreamReader) -> None:
    event = ""
    while True:
        line = (await reader.readline()).decode()
        if line.startswith("event: "):
            event = line[7:].strip()
        elif line.startswith("data: ") and event == "lifecycle" and '"kind":"crashed"' in line:
            return


async def crash_to_page(project: Path) -> tuple[list[float], list[float]]:
    control = ControlServer()
    dashboard = Dashboard(control)
    heard: asyncio.Queue[float] = asyncio.Queue()
    started: asyncio.Queue[int] = asyncio.Queue()

    def listener(event: LifecycleEvent) -> None:
        if event.kind == "crashed":
            heard.put_nowait(time.perf_counter())
        elif event.kind == "started" and event.pid is not None:
            started.put_nowait(event.pid)

    floor, ours = [], []
    async with Runtime(project_dir=project, extensions=[control, dashboard]) as runtime:
        runtime.add_lifecycle_listener(listener)
        await runtime.start(Vendor)
        assert dashboard.private_url is not None
        reader, writer = await _open_stream(dashboard.private_url)
        try:
            for _ in range(CRASHES):
                pid = await started.get()  # (re)started by its policy
                began = time.perf_counter()
                os.kill(pid, signal.SIGKILL)
                await _until_crash_frame(reader)
                arrived = time.perf_counter()
                floor.append(await heard.get() - began)
                ours.append(arrived - began)
        finally:
            writer.close()
    return floor, ours


async def request_times(project: Path) -> tuple[list[float], list[float]]:
    control = ControlServer()
    client = AsyncControlClient(project)
    status, telemetry = [], []
    async with Runtime(project_dir=project, extensions=[MetricsEndpoint(None), control]) as rt:
        await rt.start(Vendor, Local)
        await asyncio.sleep(0.5)  # some calls measured: the readings have something in them
        for _ in range(REQUESTS):
            for op, times in (("status", status), ("telemetry", telemetry)):
                began = time.perf_counter()
                await client.request(op)
                times.append(time.perf_counter() - began)
    client.close()
    return status, telemetry


async def cpu_following(project: Path, dashboard: bool) -> float:
    control = ControlServer()
    extensions: list[object] = [MetricsEndpoint(None), control]
    served = Dashboard(control) if dashboard else None
    if served is not None:
        extensions.append(served)
    me = psutil.Process()
    async with Runtime(project_dir=project, extensions=extensions) as rt:  # type: ignore[arg-type]
        await rt.start(Vendor, Local)
        stream = None
        if served is not None:
            assert served.private_url is not None
            stream = await _open_stream(served.private_url)
            drain = asyncio.ensure_future(stream[0].read(-1))
        await asyncio.sleep(1.0)
        before = me.cpu_times()
        await asyncio.sleep(CPU_SECONDS)
        after = me.cpu_times()
        if stream is not None:
            drain.cancel()
            stream[1].close()
    return (after.user + after.system) - (before.user + before.system)


def _ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:8.2f} ms"


def main() -> None:
    configure_logging(project_dir=None, level="critical")  # the crashes would bury the table
    with tempfile.TemporaryDirectory() as folder:
        floor, ours = asyncio.run(crash_to_page(Path(folder) / "a"))
        print(f"crash -> on the page (median of {CRASHES})")
        print(f"  runtime's listener hears it   {_ms(floor)}")
        print(
            f"  the page's event stream has it {_ms(ours)}   "
            f"ratio {statistics.median(ours) / statistics.median(floor):.1f}x"
        )
        status, telemetry = asyncio.run(request_times(Path(folder) / "b"))
        print(f"one sample over the control socket (median of {REQUESTS})")
        print(f"  status                        {_ms(status)}")
        print(
            f"  telemetry                     {_ms(telemetry)}   "
            f"ratio {statistics.median(telemetry) / statistics.median(status):.1f}x"
        )
        without = asyncio.run(cpu_following(Path(folder) / "c", dashboard=False))
        served = asyncio.run(cpu_following(Path(folder) / "d", dashboard=True))
        print(f"CPU of the system's process over {CPU_SECONDS:g} s")
        print(
            f"  control socket only           {without * 1000:8.1f} ms "
            f"({100 * without / CPU_SECONDS:.1f} %)"
        )
        print(
            f"  + dashboard, one page open    {served * 1000:8.1f} ms "
            f"({100 * served / CPU_SECONDS:.1f} %)   ratio {served / without:.2f}x"
        )


if __name__ == "__main__":
    main()
