"""Workflow steps: the ``@minion_step`` marker and the state of a running workflow.

A minion declared ``Minion[Event, Context]`` with ``@minion_step`` methods is a *workflow
minion*. Every event its pipeline produces starts one workflow: a fresh ``Context()``, then the
steps in order, with a checkpoint committed before each step (``minions.workflows.runner``)::

    class Executor(Minion[ChainEvent, TradeCtx]):
        prices: PriceFeed                 # resources by class annotation, as for any component
        trades: Trades                    # the pipeline it handles (or Gru names it)

        @minion_step
        async def quote(self) -> None:
            self.context.price = await self.prices.get_price(self.event.pair)

        @minion_step
        async def submit(self) -> None: ...

Step order is source order: the order of the methods in the class body, a base class's steps
before a subclass's, and a subclass that overrides a step keeps its place.

One instance of the minion runs many workflows at once, so ``self.event``, ``self.context`` and
``self.workflow_handle`` are not instance attributes: they read the :class:`ActiveWorkflow` of
the running task from a context variable (:data:`current_workflow`). What a class statement
with steps checks and installs is ``minions.workflows.definition``.
"""

from __future__ import annotations

import contextvars
import inspect
import typing
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeVar

from ..core.component import Minion, WorkflowHandle
from ..core.errors import DefinitionError

__all__ = [
    "AbortWorkflow",
    "ActiveWorkflow",
    "PersistencePolicy",
    "WorkflowSettings",
    "current_workflow",
    "discover_steps",
    "minion_step",
    "step_names",
    "workflow_settings",
    "workflow_types",
]

F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, Any]])

#: What a workflow does when a checkpoint cannot be saved (see ``minions.workflows.store``).
PersistencePolicy: TypeAlias = Literal["continue-on-failure", "idle-until-persisted"]
PERSISTENCE_POLICIES: tuple[str, ...] = typing.get_args(PersistencePolicy)

_STEP_MARK = "__minions_step__"
STEPS_ATTRIBUTE = "__minions_steps__"
SETTINGS_ATTRIBUTE = "__minions_workflow__"


class AbortWorkflow(Exception):
    """Raise inside a step to end the workflow as *aborted*.

    The workflow's checkpoint is deleted, no further step runs, and the abort is counted apart
    from failures: it is the workflow deciding it has nothing (more) to do, not an error.
    """


@dataclass(slots=True)
class ActiveWorkflow:
    """The state of one running workflow, bound to its task by a context variable."""

    owner: object
    event: Any
    context: Any
    handle: WorkflowHandle
    #: Whether the workflow gave up its place among the minion's workflows in flight.
    released: bool = False
    #: Encodes this workflow's checkpoints (its ids and event packed once); set by the driver.
    encoder: Any = None


@dataclass(frozen=True, slots=True)
class WorkflowSettings:
    """A workflow minion's class attributes that tune its workflows, checked at definition."""

    #: Workflows of this minion allowed to run at once; the pipeline waits for room.
    max_in_flight: int = 1000
    #: ``None`` takes the runtime's default (Gru's ``persistence_policy``, else continue).
    persistence_policy: PersistencePolicy | None = None
    #: Seconds a stop waits for running workflows before cancelling them (checkpoints kept).
    stop_grace: float = 0.5


def workflow_settings(cls: type) -> WorkflowSettings:
    """The settings of the workflow minion ``cls`` (defaults for any other class)."""
    settings = getattr(cls, SETTINGS_ATTRIBUTE, None)
    return settings if isinstance(settings, WorkflowSettings) else WorkflowSettings()


current_workflow: contextvars.ContextVar[ActiveWorkflow] = contextvars.ContextVar(
    "minions_current_workflow"
)


def minion_step(fn: F) -> F:
    """Mark an ``async def`` method of a workflow minion as its next step (in source order)."""
    if isinstance(fn, staticmethod | classmethod):
        kind = type(fn).__name__
        raise DefinitionError(
            f"@minion_step decorates async instance methods, not a {kind}: remove @{kind}"
        )
    if not inspect.iscoroutinefunction(inspect.unwrap(fn)):
        raise DefinitionError(
            f"@minion_step needs an async method, but {_name(fn)} is not 'async def'; "
            "write it as 'async def name(self) -> None'"
        )
    params = list(inspect.signature(fn).parameters.values())
    required = [
        p
        for p in params[1:]
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if not params or required:
        raise DefinitionError(
            f"step {_name(fn)} must take only 'self' (it reads self.event and self.context); "
            f"it has parameters {[p.name for p in params]}"
        )
    setattr(fn, _STEP_MARK, True)
    return fn


def _name(fn: object) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", repr(fn)))


def _is_step(value: object) -> bool:
    return getattr(value, _STEP_MARK, False) is True


def step_names(cls: type) -> tuple[str, ...]:
    """The step method names of ``cls`` in run order (empty for a plain minion)."""
    steps: tuple[str, ...] = cls.__dict__.get(STEPS_ATTRIBUTE, ())
    return steps


def discover_steps(cls: type) -> tuple[str, ...]:
    """The ``@minion_step`` methods of ``cls`` and its bases, in run order."""
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        for name, value in klass.__dict__.items():
            if isinstance(value, staticmethod | classmethod) and _is_step(value.__func__):
                raise DefinitionError(
                    f"{cls.__qualname__}.{name}: @minion_step must decorate an instance method, "
                    f"not a {type(value).__name__}"
                )
            if _is_step(value) and name not in names:
                names.append(name)
    for name in names:
        if not _is_step(inspect.getattr_static(cls, name)):
            raise DefinitionError(
                f"{cls.__qualname__}.{name} overrides a workflow step without @minion_step; "
                "decorate the override too (it keeps the step's place) or give it another name"
            )
    return tuple(names)


def workflow_types(cls: type) -> tuple[Any, Any] | None:
    """The (event, context) types of ``Minion[Event, Context]`` in ``cls``'s bases, if any."""
    for klass in cls.__mro__:
        for base in klass.__dict__.get("__orig_bases__", ()):
            origin = typing.get_origin(base)
            if not (isinstance(origin, type) and issubclass(origin, Minion)):
                continue
            args = typing.get_args(base)
            if len(args) == 2 and not any(isinstance(a, TypeVar) for a in args):
                return args[0], args[1]
    return None
