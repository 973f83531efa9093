"""Hosts: how one incarnation of a component is constructed, run and stopped.

The supervisor decides *when* a component starts, stops and restarts; a host does it for one
incarnation. :class:`LocalHost` runs the component in this process as an asyncio task; the
hosts of isolated components run it in a child process. Both give the supervisor the same
surface: :meth:`start` (construct, inject, ``startup()``), :meth:`wait` (until ``run()`` ends,
with how it ended), and :meth:`stop` (cancel ``run()``, bounded by the stop timeout, then
``shutdown()``).

The core does not know how a component is isolated. A runtime asks the :class:`IsolatedHosts`
that the isolation layer provides (``minions.isolated`` plugs its factory in with
:func:`provide_isolated_hosts` when ``minions`` is imported) to check isolation options at
start and to build the host of every isolated incarnation.
"""

from __future__ import annotations

import abc
import asyncio
import contextvars
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import structlog

from .component import Component, has_own_run, tasks_of
from .errors import ComponentOptionsError, StartupError, TaskCancellationTimeoutError
from .graph import Dependency, Node, declared_dependencies
from .observer import CallObserver
from .policy import Policy
from .replica import SINGLE, ReplicaInfo, declared_replica_info
from .status import LifecycleListener, ReplicaStatus
from .tasks import CANCEL_GRACE, run_supervised, shutdown_supervised

log = structlog.get_logger("minions")


@dataclass(frozen=True)
class Outcome:
    """How a component's ``run()`` ended.

    ``given_up`` says the host already applied the restart policy and gave up (every replica of
    a replicated component was given up): the supervisor gives the component up at once.
    """

    crashed: bool
    cause: str
    error: BaseException | None = None
    given_up: bool = False


class Host(Protocol):
    """One incarnation of a component (see the module docstring)."""

    @property
    def instance(self) -> object:
        """What dependents receive: the component itself, or a proxy to it."""
        ...

    @property
    def pid(self) -> int | None: ...

    async def start(self, provided: Mapping[type[Any], object], config: object | None) -> None: ...

    async def wait(self) -> Outcome: ...

    async def stop(self) -> None: ...

    def kill(self) -> None:
        """End the incarnation at once, without waiting or running ``shutdown()``."""
        ...


class ReplicatedHost(abc.ABC):
    """A host whose incarnation is a set of replicas, each supervised by the host itself.

    The hosts of replicated components subclass it (besides offering the :class:`Host`
    surface). The supervisor sees one incarnation that runs while at least one replica does;
    the host restarts its replicas under the component's policy and returns from ``wait()``
    only when all of them are at rest.
    """

    @property
    @abc.abstractmethod
    def replicas(self) -> tuple[ReplicaStatus, ...]:
        """A snapshot of each replica, by index."""

    @property
    @abc.abstractmethod
    def running_replicas(self) -> int:
        """How many replicas run now."""

    @abc.abstractmethod
    async def scale(self, count: int) -> None:
        """Run ``count`` replicas from now on: start new ones, or drain and stop the last ones
        (their calls and workflows in flight finish first, within the stop timeout)."""


class IsolatedHosts(Protocol):
    """What runs a runtime's isolated components (see the module docstring); one per runtime."""

    def check(
        self, node: Node, isolated: object, replicas: object = None, *, sandbox: object = None
    ) -> None:
        """Raise a :class:`~minions.DefinitionError` now if ``node`` cannot run as ``isolated``
        (the component's ``isolated=`` option), ``replicas`` (its ``replicas`` option, set
        outside the class: ``run()``'s options, ``minions.toml``, ``minions scale``) and
        ``sandbox`` (its ``sandbox`` option, from ``run()``'s options or ``minions.toml``) say."""
        ...

    def prepare(self) -> None:
        """Called before new isolated components start, and before their dependencies'
        ``startup()`` may create threads or connections that a fork would copy half-made."""
        ...

    async def check_redeploy(self, node: Node, isolated: object, *, sandbox: object = None) -> None:
        """Raise now, before anything stops, if ``node``'s code cannot be loaded anew by its next
        incarnation: a :class:`~minions.RuntimeStateError` if it has no source to load again, a
        :class:`~minions.StartupError` with the reason if the new code fails to load."""
        ...

    def host(
        self,
        node: Node,
        policy: Policy,
        isolated: object,
        *,
        fresh_code: bool,
        observer: CallObserver | None,
        replicas: object = None,
        announce: LifecycleListener | None = None,
        sandbox: object = None,
    ) -> Host:
        """The host of one isolated incarnation; ``fresh_code`` loads its module anew;
        ``replicas`` overrides the replica count ``isolated`` sets; ``announce`` receives the
        steps of each replica's life (the runtime's lifecycle listeners)."""
        ...

    def process_roots(self) -> frozenset[int]:
        """Pids of the processes every isolated child descends from (the zygotes): the control
        socket refuses requests from their descendants."""
        ...

    async def aclose(self) -> None:
        """End everything these hosts started; the runtime has stopped every component."""
        ...


IsolatedHostsFactory = Callable[[Path, Mapping[str, Any], Mapping[str, str]], IsolatedHosts]
"""Builds a runtime's :class:`IsolatedHosts`, given its project folder, the runtime's
``isolation_settings`` (where replicas run: ``ray_address``) and its environment."""

_isolated_hosts: list[IsolatedHostsFactory] = []


def provide_isolated_hosts(factory: IsolatedHostsFactory) -> None:
    """Plug in what runs isolated components (``minions`` does, for ``minions.isolated``)."""
    _isolated_hosts[:] = [factory]


def isolated_hosts(
    project_dir: Path, settings: Mapping[str, Any], environ: Mapping[str, str]
) -> IsolatedHosts:
    """A new :class:`IsolatedHosts` for the runtime of ``project_dir``."""
    if not _isolated_hosts:
        raise ComponentOptionsError(
            "no isolation layer is plugged in, so isolated=... cannot be honoured: import "
            "minions (not only minions.core) before starting isolated components"
        )
    return _isolated_hosts[0](project_dir, settings, environ)


class LocalHost:
    """Runs a component in this process, its hooks in tasks tagged with the component's name.

    ``run()`` runs supervised with the component's background tasks, and ``shutdown()`` after
    they are drained (:mod:`minions.core.tasks`).
    """

    def __init__(
        self, node: Node, policy: Policy, *, on_abandon: Callable[[asyncio.Task[Any]], None]
    ) -> None:
        self._node = node
        self._policy = policy
        self._on_abandon = on_abandon
        self._instance: Component | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    @property
    def instance(self) -> object:
        if self._instance is None:
            raise RuntimeError(f"{self._node.name} has not been constructed")
        return self._instance

    @property
    def pid(self) -> int | None:
        return None

    async def start(self, provided: Mapping[type[Any], object], config: object | None) -> None:
        instance = construct(self._node, provided, config)
        self._instance = instance
        try:
            await _in_component_task(
                self._node.name, instance.startup(), limit=self._policy.start_timeout
            )
        except TimeoutError:
            raise StartupError(
                self._node.name,
                f"{self._node.name}.startup() did not finish within "
                f"{self._policy.start_timeout} s; make it faster or raise start_timeout",
            ) from None
        except Exception as exc:
            raise StartupError(
                self._node.name, f"{self._node.name}.startup() raised {_describe(exc)}"
            ) from exc
        # A resource without run() lives until it is stopped, or until a background task fails.
        run = instance.run if self._node.kind == "minion" or has_own_run(self._node.cls) else None
        self._task = _spawn(self._node.name, run_supervised(tasks_of(instance), run))

    async def wait(self) -> Outcome:
        if self._task is None:
            await asyncio.Event().wait()  # never started: nothing ends
            raise AssertionError("unreachable")
        try:
            await asyncio.shield(self._task)
        except asyncio.CancelledError:
            if self._task.cancelled() and not self._stopped:
                return Outcome(True, "run() was cancelled from inside the component")
            raise
        except Exception as exc:
            failure = tasks_of(self._instance).failure
            if failure is not None and failure[1] is exc:
                return Outcome(True, f"background task {failure[0]!r} raised {_describe(exc)}", exc)
            return Outcome(True, f"run() raised {_describe(exc)}", exc)
        return Outcome(False, "run() returned")

    async def stop(self) -> None:
        self._stopped = True
        name, timeout = self._node.name, self._policy.stop_timeout
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=timeout)
            if not task.done():
                log.warning(
                    "component.stop_timeout",
                    component=name,
                    reason=f"run() did not end within {timeout} s of being cancelled; abandoned",
                )
                self._on_abandon(task)
        if task is not None and task.done() and not task.cancelled():
            task.exception()  # the outcome was reported by wait(); mark it retrieved
        if self._instance is None:
            return
        tasks = tasks_of(self._instance)
        grace = min(CANCEL_GRACE, timeout / 4)
        try:
            await _in_component_task(
                name, shutdown_supervised(tasks, self._instance.shutdown, grace), limit=timeout
            )
        except TaskCancellationTimeoutError as exc:
            log.error("component.task_left_behind", component=name, task=exc.label, reason=str(exc))
        except TimeoutError:
            log.warning(
                "component.shutdown_timeout",
                component=name,
                reason=f"shutdown() did not finish within {timeout} s",
            )
        except Exception as exc:
            log.error(
                "component.shutdown_failed", component=name, reason=_describe(exc), exc_info=exc
            )
        for task in tasks.left_behind:
            self._on_abandon(task)

    def kill(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
        if self._instance is not None:
            tasks_of(self._instance).cancel()


def construct(node: Node, provided: Mapping[type[Any], object], config: object | None) -> Component:
    """Build the component of ``node`` from the instances of its bound dependencies."""
    dependencies = {dep.name: provided[bound] for dep, bound in node.dependencies}
    declared = [dep for dep, _ in node.dependencies]
    return construct_with(
        node.cls, dependencies, config, node.config_via, name=node.name, declared=declared
    )


def construct_with(
    cls: type[Component],
    dependencies: Mapping[str, object],
    config: object | None,
    config_via: str | None,
    *,
    name: str | None = None,
    declared: Iterable[Dependency] | None = None,
    replica: ReplicaInfo = SINGLE,
) -> Component:
    """Build ``cls``: attributes injected first, so ``__init__`` may use them too.

    ``declared`` is what ``cls`` declares, when the caller has it already (the graph does);
    otherwise its annotations are read here. ``replica`` is passed to a component that declares
    a :class:`~minions.ReplicaInfo`.
    """
    kwargs: dict[str, object] = {}
    try:
        instance = cls.__new__(cls)
        for dep in declared_dependencies(cls) if declared is None else declared:
            if dep.via == "attribute":
                setattr(instance, dep.name, dependencies[dep.name])
            else:
                kwargs[dep.name] = dependencies[dep.name]
        if config_via == "attribute":
            instance.config = config  # type: ignore[attr-defined]
        elif config_via == "parameter":
            kwargs["config"] = config
        wants_replica = declared_replica_info(cls)
        if wants_replica is not None:
            if wants_replica[1] == "attribute":
                setattr(instance, wants_replica[0], replica)
            else:
                kwargs[wants_replica[0]] = replica
        instance.__init__(**kwargs)  # type: ignore[misc]
    except Exception as exc:
        shown = name or cls.__name__
        raise StartupError(shown, f"constructing {shown} raised {_describe(exc)}") from exc
    return instance


def _spawn(name: str, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
    context = contextvars.copy_context()
    context.run(structlog.contextvars.bind_contextvars, component=name)
    return asyncio.get_running_loop().create_task(coro, name=f"minions:{name}", context=context)


async def _in_component_task(name: str, coro: Coroutine[Any, Any, None], *, limit: float) -> None:
    """Run a hook in its own task; raise :class:`TimeoutError` if it is not done in ``limit``.

    Waiting with :func:`asyncio.wait` rather than ``asyncio.timeout`` around ``await task`` keeps
    the limit a limit: a hook that swallows its cancellation would otherwise hold the caller
    forever. On timeout the hook is cancelled and given a moment to end, then left behind.
    """
    task = _spawn(name, coro)
    try:
        done, _ = await asyncio.wait({task}, timeout=limit)
    finally:
        if not task.done():
            task.cancel()
    if not done:
        await asyncio.wait({task}, timeout=min(limit, _CANCEL_GRACE))
        if task.done() and not task.cancelled():
            task.exception()  # it ended after its limit; the timeout is what is reported
        raise TimeoutError
    task.result()


_CANCEL_GRACE = 1.0
"""At most this many seconds (and at most its own limit again) a hook that ran out of time gets
to end after its cancellation, before it is left behind."""


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
