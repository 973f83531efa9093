"""Prometheus metrics of one runtime, served on ``127.0.0.1`` (prometheus-client).

:class:`MetricsEndpoint` is an :class:`~minions.core.runtime.Extension`: attached to a runtime it
creates a :class:`RuntimeMetrics` — a ``CollectorRegistry`` of that runtime's own, never the
global one, so several runtimes (and tests) in one process do not collide — makes it the
runtime's call observer, and serves the registry over HTTP on ``127.0.0.1:<port>`` (port ``0``
picks a free one; a port in use is logged as ``metrics.unavailable`` and the system runs on).

Values are read when a scrape asks for them: the runtime's own records (states, restarts,
crashes, workflow counters, the state store's statistics), psutil for children, and the call
meters — plain numbers a measured call updates without locks (about 0.6 us per call). The HTTP
server answers in its own thread; the reading is handed to the event loop's thread, where all
of these are consistent.

==============================================  =====================================  ========
name                                            labels                                 type
==============================================  =====================================  ========
minions_component_up                            component, kind, isolated              gauge
minions_component_state                         component, state                       gauge
minions_component_restarts_total                component                              counter
minions_component_crashes_total                 component, cause                       counter
minions_component_uptime_seconds                component                              gauge
minions_component_cpu_seconds_total             component (isolated, running)          counter
minions_component_resident_memory_bytes         component (isolated, running)          gauge
minions_replica_up                              component, replica                     gauge
minions_replica_restarts_total                  component, replica                     counter
minions_replica_crashes_total                   component, replica                     counter
minions_replica_calls_in_flight                 component, replica                     gauge
minions_replica_cpu_seconds_total               component, replica (local, running)    counter
minions_replica_resident_memory_bytes           component, replica (local, running)    gauge
minions_proxy_calls_total                       component, target, method, outcome     counter
minions_proxy_call_duration_seconds             component, target, method              histogram
minions_proxy_streams_total                     component, target, method, outcome     counter
minions_proxy_stream_items_total                component, target, method              counter
minions_workflows_<outcome>_total               orchestration                          counter
minions_workflows_in_flight                     orchestration                          gauge
minions_checkpoints_saved_total                 orchestration                          counter
minions_checkpoint_failures_total               orchestration                          counter
minions_checkpoint_commits_total                (the SQLite state store)               counter
minions_checkpoint_rows_total                   (rows per commit: rows / commits)      counter
minions_checkpoint_batch_rows_max               (largest commit so far)                gauge
minions_checkpoint_last_commit_seconds          (BEGIN to COMMIT, fsync included)      gauge
minions_checkpoint_commit_duration_seconds      (every commit)                         histogram
minions_checkpoint_batch_rows                   (rows per commit)                      histogram
minions_workflow_step_duration_seconds          orchestration, step                    histogram
process_*                                       (the runtime's own process)            various
==============================================  =====================================  ========

``<outcome>`` is ``started``, ``resumed``, ``succeeded``, ``aborted``, ``failed`` and
``interrupted``. ``component`` in the proxy metrics is the isolated component whose channel
carries the call; ``target`` the component whose method runs. ``replica`` is a replica's index
(``0`` to the replica count minus one: scaling down removes the highest, a replacement keeps
its predecessor's). Every label takes values from a bounded set (component, method and
orchestration names, replica indexes, fixed outcome and cause words).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import prometheus_client
import structlog
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..core.component import ComponentState
from ..core.histogram import SECONDS_BUCKETS, Histogram, HistogramSnapshot
from ..core.runtime import Runtime
from ..core.status import ComponentStatus
from ..workflows.store import WorkflowStatistics, WorkflowStore
from .usage import Usage, UsageSampler, local_pids

__all__ = [
    "LATENCY_BUCKETS",
    "MeterReading",
    "MetricsEndpoint",
    "RuntimeMetrics",
    "WorkflowReadings",
    "read_workflows",
]

log = structlog.get_logger("minions")

#: Proxied calls take tens of microseconds to seconds: buckets from 50 us to 10 s.
LATENCY_BUCKETS = SECONDS_BUCKETS
#: How long a scrape waits for the event loop to read the runtime's records.
_READ_TIMEOUT = 5.0
_WORKFLOW_OUTCOMES = ("started", "resumed", "succeeded", "aborted", "failed", "interrupted")
_STATES = tuple(state.value for state in ComponentState)


class _Meter:
    """The counts of one remote method (a :class:`~minions.core.observer.CallMeter`).

    Kept as plain numbers, updated on the event loop's thread without locks: a measured call
    costs a bisection and three additions. The families are built from them at scrape time.
    """

    __slots__ = ("calls", "durations", "items", "labels", "streams")

    def __init__(self, labels: tuple[str, str, str]) -> None:
        self.labels = labels
        self.calls: dict[str, int] = {}
        self.streams: dict[str, int] = {}
        self.durations = Histogram(LATENCY_BUCKETS)
        self.items = 0

    def call(self, seconds: float, outcome: str) -> None:
        self.calls[outcome] = self.calls.get(outcome, 0) + 1
        self.durations.observe(seconds)

    def stream(self, outcome: str) -> None:
        self.streams[outcome] = self.streams.get(outcome, 0) + 1

    def item(self) -> None:
        self.items += 1

    def snapshot(self) -> MeterReading:
        return MeterReading(
            self.labels, dict(self.calls), dict(self.streams), self.durations.snapshot(), self.items
        )


@dataclass(frozen=True)
class MeterReading:
    """A :class:`_Meter` at one moment: ``labels`` are (channel component, target component,
    method); ``calls`` and ``streams`` count by outcome."""

    labels: tuple[str, str, str]
    calls: dict[str, int]
    streams: dict[str, int]
    durations: HistogramSnapshot
    items: int


class RuntimeMetrics:
    """The metrics of one runtime in a registry of its own (``registry``).

    It is the runtime's :class:`~minions.core.observer.CallObserver`; everything is read from its
    meters and the runtime when the registry is collected.
    """

    def __init__(self, runtime: Runtime, loop: asyncio.AbstractEventLoop) -> None:
        self.registry = prometheus_client.CollectorRegistry()
        # One meter per (channel, target, method), kept across restarts: counters only grow.
        self.meters: dict[tuple[str, str, str], _Meter] = {}
        self.registry.register(_RuntimeCollector(runtime, loop, self.meters))
        prometheus_client.ProcessCollector(registry=self.registry)

    def __repr__(self) -> str:
        return f"<RuntimeMetrics {len(self.meters)} methods measured>"

    def meter(self, channel: str, target: str, method: str) -> _Meter:
        labels = (channel, target, method)
        meter = self.meters.get(labels)
        if meter is None:
            meter = self.meters[labels] = _Meter(labels)
        return meter

    def exposition(self) -> str:
        """The registry in the Prometheus text format."""
        return prometheus_client.generate_latest(self.registry).decode()

    def readings(self) -> list[MeterReading]:
        """Every meter as it is now (call on the event loop's thread)."""
        return [meter.snapshot() for meter in list(self.meters.values())]


class MetricsEndpoint:
    """Serves a runtime's :class:`RuntimeMetrics` on ``127.0.0.1:port`` (see the module
    docstring). With ``port=None`` it measures without serving: the control socket
    (``minions status --metrics``) and the dashboard still read the metrics."""

    def __init__(self, port: int | None) -> None:
        self.port = port
        self.metrics: RuntimeMetrics | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<MetricsEndpoint {self.url or 'not serving'}>"

    @property
    def url(self) -> str | None:
        """Where the metrics are served, once they are."""
        return f"http://127.0.0.1:{self.port}/metrics" if self._server is not None else None

    async def attach(self, runtime: Runtime) -> None:
        metrics = self.metrics = RuntimeMetrics(runtime, asyncio.get_running_loop())
        runtime.call_observer = metrics
        if self.port is None:
            return
        try:
            self._server, self._thread = prometheus_client.start_http_server(
                self.port, addr="127.0.0.1", registry=metrics.registry
            )
        except OSError as exc:
            log.warning(
                "metrics.unavailable",
                reason=f"cannot serve metrics on 127.0.0.1:{self.port} ({exc}); choose another "
                "metrics_port (0 picks a free one). 'minions status --metrics' still works",
            )
            return
        self.port = int(self._server.server_port)
        log.info("metrics.serving", url=self.url)

    async def detach(self) -> None:
        server, self._server = self._server, None
        thread, self._thread = self._thread, None
        if server is not None:
            await asyncio.to_thread(_shut_down, server, thread)

    async def exposition(self) -> str:
        assert self.metrics is not None, "not attached"
        return self.metrics.exposition()


def _shut_down(server: Any, thread: threading.Thread | None) -> None:
    server.shutdown()
    server.server_close()
    if thread is not None:
        thread.join(timeout=5.0)


@dataclass(frozen=True)
class _Reading:
    meters: list[MeterReading]
    statuses: list[ComponentStatus]
    usage: dict[str, Usage]
    replica_usage: dict[tuple[str, int], Usage]
    workflows: dict[str, Any]  # orchestration id -> WorkflowStatistics
    store: Any  # the state store's statistics(), when it has them
    steps: dict[str, dict[str, HistogramSnapshot]]  # orchestration id -> step -> durations


class _RuntimeCollector(Collector):
    """Reads the runtime's records at each scrape, on the event loop's thread."""

    def __init__(
        self,
        runtime: Runtime,
        loop: asyncio.AbstractEventLoop,
        meters: dict[tuple[str, str, str], _Meter],
    ) -> None:
        self._runtime = runtime
        self._loop = loop
        self._meters = meters
        self._sampler = UsageSampler()
        self._loop_thread = threading.get_ident()

    def collect(self) -> Iterator[Metric]:
        reading = self._read()
        if reading is not None:
            yield from _call_families(reading.meters)
            yield from _families(reading, datetime.now(UTC))

    def _read(self) -> _Reading | None:
        if threading.get_ident() == self._loop_thread:
            return self._reading()
        if self._loop.is_closed():
            return None
        future: concurrent.futures.Future[_Reading] = concurrent.futures.Future()

        def read() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(self._reading())
                except Exception as exc:
                    future.set_exception(exc)

        try:
            self._loop.call_soon_threadsafe(read)
            return future.result(timeout=_READ_TIMEOUT)
        except (RuntimeError, concurrent.futures.TimeoutError):
            future.cancel()
            return None  # the loop is closed or stuck: the process metrics still answer

    def _reading(self) -> _Reading:
        statuses = list(self._runtime.status().values())
        pids = {pid for s in statuses for pid in local_pids(s)}
        self._sampler.forget_others(pids)
        usage = {s.name: self._sampler.sample(s.pid) for s in statuses if s.pid is not None}
        replica_usage = {
            (s.name, r.index): self._sampler.sample(r.pid)
            for s in statuses
            for r in s.replicas
            if r.pid is not None and r.node is None
        }
        workflows = read_workflows(self._runtime)
        meters = [meter.snapshot() for meter in list(self._meters.values())]
        return _Reading(
            meters,
            statuses,
            usage,
            replica_usage,
            workflows.counters,
            workflows.store,
            workflows.steps,
        )


@dataclass(frozen=True)
class WorkflowReadings:
    """The workflow counters of a runtime at one moment."""

    counters: dict[str, WorkflowStatistics]  # orchestration id -> its counters
    steps: dict[str, dict[str, HistogramSnapshot]]  # orchestration id -> step -> durations
    store: Any  # the state store's statistics(), when it has them
    #: orchestration id -> (workflow minion, pipeline), for the orchestrations a runner named
    names: dict[str, tuple[str, str]] = field(default_factory=dict)


def read_workflows(runtime: Runtime) -> WorkflowReadings:
    """Read the counters of every :class:`~minions.WorkflowStore` the runtime runs (on the event
    loop's thread). A store that cannot be read is logged and left out."""
    counters: dict[str, WorkflowStatistics] = {}
    steps: dict[str, dict[str, HistogramSnapshot]] = {}
    names: dict[str, tuple[str, str]] = {}
    store: Any = None
    try:
        for instance in runtime.instances().values():
            if isinstance(instance, WorkflowStore):
                services = instance.services
                for orchestration, live in list(services.counters.items()):
                    counters[orchestration] = live.snapshot()
                    steps[orchestration] = live.step_durations()
                    if live.minion is not None and live.pipeline is not None:
                        names[orchestration] = (live.minion, live.pipeline)
                statistics = getattr(services.state_store, "statistics", None)
                if callable(statistics):
                    store = statistics()
    except Exception as exc:  # what was read is still worth showing
        log.warning("metrics.workflows_unreadable", reason=f"{type(exc).__name__}: {exc}")
    return WorkflowReadings(counters, steps, store, names)


def _call_families(meters: list[MeterReading]) -> Iterator[Metric]:
    labels = ["component", "target", "method"]
    calls = CounterMetricFamily(
        "minions_proxy_calls",
        "Calls across isolation boundaries, by outcome (ok, error, cancelled).",
        labels=[*labels, "outcome"],
    )
    duration = HistogramMetricFamily(
        "minions_proxy_call_duration_seconds",
        "Duration of calls across isolation boundaries: the round trip for calls into an "
        "isolated component, the work in this process for calls out of one.",
        labels=labels,
    )
    streams = CounterMetricFamily(
        "minions_proxy_streams",
        "Streams across isolation boundaries that ended, by outcome.",
        labels=[*labels, "outcome"],
    )
    items = CounterMetricFamily(
        "minions_proxy_stream_items",
        "Items delivered by streams across isolation boundaries.",
        labels=labels,
    )
    for meter in sorted(meters, key=lambda m: m.labels):
        names = list(meter.labels)
        for outcome, count in sorted(meter.calls.items()):
            calls.add_metric([*names, outcome], float(count))
        if meter.calls:
            duration.add_metric(names, meter.durations.cumulative(), sum_value=meter.durations.sum)
        for outcome, count in sorted(meter.streams.items()):
            streams.add_metric([*names, outcome], float(count))
        if meter.items or meter.streams:
            items.add_metric(names, float(meter.items))
    yield from (calls, duration, streams, items)


def _families(reading: _Reading, now: datetime) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "minions_component_up",
        "1 while the component runs, else 0.",
        labels=["component", "kind", "isolated"],
    )
    state = GaugeMetricFamily(
        "minions_component_state",
        "1 for the component's current state, 0 for the others.",
        labels=["component", "state"],
    )
    restarts = CounterMetricFamily(
        "minions_component_restarts", "Restarts of the component.", labels=["component"]
    )
    crashes = CounterMetricFamily(
        "minions_component_crashes",
        "Crashes of the component, by cause (raised, cancelled, returned, startup, died, "
        "hung, protocol, memory, cpu).",
        labels=["component", "cause"],
    )
    uptime = GaugeMetricFamily(
        "minions_component_uptime_seconds",
        "Seconds since the component's current incarnation started (0 when not running).",
        labels=["component"],
    )
    cpu = CounterMetricFamily(
        "minions_component_cpu_seconds",
        "CPU time (user and system) of an isolated component's current child.",
        labels=["component"],
    )
    rss = GaugeMetricFamily(
        "minions_component_resident_memory_bytes",
        "Resident memory of an isolated component's current child.",
        labels=["component"],
    )
    for s in reading.statuses:
        running = s.state is ComponentState.RUNNING
        up.add_metric([s.name, s.kind, str(s.isolated).lower()], 1.0 if running else 0.0)
        for value in _STATES:
            state.add_metric([s.name, value], 1.0 if s.state.value == value else 0.0)
        restarts.add_metric([s.name], float(s.restarts))
        for cause, count in sorted(s.crash_causes.items()):
            crashes.add_metric([s.name, cause], float(count))
        seconds = (now - s.started_at).total_seconds() if s.started_at is not None else 0.0
        uptime.add_metric([s.name], max(seconds, 0.0))
        usage = reading.usage.get(s.name)
        if usage is not None and usage.cpu_seconds is not None:
            cpu.add_metric([s.name], usage.cpu_seconds)
        if usage is not None and usage.rss_bytes is not None:
            rss.add_metric([s.name], float(usage.rss_bytes))
    yield from (up, state, restarts, crashes, uptime, cpu, rss)
    yield from _replica_families(reading)
    yield from _workflow_families(reading)


def _replica_families(reading: _Reading) -> Iterator[Metric]:
    labels = ["component", "replica"]
    up = GaugeMetricFamily("minions_replica_up", "1 while the replica runs, else 0.", labels=labels)
    restarts = CounterMetricFamily(
        "minions_replica_restarts", "Restarts of the replica.", labels=labels
    )
    crashes = CounterMetricFamily(
        "minions_replica_crashes", "Crashes of the replica.", labels=labels
    )
    calls = GaugeMetricFamily(
        "minions_replica_calls_in_flight",
        "Calls, streams and workflow steps running on the replica now.",
        labels=labels,
    )
    cpu = CounterMetricFamily(
        "minions_replica_cpu_seconds",
        "CPU time (user and system) of the replica's current process (on this host).",
        labels=labels,
    )
    rss = GaugeMetricFamily(
        "minions_replica_resident_memory_bytes",
        "Resident memory of the replica's current process (on this host).",
        labels=labels,
    )
    for s in reading.statuses:
        for r in s.replicas:
            values = [s.name, str(r.index)]
            up.add_metric(values, 1.0 if r.state is ComponentState.RUNNING else 0.0)
            restarts.add_metric(values, float(r.restarts))
            crashes.add_metric(values, float(r.crashes))
            calls.add_metric(values, float(r.calls_in_flight))
            usage = reading.replica_usage.get((s.name, r.index))
            if usage is not None and usage.cpu_seconds is not None:
                cpu.add_metric(values, usage.cpu_seconds)
            if usage is not None and usage.rss_bytes is not None:
                rss.add_metric(values, float(usage.rss_bytes))
    if any(s.replicas for s in reading.statuses):
        yield from (up, restarts, crashes, calls, cpu, rss)


def _workflow_families(reading: _Reading) -> Iterator[Metric]:
    if reading.workflows:
        outcomes = {
            outcome: CounterMetricFamily(
                f"minions_workflows_{outcome}",
                f"Workflows {outcome}, per orchestration.",
                labels=["orchestration"],
            )
            for outcome in _WORKFLOW_OUTCOMES
        }
        in_flight = GaugeMetricFamily(
            "minions_workflows_in_flight", "Workflows running now.", labels=["orchestration"]
        )
        saved = CounterMetricFamily(
            "minions_checkpoints_saved", "Checkpoints saved.", labels=["orchestration"]
        )
        failures = CounterMetricFamily(
            "minions_checkpoint_failures",
            "Checkpoints that could not be saved.",
            labels=["orchestration"],
        )
        for orchestration, stats in sorted(reading.workflows.items()):
            for outcome, family in outcomes.items():
                family.add_metric([orchestration], float(getattr(stats, outcome, 0)))
            in_flight.add_metric([orchestration], float(stats.in_flight))
            saved.add_metric([orchestration], float(stats.checkpoints_saved))
            failures.add_metric([orchestration], float(stats.checkpoint_failures))
        yield from (*outcomes.values(), in_flight, saved, failures)
    step_seconds = HistogramMetricFamily(
        "minions_workflow_step_duration_seconds",
        "How long workflow steps took, per orchestration and step.",
        labels=["orchestration", "step"],
    )
    for orchestration, durations in sorted(reading.steps.items()):
        for step, snapshot in sorted(durations.items()):
            step_seconds.add_metric(
                [orchestration, step], snapshot.cumulative(), sum_value=snapshot.sum
            )
    if reading.steps:
        yield step_seconds
    store = reading.store
    if store is None:
        return
    yield CounterMetricFamily(
        "minions_checkpoint_commits",
        "Write transactions committed by the state store.",
        value=float(getattr(store, "commits", 0)),
    )
    yield CounterMetricFamily(
        "minions_checkpoint_rows",
        "Checkpoint saves and deletes carried by those transactions.",
        value=float(getattr(store, "rows", 0)),
    )
    yield GaugeMetricFamily(
        "minions_checkpoint_batch_rows_max",
        "Rows in the state store's largest transaction so far.",
        value=float(getattr(store, "largest_batch", 0)),
    )
    for name, attribute, text in (
        (
            "minions_checkpoint_commit_duration_seconds",
            "commit_seconds",
            "Seconds from BEGIN to the end of COMMIT of each state store transaction.",
        ),
        (
            "minions_checkpoint_batch_rows",
            "batch_rows",
            "Checkpoint saves and deletes carried by each state store transaction.",
        ),
    ):
        observed = getattr(store, attribute, None)
        if isinstance(observed, HistogramSnapshot):
            histogram = HistogramMetricFamily(name, text)
            histogram.add_metric([], observed.cumulative(), sum_value=observed.sum)
            yield histogram
    latency = getattr(store, "last_commit_latency", None)
    if latency is not None:
        yield GaugeMetricFamily(
            "minions_checkpoint_last_commit_seconds",
            "Seconds from BEGIN to the end of COMMIT of the state store's last transaction.",
            value=float(latency),
        )
