"""Operating replicas: what status, top and the metrics show of each replica, and scaling a
running system with ``minions scale``.

In-process tests embed a runtime with its ControlServer (the client's calls block, so they run
in a worker thread); the ``minions scale`` test drives a system in a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import urllib.request
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from isolation import Isolation
from minions import Resource, Runtime
from minions.ops.client import ControlClient
from minions.ops.control import ControlServer
from minions.ops.metrics import MetricsEndpoint
from minions.ops.top import render_status

from .conftest import System, cli, status_components, write_project

LIMIT = 30.0


class Shards(Resource, isolated=Isolation(replicas=2)):
    async def where(self) -> int:
        return os.getpid()


def _scrape(url: str | None) -> str:
    assert url is not None
    with urllib.request.urlopen(url, timeout=LIMIT) as response:
        text: str = response.read().decode()
        return text


def _samples(text: str, name: str) -> dict[tuple[str, str], float]:
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[(sample.labels["component"], sample.labels["replica"])] = sample.value
    return found


@pytest.mark.anyio
async def test_status_top_and_metrics_show_each_replica(tmp_path: Path) -> None:
    """The control socket's status has a row per replica (pid, state, restarts, CPU, RSS,
    calls in flight), top renders them under their component, and the metrics carry a
    ``replica`` label whose values are the replica indexes."""
    server, metrics = ControlServer(), MetricsEndpoint(0)
    client = ControlClient(tmp_path, timeout=LIMIT)
    with anyio.fail_after(LIMIT):
        async with Runtime(project_dir=tmp_path, extensions=[metrics, server]) as rt:
            await rt.start(Shards)
            shards = rt.instances()["Shards"]
            assert len({await shards.where() for _ in range(8)}) == 2
            status: dict[str, Any] = await asyncio.to_thread(client.request, "status")
            text = await asyncio.to_thread(_scrape, metrics.url)
            pids = {r.pid for r in rt.status()["Shards"].replicas}
    (row,) = status["components"]
    assert row["name"] == "Shards" and row["state"] == "running" and row["pid"] is None
    replicas = row["replicas"]
    assert [r["index"] for r in replicas] == [0, 1]
    assert {r["pid"] for r in replicas} == pids
    for replica in replicas:
        assert replica["state"] == "running" and replica["node"] is None
        assert replica["restarts"] == 0 and replica["calls_in_flight"] == 0
        assert replica["rss_bytes"] > 0 and replica["cpu_percent"] is not None
    table = render_status(status).splitlines()
    assert table[2].split()[:10] == [
        "COMPONENT", "KIND", "ISOLATED", "STATE", "PID", "RESTARTS", "CALLS", "UPTIME", "CPU%",
        "RSS",
    ]  # fmt: skip
    assert [line.split()[:3] for line in table[4:6]] == [
        ["#0", "replica", "running"],
        ["#1", "replica", "running"],
    ]
    assert _samples(text, "minions_replica_up") == {("Shards", "0"): 1.0, ("Shards", "1"): 1.0}
    assert set(_samples(text, "minions_replica_resident_memory_bytes")) == {
        ("Shards", "0"),
        ("Shards", "1"),
    }
    assert _samples(text, "minions_replica_restarts_total") == {
        ("Shards", "0"): 0.0,
        ("Shards", "1"): 0.0,
    }


SCALED_APP = """
import asyncio
import os

from isolation import Isolation
from minions import Minion, Resource, run


class Worker(Resource, isolated=Isolation(replicas=2, stop_timeout=10)):
    async def slow(self, seconds: float) -> int:
        await asyncio.sleep(seconds)
        return os.getpid()


class Driver(Minion):
    \"\"\"Calls the workers in waves of six slow calls, and says how each wave went.\"\"\"

    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def run(self) -> None:
        wave = 0
        while True:
            wave += 1
            results = await asyncio.gather(
                *(self._worker.slow(0.2) for _ in range(6)), return_exceptions=True
            )
            failed = [r for r in results if isinstance(r, BaseException)]
            if failed:
                print(f"wave {wave} failed: {failed[0]!r}", flush=True)
            else:
                print(f"wave {wave} ok pids={sorted(set(results))}", flush=True)


if __name__ == "__main__":
    run(Driver)
"""


def test_minions_scale_adds_and_drains_replicas_of_a_running_system(
    tmp_path: Path, start_system: type[System]
) -> None:
    """``minions scale Worker 3`` starts a third replica while the two others serve;
    ``minions scale Worker 1`` drains two: the calls they are running finish, no call fails,
    their processes end, and the system goes on with one replica. Nonsense is refused."""
    project = write_project(tmp_path / "proj", app=SCALED_APP)
    system = start_system(project)
    system.wait_for(r"wave \d+ ok pids=\[\d+, \d+\]")
    result = cli("scale", "Worker", "3", "--project", str(project))
    assert result.code == 0, result.err
    assert result.out.strip() == "scaled Worker: 3 of 3 replicas running"
    system.wait_for(r"wave \d+ ok pids=\[\d+, \d+, \d+\]")
    three = status_components(project)["Worker"]["replicas"]
    assert isinstance(three, list) and len(three) == 3
    pids = [r["pid"] for r in three]
    result = cli("scale", "Worker", "1", "--project", str(project))
    assert result.code == 0, result.err
    assert result.out.strip() == "scaled Worker: 1 of 1 replicas running"
    system.wait_for(rf"wave \d+ ok pids=\[{pids[0]}\]")
    one = status_components(project)["Worker"]["replicas"]
    assert isinstance(one, list) and [r["pid"] for r in one] == [pids[0]]
    for gone in pids[1:]:
        with contextlib.suppress(psutil.NoSuchProcess):
            assert psutil.Process(gone).status() == psutil.STATUS_ZOMBIE
    assert not [line for line in system.seen if "failed" in line], system.seen
    unknown = cli("scale", "Nobody", "2", "--project", str(project))
    assert unknown.code == 1 and "no component 'Nobody'" in unknown.err
    refused = cli("scale", "Driver", "2", "--project", str(project))
    assert refused.code == 1 and "runs in-process" in refused.err
    usage = cli("scale", "Worker", "none", "--project", str(project))
    assert usage.code == 2 and 'a count of 1 or more, or "cores"' in usage.err
