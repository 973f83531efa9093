"""What a ``class`` statement with ``@minion_step`` methods does: the workflow minion's shape.

The core calls :func:`define_workflow_minion` for every new ``Minion`` subclass (the hook is
plugged in by ``minions/__init__.py``). For a class with steps it:

* checks the definition, raising a :class:`~minions.DefinitionError` from the ``class``
  statement itself: missing or unstructured event and context types (a dataclass, pydantic
  model, TypedDict or msgspec Struct), a context that cannot be built without arguments, types
  the checkpoint codec cannot encode, a step that calls another step, a ``run()`` override (a
  workflow minion's ``run()`` is its event loop), bad ``max_in_flight``, ``persistence_policy``
  or ``stop_grace`` class attributes;
* declares ``workflow_store: WorkflowStore`` (unless the class does), so the dependency graph
  starts and shares the runtime's checkpoint store like any resource;
* installs ``run()`` — the :class:`~minions.workflows.runner.WorkflowRunner` of the instance —
  and the ``event``, ``context`` and ``workflow_handle`` properties, which read the workflow of
  the running task.

A minion without steps is left as it is: ``event`` or ``context`` are then ordinary attributes.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

from ..core.component import Minion, WorkflowHandle
from ..core.errors import DefinitionError, RuntimeStateError
from ..core.values import is_structured, required_fields
from .checkpoint import CheckpointEncodeError, checkpoint_codec
from .runner import WorkflowRunner
from .steps import (
    PERSISTENCE_POLICIES,
    SETTINGS_ATTRIBUTE,
    STEPS_ATTRIBUTE,
    ActiveWorkflow,
    WorkflowSettings,
    check_step_calls,
    current_workflow,
    discover_steps,
    workflow_types,
)
from .store import WorkflowStore

__all__ = ["define_workflow_minion"]


def define_workflow_minion(cls: type[Minion[Any, Any]]) -> None:
    """Make ``cls`` a workflow minion if it has steps (see the module docstring)."""
    steps = discover_steps(cls)
    setattr(cls, STEPS_ATTRIBUTE, steps)
    if not steps:
        return
    _check_types(cls)
    check_step_calls(cls, steps)
    _check_run(cls)
    setattr(cls, SETTINGS_ATTRIBUTE, _settings(cls))
    _declare_store(cls)
    cls.run = _run_workflows  # type: ignore[method-assign,assignment]
    for name, view in _VIEWS.items():
        setattr(cls, name, view)


async def _run_workflows(self: Minion[Any, Any]) -> None:
    """A workflow minion's life: start one workflow per event of its pipeline, resuming saved
    workflows first."""
    await WorkflowRunner.for_minion(self).run()


def _check_run(cls: type) -> None:
    for klass in cls.__mro__:
        if klass is Minion:
            return
        own = klass.__dict__.get("run")
        if own is not None and own is not _run_workflows:
            raise DefinitionError(
                f"{cls.__qualname__} defines run() and @minion_step methods: a workflow "
                "minion's run() is the loop that starts a workflow per event. Move background "
                "work into a Resource or a separate Minion"
            )


def _check_types(cls: type) -> None:
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
    try:
        checkpoint_codec(event, context)
    except CheckpointEncodeError as exc:
        raise DefinitionError(f"{owner}: {exc}") from exc


def _check_structured(owner: str, what: str, tp: Any) -> None:
    example = f"class {owner}(Minion[MyEvent, MyContext])"
    if isinstance(tp, str | typing.ForwardRef):
        raise DefinitionError(
            f"{owner}: the {what} type is the string {tp!r}; pass the class itself: {example}"
        )
    if not is_structured(tp):
        shown = getattr(tp, "__qualname__", repr(tp))
        raise DefinitionError(
            f"{owner}: the {what} type {shown} is not a dataclass, pydantic model, TypedDict or "
            f"msgspec Struct; workflow {what}s are checkpointed field by field, so declare a "
            f"structured type: {example}"
        )


def _check_context_defaults(owner: str, ctx: type) -> None:
    missing = required_fields(ctx)
    if missing:
        raise DefinitionError(
            f"{owner}: every workflow starts with a fresh {ctx.__qualname__}() built without "
            f"arguments, but its fields {', '.join(missing)} have no default; give them defaults "
            "(None, 0, a default_factory...)"
        )


def _settings(cls: type) -> WorkflowSettings:
    owner = cls.__qualname__
    defaults = WorkflowSettings()
    limit = getattr(cls, "max_in_flight", defaults.max_in_flight)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise DefinitionError(f"{owner}.max_in_flight must be a positive int, got {limit!r}")
    policy = getattr(cls, "persistence_policy", defaults.persistence_policy)
    if policy is not None and policy not in PERSISTENCE_POLICIES:
        raise DefinitionError(
            f"{owner}.persistence_policy must be one of {', '.join(PERSISTENCE_POLICIES)} or "
            f"None, got {policy!r}"
        )
    grace = getattr(cls, "stop_grace", defaults.stop_grace)
    if not isinstance(grace, int | float) or isinstance(grace, bool) or not grace >= 0:
        raise DefinitionError(f"{owner}.stop_grace must be >= 0 seconds, got {grace!r}")
    return WorkflowSettings(max_in_flight=limit, persistence_policy=policy, stop_grace=grace)


def _declare_store(cls: type) -> None:
    # Every workflow minion depends on the runtime's WorkflowStore resource, declared here like a
    # user's own class-annotation dependency so the graph starts it first and shares it.
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


def _get_event(self: object) -> Any:
    workflow = current_workflow.get(None)
    if workflow is not None and workflow.owner is self:  # the common case, first
        return workflow.event
    return _active(self, "event").event


def _set_event(self: object, value: Any) -> None:
    _active(self, "event")
    raise RuntimeStateError(
        f"{type(self).__qualname__}.event cannot be replaced: it is what started the "
        "workflow; keep the state that changes in self.context"
    )


def _get_context(self: object) -> Any:
    workflow = current_workflow.get(None)
    if workflow is not None and workflow.owner is self:  # the common case, first
        return workflow.context
    return _active(self, "context").context


def _set_context(self: object, value: Any) -> None:
    _active(self, "context").context = value


def _get_handle(self: object) -> WorkflowHandle:
    return _active(self, "workflow_handle").handle


def _set_handle(self: object, value: WorkflowHandle) -> None:
    raise RuntimeStateError(f"{type(self).__qualname__}.workflow_handle is read-only")


_VIEWS: dict[str, property] = {
    "event": property(
        _get_event, _set_event, doc="The event that started the running step's workflow."
    ),
    "context": property(
        _get_context,
        _set_context,
        doc="The running workflow's context: mutate it (or replace it) to carry state onwards.",
    ),
    "workflow_handle": property(
        _get_handle, _set_handle, doc="The orchestration and workflow ids of the running step."
    ),
}
