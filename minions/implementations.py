"""Implementations of the workflow layer's interfaces shipped with Minions.

``SQLiteStateStore`` is the default store; the ``NoOp`` variants switch a concern off (what
``Gru.create(state_store=None, logger=None, metrics=None)`` uses); ``InMemoryStateStore`` is for
tests; ``StructlogLogger`` and ``PrometheusMetrics`` are Gru's default logger and metrics.
"""

from .workflows.sqlite.store import SQLiteStateStore as SQLiteStateStore
from .workflows.state_store import InMemoryStateStore as InMemoryStateStore
from .workflows.state_store import NoOpStateStore as NoOpStateStore
from .workflows.telemetry import NoOpLogger as NoOpLogger
from .workflows.telemetry import NoOpMetrics as NoOpMetrics
from .workflows.telemetry import PrometheusMetrics as PrometheusMetrics
from .workflows.telemetry import StructlogLogger as StructlogLogger

__all__ = [
    "InMemoryStateStore",
    "NoOpLogger",
    "NoOpMetrics",
    "NoOpStateStore",
    "PrometheusMetrics",
    "SQLiteStateStore",
    "StructlogLogger",
]
