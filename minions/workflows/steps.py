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

A step's *name* — the method's name, or ``@minion_step(name="...")`` — is what logs, metrics
and checkpoints call it. A checkpoint records the name of the step it resumes at, so renaming
a method while keeping its step name (``@minion_step(name="old")``) still resumes saved
workflows. A step never calls another step: that would skip the checkpoint between them, so
the class statement rejects it.

One instance of the minion runs many workflows at once, so ``self.event``, ``self.context`` and
``self.workflow_handle`` are not instance attributes: they read the :class:`ActiveWorkflow` of
the running task from a context variable (:data:`current_workflow`). What a class statement
with steps checks and installs is ``minions.workflows.definition``.
"""

from __future__ import annotations

import ast
import contextvars
import inspect
import textwrap
import typing
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeVar, overload

from ..core.component import Minion, WorkflowHandle
from ..core.errors import DefinitionError

__all__ = [
    "AbortWorkflow",
    "ActiveWorkflow",
    "PersistencePolicy",
    "WorkflowSettings",
    "check_step_calls",
    "current_workflow",
    "discover_steps",
    "minion_step",
    "step_labels",
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
LABELS_ATTRIBUTE = "__minions_step_labels__"
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
    #: How many times its steps were started (this run included), and the last error it met
    #: (a step that raised, a child that died in a step); shown by ``minions workflows``.
    attempts: int = 1
    error: str | None = None
    #: An operator cancelled it (``minions workflows cancel``): it ends as aborted.
    cancelled: bool = False
    #: Its task began (a task cancelled before that never runs its ``finally`` clauses).
    started: bool = False
    #: Its entry on the workflow board (``minions.workflows.board``), set by the driver.
    entry: Any = None


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


@overload
def minion_step(fn: F, /) -> F: ...


@overload
def minion_step(*, name: str | None = None) -> Callable[[F], F]: ...


def minion_step(fn: F | None = None, /, *, name: str | None = None) -> F | Callable[[F], F]:
    """Mark an ``async def`` method of a workflow minion as its next step (in source order).

    ``@minion_step``, ``@minion_step()`` or ``@minion_step(name="quote")``: ``name`` is the
    step's name in logs, metrics and checkpoints (by default the method's name).
    """
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise DefinitionError(
            f"@minion_step(name=...) takes a non-empty string, got {name!r}; or leave it out "
            "to name the step after its method"
        )
    if fn is None:
        return lambda method: _mark_step(method, name)
    return _mark_step(fn, name)


def _mark_step(fn: F, name: str | None) -> F:
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
    setattr(fn, _STEP_MARK, name or fn.__name__)
    return fn


def _name(fn: object) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", repr(fn)))


def _is_step(value: object) -> bool:
    return isinstance(getattr(value, _STEP_MARK, None), str)


def _label(value: object) -> str:
    label: str = getattr(value, _STEP_MARK)
    return label


def step_names(cls: type) -> tuple[str, ...]:
    """The step method names of ``cls`` in run order (empty for a plain minion)."""
    steps: tuple[str, ...] = cls.__dict__.get(STEPS_ATTRIBUTE, ())
    return steps


def step_labels(cls: type) -> tuple[str, ...]:
    """The step names of ``cls`` in run order, as logs, metrics and checkpoints show them
    (``@minion_step(name=...)``, else the method's name)."""
    return tuple(_label(inspect.getattr_static(cls, name)) for name in step_names(cls))


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
    labels: dict[str, str] = {}
    for name in names:
        method = inspect.getattr_static(cls, name)
        if not _is_step(method):
            raise DefinitionError(
                f"{cls.__qualname__}.{name} overrides a workflow step without @minion_step; "
                "decorate the override too (it keeps the step's place) or give it another name"
            )
        label = _label(method)
        if label in labels:
            raise DefinitionError(
                f"{cls.__qualname__} has two steps named {label!r} ({labels[label]} and "
                f"{name}); step names tell steps apart in checkpoints, so give each its own "
                "@minion_step(name=...)"
            )
        labels[label] = name
    return tuple(names)


def check_step_calls(cls: type, steps: tuple[str, ...]) -> None:
    """Reject a step of ``cls``'s own body that calls a step (itself included).

    Each step runs after its own checkpoint; a step that awaits another runs that one without
    a checkpoint before it, and runs it again when the workflow resumes there. Read from the
    source, so a method whose source is not available (defined by ``exec``) is not checked.
    """
    wanted = frozenset(steps)
    for name in steps:
        fn = cls.__dict__.get(name)
        if fn is None:
            continue  # inherited: checked with the class that defines it
        for called in _calls_on_self(inspect.unwrap(fn), wanted):
            what = "itself" if called == name else f"the step {called}()"
            raise DefinitionError(
                f"{cls.__qualname__}.{name} calls {what}: steps are run one after another by "
                "the workflow, with a checkpoint before each, and a step that awaits another "
                "skips that checkpoint. Split the work: put what both need in a helper method "
                "without @minion_step, and let each step call the helper"
            )


def _calls_on_self(fn: Callable[..., Any], names: frozenset[str]) -> list[str]:
    """The names in ``names`` that ``fn`` calls as ``self.<name>(...)``, in source order."""
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return []
    definition = tree.body[0] if tree.body else None
    if not isinstance(definition, ast.AsyncFunctionDef) or not definition.args.args:
        return []
    receiver = definition.args.args[0].arg
    calls = [
        node
        for node in ast.walk(definition)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == receiver
        and node.func.attr in names
    ]
    calls.sort(key=lambda node: (node.lineno, node.col_offset))
    return [node.func.attr for node in calls]  # type: ignore[attr-defined]


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
