"""Errors raised by the Minions runtime.

Grouped by what the caller does about them::

    MinionsError                        base of everything the runtime raises
    ├── DefinitionError (TypeError)     fix the program: raised by the class statement or at start
    │   ├── DependencyError             a dependency is unusable (missing, not a Resource, ...)
    │   │   ├── DependencyCycleError    two or more components depend on each other
    │   │   └── IdentityConflictError   two resources claim one identity        (also ValueError)
    │   ├── ComponentOptionsError       an invalid option or identity value     (also ValueError)
    │   └── ConfigError                 minions.toml or an override fails validation (ValueError)
    ├── StartupError                    a component failed to start (startup() raised or timed out)
    ├── PrivateDirectoryError           .minions/ is unsafe: another user could change it
    ├── RuntimeStateError (RuntimeError) an operation that the current state forbids
    │   └── UnknownComponentError       a name or class this runtime does not run (LookupError)
    └── TaskCancellationError           a background task did not end cleanly when cancelled
        └── TaskCancellationTimeoutError   ... not within its grace (also TimeoutError)

Each class also derives from the builtin exception named beside it — the one the original
``minions`` project raises in the same situation — so a program that catches ``TypeError``
around a class definition, ``ValueError`` around ``@minion_id("")`` or ``RuntimeError`` around
a second ``Gru`` still catches ours. Every message says what happened and what to do about it.
"""

from __future__ import annotations


class MinionsError(Exception):
    """Base class of every error the Minions runtime raises."""


class DefinitionError(MinionsError, TypeError):
    """The program's components are defined or wired in a way that cannot run.

    Raised by the ``class`` statement itself where the class alone shows the mistake, otherwise
    when the runtime starts, before any component is constructed, so nothing is left running.
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


class IdentityConflictError(DependencyError, ValueError):
    """Two different resource classes claim the same identity."""


class ComponentOptionsError(DefinitionError, ValueError):
    """A restart policy, backoff, timeout, isolation option or identity has an invalid value."""


class ConfigError(DefinitionError, ValueError):
    """A component's configuration (minions.toml or environment) fails validation."""


class StartupError(MinionsError):
    """A component failed to start: its constructor or ``startup()`` raised, or timed out.

    ``component`` names it; the original exception is chained as ``__cause__``.
    """

    def __init__(self, component: str, message: str) -> None:
        self.component = component
        super().__init__(message)


class PrivateDirectoryError(MinionsError):
    """The project's private directory (``.minions/``) cannot be made safe: another user owns it
    or could change a directory on its path. The message names the directory and the fix."""


class RuntimeStateError(MinionsError, RuntimeError):
    """The operation is not allowed in the runtime's (or the component's) current state."""


class UnknownComponentError(RuntimeStateError, LookupError):
    """A component name or class that this runtime does not run."""


class TaskCancellationError(MinionsError):
    """A component's background task (``safe_create_task``) did not end cleanly when cancelled."""


class TaskCancellationTimeoutError(TaskCancellationError, TimeoutError):
    """A background task was still running ``timeout`` seconds after it was cancelled.

    ``label`` names the task. Raised while its component stops; the stop goes on without it.
    """

    def __init__(self, label: str, timeout: float) -> None:
        self.label = label
        self.timeout = timeout
        super().__init__(
            f"task {label!r} was still running {timeout:g} s after it was cancelled, so it was "
            "left behind; let it end when cancelled (re-raise asyncio.CancelledError, and do "
            "not wait for anything in a 'finally' without a timeout)"
        )
