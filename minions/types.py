"""Data types of the workflow API: Gru's results and snapshots, workflow handles and counters."""

from ._pipeline import PipelineStatistics as PipelineStatistics
from ._results import OrchestrationStatus as OrchestrationStatus
from ._results import RuntimeSnapshot as RuntimeSnapshot
from ._results import ShutdownError as ShutdownError
from ._results import ShutdownResult as ShutdownResult
from ._results import StartResult as StartResult
from ._results import StopResult as StopResult
from ._state_store import StoredContext as StoredContext
from ._state_store import StoredWorkflowContext as StoredWorkflowContext
from ._steps import PersistencePolicy as PersistencePolicy
from ._steps import WorkflowHandle as WorkflowHandle
from ._workflow_store import WorkflowStatistics as WorkflowStatistics

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
