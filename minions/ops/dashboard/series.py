"""From raw counters to what the dashboard charts: rates and recent percentiles.

The control socket's ``telemetry`` (``minions.ops.telemetry``) gives counters that only grow:
calls by outcome, stream items, workflow outcomes, and bucket counts of durations. A
:class:`Tracker` is fed one reading after another and keeps the readings of the last
:data:`WINDOW` seconds; each new reading becomes a *tick*: every figure over that window (calls
per second, errors per second, latency percentiles of the calls made in it, mean and
percentile step durations) and the point of each chart series for that moment.

Percentiles are estimated from the bucket counts the way Prometheus' ``histogram_quantile``
does: linearly within the bucket the rank falls in (:func:`quantile`); a window without
observations has none. A reading from another system (its pid changed: it was restarted)
starts the window over, since its counters started over.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["WINDOW", "Tracker", "quantile"]

#: Seconds over which rates and percentiles are computed.
WINDOW = 10.0


def quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float | None:
    """The ``q`` quantile (0 to 1) of observations counted per bucket (``counts[i]`` up to
    ``bounds[i]``, the last one above every bound); ``None`` without observations. A rank in
    the last bucket answers the highest bound (nothing more is known)."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    below = 0
    for index, count in enumerate(counts):
        if count > 0 and below + count >= rank:
            if index >= len(bounds):
                return bounds[-1]
            lower = bounds[index - 1] if index > 0 else 0.0
            upper = bounds[index]
            return lower + (upper - lower) * max(rank - below, 0.0) / count
        below += count
    return bounds[-1]


@dataclass(frozen=True)
class _Call:
    total: int
    errors: int
    counts: tuple[int, ...]
    items: int


@dataclass(frozen=True)
class _Step:
    counts: tuple[int, ...]
    sum: float


@dataclass(frozen=True)
class _Workflows:
    succeeded: int
    steps: dict[str, _Step]


@dataclass(frozen=True)
class _Point:
    """The counters of one reading, keyed for differences."""

    at: float
    calls: dict[str, _Call] = field(default_factory=dict)
    workflows: dict[str, _Workflows] = field(default_factory=dict)


class Tracker:
    """Turns successive ``telemetry`` readings into ticks; see the module docstring."""

    def __init__(self, window: float = WINDOW) -> None:
        self._window = window
        self._points: deque[_Point] = deque()
        self._pid: int | None = None

    def __repr__(self) -> str:
        return f"<Tracker {len(self._points)} readings>"

    def tick(self, reading: Mapping[str, Any]) -> dict[str, Any]:
        """The tick of ``reading`` (a ``telemetry`` answer), given the readings before it."""
        status = reading["status"]
        pid = status["system"]["pid"]
        if pid != self._pid:
            self._points.clear()
            self._pid = pid
        point = _point(reading)
        if self._points and point.at <= self._points[-1].at:
            self._points.clear()  # a clock that went back: start over
        self._points.append(point)
        while len(self._points) > 2 and point.at - self._points[1].at >= self._window:
            self._points.popleft()
        base = self._points[0] if len(self._points) > 1 else None
        latency_bounds = reading["latency_bounds"]
        step_bounds = reading["step_bounds"]
        calls = _calls(reading.get("calls"), point, base, latency_bounds)
        workflows = _workflows(reading["workflows"], point, base, step_bounds)
        return {
            "t": point.at,
            "system": status["system"],
            "components": status["components"],
            "measured": reading.get("calls") is not None,
            "calls": calls,
            "workflows": workflows,
            "series": _series(status, calls, workflows),
        }


def _point(reading: Mapping[str, Any]) -> _Point:
    point = _Point(at=float(reading["at"]))
    for call in reading.get("calls") or []:
        point.calls[_call_key(call)] = _Call(
            total=sum(call["calls"].values()),
            errors=int(call["calls"].get("error", 0)),
            counts=tuple(call["counts"]),
            items=int(call["items"]),
        )
    for flows in reading["workflows"]:
        point.workflows[flows["orchestration"]] = _Workflows(
            succeeded=int(flows["succeeded"]),
            steps={s["step"]: _Step(tuple(s["counts"]), float(s["sum"])) for s in flows["steps"]},
        )
    return point


def _call_key(call: Mapping[str, Any]) -> str:
    return f"{call['component']}/{call['target']}.{call['method']}"


def _per_second(now: int, then: int | None, seconds: float | None) -> float | None:
    if then is None or not seconds:
        return None
    return max(now - then, 0) / seconds


def _difference(
    now: tuple[int, ...], then: tuple[int, ...] | None, windowed: bool
) -> tuple[int, ...]:
    """The counts added since ``then`` (everything, for a series that is new in the window;
    nothing before there is a window)."""
    if not windowed:
        return tuple(0 for _ in now)
    if then is None:
        return now
    if len(then) != len(now):
        return tuple(0 for _ in now)
    return tuple(max(a - b, 0) for a, b in zip(now, then, strict=True))


def _calls(
    raw: list[dict[str, Any]] | None,
    point: _Point,
    base: _Point | None,
    bounds: Sequence[float],
) -> list[dict[str, Any]]:
    seconds = point.at - base.at if base is not None else None
    rows = []
    for call in raw or []:
        key = _call_key(call)
        now = point.calls[key]
        then = base.calls.get(key) if base is not None else None
        recent = _difference(now.counts, then.counts if then else None, base is not None)
        rows.append(
            {
                "key": key,
                "component": call["component"],
                "target": call["target"],
                "method": call["method"],
                "stream": bool(call["streams"]) or now.items > 0,
                "calls": now.total,
                "errors": now.errors,
                "items": now.items,
                "rate": _per_second(now.total, then.total if then else 0, seconds),
                "error_rate": _per_second(now.errors, then.errors if then else 0, seconds),
                "item_rate": _per_second(now.items, then.items if then else 0, seconds),
                "p50": quantile(0.5, bounds, recent),
                "p90": quantile(0.9, bounds, recent),
                "p99": quantile(0.99, bounds, recent),
            }
        )
    return rows


def _workflows(
    raw: list[dict[str, Any]],
    point: _Point,
    base: _Point | None,
    bounds: Sequence[float],
) -> list[dict[str, Any]]:
    seconds = point.at - base.at if base is not None else None
    rows = []
    for flows in raw:
        name = flows["orchestration"]
        now = point.workflows[name]
        then = base.workflows.get(name) if base is not None else None
        steps = []
        for step, durations in now.steps.items():
            before = then.steps.get(step) if then is not None else None
            recent = _difference(
                durations.counts, before.counts if before else None, base is not None
            )
            count = sum(recent)
            spent = durations.sum - (before.sum if before is not None else 0.0)
            steps.append(
                {
                    "step": step,
                    "runs": sum(durations.counts),
                    "mean": spent / count if count else None,
                    "p50": quantile(0.5, bounds, recent),
                    "p95": quantile(0.95, bounds, recent),
                }
            )
        rows.append(
            {
                "orchestration": name,
                "minion": flows.get("minion"),
                "pipeline": flows.get("pipeline"),
                **{
                    key: flows[key]
                    for key in (
                        "in_flight",
                        "started",
                        "resumed",
                        "succeeded",
                        "failed",
                        "aborted",
                        "interrupted",
                    )
                },
                "rate": _per_second(now.succeeded, then.succeeded if then else 0, seconds),
                "steps": steps,
            }
        )
    return rows


def _series(
    status: Mapping[str, Any], calls: list[dict[str, Any]], workflows: list[dict[str, Any]]
) -> dict[str, Any]:
    """This moment's point of every chart: CPU % and resident bytes of the main process and of
    each isolated component's child (the sum over its replicas, for a replicated one); calls per
    second and p50/p99 latency per method; mean duration per workflow step."""
    system = status["system"]
    return {
        "system": [system.get("cpu_percent"), system.get("rss_bytes")],
        "components": {
            row["name"]: _usage(row) for row in status["components"] if row.get("isolated")
        },
        "calls": {row["key"]: [row["rate"], row["p50"], row["p99"]] for row in calls},
        "steps": {
            flows["orchestration"]: {step["step"]: step["mean"] for step in flows["steps"]}
            for flows in workflows
        },
    }


def _usage(row: Mapping[str, Any]) -> list[float | None]:
    replicas = row.get("replicas") or []
    if not replicas:
        return [row.get("cpu_percent"), row.get("rss_bytes")]
    usage: list[float | None] = []
    for key in ("cpu_percent", "rss_bytes"):
        known = [r[key] for r in replicas if r.get(key) is not None]
        usage.append(sum(known) if known else None)
    return usage
