"""Minions: microservice benefits in one Python project.

Write :class:`Resource` and :class:`Minion` classes; :func:`run` wires them by type annotation,
starts them in dependency order, supervises and restarts them, and stops them cleanly.

Durable workflows: a :class:`Pipeline` produces events, a ``Minion[Event, Context]`` with
``@minion_step`` methods runs a checkpointed workflow per event, and :class:`Gru` orchestrates
them (or pass the minion to :func:`run` with its pipeline declared as a class attribute).

The names here are the public surface; the code lives in layers that only look down
(docs/architecture.md): ``minions.core`` (components, graph, supervision, runtime) <-
``minions.workflows`` <- ``minions.isolated`` (components in child processes, over the
``isolation`` package) <- ``minions.ops`` (``run``, the CLI, control socket, metrics,
dashboard). The two places where an upper layer plugs into the core are wired below.
"""

from isolation import ComponentCrashed as ComponentCrashed
from isolation import Isolation as Isolation
from isolation import RemoteError as RemoteError
from isolation import Sandbox as Sandbox
from isolation import SerializationError as SerializationError

from .core.component import ComponentState as ComponentState
from .core.component import Minion as Minion
from .core.component import Resource as Resource
from .core.component import minion_class_hooks as _minion_class_hooks
from .core.errors import ComponentOptionsError as ComponentOptionsError
from .core.errors import ConfigError as ConfigError
from .core.errors import DefinitionError as DefinitionError
from .core.errors import DependencyCycleError as DependencyCycleError
from .core.errors import DependencyError as DependencyError
from .core.errors import IdentityConflictError as IdentityConflictError
from .core.errors import MinionsError as MinionsError
from .core.errors import RuntimeStateError as RuntimeStateError
from .core.errors import StartupError as StartupError
from .core.errors import UnknownComponentError as UnknownComponentError
from .core.host import provide_isolated_hosts as _provide_isolated_hosts
from .core.idempotent import idempotent as idempotent
from .core.identity import minion_id as minion_id
from .core.identity import pipeline_id as pipeline_id
from .core.identity import resource_id as resource_id
from .core.policy import Backoff as Backoff
from .core.policy import ComponentOptions as ComponentOptions
from .core.policy import Intensity as Intensity
from .core.replica import ReplicaInfo as ReplicaInfo
from .core.runtime import Extension as Extension
from .core.runtime import Runtime as Runtime
from .core.status import ComponentStatus as ComponentStatus
from .core.status import LifecycleEvent as LifecycleEvent
from .core.status import ReplicaStatus as ReplicaStatus
from .isolated.isolator import Isolator as _Isolator
from .ops.control import ControlServer as ControlServer
from .ops.dashboard.extension import Dashboard as Dashboard
from .ops.metrics import MetricsEndpoint as MetricsEndpoint
from .ops.run import run as run
from .workflows.definition import define_workflow_minion as _define_workflow_minion
from .workflows.gru import Gru as Gru
from .workflows.pipeline import Pipeline as Pipeline
from .workflows.steps import AbortWorkflow as AbortWorkflow
from .workflows.steps import minion_step as minion_step
from .workflows.store import WorkflowStore as WorkflowStore
from .workflows.store import WorkflowStoreConfig as WorkflowStoreConfig

_minion_class_hooks.append(_define_workflow_minion)
_provide_isolated_hosts(_Isolator)

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
    "Dashboard",
    "DefinitionError",
    "DependencyCycleError",
    "DependencyError",
    "Extension",
    "Gru",
    "IdentityConflictError",
    "Intensity",
    "Isolation",
    "LifecycleEvent",
    "MetricsEndpoint",
    "Minion",
    "MinionsError",
    "Pipeline",
    "RemoteError",
    "ReplicaInfo",
    "ReplicaStatus",
    "Resource",
    "Runtime",
    "RuntimeStateError",
    "Sandbox",
    "SerializationError",
    "StartupError",
    "UnknownComponentError",
    "WorkflowStore",
    "WorkflowStoreConfig",
    "idempotent",
    "minion_id",
    "minion_step",
    "pipeline_id",
    "resource_id",
    "run",
]
