"""Implementations of the workflow layer's interfaces shipped with Minions.

``SQLiteStateStore`` is the default store; the ``NoOp`` variants switch a concern off (what
``Gru.create(state_store=None, logger=None, metrics=None)`` uses); ``InMemoryStateStore`` is for
tests; ``StructlogLogger`` and ``PrometheusMetrics`` are Gru's default logger and metrics.
"""

from ._sqlite_store import SQLiteStateStore as SQLiteStateStore
from ._state_store import InMemoryStateStore as InMemoryStateStore
from ._state_store import NoOpStateStore as NoOpStateStore
from ._telemetry import NoOpLogger as NoOpLogger
from ._telemetry import NoOpMetrics as NoOpMetrics
from ._telemetry import PrometheusMetrics as PrometheusMetrics
from ._telemetry import StructlogLogger as StructlogLogger

__all__ = [
    "InMemoryStateStore",
    "NoOpLogger",
    "NoOpMetrics",
    "NoOpStateStore",
    "PrometheusMetrics",
    "SQLiteStateStore",
    "StructlogLogger",
]
