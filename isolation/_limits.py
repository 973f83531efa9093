"""Limits of an isolated component: what the user configures and how the child enforces it.

``Isolation`` is the value users write (``isolated=Isolation(memory_mb=256)``). It is frozen and
validated on construction, so a bad limit is an error where it is written, not a surprise when
the child starts.

Enforcement happens in the child, with kernel resource limits, because only the kernel can stop
a runaway allocation or a tight loop at once:

- **Memory** is ``RLIMIT_DATA``: the child may map at most ``memory_mb`` MiB of private writable
  memory *beyond what it inherited* from the warm zygote. The inherited pages are shared
  copy-on-write and cost the child nothing until written, so counting them would make the limit
  depend on how much the parent had imported. An allocation past the limit fails with
  ``MemoryError`` inside the child, which reports "exceeded memory limit N MiB" and exits.
- **CPU** is ``RLIMIT_CPU``: at ``ceil(cpu_seconds)`` of CPU time the kernel sends ``SIGXCPU``
  (whose default action ends the process), and one second later ``SIGKILL`` in case the child
  handles ``SIGXCPU``. The parent recognises either and reports "exceeded CPU limit N s".

Timeouts (start, stop, heartbeat) are enforced by the parent; they live here because the user
sets them in the same place.
"""

from __future__ import annotations

import math
import resource
from dataclasses import dataclass

__all__ = ["Isolation", "apply_cpu_limit", "apply_memory_limit", "data_segment_bytes"]

MIB = 1024 * 1024

#: Seconds between the soft CPU limit (SIGXCPU) and the hard one (SIGKILL).
CPU_HARD_GRACE_SECONDS = 1


def _check_positive(name: str, value: object, *, integer: bool = False) -> None:
    kind = "an int" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise TypeError(f"Isolation({name}=...) must be {kind}, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"Isolation({name}={value!r}) must be a positive, finite {kind[2:]}")


@dataclass(frozen=True)
class Isolation:
    """How an isolated component's child process is limited and watched.

    ``memory_mb`` caps the private memory the child may allocate (MiB); ``cpu_seconds`` caps its
    CPU time. ``start_timeout`` bounds the time from spawn to READY; ``stop_timeout`` the time a
    graceful stop may take before the child is sent SIGTERM and then SIGKILL. The child sends a
    heartbeat every ``heartbeat_interval`` seconds from its event loop; after ``heartbeat_timeout``
    seconds without one it is considered hung and killed.
    """

    memory_mb: int | None = None
    cpu_seconds: float | None = None
    start_timeout: float = 10.0
    stop_timeout: float = 5.0
    heartbeat_interval: float = 0.5
    heartbeat_timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.memory_mb is not None:
            _check_positive("memory_mb", self.memory_mb, integer=True)
        if self.cpu_seconds is not None:
            _check_positive("cpu_seconds", self.cpu_seconds)
        _check_positive("start_timeout", self.start_timeout)
        _check_positive("stop_timeout", self.stop_timeout)
        _check_positive("heartbeat_interval", self.heartbeat_interval)
        _check_positive("heartbeat_timeout", self.heartbeat_timeout)
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ValueError(
                f"Isolation(heartbeat_timeout={self.heartbeat_timeout!r}) must be longer than "
                f"heartbeat_interval={self.heartbeat_interval!r}, or every child would be "
                "declared hung between two heartbeats; use a timeout of several intervals"
            )

    def memory_cause(self) -> str:
        """The words used when the memory limit ends a child."""
        return f"exceeded memory limit {self.memory_mb} MiB"

    def cpu_cause(self) -> str:
        """The words used when the CPU limit ends a child."""
        return f"exceeded CPU limit {self.cpu_seconds:g} s"


def data_segment_bytes() -> int:
    """This process's private writable mappings (``VmData``), the quantity RLIMIT_DATA counts."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("/proc/self/status has no VmData line; memory limits need Linux")


def apply_memory_limit(memory_mb: int) -> None:
    """Allow this process ``memory_mb`` MiB of private writable memory beyond what it maps now."""
    limit = data_segment_bytes() + memory_mb * MIB
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))


def apply_cpu_limit(cpu_seconds: float) -> None:
    """End this process after ``cpu_seconds`` of CPU time (SIGXCPU, then SIGKILL)."""
    soft = max(1, math.ceil(cpu_seconds))
    hard = soft + CPU_HARD_GRACE_SECONDS
    _, current_hard = resource.getrlimit(resource.RLIMIT_CPU)
    if current_hard != resource.RLIM_INFINITY:
        soft, hard = min(soft, current_hard), min(hard, current_hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    # SIGXCPU's default action dumps core; an expected limit kill should not fill the disk.
    resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
