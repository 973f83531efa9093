"""Restart policies: what happens when a component's ``run()`` ends.

A policy has three parts, modelled on Erlang/OTP supervisors and extended with backoff:

* **restart** — which endings lead to a restart:

  ============  ======================  ==========================
  restart       ``run()`` returned      ``run()`` raised / crashed
  ============  ======================  ==========================
  permanent     restart                 restart
  transient     finished (no restart)   restart
  temporary     finished (no restart)   stopped (no restart)
  ============  ======================  ==========================

  Minions default to ``transient`` and resources to ``permanent`` (a resource's ``run()`` is
  background work that should last as long as the resource, so its ending is a crash).

* **backoff** — how long to wait before the restart: ``initial * factor ** n`` capped at ``cap``,
  where ``n`` counts the component's restarts inside the intensity window, then spread by
  ``± jitter`` (a fraction) so that components that crashed together do not restart in lockstep.

* **intensity** — at most ``max_restarts`` restarts within ``within`` seconds. One more crash in
  that window and the component is given up: its state becomes FAILED, the reason is logged, and
  the components that depend on it are stopped.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal, TypeAlias, get_args

from .errors import ComponentOptionsError

Restart: TypeAlias = Literal["permanent", "transient", "temporary"]
RESTART_VALUES: tuple[str, ...] = get_args(Restart)


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter between restarts of one component."""

    initial: float = 0.1
    factor: float = 2.0
    cap: float = 30.0
    jitter: float = 0.1

    def __post_init__(self) -> None:
        _require(self.initial >= 0, f"backoff initial must be >= 0 seconds, got {self.initial}")
        _require(self.factor >= 1, f"backoff factor must be >= 1, got {self.factor}")
        _require(self.cap >= self.initial, f"backoff cap ({self.cap}) must be >= initial")
        _require(0 <= self.jitter < 1, f"backoff jitter must be in [0, 1), got {self.jitter}")

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before restart number ``attempt`` (0 for the first in a window)."""
        base = self.cap if attempt > 64 else min(self.cap, self.initial * self.factor**attempt)
        if self.jitter and base:
            base *= 1 + rng.uniform(-self.jitter, self.jitter)
        return max(0.0, base)


@dataclass(frozen=True)
class Intensity:
    """At most ``max_restarts`` restarts within ``within`` seconds; beyond that, give up."""

    max_restarts: int = 10
    within: float = 60.0

    def __post_init__(self) -> None:
        _require(self.max_restarts >= 0, f"max_restarts must be >= 0, got {self.max_restarts}")
        _require(self.within > 0, f"intensity window must be > 0 seconds, got {self.within}")


class RestartHistory:
    """The restart times of one component inside its intensity window."""

    def __init__(self, intensity: Intensity) -> None:
        self._intensity = intensity
        self._times: deque[float] = deque()

    def recent(self, now: float) -> int:
        """How many restarts happened within the window ending at ``now``."""
        horizon = now - self._intensity.within
        while self._times and self._times[0] <= horizon:
            self._times.popleft()
        return len(self._times)

    def allows_restart(self, now: float) -> bool:
        return self.recent(now) < self._intensity.max_restarts

    def record(self, now: float) -> None:
        self._times.append(now)

    def clear(self) -> None:
        self._times.clear()


@dataclass(frozen=True)
class ComponentOptions:
    """Per-component settings, from class keywords and ``run(..., options=...)``.

    ``None`` means "not set here": options set in ``run(...)`` override class keywords, which
    override the defaults for the component's kind. ``sandbox`` (also read from the
    ``[minions.sandbox]`` table of ``minions.toml``, between the two) runs the component
    isolated, in a sandbox: an operator can sandbox a class without editing it.
    """

    restart: Restart | None = None
    backoff: Backoff | None = None
    intensity: Intensity | None = None
    start_timeout: float | None = None
    stop_timeout: float | None = None
    isolated: Any = None  # bool | isolation.Isolation; validated by the runtime
    sandbox: Any = None  # bool | isolation.Sandbox | a mapping of its fields; implies isolated
    name: str | None = None
    #: Replicas of an isolated component: an int or "cores"; overrides the Isolation's.
    replicas: int | str | None = None

    def __post_init__(self) -> None:
        if self.restart is not None and self.restart not in RESTART_VALUES:
            raise ComponentOptionsError(
                f"restart must be one of {', '.join(RESTART_VALUES)}; got {self.restart!r}"
            )
        for label in ("start_timeout", "stop_timeout"):
            value = getattr(self, label)
            if value is not None and (not isinstance(value, int | float) or value <= 0):
                raise ComponentOptionsError(
                    f"{label} must be a positive number of seconds, got {value!r}"
                )
        if self.name is not None and not (isinstance(self.name, str) and self.name.strip()):
            raise ComponentOptionsError(f"name must be a non-empty string, got {self.name!r}")
        if self.replicas is not None:
            check_replica_count(self.replicas, "replicas")

    @classmethod
    def from_keywords(cls, owner: str, keywords: dict[str, Any]) -> ComponentOptions:
        """Build options from class keywords or a ``run()`` options mapping, with clear errors."""
        known = {f.name for f in fields(cls)}
        extra = dict(keywords)
        max_restarts = extra.pop("max_restarts", None)
        within = extra.pop("restart_window", None)
        unknown = sorted(set(extra) - known)
        if unknown:
            allowed = ", ".join(sorted(known | {"max_restarts", "restart_window"}))
            raise ComponentOptionsError(
                f"{owner}: unknown option(s) {', '.join(unknown)}; the options are: {allowed}"
            )
        try:
            if max_restarts is not None or within is not None:
                base = extra.get("intensity") or Intensity()
                extra["intensity"] = Intensity(
                    max_restarts=base.max_restarts if max_restarts is None else max_restarts,
                    within=base.within if within is None else within,
                )
            return cls(**extra)
        except ComponentOptionsError as exc:
            raise ComponentOptionsError(f"{owner}: {exc}") from None

    def merged(self, override: ComponentOptions) -> ComponentOptions:
        """These options with every field that ``override`` sets replaced."""
        changes = {f.name: getattr(override, f.name) for f in fields(self)}
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


@dataclass(frozen=True)
class Policy:
    """The resolved restart policy of one component (every field set)."""

    restart: Restart
    backoff: Backoff = field(default_factory=Backoff)
    intensity: Intensity = field(default_factory=Intensity)
    start_timeout: float = 60.0
    stop_timeout: float = 5.0

    @classmethod
    def resolve(cls, options: ComponentOptions, default_restart: Restart) -> Policy:
        return cls(
            restart=options.restart or default_restart,
            backoff=options.backoff or Backoff(),
            intensity=options.intensity or Intensity(),
            start_timeout=options.start_timeout or 60.0,
            stop_timeout=options.stop_timeout or 5.0,
        )

    def restarts_after(self, *, crashed: bool) -> bool:
        """Whether ``run()`` ending this way leads to a restart."""
        if self.restart == "permanent":
            return True
        if self.restart == "transient":
            return crashed
        return False


def _require(condition: bool, message: str) -> None:
    # Comparisons with NaN are false, so NaN options are rejected here too.
    if not condition:
        raise ComponentOptionsError(message)


def check_replica_count(value: object, where: str) -> None:
    """Raise a ComponentOptionsError unless ``value`` is an int of at least 1 or ``"cores"``."""
    if value == "cores" and isinstance(value, str):
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ComponentOptionsError(
            f'{where} must be a number of replicas (1 or more) or "cores", got {value!r}'
        )
