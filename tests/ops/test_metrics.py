"""Prometheus metrics: served on 127.0.0.1 when configured, scraped over HTTP after known work.

The metrics project does a known amount of everything the metrics count — calls and a stream
into an isolated resource, calls out of an isolated minion, one crash of an in-process minion
(an exception) and one of an isolated one (SIGKILL), three workflows of two steps — and prints a
line when each is done; the test scrapes only then, and checks the exact counts.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from minions import Minion, Resource, Runtime
from minions.core.errors import ConfigError
from minions.ops.metrics import MetricsEndpoint
from minions.ops.settings import resolve_settings

from .conftest import LIMIT, System, cli, write_project

METRICS_APP = """
import asyncio
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from minions import Minion, Pipeline, Resource, WorkflowStore, minion_step, run
from minions.core.identity import identity_of
from minions.workflows.runner import orchestration_id
from resources import Recorder

PROJECT = Path(os.environ["MINIONS_PROJECT_DIR"])


class Counter(Resource, isolated=True):
    def __init__(self) -> None:
        self.total = 0

    async def add(self, n: int) -> int:
        self.total += n
        return self.total

    async def count(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    async def fail(self) -> None:
        raise ValueError("on purpose")


class Caller(Minion):
    def __init__(self, counter: Counter) -> None:
        self._counter = counter

    async def run(self) -> None:
        for i in range(5):
            await self._counter.add(i)
        items = [i async for i in self._counter.count(4)]
        try:
            await self._counter.fail()
        except Exception:
            pass
        print(f"CALLS DONE {items}", flush=True)
        await asyncio.Event().wait()


class Flaky(Minion):
    async def run(self) -> None:
        mark = PROJECT / "flaky-crashed"
        if not mark.exists():
            mark.touch()
            raise RuntimeError("the first run fails")
        print("FLAKY BACK", flush=True)
        await asyncio.Event().wait()


class Crasher(Minion, isolated=True):
    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    async def run(self) -> None:
        mark = PROJECT / "crasher-killed"
        if not mark.exists():
            mark.touch()
            # A call first: once it is answered the parent has seen this child ready, so the
            # kill is a crash of a running component, not a failed start.
            await self._recorder.note("Crasher dying")
            os.kill(os.getpid(), signal.SIGKILL)
        await self._recorder.note("Crasher back")
        await self._recorder.note("Crasher twice")
        await asyncio.Event().wait()


@dataclass
class Ev:
    n: int


@dataclass
class Ctx:
    total: int = 0


class Trades(Pipeline[Ev]):
    sent = 0

    async def produce_event(self) -> Ev:
        if self.sent >= 3:
            await asyncio.Event().wait()
        self.sent += 1
        return Ev(self.sent)


class Executor(Minion[Ev, Ctx]):
    trades: Trades

    @minion_step
    async def quote(self) -> None:
        self.context.total += self.event.n

    @minion_step
    async def submit(self) -> None:
        self.context.total *= 2


class Watcher(Minion):
    def __init__(self, store: WorkflowStore) -> None:
        self._store = store

    async def run(self) -> None:
        oid = orchestration_id(identity_of(Executor), identity_of(Trades))
        await self._store.counters(oid).wait_until(lambda s: s.succeeded >= 3)
        print("WORKFLOWS DONE", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    run(Caller, Flaky, Crasher, Executor, Watcher)
"""

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    assert key in samples, f"no sample {name}{labels}; have {sorted(k[0] for k in samples)}"
    return samples[key]


@pytest.fixture
def metrics_system(tmp_path: Path, start_system: type[System]) -> Iterator[System]:
    project = write_project(
        tmp_path / "proj", app=METRICS_APP, **{"minions.toml": "[minions]\nmetrics_port = 0\n"}
    )
    system = start_system(project)
    for line in ("CALLS DONE", "FLAKY BACK", "noted: Crasher twice", "WORKFLOWS DONE"):
        system.wait_for(line)
    yield system


def test_metrics_are_scraped_over_http_with_the_values_of_known_work(
    metrics_system: System,
) -> None:
    """Every family the runtime promises, with the exact counts of what the program did."""
    status = json.loads(cli("status", "--json", "--project", str(metrics_system.project)).out)
    url = status["system"]["metrics_url"]
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
    with urllib.request.urlopen(url, timeout=LIMIT) as response:
        assert response.status == 200
        samples = parse(response.read().decode())

    # Into an isolated resource (measured by the caller): 5 adds, one failure, one stream.
    calls = "minions_proxy_calls_total"
    counter = {"component": "Counter", "target": "Counter"}
    assert value(samples, calls, **counter, method="add", outcome="ok") == 5
    assert value(samples, calls, **counter, method="fail", outcome="error") == 1
    duration = "minions_proxy_call_duration_seconds"
    assert value(samples, f"{duration}_count", **counter, method="add") == 5
    assert 0 < value(samples, f"{duration}_sum", **counter, method="add") < 5 * LIMIT
    assert value(samples, f"{duration}_bucket", **counter, method="add", le="+Inf") == 5
    assert value(samples, "minions_proxy_stream_items_total", **counter, method="count") == 4
    assert (
        value(samples, "minions_proxy_streams_total", **counter, method="count", outcome="ok") == 1
    )
    # Out of an isolated minion into the parent's Recorder (measured where it is served).
    assert (
        value(samples, calls, component="Crasher", target="Recorder", method="note", outcome="ok")
        == 3  # "dying" in the first child, "back" and "twice" in the second
    )

    # Components: up, state, restarts, crashes by cause, uptime, a child's CPU and memory.
    assert (
        value(samples, "minions_component_up", component="Caller", kind="minion", isolated="false")
        == 1
    )
    assert value(samples, "minions_component_state", component="Counter", state="running") == 1
    assert value(samples, "minions_component_state", component="Counter", state="failed") == 0
    assert value(samples, "minions_component_restarts_total", component="Flaky") == 1
    assert value(samples, "minions_component_crashes_total", component="Flaky", cause="raised") == 1
    assert value(samples, "minions_component_restarts_total", component="Crasher") == 1
    assert value(samples, "minions_component_crashes_total", component="Crasher", cause="died") == 1
    assert value(samples, "minions_component_restarts_total", component="Caller") == 0
    assert 0 <= value(samples, "minions_component_uptime_seconds", component="Caller") < 10 * LIMIT
    assert value(samples, "minions_component_resident_memory_bytes", component="Counter") > 1e6
    assert value(samples, "minions_component_cpu_seconds_total", component="Counter") >= 0
    assert value(samples, "process_resident_memory_bytes") > 1e6

    # Workflows: three succeeded, none failed or aborted; checkpoints were committed.
    (orchestration,) = {
        dict(labels)["orchestration"]
        for name, labels in samples
        if name == "minions_workflows_started_total"
    }
    workflows = {"orchestration": orchestration}
    assert value(samples, "minions_workflows_started_total", **workflows) == 3
    assert value(samples, "minions_workflows_succeeded_total", **workflows) == 3
    assert value(samples, "minions_workflows_failed_total", **workflows) == 0
    assert value(samples, "minions_workflows_aborted_total", **workflows) == 0
    assert value(samples, "minions_checkpoints_saved_total", **workflows) >= 3
    commits = value(samples, "minions_checkpoint_commits_total")
    assert commits >= 1
    assert value(samples, "minions_checkpoint_rows_total") >= commits
    assert value(samples, "minions_checkpoint_batch_rows_max") >= 1
    assert 0 < value(samples, "minions_checkpoint_last_commit_seconds") < LIMIT
    # Every commit is timed and sized; every step run is timed, per step name.
    assert value(samples, "minions_checkpoint_commit_duration_seconds_count") == commits
    assert value(samples, "minions_checkpoint_batch_rows_count") == commits
    assert value(samples, "minions_checkpoint_batch_rows_sum") == value(
        samples, "minions_checkpoint_rows_total"
    )
    step_names = {
        dict(labels)["step"]
        for name, labels in samples
        if name == "minions_workflow_step_duration_seconds_count"
    }
    assert step_names
    for step in step_names:
        runs = value(
            samples, "minions_workflow_step_duration_seconds_count", step=step, **workflows
        )
        assert runs == 3
        assert (
            value(
                samples,
                "minions_workflow_step_duration_seconds_bucket",
                le="+Inf",
                step=step,
                **workflows,
            )
            == runs
        )


def test_metrics_listen_on_loopback_only_and_status_metrics_prints_them(
    metrics_system: System,
) -> None:
    """The endpoint binds 127.0.0.1; ``status --metrics`` prints the same registry."""
    status = json.loads(cli("status", "--json", "--project", str(metrics_system.project)).out)
    port = int(status["system"]["metrics_url"].rsplit(":", 1)[1].split("/")[0])
    listening = [
        c.laddr
        for c in psutil.Process(metrics_system.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    ]
    assert [addr.ip for addr in listening if addr.port == port] == ["127.0.0.1"]
    result = cli("status", "--metrics", "--project", str(metrics_system.project))
    assert result.code == 0, result.err
    samples = parse(result.out)
    labels = {"component": "Counter", "target": "Counter", "method": "add", "outcome": "ok"}
    assert value(samples, "minions_proxy_calls_total", **labels) == 5


def test_status_metrics_when_metrics_are_off(running: System) -> None:
    """Without a metrics port, ``status --metrics`` says how to switch them on."""
    result = cli("status", "--metrics", "--project", str(running.project))
    assert result.code == 1
    assert "metrics are off" in result.err and "--metrics-port" in result.err


def test_metrics_port_from_the_command_line(project: Path, start_system: type[System]) -> None:
    """``minions run --metrics-port 0`` switches metrics on for a program file."""
    system = start_system(project, "--metrics-port", "0")
    system.wait_for("noted: Strategy v1")
    status = json.loads(cli("status", "--json", "--project", str(project)).out)
    assert status["system"]["metrics_url"].startswith("http://127.0.0.1:")


def resolve_metrics_port(
    explicit: int | None, config: Any, project_dir: Path, environ: dict[str, str]
) -> int | None:
    return resolve_settings(
        project_dir=project_dir, environ=environ, config=config, metrics_port=explicit
    ).metrics_port


def test_where_the_metrics_port_comes_from(tmp_path: Path) -> None:
    """The environment (what ``--metrics-port`` sets) wins over run()'s argument, which wins
    over ``[minions] metrics_port``; none means off; a bad value is a ConfigError saying where."""
    (tmp_path / "minions.toml").write_text("[minions]\nmetrics_port = 9100\n")
    env = {"MINIONS_METRICS_PORT": "9300"}
    assert resolve_metrics_port(9200, None, tmp_path, env) == 9300
    assert resolve_metrics_port(9200, None, tmp_path, {}) == 9200
    assert resolve_metrics_port(None, None, tmp_path, {}) == 9100
    assert resolve_metrics_port(None, None, tmp_path / "none", {}) is None
    assert resolve_metrics_port(None, {"minions": {"metrics_port": 0}}, tmp_path, {}) == 0
    with pytest.raises(ConfigError, match=r"MINIONS_METRICS_PORT must be a port number"):
        resolve_metrics_port(None, None, tmp_path, {"MINIONS_METRICS_PORT": "http"})
    (tmp_path / "minions.toml").write_text('[minions]\nmetrics_port = "lots"\n')
    with pytest.raises(ConfigError, match=r"metrics_port in \[minions\] of .*minions.toml"):
        resolve_metrics_port(None, None, tmp_path, {})
    with pytest.raises(ConfigError, match="got 70000"):
        resolve_metrics_port(70000, None, tmp_path, {})


class Pinger(Resource):
    async def ping(self) -> str:
        return "pong"


class Idle(Minion):
    def __init__(self, pinger: Pinger) -> None:
        self._pinger = pinger

    async def run(self) -> None:
        await asyncio.Event().wait()


@pytest.mark.anyio
async def test_each_runtime_has_its_own_registry(tmp_path: Path) -> None:
    """Two runtimes in one process each serve their own metrics: no collision, no sharing."""
    first, second = MetricsEndpoint(0), MetricsEndpoint(0)
    with anyio.fail_after(LIMIT):
        async with (
            Runtime(project_dir=tmp_path / "a", extensions=[first]) as a,
            Runtime(project_dir=tmp_path / "b", extensions=[second]) as b,
        ):
            await a.start(Idle)
            await b.start(Pinger)
            assert first.url != second.url
            a_text = await asyncio.to_thread(_scrape, first.url)
            b_text = await asyncio.to_thread(_scrape, second.url)
    assert 'minions_component_up{component="Idle"' in a_text
    assert 'component="Idle"' not in b_text
    assert 'minions_component_up{component="Pinger"' in b_text
    assert first.url is None and second.url is None  # stopped with their runtimes


def _scrape(url: str | None) -> str:
    assert url is not None
    with urllib.request.urlopen(url, timeout=LIMIT) as response:
        text: str = response.read().decode()
        return text


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
