"""Gru: the orchestration API of durable workflows, driving one Minions :class:`~minions.Runtime`.

::

    gru = await Gru.create()                              # SQLite store in <project>/.minions
    result = await gru.start_orchestration(Trades, Executor)
    ...
    await gru.stop_orchestration(result.orchestration_id)
    await gru.shutdown()

An *orchestration* pairs a pipeline with a workflow minion (and an optional config). Its id is
a hash of their identities (see ``runner.orchestration_id``), so starting the same pairing
again — in this process, after a crash, or in a copy of the project folder — finds the saved
workflows and resumes them before new events.

How it maps onto the runtime. For each orchestration Gru defines a small subclass of the
minion that names the pipeline (a class attribute, as a user would) and carries the config and
orchestration id, and starts it with :meth:`Runtime.start` alongside a ``WorkflowStore`` binding
that shares Gru's store, logger and metrics. Everything else is the runtime's: the pipeline and
resources are ordinary shared components, started once, supervised, restarted with their
dependents; a crashed workflow minion restarts and resumes its workflows; a failed start is
undone. Stopping an orchestration stops its minion; shared pipelines and resources run on until
``shutdown()`` (a pipeline nobody subscribes to produces nothing).

Lifecycle calls never raise for a refused or failed operation: they return a result with
``success``, ``reason`` and ``suggestion``. Calls for one orchestration id are serialised; for
different ids they overlap (the runtime applies structural changes one at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import importlib
import json
import logging
import os
import random
import tomllib
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar, Final, Literal

from ..core.clock import Clock, MonotonicClock
from ..core.component import ComponentState, Minion, component_name
from ..core.config_identity import CONFIG_ID_KEY, CONFIG_SUFFIXES, config_id_of
from ..core.errors import ConfigError, DefinitionError, MinionsError, RuntimeStateError
from ..core.graph import declared_config
from ..core.identity import identity_of
from ..core.logs import configure_logging
from ..core.runtime import Runtime, default_project_dir
from ..core.values import InvalidValue, plain_codec
from .checkpoint import CorruptCheckpoint, IncompatibleCheckpoint, checkpoint_codec
from .pipeline import Pipeline
from .results import (
    OrchestrationStatus,
    RuntimeSnapshot,
    ShutdownError,
    ShutdownResult,
    StartResult,
    StopResult,
)
from .runner import (
    Orchestration,
    WorkflowSpec,
    check_event_types,
    check_step,
    config_identity,
    orchestration_id,
    workflow_spec,
)
from .sqlite.store import SQLiteStateStore, default_state_path
from .state_store import NoOpStateStore, StateStore
from .steps import PERSISTENCE_POLICIES, PersistencePolicy
from .store import (
    PersistenceRetry,
    StoreServices,
    WorkflowStatistics,
    WorkflowStore,
    store_hook,
)
from .telemetry import Logger, Metrics, NoOpLogger, NoOpMetrics, PrometheusMetrics, StructlogLogger

__all__ = ["FAILURE_POLICIES", "FailurePolicy", "Gru"]

#: What happens to the checkpoint of a failed workflow: it is deleted (the only policy).
FailurePolicy = Literal["delete"]
FAILURE_POLICIES: tuple[str, ...] = typing.get_args(FailurePolicy)


class _Unset:
    def __repr__(self) -> str:
        return "<default>"


#: "Argument omitted": take the default (``None`` means "switch it off").
UNSET: Final = _Unset()

_PIPELINE_ATTRIBUTE = "workflow_pipeline"
_STORE_METHODS = (
    "save_context",
    "delete_context",
    "get_contexts_for_orchestration",
    "get_all_contexts",
)


class GruState(enum.Enum):
    RUNNING = "running"
    SHUTTING_DOWN = "shutting down"
    SHUT_DOWN = "shut down"


_current: Gru | None = None


@dataclass(frozen=True)
class _Plan:
    """A start request, resolved: classes, spec, config and orchestration id."""

    id: str
    pipeline: type[Pipeline[Any]]
    minion: type[Minion[Any, Any]]
    spec: WorkflowSpec
    config: object | None
    config_type: type[Any] | None
    config_identity: str


@dataclass(frozen=True)
class _Entry:
    plan: _Plan
    bound: type[Minion[Any, Any]]


@dataclass(frozen=True)
class _Parts:
    """What ``Gru.create`` assembles for the new Gru."""

    runtime: Runtime
    state_store: StateStore
    logger: Logger
    metrics: Metrics
    persistence_policy: PersistencePolicy
    retry: PersistenceRetry
    clock: Clock
    rng: random.Random


class _Refused(Exception):
    def __init__(self, result: StartResult) -> None:
        self.result = result


class Gru:
    """Runs orchestrations of pipelines and workflow minions; create it with :meth:`create`.

    One Gru per process at a time (a new one may be created after ``shutdown()``).
    """

    _creating: ClassVar[bool] = False

    def __init__(self, *args: object, **kwargs: object) -> None:
        parts = kwargs.get("parts")
        if not Gru._creating or args or not isinstance(parts, _Parts):
            raise RuntimeStateError(
                "Gru is not created directly: use 'gru = await Gru.create(...)' inside a coroutine"
            )
        runtime, state_store, logger, metrics = (
            parts.runtime,
            parts.state_store,
            parts.logger,
            parts.metrics,
        )
        self._runtime = runtime
        self._state_store = state_store
        self._logger = logger
        self._metrics = metrics
        self._state = GruState.RUNNING
        self._entries: dict[str, _Entry] = {}
        self._bound: dict[str, type[Minion[Any, Any]]] = {}
        self._id_locks: dict[str, asyncio.Lock] = {}
        # Structural changes of the runtime (start, stop, forgetting components) one at a time.
        self._structure = asyncio.Lock()
        self._shutdown_result: asyncio.Future[ShutdownResult] | None = None
        services = StoreServices(
            state_store=state_store,
            owns_store=False,
            logger=logger,
            metrics=metrics,
            persistence_policy=parts.persistence_policy,
            retry=parts.retry,
            clock=parts.clock,
            rng=parts.rng,
        )
        self._services = services
        self._store_binding = types.new_class(
            "WorkflowStore",
            (WorkflowStore,),
            {"name": "WorkflowStore"},
            lambda ns: ns.update(
                provided=services, __module__=__name__, __qualname__="Gru.WorkflowStore"
            ),
        )

    @classmethod
    async def create(
        cls,
        state_store: StateStore | _Unset | None = UNSET,
        logger: Logger | _Unset | None = UNSET,
        metrics: Metrics | _Unset | None = UNSET,
        metrics_port: int | None = 8081,
        *,
        workflow_failure_policy: FailurePolicy = "delete",
        workflow_persistence_failure_policy: PersistencePolicy | None = None,
        workflow_persistence_retry_delay_seconds: float = 1.0,
        workflow_persistence_retry_max_delay_seconds: float = 60.0,
        workflow_persistence_retry_backoff_multiplier: float = 2.0,
        workflow_persistence_retry_jitter_ratio: float = 0.1,
        workflow_persistence_retry_warning_interval_seconds: float = 30.0,
        workflow_persistence_retry_error_after_seconds: float | None = 60.0,
        project_dir: str | os.PathLike[str] | None = None,
        persistence_policy: PersistencePolicy | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> Gru:
        """Create the process's Gru and start its state store.

        An omitted ``state_store`` is an ``SQLiteStateStore`` at
        ``<project>/.minions/state.sqlite3``, an omitted ``logger`` logs through structlog (and
        configures logging to the console and ``<project>/.minions/logs``), omitted ``metrics``
        are Prometheus metrics served on ``127.0.0.1:metrics_port``. ``None`` switches each off.

        ``workflow_persistence_failure_policy`` (or its short name ``persistence_policy``) is
        the default of minions that do not set their own; the ``workflow_persistence_retry_...``
        settings say how ``idle-until-persisted`` retries (see docs/workflows.md). A setting of
        the wrong type raises ``TypeError``, one out of range ``ValueError``.
        """
        global _current
        policy, retry = _workflow_settings(
            workflow_failure_policy,
            workflow_persistence_failure_policy,
            persistence_policy,
            delay_seconds=workflow_persistence_retry_delay_seconds,
            max_delay_seconds=workflow_persistence_retry_max_delay_seconds,
            backoff_multiplier=workflow_persistence_retry_backoff_multiplier,
            jitter_ratio=workflow_persistence_retry_jitter_ratio,
            warning_interval_seconds=workflow_persistence_retry_warning_interval_seconds,
            error_after_seconds=workflow_persistence_retry_error_after_seconds,
        )
        if _current is not None:
            raise RuntimeStateError(
                f"a Gru is already {_current._state.value} in this process; use it, or "
                "'await gru.shutdown()' before creating another"
            )
        directory = _project_dir(project_dir)
        chosen_logger = _choose_logger(logger, directory)
        chosen_metrics = _choose_metrics(metrics, metrics_port)
        store = _choose_store(state_store, directory)
        cls._creating = True
        try:
            gru = cls(
                parts=_Parts(
                    runtime=Runtime(project_dir=directory, clock=clock, rng=rng),
                    state_store=store,
                    logger=chosen_logger,
                    metrics=chosen_metrics,
                    persistence_policy=policy,
                    retry=retry,
                    clock=clock or MonotonicClock(),
                    rng=rng or random.Random(),
                )
            )
        finally:
            cls._creating = False
        _current = gru
        try:
            await store_hook(store, "startup")
        except BaseException:
            _current = None
            with contextlib.suppress(Exception):
                await store_hook(store, "shutdown")  # release what the failed start opened
            raise
        if isinstance(chosen_metrics, PrometheusMetrics):
            problem = chosen_metrics.serve()
            if problem:
                chosen_logger.log(logging.WARNING, "gru.metrics_unavailable", reason=problem)
        chosen_logger.log(logging.INFO, "gru.created", state_store=repr(store))
        return gru

    def __repr__(self) -> str:
        return f"<Gru {self._state.value}, {len(self._entries)} orchestrations>"

    @property
    def runtime(self) -> Runtime:
        """The runtime Gru drives; its resources are shared with the workflow minions."""
        return self._runtime

    @property
    def state_store(self) -> StateStore:
        return self._state_store

    # -- orchestrations ------------------------------------------------------------------------

    async def start_orchestration(
        self,
        pipeline: type[Pipeline[Any]] | str,
        minion: type[Minion[Any, Any]] | str,
        minion_config: object | None = None,
        *,
        minion_config_path: str | os.PathLike[str] | None = None,
    ) -> StartResult:
        """Start ``minion`` on the events of ``pipeline``; classes or module paths.

        A module path names a module holding a module-level ``pipeline`` / ``minion`` variable
        or exactly one Pipeline / Minion class of its own (``"pkg.mod:Class"`` picks one).
        Saved workflows of the same orchestration resume before new events.
        """
        refused = self._refuse_when_closed()
        if refused:
            return StartResult(False, *refused)
        try:
            plan = await self._plan(pipeline, minion, minion_config, minion_config_path)
        except _Refused as refusal:
            return refusal.result
        async with self._lock_for(plan.id):
            refused = self._refuse_when_closed()
            if refused:
                return StartResult(False, *refused, orchestration_id=plan.id)
            running = self._entries.get(plan.id)
            if running is not None:
                return StartResult(
                    False,
                    f"orchestration {plan.id} ({component_name(running.bound)}) is already "
                    "running; the start request was rejected",
                    "stop it first with stop_orchestration(), or start another pairing",
                    plan.id,
                )
            try:
                await self._check_checkpoints(plan)
            except _Refused as refusal:
                return refusal.result
            bound = self._bind(plan)
            async with self._structure:
                refused = self._refuse_when_closed()
                if refused:
                    return StartResult(False, *refused, orchestration_id=plan.id)
                try:
                    await self._runtime.start(self._store_binding, bound)
                except Exception as exc:  # the runtime undid what this start began
                    return StartResult(
                        False,
                        f"starting orchestration {plan.id} ({component_name(bound)}) failed: {exc}",
                        "fix the cause above; whatever this start began was stopped again",
                        plan.id,
                        exc,
                    )
            self._entries[plan.id] = _Entry(plan, bound)
        self._logger.log(
            logging.INFO,
            "orchestration.started",
            orchestration=plan.id,
            minion=component_name(plan.minion),
            pipeline=component_name(plan.pipeline),
        )
        return StartResult(True, orchestration_id=plan.id)

    start = start_orchestration

    async def stop_orchestration(self, orchestration_id: str) -> StopResult:
        """Stop one orchestration: its running workflows get ``stop_grace`` seconds, then are
        cancelled with their checkpoints kept; a pipeline or resource nothing else uses stops."""
        if not isinstance(orchestration_id, str):
            return StopResult(
                False,
                f"orchestration ids are strings, got {type(orchestration_id).__name__}",
                "pass StartResult.orchestration_id",
            )
        if self._state is not GruState.RUNNING:
            return StopResult(False, *self._closed_reason())
        async with self._lock_for(orchestration_id):
            entry = self._entries.get(orchestration_id)
            if entry is None:
                return StopResult(
                    False,
                    f"no orchestration {orchestration_id} is running",
                    "runtime_state_snapshot().orchestrations lists the running ones",
                )
            async with self._structure:
                try:
                    await self._retire(entry.bound)
                except Exception as exc:
                    return StopResult(
                        False,
                        f"stopping orchestration {orchestration_id} failed: {exc}",
                        "it no longer takes events; check the log, and restart the process "
                        "for a clean slate if components misbehave",
                    )
                finally:
                    # Fail closed: a stop that went wrong still takes the orchestration out.
                    self._entries.pop(orchestration_id, None)
        self._logger.log(logging.INFO, "orchestration.stopped", orchestration=orchestration_id)
        return StopResult(True)

    async def shutdown(self) -> ShutdownResult:
        """Stop every orchestration and component, then the state store. Final; idempotent."""
        global _current
        if self._shutdown_result is not None:
            return await asyncio.shield(self._shutdown_result)
        self._shutdown_result = asyncio.get_running_loop().create_future()
        self._state = GruState.SHUTTING_DOWN
        errors: list[ShutdownError] = []
        try:
            async with self._structure:
                try:
                    await self._runtime.stop()
                except Exception as exc:
                    errors.append(ShutdownError("runtime", "Runtime", type(exc).__name__, str(exc)))
                self._entries.clear()
            for phase, component, close in (
                ("state_store", type(self._state_store).__name__, self._shutdown_store),
                ("metrics", type(self._metrics).__name__, self._close_metrics),
            ):
                try:
                    await close()
                except Exception as exc:
                    errors.append(ShutdownError(phase, component, type(exc).__name__, str(exc)))
        finally:
            self._state = GruState.SHUT_DOWN
            if _current is self:
                _current = None
            result = ShutdownResult(
                success=not errors,
                reason=None if not errors else f"{len(errors)} cleanup step(s) failed",
                suggestion=None
                if not errors
                else "see errors; restart the process for a clean slate",
                errors=tuple(errors),
            )
            self._shutdown_result.set_result(result)
        self._logger.log(logging.INFO, "gru.shut_down", errors=len(errors))
        return result

    async def _shutdown_store(self) -> None:
        await store_hook(self._state_store, "shutdown")

    async def _close_metrics(self) -> None:
        if isinstance(self._metrics, PrometheusMetrics):
            await asyncio.to_thread(self._metrics.close)

    # -- reading -------------------------------------------------------------------------------

    async def runtime_state_snapshot(self) -> RuntimeSnapshot:
        """A frozen snapshot of the orchestrations and components that run now."""
        status = self._runtime.status() if self._state is not GruState.SHUT_DOWN else {}
        orchestrations: dict[str, OrchestrationStatus] = {}
        for oid, entry in self._entries.items():
            name = component_name(entry.bound)
            component = status.get(name)
            orchestrations[oid] = OrchestrationStatus(
                orchestration_id=oid,
                minion=identity_of(entry.plan.minion),
                pipeline=identity_of(entry.plan.pipeline),
                component=name,
                state=component.state if component is not None else ComponentState.STOPPED,
                workflows=self.workflow_statistics(oid),
            )
        return RuntimeSnapshot(
            orchestrations=frozenset(orchestrations),
            minion_instance_by_orchestration=MappingProxyType(
                {oid: o.component for oid, o in orchestrations.items()}
            ),
            pipeline_by_orchestration=MappingProxyType(
                {oid: component_name(e.plan.pipeline) for oid, e in self._entries.items()}
            ),
            orchestration_status=MappingProxyType(orchestrations),
            components=MappingProxyType(dict(status)),
        )

    def workflow_statistics(self, orchestration_id: str) -> WorkflowStatistics:
        """The workflow counters of an orchestration (zeros if it never ran)."""
        counters = self._services.counters.get(orchestration_id)
        return counters.snapshot() if counters is not None else WorkflowStatistics()

    async def wait_for_workflows(
        self, orchestration_id: str, until: Callable[[WorkflowStatistics], bool]
    ) -> WorkflowStatistics:
        """Wait until the orchestration's counters satisfy ``until``; return them.

        For tests and scripts, e.g. ``await gru.wait_for_workflows(oid, lambda s: s.succeeded
        >= 10)``; bound it with a timeout of your own.
        """
        return await self._services.counters_for(orchestration_id).wait_until(until)

    # -- internals -----------------------------------------------------------------------------

    def _closed_reason(self) -> tuple[str, str]:
        if self._state is GruState.SHUTTING_DOWN:
            return "Gru is shutting down", "create a new Gru after shutdown() returns"
        return "Gru is shut down", "create a new one with 'await Gru.create()'"

    def _refuse_when_closed(self) -> tuple[str, str] | None:
        return None if self._state is GruState.RUNNING else self._closed_reason()

    def _lock_for(self, orchestration_id: str) -> asyncio.Lock:
        lock = self._id_locks.get(orchestration_id)
        if lock is None:
            lock = self._id_locks[orchestration_id] = asyncio.Lock()
        return lock

    async def _plan(
        self,
        pipeline_ref: type[Pipeline[Any]] | str,
        minion_ref: type[Minion[Any, Any]] | str,
        config: object | None,
        config_path: str | os.PathLike[str] | None,
    ) -> _Plan:
        try:
            pipeline = _resolve(pipeline_ref, Pipeline, "pipeline")
            minion = _resolve(minion_ref, Minion, "minion")
            spec = workflow_spec(minion, require_pipeline=False)
            if spec.pipeline is not None and not issubclass(pipeline, spec.pipeline):
                raise DefinitionError(
                    f"{minion.__qualname__} declares its pipeline '{spec.pipeline_attribute}: "
                    f"{spec.pipeline.__qualname__}', so it cannot run on "
                    f"{pipeline.__qualname__}; pass {spec.pipeline.__qualname__} (or a subclass)"
                )
            check_event_types(pipeline, minion, spec.event_type)
            value, config_type, config_id = await self._config(minion, config, config_path)
        except MinionsError as exc:
            raise _Refused(StartResult(False, str(exc), _suggestion(exc), None, exc)) from exc
        oid = orchestration_id(identity_of(minion), identity_of(pipeline), config_id)
        return _Plan(oid, pipeline, minion, spec, value, config_type, config_id)

    async def _config(
        self,
        minion: type[Minion[Any, Any]],
        config: object | None,
        config_path: str | os.PathLike[str] | None,
    ) -> tuple[object | None, type[Any] | None, str]:
        config_type, via = declared_config(minion)
        owner = minion.__qualname__
        if config is not None and config_path is not None:
            raise ConfigError("pass minion_config or minion_config_path, not both")
        if config_type is None:
            if config is not None or config_path is not None:
                raise ConfigError(
                    f"{owner} declares no config, so it cannot take one: add 'config: MyConfig' "
                    "(a dataclass or pydantic model) to the class"
                )
            return None, None, ""
        if via == "parameter":
            raise ConfigError(
                f"{owner} takes its config as an __init__ parameter; with Gru declare it as a "
                f"class attribute instead: 'config: {config_type.__qualname__}'"
            )
        if config_path is not None:
            full, identity = _config_location(self._runtime.project_dir, config_path)
            own_id = _file_config_id(full)
            if own_id is not None:
                identity = "config:" + own_id  # the file's own id: it may move or be renamed
            loader = getattr(minion, "load_config", None)
            if loader is not None:
                try:
                    loaded = await loader(minion.__new__(minion), str(full))
                except Exception as exc:
                    raise ConfigError(f"{owner}.load_config({str(full)!r}) raised {exc!r}") from exc
            else:
                loaded = _read_config_file(full)
            if isinstance(loaded, dict) and CONFIG_ID_KEY in loaded:
                loaded = {k: v for k, v in loaded.items() if k != CONFIG_ID_KEY}  # not a value
            value = _validate_config(owner, config_type, loaded, f"the config file {full}")
            return value, config_type, identity
        if config is not None:
            value = _validate_config(owner, config_type, config, "minion_config")
            return value, config_type, config_identity(value)
        value = _validate_config(owner, config_type, {}, "the config type's defaults")
        return value, config_type, ""

    async def _check_checkpoints(self, plan: _Plan) -> None:
        """Refuse the start if saved workflows cannot resume with the current code."""
        try:
            rows = await self._state_store.get_contexts_for_orchestration(plan.id)
        except Exception as exc:
            raise _Refused(
                StartResult(
                    False,
                    f"cannot read the saved workflows of orchestration {plan.id}: {exc}",
                    "check the state store, then start again",
                    plan.id,
                    exc,
                )
            ) from exc
        codec = checkpoint_codec(plan.spec.event_type, plan.spec.context_type)
        for row in rows:
            try:
                checkpoint = codec.decode(row.context, workflow_id=row.workflow_id)
                check_step(checkpoint, plan.spec)
            except CorruptCheckpoint:
                continue  # skipped (and logged) by the workflow loop when it resumes
            except IncompatibleCheckpoint as exc:
                raise _Refused(
                    StartResult(
                        False,
                        f"orchestration {plan.id} has saved workflows the current "
                        f"{plan.minion.__qualname__} cannot resume: {exc}",
                        f"drain first: run the previous version of {plan.minion.__qualname__} "
                        "until its workflows finish, then start this one",
                        plan.id,
                        exc,
                    )
                ) from exc

    def _bind(self, plan: _Plan) -> type[Minion[Any, Any]]:
        """The subclass of the user's minion that this orchestration runs (module docstring)."""
        known = self._bound.get(plan.id)
        if known is not None:
            # The runtime keeps the class of a stopped orchestration, so a restart reuses it;
            # the config file may have changed since (the id names the file, not its content).
            if plan.config_type is not None:
                known.config = plan.config  # type: ignore[attr-defined]
            return known
        minion, pipeline = plan.minion, plan.pipeline
        annotations: dict[str, Any] = {
            plan.spec.pipeline_attribute or _PIPELINE_ATTRIBUTE: pipeline
        }
        namespace: dict[str, Any] = {
            "__module__": minion.__module__,
            "__qualname__": f"{minion.__qualname__}[{pipeline.__qualname__}]",
            "__minions_id__": f"orchestration:{plan.id}",
            "__minions_orchestration__": Orchestration(plan.id, identity_of(minion)),
        }
        if plan.config_type is not None:
            # A ClassVar, so the runtime does not build it again from minions.toml.
            annotations["config"] = ClassVar[plan.config_type]
            namespace["config"] = plan.config
        namespace["__annotations__"] = annotations
        name = f"{component_name(minion)}[{component_name(pipeline)}]"
        if plan.config_identity:
            name += f"#{plan.id[:8]}"
        bound = types.new_class(
            minion.__name__, (minion,), {"name": name}, lambda ns: ns.update(namespace)
        )
        self._bound[plan.id] = bound
        return bound

    async def _retire(self, bound: type[Any]) -> None:
        """Stop an orchestration's minion (its workflows keep their checkpoints).

        Its pipeline and resources keep running: other orchestrations or services may use them,
        a pipeline without subscribers produces nothing, and a restart of the orchestration
        finds them ready. ``shutdown()`` stops everything.
        """
        await self._runtime.stop(bound)


def _workflow_settings(
    failure_policy: object,
    persistence_policy: object,
    short_name: object,
    **retry: Any,
) -> tuple[PersistencePolicy, PersistenceRetry]:
    """``Gru.create``'s workflow settings, checked: ``TypeError`` for a value of the wrong type,
    ``ValueError`` for a value out of range."""
    _check_choice("workflow_failure_policy", failure_policy, FAILURE_POLICIES)
    for name, value in (
        ("workflow_persistence_failure_policy", persistence_policy),
        ("persistence_policy", short_name),
    ):
        if value is not None:
            _check_choice(name, value, PERSISTENCE_POLICIES)
    if (
        persistence_policy is not None
        and short_name is not None
        and persistence_policy != short_name
    ):
        raise ValueError(
            "persistence_policy is the short name of workflow_persistence_failure_policy, and "
            f"they disagree ({short_name!r} and {persistence_policy!r}); pass only one"
        )
    chosen: Any = persistence_policy or short_name or "continue-on-failure"
    return chosen, PersistenceRetry.checked("workflow_persistence_retry_", **retry)


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    allowed = " or ".join(repr(choice) for choice in choices)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be {allowed}, got {type(value).__name__} {value!r}")
    if value not in choices:
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def _project_dir(project_dir: str | os.PathLike[str] | None) -> Path:
    return Path(project_dir).resolve() if project_dir else default_project_dir()


def _config_location(project_dir: Path, config_path: str | os.PathLike[str]) -> tuple[Path, str]:
    """The config file's full path, and its identity: the path relative to the project."""
    path = Path(config_path)
    full = path if path.is_absolute() else project_dir / path
    try:
        shown = full.resolve().relative_to(project_dir).as_posix()
    except ValueError:
        shown = full.resolve().as_posix()
    return full, "path:" + shown


def _choose_logger(logger: Logger | _Unset | None, directory: Path) -> Logger:
    if isinstance(logger, _Unset):
        configure_logging(project_dir=directory)
        return StructlogLogger()
    if logger is None:
        return NoOpLogger()
    if not isinstance(logger, Logger):
        raise TypeError(
            f"logger must implement minions.interfaces.Logger (a log(level, event, **fields) "
            f"method), got {type(logger).__name__}"
        )
    return logger


def _choose_metrics(metrics: Metrics | _Unset | None, port: int | None) -> Metrics:
    if isinstance(metrics, _Unset):
        return PrometheusMetrics(port=port)
    if metrics is None:
        return NoOpMetrics()
    if not isinstance(metrics, Metrics):
        raise TypeError(
            "metrics must implement minions.interfaces.Metrics (inc, set, observe), "
            f"got {type(metrics).__name__}"
        )
    return metrics


def _choose_store(store: StateStore | _Unset | None, directory: Path) -> StateStore:
    if isinstance(store, _Unset):
        return SQLiteStateStore(default_state_path(directory))
    if store is None:
        return NoOpStateStore()
    missing = [name for name in _STORE_METHODS if not callable(getattr(store, name, None))]
    if missing:
        raise TypeError(
            "state_store must implement minions.interfaces.StateStore (save_context, "
            "delete_context, get_contexts_for_orchestration, get_all_contexts); "
            f"{type(store).__name__} lacks {', '.join(missing)}"
        )
    return store


def _resolve(ref: object, base: type[Any], kind: str) -> Any:
    if isinstance(ref, str):
        ref = _import(ref, base, kind)
    if isinstance(ref, type) and issubclass(ref, base) and ref is not base:
        return ref
    raise DefinitionError(
        f"the {kind} must be a subclass of minions.{base.__name__} or a module path naming one, "
        f"got {ref!r}"
    )


def _import(ref: str, base: type[Any], kind: str) -> object:
    module_name, _, attribute = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise DefinitionError(f"cannot import the {kind} module {module_name!r}: {exc!r}") from exc
    if attribute:
        if not hasattr(module, attribute):
            raise DefinitionError(f"module {module_name!r} has no attribute {attribute!r}")
        return getattr(module, attribute)
    if hasattr(module, kind):
        return getattr(module, kind)
    own = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, base)
        and value is not base
        and value.__module__ == module.__name__
    ]
    if len(own) == 1:
        return own[0]
    found = ", ".join(v.__name__ for v in own) or "none"
    raise DefinitionError(
        f"module {module_name!r} must define one {base.__name__} class or a module-level "
        f"'{kind}' variable naming it (found: {found}); or pass '{module_name}:ClassName'"
    )


def _file_config_id(path: Path) -> str | None:
    """The ``_minions_config_id`` a TOML, JSON or YAML config file carries, if any."""
    if path.suffix.lower() not in CONFIG_SUFFIXES:
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc}") from exc
    return config_id_of(text, path.suffix, f"the config file {path}")


def _read_config_file(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc}") from exc
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            return tomllib.loads(text)
        if suffix == ".json":
            return json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"the config file {path} is not valid {suffix[1:]}: {exc}") from exc
    raise ConfigError(
        f"the config file {path} has suffix {suffix or '(none)'}; use .toml or .json, or define "
        "'async def load_config(self, path)' on the minion to read other formats"
    )


def _validate_config(owner: str, config_type: type[Any], value: object, origin: str) -> object:
    if isinstance(value, config_type):
        return value
    try:
        return plain_codec(config_type).load(value)
    except InvalidValue as exc:
        problems = "; ".join(exc.problems)
        raise ConfigError(
            f"invalid configuration for {owner} from {origin}: {problems}. Fix it, or pass "
            "minion_config=... / minion_config_path=..."
        ) from exc


def _suggestion(exc: BaseException) -> str:
    if isinstance(exc, ConfigError):
        return "fix the configuration and start again"
    if isinstance(exc, DefinitionError):
        return "fix the pipeline or minion definition named above and start again"
    return "see the reason and start again"


def current_gru() -> Gru | None:
    """The process's Gru, if one was created and not shut down."""
    return _current
