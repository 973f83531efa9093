"""Histograms kept as plain numbers on the hot path, turned into metrics only when read.

Recording an observation costs a bisection and two additions, with no lock and no metrics
library involved: the workflow driver times every step and the state store every commit this
way, and the metrics endpoint (``minions.ops.metrics``) reads :meth:`Histogram.snapshot` at scrape
time.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

__all__ = ["BATCH_BUCKETS", "SECONDS_BUCKETS", "Histogram", "HistogramSnapshot"]

#: Durations from 50 microseconds to 10 seconds.
SECONDS_BUCKETS: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
#: Rows per transaction, 1 to 4096.
BATCH_BUCKETS: tuple[float, ...] = tuple(float(2**n) for n in range(13))


@dataclass(frozen=True)
class HistogramSnapshot:
    """Counts per bucket (``counts[i]`` for values up to ``bounds[i]``, the last one for values
    above every bound), and the sum of the observed values."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """``(le, count)`` pairs as Prometheus histograms want them, ending with ``+Inf``."""
        labels = [*(repr(bound) for bound in self.bounds), "+Inf"]
        pairs, running = [], 0
        for label, count in zip(labels, self.counts, strict=True):
            running += count
            pairs.append((label, float(running)))
        return pairs


class Histogram:
    """Observations counted into fixed buckets."""

    __slots__ = ("_bounds", "_counts", "_sum")

    def __init__(self, bounds: tuple[float, ...] = SECONDS_BUCKETS) -> None:
        self._bounds = bounds
        self._counts = [0] * (len(bounds) + 1)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += 1
        self._sum += value

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(self._bounds, tuple(self._counts), self._sum)
