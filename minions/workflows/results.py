"""What Gru's operations return: results as values, and a frozen snapshot of what runs.

Gru's lifecycle calls report failure as data rather than raising, so an operator loop (a CLI,
a control socket) can show ``reason`` and ``suggestion`` and carry on: ``StartResult``,
``StopResult`` and ``ShutdownResult`` all have ``success``, and on failure a ``reason`` (what
happened) and a ``suggestion`` (what to do). ``cause`` keeps the original exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..core.component import ComponentState
from ..core.status import ComponentStatus
from .store import WorkflowStatistics

__all__ = [
    "OrchestrationStatus",
    "RuntimeSnapshot",
    "ShutdownError",
    "ShutdownResult",
    "StartResult",
    "StopResult",
]


@dataclass(frozen=True)
class StartResult:
    """The outcome of ``Gru.start_orchestration``."""

    success: bool
    reason: str | None = None
    suggestion: str | None = None
    #: Set whenever the minion, pipeline and config could be resolved, even on failure.
    orchestration_id: str | None = None
    cause: BaseException | None = None


@dataclass(frozen=True)
class StopResult:
    """The outcome of ``Gru.stop_orchestration``."""

    success: bool
    reason: str | None = None
    suggestion: str | None = None
    #: Orchestrations that made the request ambiguous (stopping is by id, so always empty).
    conflicts: tuple[str, ...] = ()


@dataclass(frozen=True)
class ShutdownError:
    """One thing that went wrong while Gru shut down."""

    phase: str
    component: str
    error_type: str
    error_message: str


@dataclass(frozen=True)
class ShutdownResult:
    """The outcome of ``Gru.shutdown``; ``errors`` lists what could not be cleaned up."""

    success: bool
    reason: str | None = None
    suggestion: str | None = None
    errors: tuple[ShutdownError, ...] = ()


@dataclass(frozen=True)
class OrchestrationStatus:
    """One running orchestration: who it pairs, its minion's state, its workflows."""

    orchestration_id: str
    #: Identities (``@minion_id``/``@pipeline_id``, or module path and class name).
    minion: str
    pipeline: str
    #: The minion's component name in the runtime (``Runtime.status()`` key).
    component: str
    state: ComponentState
    workflows: WorkflowStatistics


@dataclass(frozen=True)
class RuntimeSnapshot:
    """What a Gru runs at one moment: returned by ``Gru.runtime_state_snapshot()``."""

    #: Ids of the orchestrations started and not stopped.
    orchestrations: frozenset[str]
    #: Orchestration id -> the minion's component name.
    minion_instance_by_orchestration: Mapping[str, str]
    #: Orchestration id -> the pipeline's component name.
    pipeline_by_orchestration: Mapping[str, str]
    orchestration_status: Mapping[str, OrchestrationStatus]
    #: Every component of the runtime (workflow minions, pipelines, resources, the store).
    components: Mapping[str, ComponentStatus]

    @property
    def minion_instances(self) -> frozenset[str]:
        return frozenset(self.minion_instance_by_orchestration.values())

    @property
    def is_empty(self) -> bool:
        """No orchestration and no component: what a shut-down Gru reports."""
        return not self.orchestrations and not self.components
