"""Minions: microservice benefits in one Python project.

Write :class:`Resource` and :class:`Minion` classes; :func:`run` wires them by type annotation,
starts them in dependency order, supervises and restarts them, and stops them cleanly.

Durable workflows: a :class:`Pipeline` produces events, a ``Minion[Event, Context]`` with
``@minion_step`` methods runs a checkpointed workflow per event, and :class:`Gru` orchestrates
them (or pass the minion to :func:`run` with its pipeline declared as a class attribute).
"""

from isolation import ComponentCrashed as ComponentCrashed
from isolation import Isolation as Isolation
from isolation import RemoteError as RemoteError
from isolation import SerializationError as SerializationError

from ._component import ComponentState as ComponentState
from ._component import Minion as Minion
from ._component import Resource as Resource
from ._control import ControlServer as ControlServer
from ._errors import ComponentOptionsError as ComponentOptionsError
from ._errors import ConfigError as ConfigError
from ._errors import DefinitionError as DefinitionError
from ._errors import DependencyCycleError as DependencyCycleError
from ._errors import DependencyError as DependencyError
from ._errors import IdentityConflictError as IdentityConflictError
from ._errors import MinionsError as MinionsError
from ._errors import RuntimeStateError as RuntimeStateError
from ._errors import StartupError as StartupError
from ._errors import UnknownComponentError as UnknownComponentError
from ._gru import Gru as Gru
from ._identity import minion_id as minion_id
from ._identity import pipeline_id as pipeline_id
from ._identity import resource_id as resource_id
from ._metrics import MetricsEndpoint as MetricsEndpoint
from ._pipeline import Pipeline as Pipeline
from ._policy import Backoff as Backoff
from ._policy import ComponentOptions as ComponentOptions
from ._policy import Intensity as Intensity
from ._run import run as run
from ._runtime import Extension as Extension
from ._runtime import Runtime as Runtime
from ._status import ComponentStatus as ComponentStatus
from ._steps import AbortWorkflow as AbortWorkflow
from ._steps import minion_step as minion_step
from ._workflow_store import WorkflowStore as WorkflowStore
from ._workflow_store import WorkflowStoreConfig as WorkflowStoreConfig

__version__ = "0.1.0.dev0"

__all__ = [
    "AbortWorkflow",
    "Backoff",
    "ComponentCrashed",
    "ComponentOptions",
    "ComponentOptionsError",
    "ComponentState",
    "ComponentStatus",
    "ConfigError",
    "ControlServer",
    "DefinitionError",
    "DependencyCycleError",
    "DependencyError",
    "Extension",
    "Gru",
    "IdentityConflictError",
    "Intensity",
    "Isolation",
    "MetricsEndpoint",
    "Minion",
    "MinionsError",
    "Pipeline",
    "RemoteError",
    "Resource",
    "Runtime",
    "RuntimeStateError",
    "SerializationError",
    "StartupError",
    "UnknownComponentError",
    "WorkflowStore",
    "WorkflowStoreConfig",
    "minion_id",
    "minion_step",
    "pipeline_id",
    "resource_id",
    "run",
]
