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

Timeouts (start, stop, heartbeat) and the bounds on what a child may have running in the parent
at once (calls in flight, streams open) are enforced by the parent; they live here because the
user sets them in the same place, and so do the scale-out options (``replicas``, ``route_by``,
``workflows_per_replica``, ``backend``, ``num_cpus``): this package only validates them, the
runtime acts on them.
"""

from __future__ import annotations

import math
import os
import resource
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "BACKENDS",
    "Isolation",
    "apply_cpu_limit",
    "apply_memory_limit",
    "check_replicas",
    "data_segment_bytes",
    "usable_cpus",
]

#: Where replicas can run: child processes of this host, or actors of a Ray cluster.
BACKENDS = ("process", "ray")

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
    seconds without one it is considered hung and killed. ``max_calls_in_flight`` and
    ``max_streams_open`` bound the calls and streams the child may have running in the parent
    at once; one beyond is refused with an error (the child is not harmed).

    Scale-out (docs/scale-out.md): ``replicas`` runs the component as that many children (an
    int, or ``"cores"`` for one per CPU this process may use); ``None`` runs one child with no
    replica machinery. ``route_by`` names a parameter: calls with equal values for it go to
    the same replica, in call order. ``workflows_per_replica`` bounds the workflows of a
    replicated workflow minion that run a step on one replica at once. ``backend="ray"`` runs
    the replicas as Ray actors, each reserving ``num_cpus`` CPUs of the cluster.
    """

    memory_mb: int | None = None
    cpu_seconds: float | None = None
    start_timeout: float = 10.0
    stop_timeout: float = 5.0
    heartbeat_interval: float = 0.5
    heartbeat_timeout: float = 5.0
    replicas: int | Literal["cores"] | None = None
    route_by: str | None = None
    workflows_per_replica: int = 64
    backend: Literal["process", "ray"] = "process"
    num_cpus: float | None = None
    max_calls_in_flight: int = 4096
    max_streams_open: int = 1024

    def __post_init__(self) -> None:
        if self.memory_mb is not None:
            _check_positive("memory_mb", self.memory_mb, integer=True)
        if self.cpu_seconds is not None:
            _check_positive("cpu_seconds", self.cpu_seconds)
        _check_positive("start_timeout", self.start_timeout)
        _check_positive("stop_timeout", self.stop_timeout)
        _check_positive("heartbeat_interval", self.heartbeat_interval)
        _check_positive("heartbeat_timeout", self.heartbeat_timeout)
        _check_positive("max_calls_in_flight", self.max_calls_in_flight, integer=True)
        _check_positive("max_streams_open", self.max_streams_open, integer=True)
        if self.heartbeat_timeout <= self.heartbeat_interval:
            raise ValueError(
                f"Isolation(heartbeat_timeout={self.heartbeat_timeout!r}) must be longer than "
                f"heartbeat_interval={self.heartbeat_interval!r}, or every child would be "
                "declared hung between two heartbeats; use a timeout of several intervals"
            )
        if self.replicas is not None:
            check_replicas(self.replicas, "Isolation(replicas=...)")
        if self.route_by is not None and not (
            isinstance(self.route_by, str) and self.route_by.isidentifier()
        ):
            raise ValueError(
                f"Isolation(route_by={self.route_by!r}) must name a parameter of the "
                "component's methods, e.g. route_by='pair'"
            )
        _check_positive("workflows_per_replica", self.workflows_per_replica, integer=True)
        if self.backend not in BACKENDS:
            raise ValueError(
                f"Isolation(backend={self.backend!r}) must be one of {', '.join(BACKENDS)}"
            )
        if self.num_cpus is not None:
            if self.backend != "ray":
                raise ValueError(
                    "Isolation(num_cpus=...) reserves CPUs on a Ray cluster; it needs "
                    'backend="ray" (a local replica is one process, using up to one CPU)'
                )
            if isinstance(self.num_cpus, bool) or not isinstance(self.num_cpus, int | float):
                raise TypeError(f"Isolation(num_cpus=...) must be a number, got {self.num_cpus!r}")
            if not math.isfinite(self.num_cpus) or self.num_cpus < 0:
                raise ValueError(f"Isolation(num_cpus={self.num_cpus!r}) must be 0 or more")
        if self.backend == "ray" and (self.memory_mb is not None or self.cpu_seconds is not None):
            raise ValueError(
                'Isolation(backend="ray") does not take memory_mb or cpu_seconds: a Ray actor '
                "shares its worker process with Ray; limit it with Ray's own resources instead"
            )

    @property
    def replicated(self) -> bool:
        """Whether the component runs as a set of replicas (any scale-out option is set)."""
        return self.replicas is not None or self.route_by is not None or self.backend != "process"

    def replica_count(self) -> int:
        """How many replicas to start: ``replicas`` resolved (``"cores"``: usable CPUs)."""
        if self.replicas is None:
            return 1
        return usable_cpus() if self.replicas == "cores" else int(self.replicas)

    def memory_cause(self) -> str:
        """The words used when the memory limit ends a child."""
        return f"exceeded memory limit {self.memory_mb} MiB"

    def cpu_cause(self) -> str:
        """The words used when the CPU limit ends a child."""
        return f"exceeded CPU limit {self.cpu_seconds:g} s"


def check_replicas(value: object, where: str) -> None:
    """Raise a clear error unless ``value`` is a replica count: an int of at least 1, or
    ``"cores"``."""
    if value == "cores" and isinstance(value, str):
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f'{where} must be a number of replicas or "cores", got {value!r}')
    if value < 1:
        raise ValueError(f"{where} must be at least 1, got {value!r}")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - Linux has sched_getaffinity
        return max(1, os.cpu_count() or 1)


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
