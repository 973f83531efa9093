"""``run(...)``: the blocking front door for a program's components.

It configures logging, starts the components with a :class:`~minions.Runtime`, and waits until
every minion has finished, the optional ``stop_after`` delay has passed, or SIGINT/SIGTERM
arrives. The first signal stops everything gracefully in reverse dependency order; a second one
forces the stop (no more waiting for stop timeouts or ``shutdown()`` hooks).

It returns after a clean stop. Otherwise it raises :class:`SystemExit` with one of the statuses
of :mod:`minions.ops.exits`, so that a service manager can tell what happened: 1 when a
component was given up, failed to start, or crashed and was not restarted
(``restart="temporary"``); 78 for a definition or configuration error, reported as one line on
stderr before anything starts; 75 when another system already runs in the project folder
(:mod:`minions.ops.lock`); 128 + the signal number when a second signal forced the stop.

Its settings (config file, log level, ``stop_after``, metrics port, log rotation) may also come
from environment variables — which is how ``minions run``'s options reach a program file that
calls ``run(...)`` itself — and from the ``[minions]`` table of the config: see
:mod:`minions.ops.settings`.

While it runs, the system answers the ``minions`` command on its control socket
(``minions.ops.control``; ``minions stop`` is a graceful stop like the first signal) and, when a
metrics port is configured, serves Prometheus metrics on ``127.0.0.1`` (``minions.ops.metrics``);
when a dashboard port is configured, it serves its dashboard there too
(``minions.ops.dashboard``).
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import structlog

from ..core.component import Component
from ..core.errors import DefinitionError, RuntimeStateError, StartupError
from ..core.graph import build_graph
from ..core.logs import configure_logging
from ..core.runtime import Extension, OptionsMapping, Runtime, default_project_dir
from ..isolated.code import reexecuting
from .control import ControlServer
from .dashboard.extension import Dashboard
from .exits import (
    EXIT_DEFINITION,
    EXIT_GIVEN_UP,
    EXIT_OK,
    EXIT_PROJECT_BUSY,
    exit_after_signal,
)
from .lock import ProjectBusyError, ProjectLock
from .metrics import MetricsEndpoint
from .settings import CONFIG_TABLE, SETTING_NAMES, RunSettings, resolve_settings

log = structlog.get_logger("minions")


def run(
    *components: type[Component],
    config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    options: OptionsMapping | None = None,
    project_dir: str | os.PathLike[str] | None = None,
    log_level: str | None = None,
    stop_after: float | None = None,
    metrics_port: int | None = None,
    log_max_bytes: int | None = None,
    log_backups: int | None = None,
    ray_address: str | None = None,
    dashboard_port: int | None = None,
) -> None:
    """Run ``components`` (and their dependencies) until they finish or a signal stops them.

    ``options`` sets per-component options (restart policy, timeouts, ``isolated``), keyed by
    class or component name, e.g. ``options={ThirdPartyStrategy: {"isolated": True}}``.
    ``stop_after`` stops gracefully after that many seconds. ``metrics_port`` serves Prometheus
    metrics on ``127.0.0.1:<port>``; ``dashboard_port`` serves the dashboard there (its address
    with its access token: ``minions dashboard --url``). ``log_level`` defaults to ``"info"``;
    the log file rotates past ``log_max_bytes`` (10 MiB; 0 never) keeping ``log_backups`` files
    (10). ``ray_address`` is the Ray cluster that components with ``Isolation(backend="ray")``
    join (without one, a local Ray is started for them and stopped at the end). Each setting may
    be overridden by the environment (see :mod:`minions.ops.settings`).

    It blocks until the system stops, so it cannot be called from a running event loop: async
    programs use :class:`~minions.Runtime`.
    """
    # The settings by name, as given (None: not given); resolve_settings applies the rest.
    given = {name: value for name, value in locals().items() if name in SETTING_NAMES}
    if reexecuting():
        # An isolated child is executing a redeployed module's code again: a run(...) at the
        # top level of that module must not start a second system inside the child.
        return
    _refuse_running_loop()
    if not components:
        raise TypeError("run() needs at least one component class, e.g. run(MyMinion)")
    directory = Path(project_dir).resolve() if project_dir else default_project_dir()
    try:
        settings = resolve_settings(
            project_dir=directory, environ=os.environ, config=config, **given
        )
    except DefinitionError as exc:
        raise _exit_with(EXIT_DEFINITION, exc) from None
    lock = ProjectLock(directory)
    try:
        lock.acquire()
    except ProjectBusyError as exc:
        raise _exit_with(EXIT_PROJECT_BUSY, exc) from None
    try:
        configure_logging(
            project_dir=directory,
            level=settings.log_level,
            max_bytes=settings.log_max_bytes,
            backups=settings.log_backups,
        )
        code = _run_to_the_end(
            _main(components, settings=settings, options=options, project_dir=directory, lock=lock)
        )
    except DefinitionError as exc:
        raise _exit_with(EXIT_DEFINITION, exc) from None
    except StartupError as exc:
        # Its traceback is in the log already (component.crashed); here, the one line.
        raise _exit_with(EXIT_GIVEN_UP, exc) from None
    finally:
        lock.release()
    if code:
        raise SystemExit(code)


def _refuse_running_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeStateError(
        "run() was called inside a running event loop; it blocks until the system stops and "
        "runs a loop of its own. In async code use Runtime instead: 'async with Runtime() as "
        "rt: await rt.start(MyMinion); await rt.wait()'"
    )


def _exit_with(code: int, exc: BaseException) -> SystemExit:
    """Say what went wrong in one line on stderr; the SystemExit that ends the program."""
    print(f"minions: {exc}", file=sys.stderr, flush=True)
    return SystemExit(code)


async def _main(
    components: tuple[type[Component], ...],
    *,
    settings: RunSettings,
    options: OptionsMapping | None,
    project_dir: Path,
    lock: ProjectLock | None = None,
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    force = asyncio.Event()
    received: list[int] = []
    stop_reason: list[str] = []

    def on_stop_request() -> None:
        if not stop.is_set():
            stop_reason.append("stop requested on the control socket")
            log.warning("runtime.stopping", reason=stop_reason[0])
            stop.set()

    def on_signal(signum: int) -> None:
        received.append(signum)
        name = signal.Signals(signum).name
        if len(received) == 1:
            log.warning("runtime.stopping", reason=f"{name} received; send it again to force")
            stop.set()
        else:
            log.warning("runtime.forced", reason=f"second signal ({name}); stopping at once")
            force.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    runtime = Runtime(
        config=settings.config,
        options=options,
        project_dir=project_dir,
        extensions=_extensions(settings, on_stop_request, lock),
        isolation_settings={"ray_address": settings.ray_address} if settings.ray_address else {},
    )
    try:
        # A definition error is reported before anything is logged: one line on stderr.
        runtime.check(*components)
        log.info(
            "runtime.starting", components=[getattr(c, "__name__", repr(c)) for c in components]
        )
        try:
            await _until_first(runtime.start(*components), stop.wait())
        except BaseException:
            await runtime.stop()
            raise
        if not stop.is_set():
            _warn_unmatched_config(components, settings)
            log.info("runtime.started")
            # What exists once the system has started lives as long as the program: moved out of
            # the collector's reach, it is never scanned again, and a full collection (which a
            # child can make this process run by having it hold calls) costs what is new only.
            gc.freeze()
            waits = [runtime.wait(), stop.wait()]
            if settings.stop_after is not None:
                waits.append(asyncio.sleep(settings.stop_after))
            await _until_first(*waits)
        if not stop_reason:
            log.info("runtime.stopping", reason="signal" if received else "done")
        forced = await _until_first(runtime.stop(), force.wait()) == 1
        if forced:
            runtime.kill()
            return exit_after_signal(received[-1])
        given_up, crashed = runtime.given_up, runtime.ended_by_crash
        if given_up or crashed:
            reasons = [f"given up: {', '.join(given_up)}"] if given_up else []
            reasons += [f"crashed, not restarted: {', '.join(crashed)}"] if crashed else []
            log.error("runtime.stopped", reason="; ".join(reasons))
            return EXIT_GIVEN_UP
        log.info("runtime.stopped", reason="clean stop")
        return EXIT_OK
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _warn_unmatched_config(components: tuple[type[Component], ...], settings: RunSettings) -> None:
    """Log each config table and ``MINIONS_<X>__`` variable that no component reads."""
    configured = {node.name: node.config_type is not None for node in build_graph(components).nodes}
    for warning in settings.config_source.unmatched(
        configured, os.environ, reserved=(CONFIG_TABLE,)
    ):
        log.warning("config.unmatched", reason=warning)


def _extensions(
    settings: RunSettings, on_stop: Callable[[], None], lock: ProjectLock | None
) -> list[Extension]:
    extensions: list[Extension] = []
    metrics = None
    if settings.metrics_port is not None or settings.dashboard_port is not None:
        # The dashboard charts proxied calls: they are measured when it is on, served over
        # HTTP only when a metrics port is set.
        metrics = MetricsEndpoint(settings.metrics_port)
        extensions.append(metrics)  # attached first: it measures the first components too
    control = ControlServer(on_stop=on_stop, metrics=metrics, lock=lock)
    extensions.append(control)
    if settings.dashboard_port is not None:
        extensions.append(Dashboard(control, settings.dashboard_port))  # fed by the control
    return extensions


LEFTOVER_GRACE = 1.0
"""Seconds the tasks still alive when the program ends get to finish their cancellation."""


def _run_to_the_end(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` in a new event loop, like :func:`asyncio.run`, but never hang at the end.

    :func:`asyncio.run` cancels the tasks left over and waits for them without limit, so one
    component that swallows its cancellation (a ``run()`` abandoned after its stop timeout, a
    ``shutdown()`` cut short by a second signal) would keep the program from exiting. Here
    leftovers get :data:`LEFTOVER_GRACE` seconds, then are abandoned and logged.
    """
    loop = asyncio.new_event_loop()
    abandoned: set[asyncio.Task[Any]] = set()

    def on_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if context.get("task") not in abandoned:  # "destroyed but pending": already logged
            loop.default_exception_handler(context)

    loop.set_exception_handler(on_error)
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            abandoned |= _end_leftovers(loop)
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            asyncio.set_event_loop(None)
            loop.close()


def _end_leftovers(loop: asyncio.AbstractEventLoop) -> set[asyncio.Task[Any]]:
    """Cancel the tasks still alive; return those that did not end within the grace period."""
    tasks = asyncio.all_tasks(loop)
    if not tasks:
        return set()
    for task in tasks:
        task.cancel()
    done, pending = loop.run_until_complete(asyncio.wait(tasks, timeout=LEFTOVER_GRACE))
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            loop.call_exception_handler(
                {
                    "message": "unhandled exception in a task ended with the program",
                    "exception": task.exception(),
                    "task": task,
                }
            )
    if pending:
        log.warning(
            "runtime.abandoned",
            reason=f"{len(pending)} task(s) ignored their cancellation at exit; abandoned",
            tasks=sorted(task.get_name() for task in pending),
        )
    return pending


async def _until_first(*awaitables: Any) -> int:
    """Run the awaitables until the first one finishes; cancel the rest; return its index.

    An exception from the first one to finish is raised.
    """
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    first = next(i for i, t in enumerate(tasks) if t in done)
    tasks[first].result()
    return first
