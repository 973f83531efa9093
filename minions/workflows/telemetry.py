"""Where the workflow layer reports: the ``Logger`` and ``Metrics`` protocols and their classes.

Both are small synchronous protocols, so reporting never adds an ``await`` (or a task switch) to
a workflow step; an implementation that ships data over a network buffers it itself.

* :class:`StructlogLogger` (the default) logs through structlog like the rest of Minions;
  :class:`NoOpLogger` drops everything (``Gru.create(logger=None)``).
* :class:`PrometheusMetrics` (Gru's default) keeps counters, gauges and histograms in its own
  prometheus-client registry and, given a port, serves them (on ``127.0.0.1`` unless told
  otherwise); ``create_metric(name, label_names, kind)`` makes a metric of the program's own;
  :class:`NoOpMetrics` drops everything (``Gru.create(metrics=None)``).

Metric names used by the workflow layer (label ``orchestration``)::

    minions_workflows_started_total     minions_workflows_resumed_total
    minions_workflows_succeeded_total   minions_workflows_aborted_total
    minions_workflows_failed_total      minions_workflows_interrupted_total
    minions_checkpoint_failures_total   minions_workflows_in_flight (gauge)
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

import structlog

__all__ = [
    "LabelledMetric",
    "Logger",
    "MetricKind",
    "Metrics",
    "NoOpLogger",
    "NoOpMetrics",
    "PrometheusMetrics",
    "StructlogLogger",
]

Labels = Mapping[str, str]


@runtime_checkable
class Logger(Protocol):
    """Receives the workflow layer's events: ``level`` is a :mod:`logging` level."""

    def log(self, level: int, event: str, **fields: Any) -> None: ...


@runtime_checkable
class Metrics(Protocol):
    """Receives the workflow layer's measurements. Names are Prometheus-style."""

    def inc(self, name: str, value: float = 1.0, labels: Labels | None = None) -> None: ...

    def set(self, name: str, value: float, labels: Labels | None = None) -> None: ...

    def observe(self, name: str, value: float, labels: Labels | None = None) -> None: ...


class StructlogLogger:
    """Logs through structlog (``minions.workflows``), filtered by the standard level."""

    def __init__(self, name: str = "minions.workflows") -> None:
        self._logger = structlog.get_logger(name)
        self._std = logging.getLogger(name)

    def __repr__(self) -> str:
        return "<StructlogLogger>"

    def log(self, level: int, event: str, **fields: Any) -> None:
        # Checked first: a disabled level costs one comparison, not a structlog chain.
        if self._std.isEnabledFor(level):
            self._logger.log(level, event, **fields)


class NoOpLogger:
    """A logger that drops everything."""

    def __repr__(self) -> str:
        return "<NoOpLogger>"

    def log(self, level: int, event: str, **fields: Any) -> None:
        return None


class NoOpMetrics:
    """Metrics that are dropped."""

    def __repr__(self) -> str:
        return "<NoOpMetrics>"

    def inc(self, name: str, value: float = 1.0, labels: Labels | None = None) -> None:
        return None

    def set(self, name: str, value: float, labels: Labels | None = None) -> None:
        return None

    def observe(self, name: str, value: float, labels: Labels | None = None) -> None:
        return None


MetricKind = Literal["counter", "gauge", "histogram"]
_FACTORIES: dict[str, str] = {"counter": "Counter", "gauge": "Gauge", "histogram": "Histogram"}


class LabelledMetric(Protocol):
    """A metric made by :meth:`PrometheusMetrics.create_metric`: pick the labels, then record."""

    def labels(self, **labels: str) -> LabelledMetric: ...

    def inc(self, amount: float = 1) -> None: ...

    def set(self, value: float) -> None: ...

    def observe(self, value: float) -> None: ...


class _Labelled:
    """A prometheus-client metric (or one labelled child of it) as a :class:`LabelledMetric`."""

    __slots__ = ("_metric", "_names")

    def __init__(self, metric: Any, names: tuple[str, ...]) -> None:
        self._metric = metric
        self._names = names

    def __repr__(self) -> str:
        return f"<metric {self._metric!r}>"

    def labels(self, **labels: str) -> LabelledMetric:
        if not labels and not self._names:
            return self  # nothing to choose: the metric itself
        return _Labelled(self._metric.labels(**labels), ())

    def inc(self, amount: float = 1) -> None:
        self._metric.inc(amount)

    def set(self, value: float) -> None:
        self._metric.set(value)

    def observe(self, value: float) -> None:
        self._metric.observe(value)


class PrometheusMetrics:
    """Metrics in a prometheus-client registry, optionally served over HTTP.

    ``PrometheusMetrics(logger=None, port=8081, addr="", registry=None)``: ``registry=None``
    keeps the metrics in a registry of its own (two instances never collide); ``addr=""``
    serves on ``127.0.0.1`` only — pass another address to expose them beyond this machine.
    ``serve()`` (or ``await startup()``) starts the HTTP endpoint (a port already in use is
    reported, not fatal; ``port=0`` picks a free one, ``port=None`` never serves); ``close()``
    (or ``await shutdown()``) stops it.

    Two ways to record, on the same metrics: the :class:`Metrics` protocol the workflow layer
    uses (``inc``/``set``/``observe`` by name; a metric is created on first use with the label
    names of that use), and ``create_metric(name, label_names, kind)``, which returns the metric
    to record on: ``create_metric("jobs_total", ["queue"], "counter").labels(queue="a").inc()``.
    """

    def __init__(
        self,
        logger: Logger | None = None,
        port: int | None = 8081,
        addr: str = "",
        registry: Any = None,
    ) -> None:
        import prometheus_client

        self._prom = prometheus_client
        self.logger = logger
        self.registry = registry if registry is not None else prometheus_client.CollectorRegistry()
        self.port = port
        self.addr = addr or "127.0.0.1"
        self._metrics: dict[str, tuple[str, tuple[str, ...], Any]] = {}
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        where = f"serving {self.addr}:{self.port}" if self._server is not None else "not serving"
        return f"<PrometheusMetrics {len(self._metrics)} metrics, {where}>"

    def serve(self) -> str | None:
        """Start the HTTP endpoint; return why it could not start, or ``None``."""
        if self.port is None or self._server is not None:
            return None
        try:
            self._server, self._thread = self._prom.start_http_server(
                self.port, addr=self.addr, registry=self.registry
            )
        except OSError as exc:
            return (
                f"cannot serve metrics on {self.addr}:{self.port} ({exc}); pass another "
                "metrics_port, or metrics=None to switch metrics off"
            )
        self.port = int(self._server.server_port)  # the one chosen, for port=0
        return None

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    async def startup(self) -> None:
        """Start serving (``serve()``); a failure is logged to ``logger``, not raised."""
        problem = self.serve()
        if problem and self.logger is not None:
            self.logger.log(logging.WARNING, "metrics.unavailable", reason=problem)

    async def shutdown(self) -> None:
        """Stop serving (``close()``), without blocking the event loop."""
        await asyncio.to_thread(self.close)

    def create_metric(
        self, metric_name: str, label_names: Sequence[str], kind: MetricKind
    ) -> LabelledMetric:
        """The metric ``metric_name`` of ``kind`` (``"counter"``, ``"gauge"`` or
        ``"histogram"``) with ``label_names``, created now or the one created before.

        Raises ``ValueError`` for an unknown kind, or for a name already used with another kind
        or other label names.
        """
        factory = _FACTORIES.get(kind) if isinstance(kind, str) else None
        if factory is None:
            raise ValueError(
                f"unknown metric kind {kind!r} for {metric_name}; use 'counter', 'gauge' or "
                "'histogram'"
            )
        names = tuple(label_names)
        with self._lock:
            found = self._metrics.get(metric_name)
            if found is None:
                metric = getattr(self._prom, factory)(
                    metric_name, f"{metric_name} ({kind})", list(names), registry=self.registry
                )
                found = self._metrics[metric_name] = (factory, names, metric)
        if found[:2] != (factory, names):
            raise ValueError(
                f"metric {metric_name} exists already as a {found[0].lower()} labelled "
                f"{list(found[1])}, so it cannot be a {kind} labelled {list(names)}; use "
                "another name"
            )
        return _Labelled(found[2], names)

    def _metric(self, factory: str, name: str, labels: Labels | None) -> Any:
        found = self._metrics.get(name)
        if found is None:
            with self._lock:
                found = self._metrics.get(name)
                if found is None:
                    names = tuple(labels or ())
                    metric = getattr(self._prom, factory)(
                        name, name.replace("_", " "), list(names), registry=self.registry
                    )
                    found = self._metrics[name] = (factory, names, metric)
        metric = found[2]
        return metric.labels(**labels) if labels else metric

    def inc(self, name: str, value: float = 1.0, labels: Labels | None = None) -> None:
        self._metric("Counter", name, labels).inc(value)

    def set(self, name: str, value: float, labels: Labels | None = None) -> None:
        self._metric("Gauge", name, labels).set(value)

    def observe(self, name: str, value: float, labels: Labels | None = None) -> None:
        self._metric("Histogram", name, labels).observe(value)

    def value(self, name: str, labels: Labels | None = None) -> float | None:
        """The current value of a counter (named ``..._total``) or gauge sample."""
        result: float | None = self.registry.get_sample_value(name, dict(labels or {}))
        return result
