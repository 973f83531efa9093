"""Minions: microservice benefits in one Python project.

Write :class:`Resource` and :class:`Minion` classes; :func:`run` wires them by type annotation,
starts them in dependency order, supervises and restarts them, and stops them cleanly.
"""

from ._component import ComponentState as ComponentState
from ._component import Minion as Minion
from ._component import Resource as Resource
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
from ._identity import minion_id as minion_id
from ._identity import pipeline_id as pipeline_id
from ._identity import resource_id as resource_id
from ._policy import Backoff as Backoff
from ._policy import ComponentOptions as ComponentOptions
from ._policy import Intensity as Intensity
from ._run import run as run
from ._runtime import Runtime as Runtime
from ._status import ComponentStatus as ComponentStatus

__version__ = "0.1.0.dev0"

__all__ = [
    "Backoff",
    "ComponentOptions",
    "ComponentOptionsError",
    "ComponentState",
    "ComponentStatus",
    "ConfigError",
    "DefinitionError",
    "DependencyCycleError",
    "DependencyError",
    "IdentityConflictError",
    "Intensity",
    "Minion",
    "MinionsError",
    "Resource",
    "Runtime",
    "RuntimeStateError",
    "StartupError",
    "UnknownComponentError",
    "minion_id",
    "pipeline_id",
    "resource_id",
    "run",
]
