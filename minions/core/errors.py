"""Errors raised by the Minions runtime.

Grouped by what the caller does about them::

    MinionsError                     base of everything the runtime raises
    ├── DefinitionError              fix the program: raised at start, before anything runs
    │   ├── DependencyError          a dependency is unusable (missing, not a Resource, ...)
    │   │   ├── DependencyCycleError two or more components depend on each other
    │   │   └── IdentityConflictError two resources claim one identity
    │   ├── ComponentOptionsError    an invalid restart policy, backoff, timeout or isolation option
    │   └── ConfigError              minions.toml or an environment override fails validation
    ├── StartupError                 a component failed to start (its startup() raised or timed out)
    └── RuntimeStateError            an operation that the runtime's current state forbids
        └── UnknownComponentError    a name or class that this runtime does not run

Every message says what happened and what to do about it.
"""

from __future__ import annotations


class MinionsError(Exception):
    """Base class of every error the Minions runtime raises."""


class DefinitionError(MinionsError):
    """The program's components are defined or wired in a way that cannot run.

    Raised when the runtime starts, before any component is constructed, so nothing is left running.
    """


class DependencyError(DefinitionError):
    """A dependency declared by type annotation cannot be injected."""


class DependencyCycleError(DependencyError):
    """Components depend on each other in a cycle; ``chain`` lists it, the first repeated last."""

    def __init__(self, chain: list[str]) -> None:
        self.chain = chain
        path = " -> ".join(chain)
        super().__init__(
            f"dependency cycle: {path}. Break the cycle: move the shared part into a Resource "
            f"that both depend on, or pass one side's data through a method call instead."
        )


class IdentityConflictError(DependencyError):
    """Two different resource classes claim the same identity."""


class ComponentOptionsError(DefinitionError):
    """A restart policy, backoff, timeout or isolation option has an invalid value."""


class ConfigError(DefinitionError):
    """A component's configuration (minions.toml or environment) fails validation."""


class StartupError(MinionsError):
    """A component failed to start: its constructor or ``startup()`` raised, or timed out.

    ``component`` names it; the original exception is chained as ``__cause__``.
    """

    def __init__(self, component: str, message: str) -> None:
        self.component = component
        super().__init__(message)


class RuntimeStateError(MinionsError):
    """The operation is not allowed in the runtime's (or the component's) current state."""


class UnknownComponentError(RuntimeStateError, LookupError):
    """A component name or class that this runtime does not run."""
