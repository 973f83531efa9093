"""Isolated workflow minions: the steps run in a child, the parent owns the store.

A workflow minion marked ``isolated=True`` is split across the boundary:

* in the **child**, the user's minion is built with proxies for its resources, and a
  :class:`StepServer` runs one step at a time on request (``run_step``), with ``self.event``,
  ``self.context`` and ``self.workflow_handle`` set as usual, returning the updated context;
* in the **parent**, the ordinary :class:`~minions.workflows.runner.WorkflowRunner` drives the
  workflows of a *shadow* of the minion whose step methods call the child: the pipeline, the
  store and every checkpoint stay in the parent.

A step's end travels back as a :class:`StepOutcome`: the context as the step left it, or that
the step aborted the workflow (``AbortWorkflow``, re-raised in the parent, so the workflow is
counted as aborted exactly as in-process). Any other exception raised by the step is an error
of the call, rebuilt in the parent with its type, and fails the workflow.

When the child dies in the middle of a step, that step's call fails with ``ComponentCrashed``;
the shadow step does not report it as the workflow failing (which would delete its checkpoint):
it waits for the supervisor, which saw the same death, to stop this incarnation. The runner is
cancelled, the workflow counts as interrupted and keeps its checkpoint, and the restarted child
resumes it at that step — without the orchestrator restarting.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from isolation import ChildProcess, ChildSpec, ComponentCrashed, reference, resolve

from ..core.component import WorkflowHandle, tasks_of
from ..core.errors import RuntimeStateError, StartupError
from ..core.graph import Dependency, Node, declared_config, declared_dependencies
from ..core.host import Outcome, construct_with
from ..core.policy import Policy
from ..core.tasks import run_supervised, shutdown_supervised
from ..core.values import PlainCodec, plain_codec
from ..workflows.pipeline import Pipeline
from ..workflows.steps import (
    AbortWorkflow,
    ActiveWorkflow,
    current_workflow,
    step_names,
    workflow_types,
)
from ..workflows.store import WorkflowStore
from .children import Zygotes, component_context, isolation_of, spawn_child
from .code import fresh_class, fresh_source
from .component import replica_of

FACTORY = "minions.isolated.workflow:build_steps_in_child"
_BINDING = "__minions_orchestration__"


def user_class(cls: type[Any]) -> type[Any]:
    """The user's minion class behind a class bound by ``Gru`` (which the child cannot import)."""
    for klass in cls.__mro__:
        if _BINDING not in klass.__dict__:
            return klass
    return cls


@dataclass(frozen=True)
class StepOutcome:
    """How a step ran in the child: the context after it, or the reason it aborted."""

    context: Any = None
    aborted: str | None = None


class StepServer:
    """Runs a workflow minion's steps in its child, one call per step."""

    def __init__(self, minion: Any) -> None:
        self._minion = minion
        self._steps = frozenset(step_names(type(minion)))
        types = workflow_types(type(minion))
        assert types is not None
        self._event, self._context = (plain_codec(t) for t in types)

    async def startup(self) -> None:
        await self._minion.startup()

    async def run(self) -> None:
        # The parent's runner drives the steps until it stops us; the minion's background
        # tasks (safe_create_task) are supervised meanwhile, as in-process.
        await run_supervised(tasks_of(self._minion), None)

    async def shutdown(self) -> None:
        await shutdown_supervised(tasks_of(self._minion), self._minion.shutdown)

    async def run_step(
        self, step: str, event: Any, context: Any, orchestration_id: str, workflow_id: str
    ) -> StepOutcome:
        """Run ``step`` of one workflow: the context as it is after the step, or the abort."""
        if step not in self._steps:
            raise ValueError(f"{type(self._minion).__qualname__} has no step {step!r}")
        workflow = ActiveWorkflow(
            owner=self._minion,
            event=self._event.load(event),
            context=self._context.load(context),
            handle=WorkflowHandle(orchestration_id, workflow_id),
        )
        token = current_workflow.set(workflow)
        try:
            await getattr(self._minion, step)()
        except AbortWorkflow as exc:
            return StepOutcome(aborted=str(exc))
        finally:
            current_workflow.reset(token)
        return StepOutcome(context=self._context.dump(workflow.context))


def build_steps_in_child(proxies: Mapping[str, Any], payload: Mapping[str, Any]) -> StepServer:
    """The child's factory: the user's minion, with proxies for its resources, behind a
    :class:`StepServer`. The pipeline and the store stay in the parent (``None`` here)."""
    fresh = payload.get("fresh")
    if fresh:  # a redeploy: the minion's module runs again from its source file
        cls = fresh_class(payload["component"], fresh)
    else:
        cls = resolve(payload["component"], what="workflow minion")
    dependencies = {dep.name: proxies.get(dep.name) for dep in declared_dependencies(cls)}
    config_type, config_via = declared_config(cls)
    config = None
    if config_type is not None and payload.get("config") is not None:
        config = plain_codec(config_type).load(payload["config"])
    structlog.contextvars.bind_contextvars(component=payload["name"])
    minion = construct_with(cls, dependencies, config, config_via, replica=replica_of(payload))
    return StepServer(minion)


class IsolatedWorkflowHost:
    """Runs the workflows of one incarnation: the runner here, the steps in a child."""

    def __init__(
        self,
        node: Node,
        policy: Policy,
        isolated: object,
        zygotes: Zygotes,
        *,
        fresh_code: bool = False,
    ) -> None:
        self._node = node
        self._fresh_code = fresh_code
        self._policy = policy
        self._isolation = isolation_of(node, isolated)
        self._zygotes = zygotes
        self._child: ChildProcess | None = None
        self._steps: Any = None
        self._shadow: Any = None
        self._task: asyncio.Task[None] | None = None

    @property
    def instance(self) -> object:
        return self._shadow

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    async def start(self, provided: Mapping[type[Any], object], config: object | None) -> None:
        spec, services, config, parent_side = self._prepare(provided, config)
        self._child = await spawn_child(
            self._zygotes, self._node.name, spec, services, hold_run=True
        )
        self._steps = self._child.proxy(StepServer)
        self._start_runner(provided, config, parent_side)

    def _prepare(
        self, provided: Mapping[type[Any], object], config: object | None
    ) -> tuple[ChildSpec, dict[str, object], object | None, set[str]]:
        """What the child builds, the services it reaches here, the config, and the names of
        the dependencies that stay on this side (the pipeline and the store)."""
        node, user = self._node, user_class(self._node.cls)
        remote = remote_dependencies(node)
        parent_side = {dep.name for dep, _ in node.dependencies} - {dep.name for dep, _ in remote}
        if config is None:
            config = node.cls.__dict__.get("config")  # a Gru binding's config
        payload: dict[str, Any] = {
            "component": reference(user),
            "name": node.name,
            "config": _dump(config),
        }
        if self._fresh_code:
            try:
                payload["fresh"] = fresh_source(user)
            except RuntimeStateError as exc:
                raise StartupError(node.name, str(exc)) from None
        spec = ChildSpec(
            component=node.name,
            factory=FACTORY,
            services={dep.name: reference(bound) for dep, bound in remote},
            payload=payload,
            isolation=self._isolation,
        )
        services = {dep.name: provided[bound] for dep, bound in remote}
        return spec, services, config, parent_side

    def _start_runner(
        self, provided: Mapping[type[Any], object], config: object | None, parent_side: set[str]
    ) -> None:
        node = self._node
        self._shadow = self._make_shadow(provided, config, parent_side)
        self._task = asyncio.get_running_loop().create_task(
            self._shadow.run(), name=f"minions:{node.name}", context=component_context(node.name)
        )

    async def _run_step(
        self, step: str, event: Any, context: Any, orchestration_id: str, workflow_id: str
    ) -> StepOutcome:
        """Run one step in the child; ComponentCrashed if it dies meanwhile."""
        outcome: StepOutcome = await self._steps.run_step(
            step, event, context, orchestration_id, workflow_id
        )
        return outcome

    def _make_shadow(
        self, provided: Mapping[type[Any], object], config: object | None, parent_side: set[str]
    ) -> Any:
        """The minion as the parent's runner sees it: its pipeline and store, remote steps."""
        cls = self._node.cls
        shadow = cls.__new__(cls)
        for dep, bound in self._node.dependencies:
            if dep.name in parent_side:
                shadow.__dict__[dep.name] = provided[bound]
        if config is not None:
            shadow.__dict__["config"] = config
        types = workflow_types(cls)
        assert types is not None
        event_adapter, context_adapter = (plain_codec(t) for t in types)
        for name in step_names(cls):
            shadow.__dict__[name] = self._remote_step(name, event_adapter, context_adapter)
        return shadow

    def _remote_step(self, name: str, event: PlainCodec, context: PlainCodec) -> Any:
        async def step() -> None:
            workflow = current_workflow.get()
            try:
                outcome = await self._run_step(
                    name,
                    event.dump(workflow.event),
                    context.dump(workflow.context),
                    workflow.handle.orchestration_id,
                    workflow.handle.workflow_id,
                )
            except ComponentCrashed as exc:
                # The child died in this step (or, replicated, the minion is stopping). Neither
                # done nor failed: wait for the supervisor (which saw the death too) to stop this
                # incarnation; the checkpoint stays and the next child resumes the workflow at
                # this step.
                workflow.error = f"{type(exc).__name__}: {exc}"  # its history, on the board
                await asyncio.Event().wait()
                raise AssertionError("unreachable") from None
            if outcome.aborted is not None:
                raise AbortWorkflow(outcome.aborted)
            workflow.context = context.load(outcome.context)

        step.__name__ = name
        return step

    async def wait(self) -> Outcome:
        assert self._child is not None and self._task is not None
        self._child.start_run()  # counted running: the child's own life may begin
        child: asyncio.Future[Any] = asyncio.ensure_future(self._child.wait())
        runner: asyncio.Future[None] = asyncio.ensure_future(asyncio.shield(self._task))
        try:
            await asyncio.wait({child, runner}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (child, runner):
                if not waiter.done():
                    waiter.cancel()
        if child.done() and not child.cancelled():
            end = child.result()
            return Outcome(True, f"child {end.cause}", end.error)
        error = runner.exception() if not runner.cancelled() else None
        if error is not None:
            return Outcome(True, f"run() raised {type(error).__name__}: {error}", error)
        return Outcome(False, "run() returned")

    async def stop(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=self._policy.stop_timeout)
        if task is not None and task.done() and not task.cancelled():
            task.exception()  # reported by wait()
        if self._child is not None:
            await self._child.stop(self._isolation.stop_timeout)

    def kill(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._child.pid, signal.SIGKILL)


def remote_dependencies(node: Node) -> list[tuple[Dependency, type[Any]]]:
    """The dependencies a workflow minion's child reaches through proxies: all but its store
    and its pipeline, which the workflow loop uses here, in the parent."""
    return [
        (dep, bound)
        for dep, bound in node.dependencies
        if not (issubclass(bound, WorkflowStore) or issubclass(bound, Pipeline))
    ]


def _dump(config: object | None) -> Any:
    if config is None:
        return None
    return plain_codec(type(config)).dump(config)
