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

A ``Sandbox`` (``Isolation(sandbox=Sandbox(...))``) says what a child running third-party code
may still reach: the files it may read and write, the TCP endpoints it may connect to, the
environment variables it may see, and which parts of the sandbox must be enforced for it to
start at all (``require``). It is enforced by ``isolation._sandbox``; docs/sandboxing.md says
what each setting blocks.

Timeouts (start, stop, heartbeat) and the bounds on what a child may have running in the parent
at once (calls in flight, streams open) are enforced by the parent; they live here because the
user sets them in the same place, and so do the scale-out options (``replicas``, ``route_by``,
``workflows_per_replica``, ``backend``, ``num_cpus``): this package only validates them, the
runtime acts on them.
"""

from __future__ import annotations

import math
import os
import re
import resource
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Final, Literal

__all__ = [
    "BACKENDS",
    "SANDBOX_PARTS",
    "Isolation",
    "Sandbox",
    "apply_cpu_limit",
    "apply_memory_limit",
    "check_replicas",
    "data_segment_bytes",
    "usable_cpus",
]

#: Where replicas can run: child processes of this host, or actors of a Ray cluster.
BACKENDS = ("process", "ray")
#: The parts of a sandbox, each enforced by what the kernel offers (see docs/sandboxing.md):
#: ``filesystem`` (Landlock: the read and write lists), ``network`` (seccomp and Landlock: the
#: endpoints listed, nothing else), ``signals`` (Landlock scoping: no signal to a process outside
#: the sandbox), ``syscalls`` (seccomp: no programs, tracing, namespaces, ... and no processes).
SANDBOX_PARTS: Final = frozenset({"filesystem", "network", "signals", "syscalls"})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

MIB = 1024 * 1024

#: Seconds between the soft CPU limit (SIGXCPU) and the hard one (SIGKILL).
CPU_HARD_GRACE_SECONDS = 1


def _check_positive(
    name: str, value: object, *, integer: bool = False, owner: str = "Isolation"
) -> None:
    kind = "an int" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise TypeError(f"{owner}({name}=...) must be {kind}, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{owner}({name}={value!r}) must be a positive, finite {kind[2:]}")


def _paths(owner: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str | bytes | os.PathLike) or not isinstance(value, Sequence | set):
        raise TypeError(f"Sandbox({owner}=...) must be a list of paths, got {value!r}")
    paths = []
    for item in value:
        if not isinstance(item, str | os.PathLike) or not os.fspath(item):
            raise TypeError(f"Sandbox({owner}=...) holds {item!r}, which is not a path")
        paths.append(str(os.fspath(item)))
    return tuple(paths)


def _endpoint(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"Sandbox(network=[...]) entry {text!r} must be 'host:port', such as "
            "'api.example.com:443' or '[2001:db8::1]:443'"
        )
    return host.lower().rstrip("."), int(port)


@dataclass(frozen=True)
class Sandbox:
    """What a sandboxed child may still do; everything else is refused by the kernel.

    ``network``: ``False`` (no connection at all, the default) or a list of ``"host:port"``
    endpoints it may connect to over TCP (names are resolved by the parent when the child
    starts). ``read``: paths it may read besides the Python installation and the program's own
    modules; ``write``: directories it may write in (created for it, owner-only); relative paths
    are taken from the project folder. ``env``: names of the environment variables it may see
    (default none). ``require``: the parts (``SANDBOX_PARTS``) that must be enforced for the
    child to start; a part left out is enforced when the kernel offers it and logged when it
    does not: leave one out only knowingly. ``max_open_files`` and ``max_file_mb`` bound its
    file descriptors and the size of any file it writes.

    ``Isolation(sandbox=True)`` is ``Sandbox()``: the strictest settings.
    """

    network: bool | Sequence[str] = False
    read: Sequence[str] = ()
    write: Sequence[str] = ()
    env: Sequence[str] = ()
    require: Collection[str] | None = None
    max_open_files: int = 256
    max_file_mb: int = 64

    def __post_init__(self) -> None:
        network = self.network
        if network is True:
            raise ValueError(
                "Sandbox(network=True) is not offered: list the endpoints the component needs, "
                "as network=['api.example.com:443', ...]"
            )
        if network is False:
            endpoints: tuple[str, ...] = ()
        elif isinstance(network, str) or not isinstance(network, Sequence | set):
            raise TypeError(
                f"Sandbox(network=...) must be False or a list of 'host:port', got {network!r}"
            )
        else:
            endpoints = tuple(str(item) for item in network)
            for item in endpoints:
                _endpoint(item)
        object.__setattr__(self, "network", endpoints or False)
        object.__setattr__(self, "read", _paths("read", self.read))
        object.__setattr__(self, "write", _paths("write", self.write))
        names = self.env
        if isinstance(names, str) or not isinstance(names, Sequence | set):
            raise TypeError(f"Sandbox(env=...) must be a list of variable names, got {names!r}")
        for name in names:
            if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
                raise ValueError(f"Sandbox(env=[...]) holds {name!r}, not a variable name")
        object.__setattr__(self, "env", tuple(names))
        require = SANDBOX_PARTS if self.require is None else self.require
        if isinstance(require, str) or not isinstance(require, Collection):
            raise TypeError(f"Sandbox(require=...) must be a set of parts, got {require!r}")
        unknown = sorted(str(part) for part in set(require) - SANDBOX_PARTS)
        if unknown:
            raise ValueError(
                f"Sandbox(require=...) names unknown part(s) {', '.join(unknown)}; the parts "
                f"are {', '.join(sorted(SANDBOX_PARTS))}"
            )
        object.__setattr__(self, "require", frozenset(require))
        _check_positive("max_open_files", self.max_open_files, integer=True, owner="Sandbox")
        _check_positive("max_file_mb", self.max_file_mb, integer=True, owner="Sandbox")

    @property
    def endpoints(self) -> tuple[tuple[str, int], ...]:
        """The ``network`` entries as (host, port) pairs; empty when no network is allowed."""
        network = self.network
        if isinstance(network, bool):
            return ()
        return tuple(_endpoint(item) for item in network)

    @classmethod
    def coerce(cls, value: object, *, where: str) -> Sandbox | None:
        """Read a sandbox setting given as data (``minions.toml``, ``run()`` options):
        ``True``, ``False``/``None``, a ``Sandbox``, or a map of its fields."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, Sandbox):
            return value
        if isinstance(value, Mapping):
            known = {field.name for field in fields(cls)}
            unknown = sorted(str(key) for key in value if key not in known)
            if unknown:
                raise ValueError(
                    f"{where}: unknown sandbox setting(s) {', '.join(unknown)}; the settings are "
                    f"{', '.join(sorted(known))}"
                )
            try:
                return cls(**{str(key): item for key, item in value.items()})
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{where}: {exc}") from None
        raise TypeError(
            f"{where}: a sandbox is true, false, a Sandbox(...) or a table of its settings, "
            f"got {value!r}"
        )


@dataclass(frozen=True)
class Isolation:
    """How an isolated component's child process is limited and watched.

    ``memory_mb`` caps the private memory the child may allocate (MiB); ``cpu_seconds`` caps its
    CPU time. ``start_timeout`` bounds the time from spawn to READY; ``stop_timeout`` the time a
    graceful stop may take before the child is sent SIGTERM and then SIGKILL. The child sends a
    heartbeat every ``heartbeat_interval`` seconds from its event loop; after ``heartbeat_timeout``
    seconds without one it is considered hung and killed. ``max_calls_in_flight`` and
    ``max_streams_open`` bound the calls and streams the child may have running in the parent
    at once; one beyond is refused with an error (the child is not harmed). ``sandbox``
    (``True`` or a :class:`Sandbox`) runs the child in a sandbox, for code that may be hostile.

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
    max_calls_in_flight: int = 1024
    max_streams_open: int = 256
    sandbox: Sandbox | bool | None = None

    def __post_init__(self) -> None:
        if self.sandbox is True:
            object.__setattr__(self, "sandbox", Sandbox())
        elif self.sandbox is False:
            object.__setattr__(self, "sandbox", None)
        elif self.sandbox is not None and not isinstance(self.sandbox, Sandbox):
            raise TypeError(
                f"Isolation(sandbox=...) must be True or a Sandbox(...), got {self.sandbox!r}"
            )
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
        if self.backend == "ray" and self.sandbox is not None:
            raise ValueError(
                "Isolation(sandbox=...) holds a child of this host in a sandbox; a replica on Ray "
                '(backend="ray") runs in a worker process of the cluster, where it cannot be '
                "enforced: run sandboxed components on this host"
            )
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
