"""What a process uses: CPU and resident memory, read with psutil.

A :class:`UsageSampler` keeps one ``psutil.Process`` per pid it has looked at, so that it can
tell CPU *percent* — CPU time used between two looks, over the time between them (``top``
looks every second). On the first look at a process there is no previous one, and the percent
is the average since the process started. A pid that is reused by a new process is noticed by
its creation time and starts over.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psutil  # type: ignore[import-untyped]  # ships no type information

from ..core.status import ComponentStatus

__all__ = ["Usage", "UsageSampler", "local_pids"]

#: Looks closer together than this reuse the previous percent (too short a window to measure).
_MIN_WINDOW = 0.05


@dataclass(frozen=True)
class Usage:
    """One process at one moment; ``None`` where it could not be read (it is gone)."""

    cpu_percent: float | None
    cpu_seconds: float | None
    rss_bytes: int | None


_UNKNOWN = Usage(None, None, None)


@dataclass
class _Seen:
    process: psutil.Process
    at: float
    cpu_seconds: float
    percent: float


class UsageSampler:
    """Reads :class:`Usage` per pid; see the module docstring."""

    def __init__(self) -> None:
        self._seen: dict[int, _Seen] = {}

    def sample(self, pid: int) -> Usage:
        now = time.monotonic()
        seen = self._seen.get(pid)
        try:
            if seen is None or not seen.process.is_running():  # is_running: pid not reused
                process = psutil.Process(pid)
                with process.oneshot():
                    cpu = _cpu_seconds(process)
                    rss = int(process.memory_info().rss)
                    age = max(time.time() - process.create_time(), _MIN_WINDOW)
                self._seen[pid] = _Seen(process, now, cpu, 100.0 * cpu / age)
                return Usage(round(100.0 * cpu / age, 1), cpu, rss)
            with seen.process.oneshot():
                cpu = _cpu_seconds(seen.process)
                rss = int(seen.process.memory_info().rss)
        except psutil.Error:
            self._seen.pop(pid, None)
            return _UNKNOWN
        window = now - seen.at
        if window >= _MIN_WINDOW:
            seen.percent = max(0.0, 100.0 * (cpu - seen.cpu_seconds) / window)
            seen.at, seen.cpu_seconds = now, cpu
        return Usage(round(seen.percent, 1), cpu, rss)

    def forget_others(self, pids: set[int]) -> None:
        """Drop what is kept for processes not in ``pids`` (children that were replaced)."""
        for pid in list(self._seen):
            if pid not in pids:
                del self._seen[pid]


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def local_pids(status: ComponentStatus) -> list[int]:
    """The processes of this host that run ``status``'s component: its child, or its replicas
    (those on other Ray nodes are not this host's to measure)."""
    pids = [status.pid] if status.pid is not None else []
    pids += [r.pid for r in status.replicas if r.pid is not None and r.node is None]
    return pids
