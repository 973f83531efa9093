"""Replicated workflow minions: the parent's runner, steps spread over N replicas.

A workflow minion with replicas (``isolated=Isolation(replicas=2)``) keeps everything durable
in the parent, as a lone isolated one does (:mod:`minions.isolated.workflow`): one
:class:`~minions.workflows.runner.WorkflowRunner`, the pipeline, the store, every checkpoint.
Only the steps run in the replicas, each child a :class:`~minions.isolated.workflow.StepServer`.

Each step goes to the replica with the fewest steps running, as long as it runs fewer than
``Isolation.workflows_per_replica``; when every replica is full, the step waits (in order) for
room. A step whose replica dies runs again at once on a live replica — or, when none is left,
on the first one to come back — *without* waiting out the dead replica's restart backoff, and
the workflow goes on from there: its checkpoint was committed before the step, its context
lives here, so no step it completed runs again (at least once, only for the interrupted step).
The component itself is given up only once every replica is (see
:mod:`minions.isolated.replicas`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import deque
from collections.abc import Mapping
from typing import Any

from isolation import ComponentCrashed, Isolation, PeerState

from ..core.graph import Node
from ..core.host import Outcome
from ..core.host import ReplicatedHost as ReplicatedHostBase
from ..core.policy import Policy
from ..core.status import LifecycleListener, ReplicaStatus
from ..workflows.steps import current_workflow
from .children import Zygotes
from .replicas import Replica, ReplicaLauncher, ReplicaSet, Routing
from .workflow import IsolatedWorkflowHost, StepOutcome, StepServer

__all__ = ["ReplicatedWorkflowHost", "StepPool"]


class _Member:
    __slots__ = ("idle", "replica", "running", "steps")

    def __init__(self, replica: Replica) -> None:
        self.replica = replica
        self.steps = replica.proxy(StepServer)
        self.running = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def live(self) -> bool:
        return self.replica.channel.state is PeerState.OPEN


class _Waiter:
    """A step waiting for room; ``future`` is resolved to make it look again."""

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class StepPool:
    """The replicas' step servers: least loaded with room first, bounded per replica."""

    def __init__(self, name: str, limit: int) -> None:
        self._name = name
        self._limit = limit
        self._count = 0
        self._members: dict[int, _Member] = {}
        self._draining: dict[int, _Member] = {}
        self._waiting: deque[_Waiter] = deque()
        self._closed = False

    def __repr__(self) -> str:
        running = sum(m.running for m in self._members.values())
        return f"<StepPool {self._name}: {running} steps on {len(self._members)} replicas>"

    # -- kept informed by the replica set ----------------------------------------------------

    def routing(self) -> Routing:
        return Routing(
            on_ready=self.attach,
            on_gone=self.detach,
            on_failed=self.detach,
            resize=self.resize,
            in_flight=self.in_flight,
            drained=self.drained,
        )

    def attach(self, index: int, replica: Replica) -> None:
        self._members[index] = _Member(replica)
        self._wake()

    def detach(self, index: int) -> None:
        member = self._members.pop(index, None) or self._draining.pop(index, None)
        if member is not None and member.running:
            self._draining[index] = member  # its steps fail with the replica, then leave

    def resize(self, count: int) -> None:
        self._count = count
        for index in [i for i in self._members if i >= count]:
            self._draining[index] = self._members.pop(index)
        self._wake()

    def in_flight(self, index: int) -> int:
        member = self._members.get(index) or self._draining.get(index)
        return member.running if member is not None else 0

    async def drained(self, index: int, timeout: float) -> bool:  # noqa: ASYNC109 - a bound
        member = self._draining.get(index) or self._members.get(index)
        if member is None or not member.running:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(member.idle.wait(), timeout)
        return not member.running

    def close(self) -> None:
        """Fail the steps waiting for room, and every later one, with ComponentCrashed."""
        self._closed = True
        for waiter in self._waiting:
            if not waiter.future.done():
                waiter.future.set_result(None)

    # -- running a step ------------------------------------------------------------------------

    async def run_step(
        self, step: str, event: Any, context: Any, orchestration_id: str, workflow_id: str
    ) -> StepOutcome:
        """Run one step on a replica; again elsewhere if that replica dies meanwhile."""
        while True:
            member = await self._acquire(step)
            try:
                outcome: StepOutcome = await member.steps.run_step(
                    step, event, context, orchestration_id, workflow_id
                )
                return outcome
            except ComponentCrashed as exc:
                if self._closed:
                    raise
                # The replica died in this step: the step runs again on a live replica. The
                # death is the workflow's last error (``minions workflows`` shows it).
                workflow = current_workflow.get(None)
                if workflow is not None:
                    workflow.error = f"{type(exc).__name__}: {exc}"
            finally:
                self._release(member)

    def _pick(self) -> _Member | None:
        best: _Member | None = None
        for member in self._members.values():
            # (A replica that just died is left out: it leaves the pool in a moment.)
            roomy = member.running < self._limit and member.live()
            if roomy and (best is None or member.running < best.running):
                best = member
        return best

    def _check_open(self, step: str) -> None:
        if self._closed:
            raise ComponentCrashed(
                f"{self._name} is stopping: step {step} was not run",
                component=self._name,
                method=step,
            )

    async def _acquire(self, step: str) -> _Member:
        self._check_open(step)
        member = self._pick() if not self._waiting else None
        if member is None:
            waiter = _Waiter()
            self._waiting.append(waiter)
            try:
                while True:
                    await waiter.future
                    self._check_open(step)
                    if self._waiting[0] is waiter:
                        member = self._pick()
                        if member is not None:
                            self._waiting.popleft()
                            break
                    waiter.future = asyncio.get_running_loop().create_future()
            except BaseException:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(waiter)
                self._wake()
                raise
        member.running += 1
        member.idle.clear()
        self._wake()  # room may be left for the next in line
        return member

    def _release(self, member: _Member) -> None:
        member.running -= 1
        if not member.running:
            member.idle.set()
            for index, draining in list(self._draining.items()):
                if draining is member:
                    del self._draining[index]
        self._wake()

    def _wake(self) -> None:
        """Let the first step in line look for room."""
        if self._waiting and not self._waiting[0].future.done():
            self._waiting[0].future.set_result(None)


class ReplicatedWorkflowHost(IsolatedWorkflowHost, ReplicatedHostBase):
    """Runs the workflows of one incarnation: the runner here, the steps over N replicas."""

    def __init__(
        self,
        node: Node,
        policy: Policy,
        isolation: Isolation,
        zygotes: Zygotes,
        launcher: ReplicaLauncher,
        *,
        fresh_code: bool = False,
        announce: LifecycleListener | None = None,
    ) -> None:
        super().__init__(node, policy, isolation, zygotes, fresh_code=fresh_code)
        self._launcher = launcher
        self._announce = announce
        self._pool = StepPool(node.name, isolation.workflows_per_replica)
        self._set: ReplicaSet | None = None
        self._spec: Any = None
        self._services: dict[str, object] = {}

    def __repr__(self) -> str:
        return f"<ReplicatedWorkflowHost {self._node.name} {self._set!r} {self._pool!r}>"

    @property
    def pid(self) -> int | None:
        return None

    @property
    def replicas(self) -> tuple[ReplicaStatus, ...]:
        return self._set.statuses() if self._set is not None else ()

    @property
    def running_replicas(self) -> int:
        return self._set.running if self._set is not None else 0

    async def start(self, provided: Mapping[type[Any], object], config: object | None) -> None:
        self._spec, self._services, config, parent_side = self._prepare(provided, config)
        self._set = ReplicaSet(
            self._node.name,
            self._node.kind,
            self._policy,
            self._launch,
            self._pool.routing(),
            stop_timeout=self._isolation.stop_timeout,
            announce=self._announce,
        )
        await self._set.start(self._isolation.replica_count())
        self._start_runner(provided, config, parent_side)

    async def _launch(self, index: int, count: int) -> Replica:
        payload = {**self._spec.payload, "replica": [index, count]}
        spec = dataclasses.replace(self._spec, payload=payload)
        return await self._launcher.launch(self._node.name, spec, self._services, index)

    async def _run_step(
        self, step: str, event: Any, context: Any, orchestration_id: str, workflow_id: str
    ) -> StepOutcome:
        return await self._pool.run_step(step, event, context, orchestration_id, workflow_id)

    async def wait(self) -> Outcome:
        assert self._set is not None and self._task is not None
        replicas: asyncio.Future[Outcome] = asyncio.ensure_future(self._set.wait())
        runner: asyncio.Future[None] = asyncio.ensure_future(asyncio.shield(self._task))
        try:
            waiting: set[asyncio.Future[Any]] = {replicas, runner}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in (replicas, runner):
                if not waiter.done():
                    waiter.cancel()
        if replicas.done() and not replicas.cancelled():
            return replicas.result()
        error = runner.exception() if not runner.cancelled() else None
        if error is not None:
            return Outcome(True, f"run() raised {type(error).__name__}: {error}", error)
        return Outcome(False, "run() returned")

    async def stop(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()  # the runner gives its workflows their grace, then interrupts them
            await asyncio.wait({task}, timeout=self._policy.stop_timeout)
        if task is not None and task.done() and not task.cancelled():
            task.exception()  # reported by wait()
        self._pool.close()
        if self._set is not None:
            await self._set.stop()

    def kill(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._pool.close()
        if self._set is not None:
            self._set.kill()

    async def scale(self, count: int) -> None:
        if self._set is not None:
            await self._set.scale(count)
