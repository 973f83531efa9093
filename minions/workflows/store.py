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

How it retries is a :class:`PersistenceRetry`: the first delay, the cap, the multiplier and
the jitter of the backoff, and how loudly a workflow that keeps waiting is logged — a warning
at the first failure and again every ``warning_interval_seconds``, an error (once, then at the
same interval) when it has waited ``error_after_seconds`` (``None``: never an error). Gru takes
them as ``Gru.create(workflow_persistence_retry_...=)``; the ``[WorkflowStore]`` table of
``minions.toml`` as ``retry_...``.

Errors that retrying cannot fix are never retried: a checkpoint the codec cannot encode, and a
store error that is not ``retryable`` (a damaged or closed store, a bad argument). Under
``idle-until-persisted`` they fail the workflow with :class:`PersistenceError`; under
``continue-on-failure`` the workflow goes on without that checkpoint.

Failed workflows (``keep_failed``, off by default): instead of deleting a failed workflow's
checkpoint, the runner saves its last one again marked failed, for an operator to retry or
cancel (``minions workflows``). Every store has a :class:`~minions.workflows.board.WorkflowBoard`
(``StoreServices.board``) where the runners show the workflows they hold; a save that fails
records its error there, and a workflow waiting to retry one can be woken from it.

Deletes of finished workflows. A store with ``delete_context_soon`` (``SQLiteStateStore``) takes
them without a commit of their own: they ride in its next transaction, nobody waits for them,
and a failure is handled by the policy as above (logged and kept for a retry, or retried in the
background). :meth:`WorkflowStore.shutdown` waits for those still queued. Any other store's
``delete_context`` is awaited by the finished workflow's task.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import pydantic

from ..core.clock import Clock, MonotonicClock
from ..core.component import Resource
from ..core.errors import MinionsError
from ..core.histogram import Histogram, HistogramSnapshot
from ..core.runtime import default_project_dir
from .board import WorkflowBoard
from .sqlite.store import SQLiteStateStore, Synchronous, default_state_path
from .state_store import StateStore, StateStoreError, StoredContext
from .steps import PersistencePolicy
from .telemetry import Logger, Metrics, NoOpMetrics, StructlogLogger

__all__ = [
    "PersistenceError",
    "PersistenceRetry",
    "StoreServices",
    "WorkflowCounters",
    "WorkflowStatistics",
    "WorkflowStore",
    "WorkflowStoreConfig",
    "store_hook",
]


class PersistenceError(MinionsError):
    """A checkpoint could not be made durable and retrying cannot help (the workflow fails)."""


@dataclass(frozen=True)
class PersistenceRetry:
    """How a workflow retries a checkpoint it must make durable (see the module docstring).

    The defaults are the ``run()`` form's: 50 ms doubling to 5 s, +-20 %; ``Gru.create`` has
    its own (1 s doubling to 60 s, +-10 %). Build a checked one with :meth:`checked`.
    """

    delay_seconds: float = 0.05
    max_delay_seconds: float = 5.0
    backoff_multiplier: float = 2.0
    jitter_ratio: float = 0.2
    warning_interval_seconds: float = 30.0
    error_after_seconds: float | None = 60.0

    @classmethod
    def checked(cls, prefix: str = "", **settings: Any) -> PersistenceRetry:
        """A retry policy from ``settings`` (field names), each validated: ``TypeError`` for
        a value that is not a number, ``ValueError`` for one out of range. ``prefix`` is put
        before each name in messages (the name the caller knows the setting by)."""
        for name, value in settings.items():
            if name not in _RETRY_FIELDS:
                raise TypeError(f"unknown persistence retry setting {prefix}{name}")
            if name == "error_after_seconds" and value is None:
                continue
            _check_number(prefix + name, value, _RETRY_RULES[name])
        retry = cls(**settings)
        if retry.max_delay_seconds < retry.delay_seconds:
            raise ValueError(
                f"{prefix}max_delay_seconds must be greater than or equal to "
                f"{prefix}delay_seconds (got {retry.max_delay_seconds:g} < "
                f"{retry.delay_seconds:g}); raise the maximum or lower the first delay"
            )
        return retry

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``attempt + 1``."""
        if attempt > 64:
            base = self.max_delay_seconds
        else:
            base = min(
                self.max_delay_seconds, self.delay_seconds * self.backoff_multiplier**attempt
            )
        if self.jitter_ratio:
            base += base * rng.uniform(-self.jitter_ratio, self.jitter_ratio)
        return max(0.0, base)


_RETRY_FIELDS = frozenset(f.name for f in fields(PersistenceRetry))
#: What each setting must be, as the message says it; checked by _check_number.
_RETRY_RULES = {
    "delay_seconds": "a positive number of seconds",
    "max_delay_seconds": "a positive number of seconds",
    "warning_interval_seconds": "a positive number of seconds",
    "backoff_multiplier": "a number greater than or equal to 1",
    "jitter_ratio": "a number between 0 and 1",
    "error_after_seconds": "None or a non-negative number of seconds",
}


def _check_number(name: str, value: object, rule: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be {rule}, got {type(value).__name__} {value!r}")
    number = float(value)
    ok = (
        math.isfinite(number)
        and {
            "a positive number of seconds": number > 0,
            "a number greater than or equal to 1": number >= 1,
            "a number between 0 and 1": 0 <= number <= 1,
            "None or a non-negative number of seconds": number >= 0,
        }[rule]
    )
    if not ok:
        raise ValueError(f"{name} must be {rule}, got {value!r}")


class _Backoff:
    """The waits of one save or delete retried until it succeeds (``PersistenceRetry``): each
    ``wait`` sleeps the next capped, jittered delay, and logs the failure under ``event`` — a
    warning at the first and again every ``warning_interval_seconds``, an error (once, then at
    the same interval) from ``error_after_seconds`` on."""

    __slots__ = ("_escalated", "_event", "_fields", "_first", "_last", "_services", "attempt")

    def __init__(self, services: StoreServices, event: str, **fields: Any) -> None:
        self._services = services
        self._event = event
        self._fields = fields
        #: Failed tries so far.
        self.attempt = 0
        self._first: float | None = None
        self._last: float | None = None
        self._escalated = False

    async def wait(self, exc: BaseException, sleep: Callable[[float], Awaitable[None]]) -> None:
        """Log ``exc`` if due, then ``sleep`` the delay before the next try."""
        services = self._services
        retry = services.retry
        delay = retry.delay(self.attempt, services.rng)
        self.attempt += 1
        now = services.clock.now()
        if self._first is None:
            self._first = now
        limit = retry.error_after_seconds
        error = limit is not None and now - self._first >= limit
        due = self._last is None or now - self._last >= retry.warning_interval_seconds
        if due or (error and not self._escalated):
            self._last = now
            self._escalated = self._escalated or error
            services.logger.log(
                logging.ERROR if error else logging.WARNING,
                self._event,
                **self._fields,
                reason=_describe(exc),
                attempt=self.attempt,
                delay=round(delay, 3),
                waited=round(now - self._first, 3),
            )
        await sleep(delay)


class WorkflowStoreConfig(pydantic.BaseModel):
    """The ``[WorkflowStore]`` table of ``minions.toml``."""

    path: str | None = None
    persistence_policy: PersistencePolicy = "continue-on-failure"
    #: Keep a failed workflow's last checkpoint, marked failed, for ``minions workflows retry``
    #: (or ``cancel``) instead of deleting it.
    keep_failed: bool = False
    #: The SQLite store's tunables (``SQLiteStateStore``; ``minions tune sqlite`` measures
    #: them): seconds a commit may take on the event loop's thread (``"never"``: always on the
    #: writer thread), and how commits are made durable.
    inline_commit_limit: Annotated[float, pydantic.Field(ge=0)] | Literal["never"] = 0.001
    synchronous: Synchronous = "full"
    retry_delay_seconds: float = PersistenceRetry.delay_seconds
    retry_max_delay_seconds: float = PersistenceRetry.max_delay_seconds
    retry_backoff_multiplier: float = PersistenceRetry.backoff_multiplier
    retry_jitter_ratio: float = PersistenceRetry.jitter_ratio
    retry_warning_interval_seconds: float = PersistenceRetry.warning_interval_seconds
    retry_error_after_seconds: float | None = PersistenceRetry.error_after_seconds

    @pydantic.model_validator(mode="after")
    def _check_retry(self) -> WorkflowStoreConfig:
        self.retry()
        return self

    def retry(self) -> PersistenceRetry:
        """The retry settings of this table, checked."""
        prefix = "retry_"
        return PersistenceRetry.checked(
            prefix,
            **{name: getattr(self, prefix + name) for name in sorted(_RETRY_FIELDS)},
        )


@dataclass(frozen=True)
class WorkflowStatistics:
    """The workflows of one orchestration, counted since the process started.

    ``succeeded``, ``aborted`` and ``failed`` are the terminal outcomes (checkpoint deleted);
    ``interrupted`` counts workflows cancelled by a stop, whose checkpoints are kept;
    ``deferred`` the events that arrived while the minion was stopping, saved (not run) for its
    next incarnation to start.
    """

    started: int = 0
    resumed: int = 0
    succeeded: int = 0
    aborted: int = 0
    failed: int = 0
    interrupted: int = 0
    deferred: int = 0
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

    __slots__ = ("_steps", "_values", "_waiters", "minion", "pipeline")

    def __init__(self) -> None:
        #: The names of the workflow minion and pipeline counted here, once a runner said so.
        self.minion: str | None = None
        self.pipeline: str | None = None
        self._values = dict.fromkeys(_FIELDS, 0)
        self._steps: dict[str, Histogram] = {}
        self._waiters: list[
            tuple[Callable[[WorkflowStatistics], bool], asyncio.Future[WorkflowStatistics]]
        ] = []

    def add(self, name: str, amount: int = 1) -> None:
        self._values[name] += amount
        if self._waiters:
            self._wake()

    def observe_step(self, step: str, seconds: float) -> None:
        """Record how long one run of ``step`` took (returned, raised, or was cancelled)."""
        histogram = self._steps.get(step)
        if histogram is None:
            histogram = self._steps[step] = Histogram()
        histogram.observe(seconds)

    def step_durations(self) -> dict[str, HistogramSnapshot]:
        """Per step name, the durations of its runs so far."""
        return {step: h.snapshot() for step, h in self._steps.items()}

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
    retry: PersistenceRetry = field(default_factory=PersistenceRetry)
    #: Keep failed workflows' checkpoints for a retry (``WorkflowStoreConfig.keep_failed``).
    keep_failed: bool = False
    #: The workflows in flight, for the people operating the system.
    board: WorkflowBoard = field(default_factory=WorkflowBoard)
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
                retry=config.retry(),
                keep_failed=config.keep_failed,
            )
        self.services = services
        self._pending_deletes: dict[str, None] = {}
        soon = getattr(services.state_store, "delete_context_soon", None)
        self._delete_soon: Callable[[str], asyncio.Future[None]] | None = (
            soon if callable(soon) else None
        )
        #: Deferred deletes not committed yet, and background retries of failed ones.
        self._unsettled: set[asyncio.Future[None]] = set()

    def __repr__(self) -> str:
        return f"<WorkflowStore {self.services.state_store!r}>"

    def open_store(self) -> StateStore:
        """The state store to use when none is provided: SQLite in the project's ``.minions``."""
        config = getattr(self, "config", None) or WorkflowStoreConfig()
        project = default_project_dir()
        path = Path(config.path) if config.path else default_state_path(project)
        limit = config.inline_commit_limit
        return SQLiteStateStore(
            path if path.is_absolute() else project / path,
            inline_commit_limit=None if limit == "never" else limit,
            synchronous=config.synchronous,
        )

    @property
    def state_store(self) -> StateStore:
        return self.services.state_store

    async def startup(self) -> None:
        if self.services.owns_store:
            await store_hook(self.services.state_store, "startup")

    async def shutdown(self) -> None:
        while self._unsettled:  # a failed deferred delete may start a retry meanwhile
            unsettled = set(self._unsettled)
            for retry in unsettled:
                if isinstance(retry, asyncio.Task):
                    # A store still failing keeps the checkpoint: the next start runs the
                    # workflow's last step again (at least once), rather than shutdown hanging.
                    retry.cancel()
            await asyncio.wait(unsettled)
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
        backoff = _Backoff(
            services,
            "workflow.checkpoint_retrying",
            orchestration=orchestration_id,
            workflow=workflow_id,
        )
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
                    services.board.note_error(
                        workflow_id, f"checkpoint not saved: {_describe(exc)}"
                    )
                    return self._give_up_save(workflow_id, orchestration_id, policy, exc)
                services.board.note_error(
                    workflow_id, f"checkpoint not saved, retrying: {_describe(exc)}", retrying=True
                )
                await backoff.wait(
                    exc, lambda delay: services.board.pause(workflow_id, delay, services.clock)
                )
                continue
            counters.add("checkpoints_saved")
            if backoff.attempt:
                services.board.note_saved(workflow_id)
                services.logger.log(
                    logging.INFO,
                    "workflow.checkpoint_saved",
                    orchestration=orchestration_id,
                    workflow=workflow_id,
                    attempts=backoff.attempt + 1,
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
        self, workflow_id: str, orchestration_id: str, policy: PersistencePolicy
    ) -> None:
        """Delete a finished workflow's checkpoint under ``policy``.

        With a store that defers deletes this returns at once: the delete rides in the store's
        next transaction, and a failure is handled in the background. Otherwise it returns
        once the store's ``delete_context`` did (see the module docstring).
        """
        soon = self._delete_soon
        if soon is None:
            await self._delete_now(workflow_id, orchestration_id, policy)
            return
        try:
            future = soon(workflow_id)
        except Exception as exc:  # a closed store refuses at once
            self._delete_failed(workflow_id, orchestration_id, policy, exc)
            return
        self._unsettled.add(future)
        future.add_done_callback(
            functools.partial(self._deferred_done, workflow_id, orchestration_id, policy)
        )

    def _deferred_done(
        self,
        workflow_id: str,
        orchestration_id: str,
        policy: PersistencePolicy,
        future: asyncio.Future[None],
    ) -> None:
        self._unsettled.discard(future)
        if future.cancelled():
            return
        exc = future.exception()
        if exc is None:
            self._pending_deletes.pop(workflow_id, None)
        elif isinstance(exc, Exception):
            self._delete_failed(workflow_id, orchestration_id, policy, exc)

    def _delete_failed(
        self, workflow_id: str, orchestration_id: str, policy: PersistencePolicy, exc: Exception
    ) -> None:
        if policy == "idle-until-persisted" and _retryable(exc):
            retry = asyncio.get_running_loop().create_task(
                self._delete_now(workflow_id, orchestration_id, policy),
                name=f"minions:workflow-delete:{workflow_id}",
            )
            self._unsettled.add(retry)
            retry.add_done_callback(self._unsettled.discard)
            return
        self._keep_for_later(workflow_id, orchestration_id, policy, exc)

    def _keep_for_later(
        self, workflow_id: str, orchestration_id: str, policy: PersistencePolicy, exc: Exception
    ) -> None:
        """A delete that failed for good now: retried after the next successful checkpoint."""
        self._pending_deletes[workflow_id] = None
        self.services.logger.log(
            logging.WARNING,
            "workflow.delete_failed",
            orchestration=orchestration_id,
            workflow=workflow_id,
            reason=_describe(exc),
            policy=policy,
            note="retried after the next successful checkpoint",
        )

    async def _delete_now(
        self, workflow_id: str, orchestration_id: str, policy: PersistencePolicy
    ) -> None:
        services = self.services
        backoff = _Backoff(
            services,
            "workflow.delete_retrying",
            orchestration=orchestration_id,
            workflow=workflow_id,
        )
        while True:
            try:
                await services.state_store.delete_context(workflow_id)
            except Exception as exc:
                if policy == "continue-on-failure" or not _retryable(exc):
                    self._keep_for_later(workflow_id, orchestration_id, policy, exc)
                    return
                await backoff.wait(exc, services.clock.sleep)
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
