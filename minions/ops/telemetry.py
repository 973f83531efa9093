"""What a running system measures, as plain data: the control socket's ``telemetry`` answer.

The Prometheus endpoint (``minions.ops.metrics``) turns the runtime's meters into metric
families for a scraper; :func:`telemetry` hands the same raw readings to a program that draws
them itself (the dashboard): per proxied method its calls and streams by outcome, stream items
and the bucket counts of its durations, and per orchestration its workflow counters and the
bucket counts of each step's durations. Counts only grow; a reader takes differences between
two readings to get rates and recent percentiles (``minions.ops.dashboard.series``).

Everything is msgpack- and JSON-ready: strings, numbers, lists and maps.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from ..core.histogram import SECONDS_BUCKETS
from ..core.runtime import Runtime
from .metrics import LATENCY_BUCKETS, RuntimeMetrics, read_workflows

__all__ = ["telemetry"]


def telemetry(runtime: Runtime, metrics: RuntimeMetrics | None) -> dict[str, Any]:
    """The runtime's raw readings (call on the event loop's thread).

    ``calls`` is ``None`` when nothing measures proxied calls (metrics are off).
    """
    calls: list[dict[str, Any]] | None = None
    if metrics is not None:
        calls = [
            {
                "component": reading.labels[0],
                "target": reading.labels[1],
                "method": reading.labels[2],
                "calls": reading.calls,
                "streams": reading.streams,
                "items": reading.items,
                "counts": list(reading.durations.counts),
                "sum": reading.durations.sum,
            }
            for reading in sorted(metrics.readings(), key=lambda r: r.labels)
        ]
    workflows = read_workflows(runtime)
    return {
        "calls": calls,
        "latency_bounds": list(LATENCY_BUCKETS),
        "workflows": [
            {
                "orchestration": orchestration,
                "minion": workflows.names.get(orchestration, (None, None))[0],
                "pipeline": workflows.names.get(orchestration, (None, None))[1],
                **asdict(counters),
                "steps": [
                    {"step": step, "counts": list(durations.counts), "sum": durations.sum}
                    for step, durations in sorted(workflows.steps.get(orchestration, {}).items())
                ],
            }
            for orchestration, counters in sorted(workflows.counters.items())
        ],
        "step_bounds": list(SECONDS_BUCKETS),
    }
