"""The workflow driver: how a workflow minion turns its pipeline's events into durable workflows.

A workflow minion's ``run()`` (installed by ``minions.workflows.definition``) hands over to a
:class:`WorkflowRunner`, which:

1. loads the orchestration's saved checkpoints and restarts each workflow at its next step
   (a corrupt checkpoint is logged and skipped; a checkpoint of other event or context types
   stops the minion with an error that says to drain first);
2. only then subscribes to the pipeline, so resumed workflows go before new events;
3. for each event, starts a workflow with a fresh ``Context()`` once there is room
   (``max_in_flight``; until then the pipeline waits);
4. on stop, leaves the pipeline (``Pipeline.detach``): an event the pipeline holds for it is
   still taken — its workflow starts like any other, or, if there is no room within
   ``stop_grace``, is saved to start next time (*deferred*) — and a production under way for
   it alone is withdrawn, so no event is dropped; then it gives running workflows
   ``stop_grace`` seconds to finish, and cancels the rest — their checkpoints stay, and they
   resume on the next start.

One workflow, step by step::

    for each step i from the next one:
        commit checkpoint (ids, event, context, next step = i)   ── persistence policy applies
        await step i
    count the outcome, then delete the checkpoint                 ── terminal outcomes only

Outcomes are counted apart: *succeeded* (every step returned), *aborted* (a step raised
``AbortWorkflow``, or an operator cancelled it), *failed* (a step raised anything else; logged
with the step's name), *interrupted* (cancelled by a stop: the checkpoint is kept, so the
workflow resumes at the step it was in — steps run at least once, and must be idempotent).

A resumed workflow commits its checkpoint at its first step too, recording one more attempt in
the checkpoint's history (with the last error it met), so a workflow that crashes its program at
every resume shows it. When the store keeps failed workflows (``StoreServices.keep_failed``), a
failed workflow's last checkpoint is saved again marked failed instead of being deleted; such
checkpoints are not resumed at start, only by :meth:`WorkflowRunner.retry`.

The runner is the :class:`~minions.workflows.board.WorkflowOwner` of its orchestration on the
store's workflow board: it puts each workflow it holds there (running, waiting for room,
retrying a checkpoint, failed and kept), and carries out ``retry``, ``cancel`` and ``adopt``
(resume a checkpoint of the same minion saved under another orchestration) for the people
operating the system (``minions workflows``).

The final delete is not awaited durably. A finished workflow gives its place to the next event
and is counted at once; its delete rides in the store's next transaction (``SQLiteStateStore``
commits it with the next workflow's first checkpoint, or alone within 2 ms; a store without
deferred deletes is awaited by the finished workflow's task, after it was counted). Losing the
delete to a crash leaves a checkpoint whose next step is the last one, so the next start runs
that step again: at least once, as for any step. Shutdown commits deletes still queued.

The event is encoded once per workflow (``CheckpointCodec.for_workflow``), at its first
checkpoint; later checkpoints encode only the step index and the context.

The orchestration id — the key checkpoints are filed under — is a hash of the minion's,
the pipeline's and (with Gru) the config's identities (:func:`orchestration_id`): the same
program in a copied project folder finds its checkpoints again. Under ``run(...)`` a workflow
minion runs once, with the config of its ``minions.toml`` table, so the id is its identity and
its pipeline's alone: editing a value, or overriding it from the environment, keeps resuming.
(Earlier builds hashed the config values there too: checkpoints saved under that former id
with the current values are adopted at load — resumed here, filed under the current id from
their next checkpoint on.) Other checkpoints of the same minion under another id are reported
at its first start (:mod:`.stranded`).
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ..core.component import Minion, WorkflowHandle, component_name
from ..core.errors import DefinitionError
from ..core.graph import declared_config, declared_dependencies
from ..core.identity import identity_of
from ..core.values import plain_codec
from .board import WorkflowActionError, WorkflowEntry
from .checkpoint import (
    Checkpoint,
    CheckpointCodec,
    CheckpointEncodeError,
    CheckpointError,
    CorruptCheckpoint,
    IncompatibleCheckpoint,
    checkpoint_codec,
)
from .pipeline import Pipeline
from .state_store import StoredContext
from .steps import (
    AbortWorkflow,
    ActiveWorkflow,
    PersistencePolicy,
    current_workflow,
    step_labels,
    step_names,
    workflow_settings,
    workflow_types,
)
from .store import PersistenceError, WorkflowCounters, WorkflowStore
from .stranded import report_stranded
from .workflow_id import new_workflow_id

__all__ = [
    "WorkflowRunner",
    "WorkflowSpec",
    "config_identity",
    "orchestration_id",
    "workflow_spec",
]

_ORCHESTRATION_ATTRIBUTE = "__minions_orchestration__"
#: How long ``cancel`` waits for a running workflow's step to end.
_CANCEL_WAIT = 10.0


def orchestration_id(minion: str, pipeline: str, config: str = "") -> str:
    """The deterministic id of (minion identity, pipeline identity, config identity)."""
    text = "\x1f".join(("minions-orchestration-1", minion, pipeline, config))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def config_identity(config: object) -> str:
    """A config object's identity: a hash of its canonical JSON form ("" for no config)."""
    if config is None:
        return ""
    try:
        data = plain_codec(type(config)).dump(config)
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
    except Exception as exc:  # pydantic and msgspec raise several unrelated types
        raise DefinitionError(
            f"cannot derive an identity from the config {config!r} ({exc}); use a dataclass, "
            "pydantic model or msgspec Struct of builtins"
        ) from exc
    return "inline:" + hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Orchestration:
    """What a class bound by Gru carries: its orchestration id and the user's minion identity."""

    id: str
    minion_identity: str


@dataclass(frozen=True)
class WorkflowSpec:
    """A workflow minion class, resolved: its types, steps and pipeline attribute."""

    minion: type[Minion[Any, Any]]
    event_type: Any
    context_type: Any
    #: The step methods' names, in run order.
    steps: tuple[str, ...]
    #: The class attribute holding the pipeline, and the pipeline class it requests (None: Gru
    #: will name one).
    pipeline_attribute: str | None
    pipeline: type[Pipeline[Any]] | None
    #: The steps' names in logs, metrics and checkpoints (``@minion_step(name=...)``).
    labels: tuple[str, ...] = ()


def workflow_spec(cls: type[Any], *, require_pipeline: bool = True) -> WorkflowSpec:
    """Resolve ``cls`` as a workflow minion, or raise a clear ``DefinitionError``."""
    steps = step_names(cls) if isinstance(cls, type) else ()
    if not steps:
        shown = getattr(cls, "__qualname__", repr(cls))
        raise DefinitionError(
            f"{shown} is not a workflow minion: declare it 'class {getattr(cls, '__name__', cls)}"
            "(Minion[MyEvent, MyContext])' with at least one @minion_step method"
        )
    types = workflow_types(cls)
    assert types is not None  # checked when the class was defined
    pipelines: list[tuple[str, type[Pipeline[Any]]]] = []
    for dep in declared_dependencies(cls):
        if not issubclass(dep.requested, Pipeline):
            continue
        if dep.via == "parameter":
            raise DefinitionError(
                f"{cls.__qualname__}.__init__ takes the pipeline {dep.requested.__qualname__} as "
                f"a parameter; declare it as a class attribute instead ('{dep.name}: "
                f"{dep.requested.__name__}') so the workflow loop can find it"
            )
        pipelines.append((dep.name, dep.requested))
    if len(pipelines) > 1:
        names = ", ".join(f"{n}: {p.__qualname__}" for n, p in pipelines)
        raise DefinitionError(
            f"{cls.__qualname__} declares {len(pipelines)} pipelines ({names}); a workflow "
            "minion handles the events of one pipeline"
        )
    if not pipelines:
        if require_pipeline:
            raise DefinitionError(
                f"{cls.__qualname__} has no pipeline to take events from: declare one as a class "
                f"attribute ('events: MyPipeline'), or start it with "
                f"Gru.start_orchestration(MyPipeline, {cls.__name__})"
            )
        return WorkflowSpec(cls, types[0], types[1], steps, None, None, step_labels(cls))
    attribute, pipeline = pipelines[0]
    check_event_types(pipeline, cls, types[0])
    return WorkflowSpec(cls, types[0], types[1], steps, attribute, pipeline, step_labels(cls))


def check_event_types(pipeline: type[Pipeline[Any]], minion: type[Any], event_type: Any) -> None:
    """Raise a ``DefinitionError`` unless ``pipeline`` produces ``minion``'s event type."""
    if pipeline.produce_event is Pipeline.produce_event:
        raise DefinitionError(
            f"{pipeline.__qualname__} does not implement produce_event(); define "
            "'async def produce_event(self) -> MyEvent'"
        )
    produced = pipeline.event_type()
    if produced == event_type or (
        isinstance(produced, type)
        and isinstance(event_type, type)
        and issubclass(produced, event_type)
    ):
        return
    raise DefinitionError(
        f"event-type mismatch: {pipeline.__qualname__} produces {_type_name(produced)} but "
        f"{minion.__qualname__} handles {_type_name(event_type)}; pair the minion with a "
        f"pipeline of {_type_name(event_type)} (or of a subclass of it)"
    )


def _type_name(tp: Any) -> str:
    return str(getattr(tp, "__qualname__", tp))


def bound_orchestration(cls: type[Any]) -> Orchestration | None:
    found = cls.__dict__.get(_ORCHESTRATION_ATTRIBUTE)
    return found if isinstance(found, Orchestration) else None


class WorkflowRunner:
    """Runs the workflows of one incarnation of a workflow minion (see the module docstring)."""

    def __init__(
        self,
        minion: Minion[Any, Any],
        spec: WorkflowSpec,
        store: WorkflowStore,
        pipeline: Pipeline[Any],
        orchestration: Orchestration,
        *,
        sole: bool = False,
        adopted: str | None = None,
    ) -> None:
        """``sole``: this is the minion's only orchestration (the ``run(...)`` form, not Gru's),
        so its checkpoints under other orchestration ids are reported as stranded. ``adopted``:
        another orchestration id whose checkpoints it loads as its own (the id the ``run(...)``
        form had before it stopped hashing config values)."""
        cls = type(minion)
        self._minion = minion
        self._spec = spec
        self._store = store
        self._pipeline = pipeline
        self._orchestration = orchestration
        self._name = component_name(cls)
        self._codec: CheckpointCodec[Any, Any] = checkpoint_codec(
            spec.event_type, spec.context_type
        )
        self._steps: tuple[Callable[[], Awaitable[Any]], ...] = tuple(
            getattr(minion, name) for name in spec.steps
        )
        settings = workflow_settings(cls)
        self._policy: PersistencePolicy = (
            settings.persistence_policy or store.services.persistence_policy
        )
        self._limit = settings.max_in_flight
        # The host waits stop_timeout for run() to end once cancelled, and all of it must fit:
        # the grace (for running workflows, and for an event in hand while there is room) is
        # at most half of it; saving an event in hand as deferred may take half of what is
        # left; the rest is the margin for cancelling what still runs.
        stop_timeout = cls.__minions_options__.stop_timeout or 5.0
        self._grace = min(float(settings.stop_grace), stop_timeout / 2)
        self._save_limit = (stop_timeout - self._grace) / 2
        self._counters: WorkflowCounters = store.counters(orchestration.id)
        self._counters.minion = self._name
        self._counters.pipeline = component_name(type(pipeline))
        self._labels = {"orchestration": orchestration.id}
        self._tasks: set[asyncio.Task[None]] = set()
        #: Workflows whose steps are running or due; a finished one deleting its checkpoint
        #: no longer counts, so the next event overlaps that delete.
        self._running = 0
        self._room = asyncio.Event()
        # Workflow ids: 128 random bits from a generator seeded by the OS, without a system
        # call per workflow.
        self._ids = random.Random()
        self._closing = False
        self._context = contextvars.copy_context()
        self._sole = sole
        self._adopted = adopted
        self._board = store.services.board
        self._keep_failed = store.services.keep_failed
        #: The workflows whose tasks run, and those loaded at start that wait for room.
        self._live: dict[str, tuple[ActiveWorkflow, asyncio.Task[None]]] = {}
        self._waiting: dict[str, Checkpoint[Any, Any]] = {}
        #: The failed workflows kept for a retry (``keep_failed``): their checkpoints, as saved.
        self._failed: dict[str, bytes] = {}
        #: Its saved checkpoints are loaded and on the board: until then it acts on none.
        self._loaded = False

    @classmethod
    def for_minion(cls, minion: Minion[Any, Any]) -> WorkflowRunner:
        """Build the runner of ``minion`` from its class and injected dependencies."""
        mcls = type(minion)
        orchestration = bound_orchestration(mcls)
        spec = workflow_spec(mcls)
        store = minion.__dict__.get("workflow_store")
        pipeline = minion.__dict__.get(spec.pipeline_attribute or "")
        if not isinstance(store, WorkflowStore) or not isinstance(pipeline, Pipeline):
            raise DefinitionError(
                f"{mcls.__qualname__} runs without its WorkflowStore or pipeline instance"
            )
        if orchestration is not None:
            return cls(minion, spec, store, pipeline, orchestration)
        # The run(...) form: one orchestration per minion, whatever its config values.
        identities = (identity_of(mcls), identity_of(type(pipeline)))
        orchestration = Orchestration(
            id=orchestration_id(*identities), minion_identity=identities[0]
        )
        return cls(minion, spec, store, pipeline, orchestration, sole=True,
                   adopted=_former_id(minion, *identities))  # fmt: skip

    def __repr__(self) -> str:
        return (
            f"<WorkflowRunner {self._name} orchestration={self._orchestration.id} "
            f"{self._running} in flight>"
        )

    # -- what the workflow board sees (WorkflowOwner) ----------------------------------------

    @property
    def minion(self) -> str:
        return self._name

    @property
    def minion_identity(self) -> str:
        return self._orchestration.minion_identity

    @property
    def orchestration_id(self) -> str:
        return self._orchestration.id

    @property
    def loaded(self) -> bool:
        return self._loaded

    # -- the minion's life ---------------------------------------------------------------------

    async def run(self) -> None:
        self._context = contextvars.copy_context()
        self._loaded = False
        self._board.join(self)
        try:
            await self._run()
        finally:
            self._board.leave(self)
            self._waiting.clear()
            self._failed.clear()

    async def _run(self) -> None:
        loaded = await self._load()
        # Which of them this runner holds is decided here, with no await until it is: none that
        # another runner holds or the control socket claimed while they were read.
        for checkpoint, blob in loaded:
            workflow_id, failed = checkpoint.workflow_id, checkpoint.failed
            entry = self._entry(workflow_id, checkpoint.next_step_index,
                                "failed" if failed else "waiting",
                                _attempts(checkpoint), checkpoint.last_error)  # fmt: skip
            if workflow_id in self._live or not self._board.put(entry):
                self._store.services.logger.log(
                    logging.INFO,
                    "workflow.skipped",
                    minion=self._name,
                    workflow=workflow_id,
                    reason="held by another runner, or being cancelled, while it was loaded",
                )
                continue
            if failed:
                self._failed[workflow_id] = blob
            else:
                self._waiting[workflow_id] = checkpoint
        self._loaded = True
        if self._sole:
            own = (self._orchestration.id, *(() if self._adopted is None else (self._adopted,)))
            await report_stranded(self._store, own, self._orchestration.minion_identity, self._name)
        try:
            for workflow_id in list(self._waiting):
                if workflow_id not in self._waiting:
                    continue  # cancelled meanwhile
                if not await self._admit():
                    return
                if workflow_id in self._waiting:  # not cancelled while it waited for room
                    self._resume(self._waiting.pop(workflow_id))
            self._pipeline.subscribe(self)
            await asyncio.Event().wait()  # until the runtime cancels the minion
        finally:
            deadline = asyncio.get_running_loop().time() + self._grace
            await self._leave_pipeline()
            await self._wind_down(deadline)

    def _resume(self, checkpoint: Checkpoint[Any, Any]) -> None:
        """Run a saved workflow again from its step: one more attempt."""
        self._spawn(
            checkpoint.workflow_id,
            checkpoint.event,
            checkpoint.context,
            checkpoint.next_step_index,
            resumed=True,
            attempts=_attempts(checkpoint) + 1,
            error=self._board.recall(checkpoint.workflow_id) or checkpoint.last_error,
        )

    def _entry(
        self, workflow_id: str, index: int, state: Any, attempts: int, error: str | None
    ) -> WorkflowEntry:
        return WorkflowEntry(workflow_id, self, self._spec.labels, index, state, attempts, error)

    # -- operators' actions (``minions workflows retry|cancel``, through the board) -----------

    async def retry(self, workflow_id: str) -> str:
        entry = self._held(workflow_id)
        step = self._spec.labels[entry.step_index]
        if entry.state == "retrying":
            if self._board.wake(workflow_id):
                return f"workflow {workflow_id} retries its checkpoint (before step {step!r}) now"
            return f"workflow {workflow_id} is retrying its checkpoint already"
        if entry.state == "running":
            raise WorkflowActionError(
                "refused",
                f"workflow {workflow_id} is running (step {step!r}, attempt {entry.attempts}); "
                "there is nothing to retry",
            )
        if entry.state == "waiting":
            raise WorkflowActionError(
                "refused",
                f"workflow {workflow_id} waits for room: {self._name} runs {self._running} "
                f"workflows (max_in_flight={self._limit}); it resumes when one of them ends",
            )
        self._check_open("retry")
        # Kept in memory, so the retry is decided and under way before any await: a second
        # retry, or a cancel, finds it running.
        blob = self._failed.get(workflow_id)
        if blob is None:
            raise WorkflowActionError("refused", f"workflow {workflow_id} has just been retried")
        checkpoint = self._decoded(StoredContext(workflow_id, self._orchestration.id, blob))
        del self._failed[workflow_id]
        self._resume(checkpoint)
        return (
            f"workflow {workflow_id} resumed at step {step!r} (attempt {_attempts(checkpoint) + 1})"
        )

    async def cancel(self, workflow_id: str) -> str:
        entry = self._held(workflow_id)
        step = self._spec.labels[entry.step_index]
        if entry.state == "failed":
            del self._failed[workflow_id]
            self._board.drop(workflow_id, self)
            await self._store.delete(workflow_id, self._orchestration.id, self._policy)
            return (
                f"workflow {workflow_id} discarded: its checkpoint is deleted (it was counted as "
                "failed when it failed)"
            )
        if entry.state == "waiting":
            del self._waiting[workflow_id]
            self._board.drop(workflow_id, self)
            self._counters.add("aborted")
            self._store.services.metrics.inc("minions_workflows_aborted_total", labels=self._labels)
            await self._store.delete(workflow_id, self._orchestration.id, self._policy)
            return f"workflow {workflow_id} cancelled before it resumed: counted as aborted"
        live = self._live.get(workflow_id)
        if live is None:
            raise WorkflowActionError("refused", f"workflow {workflow_id} has just ended")
        workflow, task = live
        if not workflow.cancelled:  # a second cancel waits for the first one's
            workflow.cancelled = True
            if workflow.started:  # else its task sees the flag when it begins
                task.cancel()
        done, _ = await asyncio.wait({task}, timeout=_CANCEL_WAIT)
        if not done:
            return (
                f"workflow {workflow_id} is cancelled, but its step {step!r} has not ended "
                f"within {_CANCEL_WAIT:g} s (does it catch CancelledError?); it is counted as "
                "aborted when it does"
            )
        if not workflow.started:
            return (
                f"workflow {workflow_id} was not cancelled: {self._name} stopped before it "
                "began; its checkpoint stays, and it resumes at the next start"
            )
        return f"workflow {workflow_id} cancelled in step {step!r}: counted as aborted"

    async def adopt(self, row: StoredContext) -> str:
        self._check_open("resume")
        if not self._loaded:
            raise WorkflowActionError(
                "refused",
                f"cannot resume it now: {self._name} is still loading its saved workflows; "
                "try again in a moment",
            )
        if row.orchestration_id == self._orchestration.id:
            # Every checkpoint of its own orchestration is on the board, unless it has ended.
            raise WorkflowActionError(
                "refused", f"workflow {row.workflow_id} has just ended (its checkpoint is deleted)"
            )
        if row.workflow_id in self._live or self._board.held(row.workflow_id):
            raise WorkflowActionError(
                "refused", f"workflow {row.workflow_id} runs already, or is being cancelled"
            )
        checkpoint = self._decoded(row)
        self._resume(checkpoint)
        return (
            f"workflow {row.workflow_id} (saved under orchestration {row.orchestration_id}) "
            f"resumed here at step {self._spec.labels[checkpoint.next_step_index]!r}; its "
            f"checkpoints are saved under orchestration {self._orchestration.id} from now on"
        )

    def decode(self, row: StoredContext) -> Checkpoint[Any, Any]:
        checkpoint = self._codec.decode(row.context, workflow_id=row.workflow_id)
        check_step(checkpoint, self._spec)
        return checkpoint

    def _held(self, workflow_id: str) -> WorkflowEntry:
        entry = self._board.get(workflow_id)
        if entry is None or entry.owner is not self:
            raise WorkflowActionError(
                "refused", f"workflow {workflow_id} is not held by {self._name} any more"
            )
        return entry

    def _check_open(self, what: str) -> None:
        if self._closing:
            raise WorkflowActionError(
                "refused",
                f"cannot {what} it now: {self._name} is stopping; it resumes at its next start",
            )

    def _decoded(self, row: StoredContext) -> Checkpoint[Any, Any]:
        try:
            return self.decode(row)
        except CheckpointError as exc:
            raise WorkflowActionError("failed", f"cannot resume it: {exc}") from exc

    async def _leave_pipeline(self) -> None:
        """Stop taking events without dropping the one the pipeline holds for this minion.

        Taking it shares ``stop_grace`` with the running workflows (one deadline for both).
        """
        if await self._pipeline.detach(self, within=self._grace):
            return
        # No room for it within the grace: closing makes deliver() save it as deferred.
        self._closing = True
        self._room.set()
        await self._pipeline.detach(self, within=self._save_limit)

    async def _load(self) -> list[tuple[Checkpoint[Any, Any], bytes]]:
        rows = await self._store.load(self._orchestration.id)
        if self._adopted is not None:
            former = await self._store.load(self._adopted)
            if former:
                self._store.services.logger.log(
                    logging.INFO,
                    "workflow.adopted",
                    minion=self._name,
                    orchestration=self._orchestration.id,
                    adopted=len(former),
                    note=(
                        f"saved under {self._adopted}, the id earlier builds gave this minion "
                        "and config; resumed here, filed under the current id from now on"
                    ),
                )
            rows += former
        checkpoints: list[tuple[Checkpoint[Any, Any], bytes]] = []
        for row in rows:
            try:
                checkpoint = self._codec.decode(row.context, workflow_id=row.workflow_id)
            except CorruptCheckpoint as exc:
                self._counters.add("corrupt_skipped")
                self._store.services.logger.log(
                    logging.ERROR,
                    "workflow.checkpoint_corrupt",
                    orchestration=self._orchestration.id,
                    workflow=row.workflow_id,
                    reason=str(exc),
                )
                continue
            check_step(checkpoint, self._spec)
            checkpoints.append((checkpoint, row.context))
        return checkpoints

    async def deliver(self, event: Any) -> None:
        """Start a workflow for ``event`` (called by the pipeline; waits for room).

        An event that arrives while the minion is stopping or restarting is not dropped: it is
        saved as a workflow that has not run its first step yet, and the minion's next
        incarnation (or its next start, after a stop) resumes it like any other checkpoint.
        """
        workflow_id = new_workflow_id(self._ids)
        context = self._spec.context_type()
        if await self._admit():
            self._spawn(workflow_id, event, context, 0, resumed=False)
            return
        workflow = ActiveWorkflow(
            owner=self._minion,
            event=event,
            context=context,
            handle=WorkflowHandle(self._orchestration.id, workflow_id),
            attempts=0,  # saved, not started: its first start is its first attempt
        )
        await self._checkpoint(workflow, 0)
        self._counters.add("deferred")

    async def _admit(self) -> bool:
        while self._running >= self._limit and not self._closing:
            self._room.clear()
            await self._room.wait()
        return not self._closing

    def _spawn(
        self,
        workflow_id: str,
        event: Any,
        context: Any,
        start: int,
        *,
        resumed: bool,
        attempts: int = 1,
        error: str | None = None,
    ) -> None:
        entry = self._entry(workflow_id, start, "running", attempts, error)
        placed = self._board.put(entry)
        assert placed, f"workflow {workflow_id} was resumed while another owner held it"
        workflow = ActiveWorkflow(
            owner=self._minion,
            event=event,
            context=context,
            handle=WorkflowHandle(self._orchestration.id, workflow_id),
            attempts=attempts,
            error=error,
            entry=entry,
        )
        task = asyncio.get_running_loop().create_task(
            self._run_workflow(workflow, start, resumed),
            name=f"minions:workflow:{workflow_id}",
            context=self._context.copy(),
        )
        self._running += 1
        self._counters.add("in_flight")
        self._tasks.add(task)
        self._live[workflow_id] = (workflow, task)
        task.add_done_callback(lambda done: self._finished(done, workflow))

    def _finished(self, task: asyncio.Task[None], workflow: ActiveWorkflow) -> None:
        self._tasks.discard(task)
        workflow_id = workflow.handle.workflow_id
        if self._live.get(workflow_id, (None,))[0] is workflow:
            del self._live[workflow_id]
        if workflow.entry.state != "failed":  # a failed one kept for a retry stays on the board
            self._board.drop(workflow_id, self)
        self._release(workflow)  # if it ended before releasing (cancelled, or never started)

    def _release(self, workflow: ActiveWorkflow) -> None:
        if workflow.released:
            return
        workflow.released = True
        self._running -= 1
        self._counters.add("in_flight", -1)
        self._room.set()

    async def _wind_down(self, deadline: float) -> None:
        self._closing = True
        self._room.set()
        grace = deadline - asyncio.get_running_loop().time()
        if self._tasks and grace > 0:
            await asyncio.wait(set(self._tasks), timeout=grace)
        running = set(self._tasks)
        for task in running:
            task.cancel()
        if running:
            await asyncio.wait(running)

    # -- one workflow --------------------------------------------------------------------------

    async def _run_workflow(self, workflow: ActiveWorkflow, start: int, resumed: bool) -> None:
        workflow.started = True
        current_workflow.set(workflow)
        metrics = self._store.services.metrics
        self._counters.add("resumed" if resumed else "started")
        metrics.inc(
            "minions_workflows_resumed_total" if resumed else "minions_workflows_started_total",
            labels=self._labels,
        )
        stopping = 0
        try:
            if workflow.cancelled:
                raise asyncio.CancelledError  # an operator cancelled it before its task began
            outcome = await self._run_steps(workflow, start, resumed)
        except asyncio.CancelledError:
            if not workflow.cancelled:
                # Interrupted by a stop: the checkpoint stays, the workflow resumes at this step.
                self._counters.add("interrupted")
                metrics.inc("minions_workflows_interrupted_total", labels=self._labels)
                if workflow.error is not None:
                    self._board.remember(workflow.handle.workflow_id, workflow.error)
                raise
            # Cancelled by an operator: aborted (a stop that came too is honoured after).
            task = asyncio.current_task()
            stopping = task.uncancel() if task is not None else 0
            outcome = "aborted"
            self._store.services.logger.log(
                logging.INFO,
                "workflow.cancelled",
                minion=self._name,
                workflow=workflow.handle.workflow_id,
                step=self._spec.labels[workflow.entry.step_index],
            )
        # Its steps are done: the next event may start, and the outcome is final (no more
        # cancelling it). The delete rides in the store's next transaction (module docstring).
        self._release(workflow)
        self._live.pop(workflow.handle.workflow_id, None)
        self._counters.add(outcome)
        metrics.inc(f"minions_workflows_{outcome}_total", labels=self._labels)
        if outcome == "failed" and self._keep_failed and await self._keep(workflow):
            return
        self._board.drop(workflow.handle.workflow_id, self)
        await self._store.delete(workflow.handle.workflow_id, self._orchestration.id, self._policy)
        if stopping:
            raise asyncio.CancelledError

    async def _keep(self, workflow: ActiveWorkflow) -> bool:
        """Save a failed workflow's last checkpoint again, marked failed, for a retry; whether
        it is kept (``False``: it had no checkpoint, or it could not be saved)."""
        encoder = workflow.encoder
        workflow_id = workflow.handle.workflow_id
        if encoder is None:
            return False  # no checkpoint was ever encoded (its first one failed to encode)
        encoder.set_history(workflow.attempts, workflow.error, failed=True)
        blob = encoder.last_with_history()
        assert blob is not None
        try:
            saved = await self._store.save(
                workflow_id, self._orchestration.id, blob, self._policy, self._counters
            )
        except PersistenceError:
            saved = False
        if not saved:
            return False  # deleted instead: a kept checkpoint not marked failed would resume
        self._failed[workflow_id] = blob
        workflow.entry.state = "failed"
        workflow.entry.last_error = workflow.error
        self._store.services.logger.log(
            logging.INFO,
            "workflow.kept",
            minion=self._name,
            workflow=workflow_id,
            step=self._spec.labels[workflow.entry.step_index],
            note="kept for 'minions workflows retry' or 'cancel' (keep_failed)",
        )
        return True

    async def _run_steps(self, workflow: ActiveWorkflow, start: int, resumed: bool) -> str:
        """Run the steps from ``start``, a checkpoint before each; return the outcome."""
        logger = self._store.services.logger
        workflow_id = workflow.handle.workflow_id
        if resumed:
            logger.log(logging.INFO, "workflow.resumed", minion=self._name,
                       workflow=workflow_id, step=self._spec.labels[start])  # fmt: skip
        index = start
        entry = workflow.entry
        try:
            while index < len(self._steps):
                entry.step_index = index
                # A resumed workflow saves its checkpoint again too: it records the new attempt,
                # so a workflow that keeps crashing its minion shows how often it did.
                await self._checkpoint(workflow, index)
                began = time.perf_counter()
                try:
                    await self._steps[index]()
                finally:
                    self._counters.observe_step(
                        self._spec.labels[index], time.perf_counter() - began
                    )
                if workflow.error is not entry.last_error:
                    self._note_error(workflow)  # met during the step, which then went on
                index += 1
        except AbortWorkflow:
            logger.log(logging.INFO, "workflow.aborted", minion=self._name,
                       workflow=workflow_id, step=self._spec.labels[index])  # fmt: skip
            return "aborted"
        except Exception as exc:
            workflow.error = f"{type(exc).__name__}: {exc}"
            logger.log(
                logging.ERROR,
                "workflow.failed",
                minion=self._name,
                workflow=workflow_id,
                step=self._spec.labels[index],
                reason=f"{type(exc).__name__}: {exc}",
                exc_info=exc,
            )
            return "failed"
        logger.log(logging.DEBUG, "workflow.succeeded", minion=self._name, workflow=workflow_id)
        return "succeeded"

    def _note_error(self, workflow: ActiveWorkflow) -> None:
        """Show the workflow's last error on the board, and record it in its next checkpoint."""
        workflow.entry.last_error = workflow.error
        if workflow.encoder is not None:
            workflow.encoder.set_history(workflow.attempts, workflow.error)

    async def _checkpoint(self, workflow: ActiveWorkflow, index: int) -> None:
        try:
            encoder = workflow.encoder
            if encoder is None:
                # The ids and the event are encoded once; each checkpoint adds the context.
                encoder = workflow.encoder = self._codec.for_workflow(
                    self._orchestration.id,
                    workflow.handle.workflow_id,
                    self._orchestration.minion_identity,
                    workflow.event,
                    self._spec.labels,
                )
                encoder.set_history(workflow.attempts, workflow.error)
            blob = encoder.encode(workflow.context, index)
        except CheckpointEncodeError as exc:
            self._counters.add("checkpoint_failures")
            if self._policy == "idle-until-persisted":
                raise PersistenceError(
                    f"{exc} (not retried: the same data would fail again)"
                ) from exc
            self._store.services.logger.log(
                logging.WARNING,
                "workflow.checkpoint_failed",
                minion=self._name,
                workflow=workflow.handle.workflow_id,
                reason=str(exc),
                policy=self._policy,
            )
            return
        await self._store.save(
            workflow.handle.workflow_id, self._orchestration.id, blob, self._policy, self._counters
        )


def _former_id(minion: Minion[Any, Any], minion_identity: str, pipeline: str) -> str | None:
    """The orchestration id Minions gave a ``run(...)``-form minion before its config values
    stopped counting (they were hashed in, as Gru still does); ``None`` without a config."""
    config_type, via = declared_config(type(minion))
    if config_type is None:
        return None
    config = minion.__dict__.get("config") if via == "attribute" else None
    config = config if config is not None else getattr(minion, "config", None)
    try:
        identity = config_identity(config)
    except DefinitionError:
        return None  # a config without a plain form never had such an id
    return orchestration_id(minion_identity, pipeline, identity) if identity else None


def _attempts(checkpoint: Checkpoint[Any, Any]) -> int:
    """How many times a saved workflow's steps were started (unrecorded before format 3: 1)."""
    return checkpoint.attempts if checkpoint.attempts is not None else 1


def check_step(checkpoint: Checkpoint[Any, Any], spec: WorkflowSpec) -> None:
    """Raise ``IncompatibleCheckpoint`` for a checkpoint past the minion's last step, or at a
    step that now has another name (steps renamed or reordered since it was saved)."""
    index, workflow_id = checkpoint.next_step_index, checkpoint.workflow_id
    drain = (
        "Drain the workflows with the old code first (run it until they finish), then start "
        "the new code"
    )
    if not 0 <= index < len(spec.steps):
        raise IncompatibleCheckpoint(
            f"the checkpoint of workflow {workflow_id} resumes at step {index + 1}, but "
            f"{spec.minion.__qualname__} has {len(spec.steps)} steps now: its steps changed "
            f"since the checkpoint was saved. {drain}"
        )
    saved = checkpoint.next_step
    if saved is not None and spec.labels and saved != spec.labels[index]:
        raise IncompatibleCheckpoint(
            f"the checkpoint of workflow {workflow_id} resumes at step {index + 1}, "
            f"{saved!r}, but step {index + 1} of {spec.minion.__qualname__} is "
            f"{spec.labels[index]!r} now: steps were renamed or reordered since. {drain}; "
            f"or keep the step's name with @minion_step(name={saved!r})"
        )
