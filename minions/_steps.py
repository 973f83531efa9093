"""Workflow steps: what turns a Minion class into a durable workflow minion.

A minion declared ``Minion[Event, Context]`` with ``@minion_step`` methods is a *workflow
minion*. Every event its pipeline produces starts one workflow: a fresh ``Context()``, then the
steps in order, with a checkpoint committed before each step (see ``_workflow``, the driver)::

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
``self.workflow_handle`` are not instance attributes: they read the workflow of the running task
from a context variable. On a plain minion (no steps) the same names are ordinary attributes.

A class with steps also gets a ``workflow_store: WorkflowStore`` class annotation (unless it
declares one), so the dependency graph starts and shares the runtime's checkpoint store like any
resource. Class attributes tune it: ``max_in_flight``, ``persistence_policy``, ``stop_grace``.

Definition problems are :class:`~minions.DefinitionError`\\ s raised by the ``class`` statement
itself: missing or unstructured event and context types, a context that cannot be built without
arguments, types the checkpoint codec cannot encode, a step that is not an ``async def`` instance
method, a ``run()`` override (a workflow minion's ``run()`` is its event loop).

This module is imported by ``_component`` (``Minion`` mixes in :class:`WorkflowSteps`), so it
imports nothing from the runtime core at module level.
"""

from __future__ import annotations

import contextvars
import dataclasses
import inspect
import typing
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeAlias, TypeVar

import pydantic

from ._errors import DefinitionError, RuntimeStateError

__all__ = [
    "AbortWorkflow",
    "PersistencePolicy",
    "WorkflowHandle",
    "WorkflowSteps",
    "minion_step",
    "step_names",
    "workflow_types",
]

EventT = TypeVar("EventT")
ContextT = TypeVar("ContextT")
F = TypeVar("F", bound=Callable[..., Coroutine[Any, Any, Any]])

#: What a workflow does when a checkpoint cannot be saved (see ``_workflow_store``).
PersistencePolicy: TypeAlias = Literal["continue-on-failure", "idle-until-persisted"]
PERSISTENCE_POLICIES: tuple[str, ...] = typing.get_args(PersistencePolicy)

_STEP_MARK = "__minions_step__"


class AbortWorkflow(Exception):
    """Raise inside a step to end the workflow as *aborted*.

    The workflow's checkpoint is deleted, no further step runs, and the abort is counted apart
    from failures: it is the workflow deciding it has nothing (more) to do, not an error.
    """


@dataclass(frozen=True, slots=True)
class WorkflowHandle:
    """Which workflow a step belongs to: ``self.workflow_handle`` inside a step."""

    orchestration_id: str
    workflow_id: str


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
    steps: tuple[str, ...] = cls.__dict__.get("__minions_steps__", ())
    return steps


def _discover_steps(cls: type) -> tuple[str, ...]:
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
            if not (isinstance(origin, type) and issubclass(origin, WorkflowSteps)):
                continue
            args = typing.get_args(base)
            if len(args) == 2 and not any(isinstance(a, TypeVar) for a in args):
                return args[0], args[1]
    return None


def _check_structured(owner: str, what: str, tp: Any) -> None:
    example = f"class {owner}(Minion[MyEvent, MyContext])"
    if isinstance(tp, str | typing.ForwardRef):
        raise DefinitionError(
            f"{owner}: the {what} type is the string {tp!r}; pass the class itself: {example}"
        )
    structured = isinstance(tp, type) and (
        dataclasses.is_dataclass(tp)
        or issubclass(tp, pydantic.BaseModel)
        or typing.is_typeddict(tp)
    )
    if not structured:
        shown = getattr(tp, "__qualname__", repr(tp))
        raise DefinitionError(
            f"{owner}: the {what} type {shown} is not a dataclass, pydantic model or TypedDict; "
            f"workflow {what}s are checkpointed field by field, so declare a structured type: "
            f"{example}"
        )


def _check_context_defaults(owner: str, ctx: type) -> None:
    missing: list[str] = []
    if dataclasses.is_dataclass(ctx):
        missing = [
            f.name
            for f in dataclasses.fields(ctx)
            if f.init
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ]
    elif issubclass(ctx, pydantic.BaseModel):
        missing = [name for name, info in ctx.model_fields.items() if info.is_required()]
    elif typing.is_typeddict(ctx):
        missing = sorted(getattr(ctx, "__required_keys__", frozenset()))
    if missing:
        raise DefinitionError(
            f"{owner}: every workflow starts with a fresh {ctx.__qualname__}() built without "
            f"arguments, but its fields {', '.join(missing)} have no default; give them defaults "
            "(None, 0, a default_factory...)"
        )


def _check_definition(cls: type[WorkflowSteps[Any, Any]]) -> None:
    owner = cls.__qualname__
    types = workflow_types(cls)
    if types is None:
        raise DefinitionError(
            f"{owner} has @minion_step methods but no event and context types; declare them: "
            f"class {cls.__name__}(Minion[MyEvent, MyContext])"
        )
    event, context = types
    _check_structured(owner, "event", event)
    _check_structured(owner, "context", context)
    _check_context_defaults(owner, context)
    # Imported here, like the store below: this module loads with the runtime core.
    from ._checkpoint import CheckpointEncodeError, checkpoint_codec

    try:
        checkpoint_codec(event, context)
    except CheckpointEncodeError as exc:
        raise DefinitionError(f"{owner}: {exc}") from exc
    if cls.run is not WorkflowSteps.run:
        raise DefinitionError(
            f"{owner} defines run() and @minion_step methods: a workflow minion's run() is the "
            "loop that starts a workflow per event. Move background work into a Resource or a "
            "separate Minion"
        )
    limit = cls.max_in_flight
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise DefinitionError(f"{owner}.max_in_flight must be a positive int, got {limit!r}")
    policy = cls.persistence_policy
    if policy is not None and policy not in PERSISTENCE_POLICIES:
        raise DefinitionError(
            f"{owner}.persistence_policy must be one of {', '.join(PERSISTENCE_POLICIES)} or "
            f"None, got {policy!r}"
        )
    grace = cls.stop_grace
    if not isinstance(grace, int | float) or isinstance(grace, bool) or not grace >= 0:
        raise DefinitionError(f"{owner}.stop_grace must be >= 0 seconds, got {grace!r}")


def _inject_store_dependency(cls: type) -> None:
    # Every workflow minion depends on the runtime's WorkflowStore resource, declared here like a
    # user's own class-annotation dependency so the graph starts it first and shares it.
    from ._workflow_store import WorkflowStore  # the store builds on the runtime core

    for klass in cls.__mro__:
        if "workflow_store" in inspect.get_annotations(klass):
            return
    # Reading cls.__annotations__ creates the class's own dict when it has none.
    cls.__annotations__["workflow_store"] = WorkflowStore


def _active(minion: object, what: str) -> ActiveWorkflow:
    workflow = current_workflow.get(None)
    if workflow is None or workflow.owner is not minion:
        raise RuntimeStateError(
            f"{type(minion).__qualname__}.{what} is only available inside a @minion_step of a "
            "running workflow"
        )
    return workflow


class WorkflowSteps(Generic[EventT, ContextT]):
    """What ``Minion`` gains from the workflow layer (see the module docstring)."""

    #: Workflows of this minion allowed to run at once; the pipeline waits for room.
    max_in_flight: ClassVar[int] = 1000
    #: ``None`` takes the runtime's default (Gru's ``persistence_policy``, else continue).
    persistence_policy: ClassVar[PersistencePolicy | None] = None
    #: Seconds a stop waits for running workflows before cancelling them (checkpoints kept).
    stop_grace: ClassVar[float] = 0.5

    def __init_subclass__(cls, **keywords: Any) -> None:
        super().__init_subclass__(**keywords)
        steps = _discover_steps(cls)
        cls.__minions_steps__ = steps  # type: ignore[attr-defined]
        if steps:
            _check_definition(cls)
            _inject_store_dependency(cls)

    @property
    def event(self) -> EventT:
        """The event that started the workflow of the running step (read-only)."""
        workflow = current_workflow.get(None)
        if workflow is not None and workflow.owner is self:  # the common case, first
            return workflow.event  # type: ignore[no-any-return]
        if not step_names(type(self)):
            return _plain_attribute(self, "event")  # type: ignore[no-any-return]
        return _active(self, "event").event  # type: ignore[no-any-return]

    @event.setter
    def event(self, value: EventT) -> None:
        if not step_names(type(self)):
            self.__dict__["event"] = value
            return
        _active(self, "event")
        raise RuntimeStateError(
            f"{type(self).__qualname__}.event cannot be replaced: it is what started the "
            "workflow; keep the state that changes in self.context"
        )

    @property
    def context(self) -> ContextT:
        """The running workflow's context: mutate it (or replace it) to carry state onwards."""
        workflow = current_workflow.get(None)
        if workflow is not None and workflow.owner is self:  # the common case, first
            return workflow.context  # type: ignore[no-any-return]
        if not step_names(type(self)):
            return _plain_attribute(self, "context")  # type: ignore[no-any-return]
        return _active(self, "context").context  # type: ignore[no-any-return]

    @context.setter
    def context(self, value: ContextT) -> None:
        if not step_names(type(self)):
            self.__dict__["context"] = value
            return
        _active(self, "context").context = value

    @property
    def workflow_handle(self) -> WorkflowHandle:
        """The orchestration and workflow ids of the running step."""
        if not step_names(type(self)):
            return _plain_attribute(self, "workflow_handle")  # type: ignore[no-any-return]
        return _active(self, "workflow_handle").handle

    @workflow_handle.setter
    def workflow_handle(self, value: WorkflowHandle) -> None:
        if not step_names(type(self)):
            self.__dict__["workflow_handle"] = value
            return
        raise RuntimeStateError(f"{type(self).__qualname__}.workflow_handle is read-only")

    async def run(self) -> None:
        """A workflow minion's life: start one workflow per event of its pipeline, resuming
        saved workflows first. Plain minions override ``run()`` with their own loop."""
        if not step_names(type(self)):
            return
        # Imported here: the driver builds on the runtime core, which imports this module.
        from ._workflow import WorkflowRunner

        await WorkflowRunner.for_minion(self).run()


def _plain_attribute(obj: object, name: str) -> Any:
    try:
        return obj.__dict__[name]
    except KeyError:
        raise AttributeError(
            f"{type(obj).__qualname__!r} object has no attribute {name!r}"
        ) from None
