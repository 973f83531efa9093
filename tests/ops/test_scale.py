"""Operating replicas: what status, top and the metrics show of each replica, and scaling a
running system with ``minions scale``.

In-process tests embed a runtime with its ControlServer (the client's calls block, so they run
in a worker thread); the ``minions scale`` test drives a system in a subprocess.
"""

from __future__ import annotations

import asyncio
import os
import urllib.request
from pathlib import Path
from typing import Any

import anyio
import pytest
from prometheus_client.parser import text_string_to_metric_families

from isolation import Isolation
from minions import Resource, Runtime
from minions.ops.client import ControlClient
from minions.ops.control import ControlServer
from minions.ops.metrics import MetricsEndpoint
from minions.ops.top import render_status

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
