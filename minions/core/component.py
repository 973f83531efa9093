"""Components: the classes users write.

A component is a :class:`Resource` (a shared dependency: a price feed, a database client) or a
:class:`Minion` (a long-lived worker). Both have three optional async hooks, and the runtime
drives every component through one lifecycle::

                 start                 startup() ok               run() ends / crashes
    CREATED ──────────────▶ STARTING ─────────────────▶ RUNNING ───────────────────────┐
                               │                          │                             │
                               │ startup() raised         │ stop / a dependency         ▼
                               ▼                          ▼ restarts           policy says restart?
                           (crash) ◀───────────────── STOPPING ──▶ STOPPED       │yes        │no
                                                                               ▼           ▼
                              FAILED ◀── intensity exceeded ── RESTARTING   COMPLETED or STOPPED
                                                               (backoff)

* ``startup()`` runs after the component is constructed and after every dependency has started.
* ``run()`` is the component's life. For a minion it is required (its long-lived loop); for a
  resource it is optional background work that is expected to last as long as the resource.
* ``shutdown()`` runs once ``run()`` has ended, whatever the reason, in reverse dependency order.
* ``self.safe_create_task(coro)`` starts background work the incarnation owns: a task that
  raises crashes the component, and the tasks are cancelled with ``run()`` and drained before
  ``shutdown()`` (:mod:`minions.core.tasks`).

Options (restart policy, timeouts, isolation) are class keywords::

    class Feed(Resource, restart="permanent", max_restarts=3, restart_window=30): ...
    class Risky(Minion, isolated=True): ...
"""

from __future__ import annotations

import asyncio
import enum
import inspect
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar, overload

from .errors import DefinitionError
from .policy import ComponentOptions, Restart
from .tasks import BackgroundTasks

EventT = TypeVar("EventT")
ContextT = TypeVar("ContextT")
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

#: Methods the runtime relies on, which a component class may not define again.
_FINAL = ("safe_create_task",)
_TASKS = "_minions_background_tasks"
_UNTRACKED = "__minions_untracked__"


def _check_final(cls: type) -> None:
    for name in _FINAL:
        if name in cls.__dict__:
            raise DefinitionError(
                f"{cls.__qualname__}.{name} cannot be overridden: the runtime supervises the "
                f"component's background tasks through it. Name your method differently, and "
                f"call self.{name}(...) to start background work"
            )


class ComponentState(enum.Enum):
    """Where a component is in its lifecycle (see the diagram in :mod:`minions.core.component`)."""

    CREATED = "created"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    RESTARTING = "restarting"
    STOPPED = "stopped"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def is_active(self) -> bool:
        """Starting, running, stopping or waiting to restart: not at rest."""
        return self in _ACTIVE


_ACTIVE = frozenset(
    {
        ComponentState.STARTING,
        ComponentState.RUNNING,
        ComponentState.STOPPING,
        ComponentState.RESTARTING,
    }
)


HOOKS = ("startup", "run", "shutdown")


def _check_hooks(cls: type[Component]) -> None:
    """Reject a hook defined without ``async``: the runtime awaits hooks on its event loop, so a
    plain ``def run(self)`` that loops would block every other component and the signal
    handlers, and one that returns would be a coroutine-less call the runtime cannot await."""
    for name in HOOKS:
        hook = cls.__dict__.get(name)
        if not inspect.isfunction(hook):
            continue  # not defined here, or not a plain function (left to fail when awaited)
        if inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(inspect.unwrap(hook)):
            continue
        if inspect.isasyncgenfunction(hook):
            raise DefinitionError(
                f"{cls.__qualname__}.{name}() is an async generator (it yields): define it as "
                f"'async def {name}(self) -> None', without yield; the runtime awaits it"
            )
        raise DefinitionError(
            f"{cls.__qualname__}.{name}() is not async: define it as 'async def {name}(self) -> "
            f"None'. The runtime awaits {name}() on its event loop, which a plain function that "
            "loops would freeze, every other component and the handling of signals with it"
        )


class Component:
    """Base of :class:`Resource` and :class:`Minion`; not subclassed directly."""

    __minions_options__: ClassVar[ComponentOptions] = ComponentOptions()
    __minions_default_restart__: ClassVar[Restart] = "transient"
    __minions_kind__: ClassVar[str] = "component"

    def __init_subclass__(cls, **keywords: Any) -> None:
        own = ComponentOptions.from_keywords(cls.__qualname__, keywords)
        inherited = getattr(cls, "__minions_options__", ComponentOptions())
        # A subclass inherits its parent's options but not its name.
        cls.__minions_options__ = ComponentOptions(**{**inherited.__dict__, "name": None}).merged(
            own
        )
        _check_final(cls)
        super().__init_subclass__()
        _check_hooks(cls)

    async def startup(self) -> None:
        """Prepare the component; called once its dependencies are running."""

    async def run(self) -> None:
        """The component's life; see :class:`Minion` and :class:`Resource`."""

    async def shutdown(self) -> None:
        """Release what ``startup()`` acquired; called after ``run()`` has ended."""

    def safe_create_task(
        self, coro: Coroutine[Any, Any, T], name: str | None = None
    ) -> asyncio.Task[T]:
        """Run ``coro`` as background work of this component, supervised by the runtime.

        If the task raises, the component crashes with that exception (its restart policy
        applies); when the component stops, the task is cancelled together with ``run()`` and
        given a moment to end before ``shutdown()``. ``name`` names the task (by default the
        coroutine's name). Call it from ``startup()``, ``run()`` or any async method.
        """
        return tasks_of(self).create(coro, name)


class Resource(Component):
    """A shared dependency, injected into every component that declares it by type annotation.

    There is one instance per resource identity (its class, or ``@resource_id``), shared by all
    its dependents. Override ``run()`` for background work (polling a feed); it is expected to
    last as long as the resource, so its ending counts as a crash. Resources restart
    ``permanent``\\ ly by default, and restarting one restarts its dependents after it.
    """

    __minions_default_restart__: ClassVar[Restart] = "permanent"
    __minions_kind__: ClassVar[str] = "resource"

    @overload
    @staticmethod
    def untracked(fn: F, /) -> F: ...

    @overload
    @staticmethod
    def untracked() -> Callable[[F], F]: ...

    @staticmethod
    def untracked(fn: F | None = None, /) -> F | Callable[[F], F]:
        """Keep an async method out of the metrics: ``@Resource.untracked`` (or ``()``).

        Calls to it are not timed or counted (a health check, a hot path measured elsewhere);
        it is still a method like any other, reachable through a proxy too.
        """
        if fn is None:
            return _mark_untracked
        return _mark_untracked(fn)


@dataclass(frozen=True, slots=True)
class WorkflowHandle:
    """Which workflow a step belongs to: ``self.workflow_handle`` inside a step."""

    orchestration_id: str
    workflow_id: str


MinionHook = Callable[[type["Minion[Any, Any]"]], None]

#: Called with every new subclass of :class:`Minion`, once its options are set. The workflow
#: layer (``minions.workflows.definition``) plugs in here to turn a class with ``@minion_step``
#: methods into a workflow minion; the core knows nothing of steps.
minion_class_hooks: list[MinionHook] = []


class Minion(Component, Generic[EventT, ContextT]):
    """A long-lived worker: override ``async def run(self)`` with its loop.

    Minions restart ``transient``\\ ly by default: a crash restarts it, a normal return finishes
    it. When every minion has finished, the runtime stops. Minions are never dependencies.

    ``Minion[Event, Context]`` with ``@minion_step`` methods is a durable workflow minion
    (``minions.workflows``): its ``run()`` starts a workflow per event of its pipeline, and
    inside a step ``self.event``, ``self.context`` and ``self.workflow_handle`` describe the
    workflow of the running task.
    """

    __minions_default_restart__: ClassVar[Restart] = "transient"
    __minions_kind__: ClassVar[str] = "minion"

    if TYPE_CHECKING:  # installed on workflow minions by the workflow layer
        event: EventT
        context: ContextT
        workflow_handle: WorkflowHandle

    def __init_subclass__(cls, **keywords: Any) -> None:
        super().__init_subclass__(**keywords)
        for hook in minion_class_hooks:
            hook(cls)


def tasks_of(component: object) -> BackgroundTasks:
    """The background tasks of ``component`` (created on first use: a user's ``__init__``
    need not call ``super().__init__()``)."""
    tasks = component.__dict__.get(_TASKS)
    if not isinstance(tasks, BackgroundTasks):
        tasks = BackgroundTasks(component_name(type(component)))  # type: ignore[arg-type]
        component.__dict__[_TASKS] = tasks
    return tasks


def is_untracked(fn: object) -> bool:
    """Whether ``fn`` was marked ``@Resource.untracked``."""
    return getattr(fn, _UNTRACKED, False) is True


def _mark_untracked(fn: F) -> F:
    if isinstance(fn, staticmethod | classmethod):
        kind = type(fn).__name__
        raise DefinitionError(
            f"@Resource.untracked marks async instance methods, not a {kind}: remove @{kind}"
        )
    if not (inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)):
        shown = getattr(fn, "__qualname__", None) or repr(fn)
        raise DefinitionError(
            f"@Resource.untracked marks async methods, but {shown} is not 'async def'; "
            "only async methods are measured, so there is nothing to leave out"
        )
    setattr(fn, _UNTRACKED, True)
    return fn


def has_own_run(cls: type[Component]) -> bool:
    """Whether ``cls`` (or a base between it and the Minions bases) defines ``run()``."""
    return cls.run is not Component.run


def component_kind(cls: type[Any]) -> str:
    """ "resource" or "minion"; a clear error for anything else."""
    if isinstance(cls, type) and issubclass(cls, Component) and cls not in _BASES:
        return cls.__minions_kind__
    raise DefinitionError(
        f"{_describe(cls)} is not a component: pass classes that subclass minions.Resource or "
        f"minions.Minion"
    )


def component_name(cls: type[Component]) -> str:
    return cls.__minions_options__.name or cls.__name__


def _describe(obj: object) -> str:
    if isinstance(obj, type):
        return f"class {obj.__module__}.{obj.__qualname__}"
    return f"{type(obj).__name__} object {obj!r}"


_BASES: frozenset[type[Any]] = frozenset({Component, Resource, Minion})
