"""WorkflowStore: the resource that keeps workflow checkpoints and applies the persistence policy.

Every workflow minion depends on it (``@minion_step`` classes declare the dependency for you), so
one runtime has one: started before the first workflow minion, stopped after the last, and shared
like any resource. It wraps a :class:`~minions.interfaces.StateStore`:

* with ``run(...)`` / ``Runtime``: an ``SQLiteStateStore`` at ``path`` from the ``[WorkflowStore]``
  table of ``minions.toml``, by default ``<project>/.minions/state.sqlite3`` (the project is
  ``$MINIONS_PROJECT_DIR`` or the current directory). Bind a subclass that overrides
  :meth:`WorkflowStore.open_store` to keep checkpoints elsewhere.
* with :class:`~minions.Gru`: Gru binds a subclass that shares Gru's own store, logger, metrics
  and counters (``WorkflowStore.provided``).

Persistence failure policies (per minion ``persistence_policy``, else the store's default):

``continue-on-failure`` (default)
    A checkpoint that cannot be saved is logged and counted, and the step runs anyway; the next
    checkpoint tries again. A failed delete is remembered and retried after the next good write.
``idle-until-persisted``
    The workflow waits and retries the save with capped, jittered exponential backoff until it
    is durable; the step runs only then. A failed delete is retried the same way.

Errors that retrying cannot fix are never retried: a checkpoint the codec cannot encode, and a
store error that is not ``retryable`` (a damaged or closed store, a bad argument). Under
``idle-until-persisted`` they fail the workflow with :class:`PersistenceError`; under
``continue-on-failure`` the workflow goes on without that checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import ClassVar

import pydantic

from ._clock import Clock, MonotonicClock
from ._component import Resource
from ._errors import MinionsError
from ._policy import Backoff
from ._runtime import default_project_dir
from ._sqlite_store import SQLiteStateStore, default_state_path
from ._state_store import StateStore, StateStoreError, StoredContext
from ._steps import PersistencePolicy
from ._telemetry import Logger, Metrics, NoOpMetrics, StructlogLogger

__all__ = [
    "PersistenceError",
    "StoreServices",
    "WorkflowCounters",
    "WorkflowStatistics",
    "WorkflowStore",
    "WorkflowStoreConfig",
    "store_hook",
]

#: Retry delays under ``idle-until-persisted``: 50 ms doubling to 5 s, +-20 %.
RETRY_BACKOFF = Backoff(initial=0.05, factor=2.0, cap=5.0, jitter=0.2)
#: How long a finished workflow's delete may wait for the next workflow to start, so that both
#: go to the store together and a batching store commits them at once.
DELETE_LINGER = 0.002

_Deferred = tuple[str, str, PersistencePolicy, "asyncio.Future[None]"]


class PersistenceError(MinionsError):
    """A checkpoint could not be made durable and retrying cannot help (the workflow fails)."""


class WorkflowStoreConfig(pydantic.BaseModel):
    """The ``[WorkflowStore]`` table of ``minions.toml``."""

    path: str | None = None
    persistence_policy: PersistencePolicy = "continue-on-failure"


@dataclass(frozen=True)
class WorkflowStatistics:
    """The workflows of one orchestration, counted since the process started.

    ``succeeded``, ``aborted`` and ``failed`` are the terminal outcomes (checkpoint deleted);
    ``interrupted`` counts workflows cancelled by a stop, whose checkpoints are kept.
    """

    started: int = 0
    resumed: int = 0
    succeeded: int = 0
    aborted: int = 0
    failed: int = 0
    interrupted: int = 0
    in_flight: int = 0
    checkpoints_saved: int = 0
    checkpoint_failures: int = 0
    corrupt_skipped: int = 0

    @property
    def finished(self) -> int:
        """Workflows that reached a terminal outcome."""
        return self.succeeded + self.aborted + self.failed


_FIELDS = tuple(f.name for f in fields(WorkflowStatistics))


class WorkflowCounters:
    """The live counters behind :class:`WorkflowStatistics`, with a way to await a condition."""

    __slots__ = ("_values", "_waiters")

    def __init__(self) -> None:
        self._values = dict.fromkeys(_FIELDS, 0)
        self._waiters: list[
            tuple[Callable[[WorkflowStatistics], bool], asyncio.Future[WorkflowStatistics]]
        ] = []

    def add(self, name: str, amount: int = 1) -> None:
        self._values[name] += amount
        if self._waiters:
            self._wake()

    def snapshot(self) -> WorkflowStatistics:
        return WorkflowStatistics(**self._values)

    async def wait_until(
        self, predicate: Callable[[WorkflowStatistics], bool]
    ) -> WorkflowStatistics:
        """Return the first snapshot for which ``predicate`` holds (now or later)."""
        current = self.snapshot()
        if predicate(current):
            return current
        future: asyncio.Future[WorkflowStatistics] = asyncio.get_running_loop().create_future()
        entry = (predicate, future)
        self._waiters.append(entry)
        try:
            return await future
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def _wake(self) -> None:
        current = self.snapshot()
        for predicate, future in list(self._waiters):
            if not future.done() and predicate(current):
                future.set_result(current)


@dataclass
class StoreServices:
    """What a ``WorkflowStore`` works with; a binding subclass sets ``provided`` to share one."""

    state_store: StateStore
    #: Whether the WorkflowStore starts and shuts the state store down (False: its owner does).
    owns_store: bool = True
    logger: Logger = field(default_factory=StructlogLogger)
    metrics: Metrics = field(default_factory=NoOpMetrics)
    persistence_policy: PersistencePolicy = "continue-on-failure"
    clock: Clock = field(default_factory=MonotonicClock)
    rng: random.Random = field(default_factory=random.Random)
    counters: dict[str, WorkflowCounters] = field(default_factory=dict)

    def counters_for(self, orchestration_id: str) -> WorkflowCounters:
        counters = self.counters.get(orchestration_id)
        if counters is None:
            counters = self.counters[orchestration_id] = WorkflowCounters()
        return counters


async def store_hook(store: object, name: str) -> None:
    """Await a store's optional ``startup``/``shutdown`` hook (a store written without
    subclassing ``StateStore`` need not have them)."""
    hook = getattr(store, name, None)
    if callable(hook):
        await hook()


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, StateStoreError):
        return exc.retryable
    # A custom store's own I/O errors (ConnectionError, TimeoutError...) are outages; anything
    # else (TypeError, ValueError...) is a bug that the same call would hit again.
    return isinstance(exc, OSError)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class WorkflowStore(Resource):
    """Keeps the checkpoints of the runtime's workflow minions (see the module docstring)."""

    config: WorkflowStoreConfig
    #: Set on a binding subclass to use these services instead of opening a store.
    provided: ClassVar[StoreServices | None] = None

    def __init__(self) -> None:
        services = type(self).provided
        if services is None:
            config = getattr(self, "config", None) or WorkflowStoreConfig()
            services = StoreServices(
                state_store=self.open_store(),
                persistence_policy=config.persistence_policy,
            )
        self.services = services
        self._pending_deletes: dict[str, None] = {}
        self._deferred: list[_Deferred] = []
        self._linger: asyncio.TimerHandle | None = None
        self._flushing: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"<WorkflowStore {self.services.state_store!r}>"

    def open_store(self) -> StateStore:
        """The state store to use when none is provided: SQLite in the project's ``.minions``."""
        config = getattr(self, "config", None) or WorkflowStoreConfig()
        project = default_project_dir()
        if config.path:
            path = Path(config.path)
            return SQLiteStateStore(path if path.is_absolute() else project / path)
        return SQLiteStateStore(default_state_path(project))

    @property
    def state_store(self) -> StateStore:
        return self.services.state_store

    async def startup(self) -> None:
        if self.services.owns_store:
            await store_hook(self.services.state_store, "startup")

    async def shutdown(self) -> None:
        self.flush_deletes()
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)
        if self.services.owns_store:
            await store_hook(self.services.state_store, "shutdown")

    def counters(self, orchestration_id: str) -> WorkflowCounters:
        return self.services.counters_for(orchestration_id)

    async def load(self, orchestration_id: str) -> list[StoredContext]:
        """The saved checkpoints of one orchestration, oldest first."""
        return await self.services.state_store.get_contexts_for_orchestration(orchestration_id)

    async def save(
        self,
        workflow_id: str,
        orchestration_id: str,
        blob: bytes,
        policy: PersistencePolicy,
        counters: WorkflowCounters,
    ) -> bool:
        """Save a checkpoint under ``policy``; return whether it is durable.

        Raises :class:`PersistenceError` when the policy is ``idle-until-persisted`` and the
        failure cannot be retried.
        """
        services = self.services
        attempt = 0
        while True:
            try:
                await services.state_store.save_context(workflow_id, orchestration_id, blob)
            except Exception as exc:
                counters.add("checkpoint_failures")
                services.metrics.inc(
                    "minions_checkpoint_failures_total", labels={"orchestration": orchestration_id}
                )
                retryable = _retryable(exc)
                if policy == "continue-on-failure" or not retryable:
                    return self._give_up_save(workflow_id, orchestration_id, policy, exc)
                delay = RETRY_BACKOFF.delay(attempt, services.rng)
                attempt += 1
                services.logger.log(
                    logging.WARNING,
                    "workflow.checkpoint_retrying",
                    orchestration=orchestration_id,
                    workflow=workflow_id,
                    reason=_describe(exc),
                    attempt=attempt,
                    delay=round(delay, 3),
                )
                await services.clock.sleep(delay)
                continue
            counters.add("checkpoints_saved")
            if attempt:
                services.logger.log(
                    logging.INFO,
                    "workflow.checkpoint_saved",
                    orchestration=orchestration_id,
                    workflow=workflow_id,
                    attempts=attempt + 1,
                )
            if self._pending_deletes:
                await self._retry_pending_deletes()
            return True

    def _give_up_save(
        self, workflow_id: str, orchestration_id: str, policy: PersistencePolicy, exc: Exception
    ) -> bool:
        if policy == "idle-until-persisted":
            raise PersistenceError(
                f"the checkpoint of workflow {workflow_id} cannot be saved and retrying will not "
                f"help ({_describe(exc)}); the workflow fails because its minion's persistence "
                "policy is idle-until-persisted. Fix the state store, or use "
                "continue-on-failure to run without that checkpoint"
            ) from exc
        self.services.logger.log(
            logging.WARNING,
            "workflow.checkpoint_failed",
            orchestration=orchestration_id,
            workflow=workflow_id,
            reason=_describe(exc),
            policy=policy,
        )
        return False

    async def delete(
        self,
        workflow_id: str,
        orchestration_id: str,
        policy: PersistencePolicy,
        *,
        defer: bool = False,
    ) -> None:
        """Delete a finished workflow's checkpoint under ``policy``.

        With ``defer`` (its minion has nothing else in flight, so no other write would share
        the commit) the delete waits until the next workflow starts (:meth:`flush_deletes`) or
        ``DELETE_LINGER`` passes, then goes to the store beside that workflow's first
        checkpoint: one commit per workflow saved. A crash meanwhile only means the finished
        workflow runs its last step again (at least once).
        """
        if not defer:
            await self._delete_now(workflow_id, orchestration_id, policy)
            return
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._deferred.append((workflow_id, orchestration_id, policy, done))
        if self._linger is None:
            self._linger = loop.call_later(DELETE_LINGER, self.flush_deletes)
        # Shielded: a workflow cancelled while waiting does not withdraw its delete.
        await asyncio.shield(done)

    def flush_deletes(self) -> None:
        """Send the deferred deletes to the store now (a workflow is about to save)."""
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if not self._deferred:
            return
        batch, self._deferred = self._deferred, []
        task = asyncio.get_running_loop().create_task(
            self._delete_batch(batch), name="minions:workflow-deletes"
        )
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _delete_batch(self, batch: list[_Deferred]) -> None:
        if len(batch) == 1:
            # Awaited directly, the delete reaches the store in this task's first step, before
            # the workflow that triggered the flush saves.
            await self._settle_delete(*batch[0])
        else:
            await asyncio.gather(*(self._settle_delete(*item) for item in batch))

    async def _settle_delete(
        self,
        workflow_id: str,
        orchestration_id: str,
        policy: PersistencePolicy,
        done: asyncio.Future[None],
    ) -> None:
        try:
            await self._delete_now(workflow_id, orchestration_id, policy)
        finally:
            if not done.done():
                done.set_result(None)  # failures are logged and kept pending, not raised

    async def _delete_now(
        self, workflow_id: str, orchestration_id: str, policy: PersistencePolicy
    ) -> None:
        services = self.services
        attempt = 0
        while True:
            try:
                await services.state_store.delete_context(workflow_id)
            except Exception as exc:
                if policy == "continue-on-failure" or not _retryable(exc):
                    self._pending_deletes[workflow_id] = None
                    services.logger.log(
                        logging.WARNING,
                        "workflow.delete_failed",
                        orchestration=orchestration_id,
                        workflow=workflow_id,
                        reason=_describe(exc),
                        policy=policy,
                        note="retried after the next successful checkpoint",
                    )
                    return
                delay = RETRY_BACKOFF.delay(attempt, services.rng)
                attempt += 1
                await services.clock.sleep(delay)
                continue
            self._pending_deletes.pop(workflow_id, None)
            if self._pending_deletes:
                await self._retry_pending_deletes()
            return

    @property
    def pending_deletes(self) -> int:
        """Deletes that failed and wait for the store to work again."""
        return len(self._pending_deletes)

    async def _retry_pending_deletes(self) -> None:
        for workflow_id in list(self._pending_deletes):
            if workflow_id not in self._pending_deletes:
                continue  # another workflow's retry got it meanwhile
            try:
                await self.services.state_store.delete_context(workflow_id)
            except Exception:
                return  # still failing: keep them for the next good write
            self._pending_deletes.pop(workflow_id, None)
