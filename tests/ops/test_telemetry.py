"""The control socket's ``telemetry`` and ``events`` requests: what the dashboard is fed.

``telemetry`` is checked against the metrics project of ``test_metrics`` (a known amount of
calls, streams, crashes and workflows); ``events`` against an embedded runtime whose resource
fails when told to, followed by a waiting request that must be answered by the crash itself.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import anyio
import pytest

from minions import Minion, Resource, Runtime
from minions.ops.client import AsyncControlClient, ControlClient, RequestFailed
from minions.ops.control import ControlServer

from .conftest import LIMIT, System, cli, write_project
from .test_metrics import METRICS_APP

#: The test's own event (an asyncio.Event belongs to the loop of the test that made it).
switch: dict[str, asyncio.Event] = {}


class Feed(Resource):
    async def run(self) -> None:
        await switch["fail"].wait()
        switch["fail"].clear()
        raise ConnectionError("feed closed")


class Reader(Minion):
    def __init__(self, feed: Feed) -> None:
        self._feed = feed

    async def run(self) -> None:
        await asyncio.Event().wait()


def test_telemetry_carries_the_readings_behind_the_metrics(
    tmp_path: Path, start_system: type[System]
) -> None:
    """Per proxied method its calls by outcome, stream items and duration buckets; per
    orchestration its workflow counters and each step's duration buckets; the status with each
    component's dependencies; and the crashes as lifecycle events with their causes."""
    project = write_project(
        tmp_path / "proj", app=METRICS_APP, **{"minions.toml": "[minions]\nmetrics_port = 0\n"}
    )
    system = start_system(project)
    for line in ("CALLS DONE", "FLAKY BACK", "noted: Crasher twice", "WORKFLOWS DONE"):
        system.wait_for(line)
    client = ControlClient(project, timeout=LIMIT)
    reading = client.request("telemetry")
    assert reading["status"]["system"]["pid"] == system.pid
    rows = {c["name"]: c for c in reading["status"]["components"]}
    assert rows["Caller"]["dependencies"] == ["Counter"]
    calls = {(c["target"], c["method"]): c for c in reading["calls"]}
    add = calls[("Counter", "add")]
    assert add["component"] == "Counter" and add["calls"] == {"ok": 5}
    assert len(add["counts"]) == len(reading["latency_bounds"]) + 1
    assert sum(add["counts"]) == 5 and 0 < add["sum"] < 5 * LIMIT
    assert calls[("Counter", "fail")]["calls"] == {"error": 1}
    assert calls[("Counter", "count")]["items"] == 4
    assert calls[("Counter", "count")]["streams"] == {"ok": 1}
    (workflows,) = reading["workflows"]
    assert workflows["succeeded"] == 3 and workflows["in_flight"] == 0
    assert [s["step"] for s in workflows["steps"]] == ["quote", "submit"]
    assert all(sum(s["counts"]) == 3 for s in workflows["steps"])

    page = client.request("events", fields={"since": 0})
    assert page["pid"] == system.pid and page["missed"] == 0
    crashes = {e["component"]: e for e in page["events"] if e["kind"] == "crashed"}
    assert crashes["Flaky"]["cause"] == "raised"
    assert "the first run fails" in crashes["Flaky"]["reason"]
    assert crashes["Crasher"]["cause"] == "died"
    assert [e["seq"] for e in page["events"]] == list(range(1, page["last"] + 1))
    assert client.request("events", fields={"since": page["last"]})["events"] == []


def test_telemetry_says_when_calls_are_not_measured(running: System) -> None:
    """Without metrics nothing measures proxied calls: ``calls`` is null, the rest is there."""
    reading = ControlClient(running.project, timeout=LIMIT).request("telemetry")
    assert reading["calls"] is None
    assert reading["workflows"] == []
    assert len(reading["status"]["components"]) == 4
    assert cli("status", "--project", str(running.project)).code == 0


@pytest.mark.anyio
async def test_a_waiting_events_request_is_answered_by_the_next_crash(
    tmp_path: Path, open_fds: None
) -> None:
    """``events`` with ``wait`` holds the request until something happens: the crash answers
    it (no polling), while other requests are served meanwhile."""
    switch["fail"] = asyncio.Event()
    control = ControlServer()
    client = AsyncControlClient(tmp_path)
    try:
        with anyio.fail_after(LIMIT):
            async with Runtime(project_dir=tmp_path, extensions=[control]) as runtime:
                await runtime.start(Reader)
                first = await client.request("events", fields={"since": 0})
                assert [(e["component"], e["kind"]) for e in first["events"]] == [
                    ("Feed", "starting"),
                    ("Feed", "started"),
                    ("Reader", "starting"),
                    ("Reader", "started"),
                ]
                waiting = asyncio.ensure_future(
                    client.request("events", fields={"since": first["last"], "wait": LIMIT})
                )
                status = await client.request("status")  # served while the other one waits
                assert [c["state"] for c in status["components"]] == ["running", "running"]
                assert not waiting.done()
                switch["fail"].set()
                page = await waiting
                assert page["events"][0]["component"] == "Feed"
                assert page["events"][0]["kind"] == "crashed"
                assert page["events"][0]["reason"] == "run() raised ConnectionError: feed closed"
                answer = await control.answer({"v": 1, "op": "events", "since": 0})
                assert answer["ok"] and answer["result"]["events"][:4] == first["events"]
                for fields in ({"since": -1}, {"since": "x"}, {"wait": 31}, {"wait": True}):
                    with pytest.raises(RequestFailed) as refused:
                        await client.request("events", fields=fields)
                    assert refused.value.kind == "bad_request"
    finally:
        client.close()
