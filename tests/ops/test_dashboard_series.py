"""What the dashboard charts, computed from raw counters: rates over the window, percentiles of
the observations made in it, and a fresh start when the system is another one; and how a page
too slow to take its frames is let go."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from minions.core.histogram import SECONDS_BUCKETS
from minions.ops.dashboard.monitor import Subscription, frame
from minions.ops.dashboard.series import Tracker, quantile

BOUNDS = (0.001, 0.01, 0.1, 1.0)


def test_quantiles_interpolate_within_the_bucket_of_their_rank() -> None:
    """As Prometheus' histogram_quantile: linear within the bucket the rank falls in; the
    overflow bucket answers the highest bound; nothing observed, no answer."""
    counts = (0, 10, 10, 0, 0)  # 10 in (0.001, 0.01], 10 in (0.01, 0.1]
    assert quantile(0.5, BOUNDS, counts) == pytest.approx(0.01)
    assert quantile(0.25, BOUNDS, counts) == pytest.approx(0.001 + 0.009 * 0.5)
    assert quantile(0.99, BOUNDS, counts) == pytest.approx(0.01 + 0.09 * 0.98)
    assert quantile(0.5, BOUNDS, (4, 0, 0, 0, 0)) == pytest.approx(0.0005)
    assert quantile(0.9, BOUNDS, (0, 0, 0, 0, 3)) == 1.0
    assert quantile(0.5, BOUNDS, (0, 0, 0, 0, 0)) is None


def reading(
    at: float,
    *,
    pid: int = 100,
    calls: int = 0,
    errors: int = 0,
    fast: int = 0,
    slow: int = 0,
    succeeded: int = 0,
    step_runs: int = 0,
    step_seconds: float = 0.0,
) -> dict[str, Any]:
    """A ``telemetry`` answer with one proxied method and one orchestration of one step."""
    buckets = [0] * (len(SECONDS_BUCKETS) + 1)
    buckets[SECONDS_BUCKETS.index(0.001)] = fast  # (0.0005, 0.001]
    buckets[SECONDS_BUCKETS.index(0.1)] = slow  # (0.05, 0.1]
    steps = [0] * (len(SECONDS_BUCKETS) + 1)
    steps[SECONDS_BUCKETS.index(0.01)] = step_runs
    return {
        "at": at,
        "status": {
            "system": {"pid": pid, "cpu_percent": 3.0, "rss_bytes": 1000},
            "components": [
                {"name": "Feed", "isolated": True, "cpu_percent": 1.5, "rss_bytes": 500},
                {"name": "Strategy", "isolated": False, "cpu_percent": None, "rss_bytes": None},
            ],
        },
        "calls": [
            {
                "component": "Feed",
                "target": "Feed",
                "method": "price",
                "calls": {"ok": calls - errors, "error": errors},
                "streams": {},
                "items": 0,
                "counts": buckets,
                "sum": 0.0,
            }
        ],
        "latency_bounds": list(SECONDS_BUCKETS),
        "workflows": [
            {
                "orchestration": "o1",
                "minion": "Executor",
                "pipeline": "Trades",
                "in_flight": 1,
                "started": succeeded + 1,
                "resumed": 0,
                "succeeded": succeeded,
                "failed": 0,
                "aborted": 0,
                "interrupted": 0,
                "steps": [{"step": "quote", "counts": steps, "sum": step_seconds}],
            }
        ],
        "step_bounds": list(SECONDS_BUCKETS),
    }


def test_a_tick_gives_rates_and_percentiles_over_the_window() -> None:
    """Calls and errors per second, and the latency percentiles of the calls made since the
    reading that opens the window, not since the system started."""
    tracker = Tracker(window=10.0)
    first = tracker.tick(reading(1000.0, calls=100, fast=100))
    (call,) = first["calls"]
    assert call["rate"] is None and call["p50"] is None  # one reading: no window yet
    assert first["series"]["components"] == {"Feed": [1.5, 500]}  # isolated ones only
    assert first["series"]["system"] == [3.0, 1000]

    tick = tracker.tick(reading(1002.0, calls=140, errors=4, fast=110, slow=30))
    (call,) = tick["calls"]
    assert call["key"] == "Feed/Feed.price"
    assert call["calls"] == 140 and call["errors"] == 4
    assert call["rate"] == pytest.approx(20.0)
    assert call["error_rate"] == pytest.approx(2.0)
    # 40 calls in the window: 10 fast ones, 30 in (0.05, 0.1]; the median is a slow one.
    assert 0.05 < call["p50"] <= 0.1
    assert call["p99"] == pytest.approx(0.05 + 0.05 * (39.6 - 10) / 30)
    assert tick["series"]["calls"]["Feed/Feed.price"] == [call["rate"], call["p50"], call["p99"]]

    later = reading(1004.0, calls=140, succeeded=8, step_runs=8, step_seconds=0.04)
    (flows,) = tracker.tick(later)["workflows"]
    assert flows["minion"] == "Executor" and flows["pipeline"] == "Trades"
    assert flows["rate"] == pytest.approx(2.0)  # 8 succeeded over the 4 s since the first
    (step,) = flows["steps"]
    assert step["runs"] == 8 and step["mean"] == pytest.approx(0.005)
    assert 0.005 < step["p50"] <= 0.01


def test_the_window_slides_and_another_system_starts_over() -> None:
    """Readings older than the window stop counting; a reading from another pid (the system
    was restarted, its counters from zero) opens a new window instead of negative rates."""
    tracker = Tracker(window=10.0)
    tracker.tick(reading(0.0, calls=0))
    tracker.tick(reading(5.0, calls=1000))
    tick = tracker.tick(reading(20.0, calls=1150))
    assert tick["calls"][0]["rate"] == pytest.approx(150 / 15)  # from t=5, the last before 10
    tick = tracker.tick(reading(21.0, pid=200, calls=3))
    assert tick["calls"][0]["rate"] is None
    tick = tracker.tick(reading(22.0, pid=200, calls=5))
    assert tick["calls"][0]["rate"] == pytest.approx(2.0)


def test_a_replicated_components_usage_is_the_sum_of_its_replicas() -> None:
    """A replicated component has no pid of its own: its CPU and memory chart the sum over its
    replicas that run here (a replica on a Ray node has no local figures)."""
    raw = reading(0.0)
    raw["status"]["components"].append(
        {
            "name": "Pricer",
            "isolated": True,
            "cpu_percent": None,
            "rss_bytes": None,
            "replicas": [
                {"index": 0, "cpu_percent": 10.0, "rss_bytes": 300},
                {"index": 1, "cpu_percent": 2.5, "rss_bytes": 200},
                {"index": 2, "cpu_percent": None, "rss_bytes": None},
            ],
        }
    )
    series = Tracker().tick(raw)["series"]["components"]
    assert series["Pricer"] == [12.5, 500]
    assert series["Feed"] == [1.5, 500]


def test_a_page_that_falls_behind_loses_its_stream_rather_than_frames() -> None:
    """A page whose frames pile up past its queue is not sent a stream with holes: the queue
    ends (the browser reconnects and starts again from a fresh snapshot)."""
    subscription = Subscription(size=3)
    for n in range(3):
        subscription.put(frame("tick", {"n": n}))
    assert not subscription.overflowed
    subscription.put(frame("tick", {"n": 3}))
    assert subscription.overflowed
    subscription.put(frame("tick", {"n": 4}))  # ignored: the stream is over

    async def drain() -> list[bytes | None]:
        return [await subscription.next() for _ in range(3)]

    assert asyncio.run(drain()) == [
        frame("tick", {"n": 1}),
        frame("tick", {"n": 2}),
        None,
    ]
