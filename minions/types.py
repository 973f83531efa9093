"""Data types of the workflow API: Gru's results and snapshots, workflow handles and counters."""

from .core.component import WorkflowHandle as WorkflowHandle
from .workflows.pipeline import PipelineStatistics as PipelineStatistics
from .workflows.results import OrchestrationStatus as OrchestrationStatus
from .workflows.results import RuntimeSnapshot as RuntimeSnapshot
from .workflows.results import ShutdownError as ShutdownError
from .workflows.results import ShutdownResult as ShutdownResult
from .workflows.results import StartResult as StartResult
from .workflows.results import StopResult as StopResult
from .workflows.state_store import StoredContext as StoredContext
from .workflows.state_store import StoredWorkflowContext as StoredWorkflowContext
from .workflows.steps import PersistencePolicy as PersistencePolicy
from .workflows.store import WorkflowStatistics as WorkflowStatistics

__all__ = [
    "OrchestrationStatus",
    "PersistencePolicy",
    "PipelineStatistics",
    "RuntimeSnapshot",
    "ShutdownError",
    "ShutdownResult",
    "StartResult",
    "StopResult",
    "StoredContext",
    "StoredWorkflowContext",
    "WorkflowHandle",
    "WorkflowStatistics",
]
