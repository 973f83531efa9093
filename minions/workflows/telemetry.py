"""Where the workflow layer reports: the ``Logger`` and ``Metrics`` protocols and their classes.

Both are small synchronous protocols, so reporting never adds an ``await`` (or a task switch) to
a workflow step; an implementation that ships data over a network buffers it itself.

* :class:`StructlogLogger` (the default) logs through structlog like the rest of Minions;
  :class:`NoOpLogger` drops everything (``Gru.create(logger=None)``).
* :class:`PrometheusMetrics` (Gru's default) keeps counters, gauges and histograms in its own
  prometheus-client registry and, given a port, serves them on ``127.0.0.1`` only;
  :class:`NoOpMetrics` drops everything (``Gru.create(metrics=None)``).

Metric names used by the workflow layer (label ``orchestration``)::

    minions_workflows_started_total     minions_workflows_resumed_total
    minions_workflows_succeeded_total   minions_workflows_aborted_total
    minions_workflows_failed_total      minions_workflows_interrupted_total
    minions_checkpoint_failures_total   minions_workflows_in_flight (gauge)
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import structlog

__all__ = [
    "Logger",
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


class PrometheusMetrics:
    """Metrics in a private prometheus-client registry, optionally served over HTTP.

    A metric is created on first use with the label names of that first use. ``serve()`` starts
    the HTTP endpoint on ``127.0.0.1:<port>`` (a port already in use is reported, not fatal);
    ``close()`` stops it.
    """

    def __init__(self, port: int | None = None) -> None:
        import prometheus_client

        self._prom = prometheus_client
        self.registry = prometheus_client.CollectorRegistry()
        self.port = port
        self._metrics: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        where = f"serving 127.0.0.1:{self.port}" if self._server is not None else "not serving"
        return f"<PrometheusMetrics {len(self._metrics)} metrics, {where}>"

    def serve(self) -> str | None:
        """Start the HTTP endpoint; return why it could not start, or ``None``."""
        if self.port is None or self._server is not None:
            return None
        try:
            self._server, self._thread = self._prom.start_http_server(
                self.port, addr="127.0.0.1", registry=self.registry
            )
        except OSError as exc:
            return (
                f"cannot serve metrics on 127.0.0.1:{self.port} ({exc}); pass another "
                "metrics_port, or metrics=None to switch metrics off"
            )
        return None

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

    def _metric(self, kind: str, name: str, labels: Labels | None) -> Any:
        metric = self._metrics.get(name)
        if metric is None:
            with self._lock:
                metric = self._metrics.get(name)
                if metric is None:
                    factory = getattr(self._prom, kind)
                    metric = factory(
                        name, name.replace("_", " "), list(labels or ()), registry=self.registry
                    )
                    self._metrics[name] = metric
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
