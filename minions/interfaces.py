"""Extension points of the workflow layer: implement one and pass it to ``Gru.create``.

* :class:`StateStore` — where checkpoints live (four async methods; writes durable on return);
* :class:`Logger` — ``log(level, event, **fields)``, synchronous;
* :class:`Metrics` — ``inc``, ``set``, ``observe``, synchronous, Prometheus-style names;
  :class:`LabelledMetric` is what ``PrometheusMetrics.create_metric`` returns.
"""

from .workflows.state_store import StateStore as StateStore
from .workflows.state_store import StoredContext as StoredContext
from .workflows.telemetry import LabelledMetric as LabelledMetric
from .workflows.telemetry import Logger as Logger
from .workflows.telemetry import Metrics as Metrics

__all__ = ["LabelledMetric", "Logger", "Metrics", "StateStore", "StoredContext"]
