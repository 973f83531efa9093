"""``run(...)``: the blocking front door for a program's components.

It configures logging, starts the components with a :class:`~minions.Runtime`, and waits until
every minion has finished, the optional ``stop_after`` delay has passed, or SIGINT/SIGTERM
arrives. The first signal stops everything gracefully in reverse dependency order; a second one
forces the stop (no more waiting for stop timeouts or ``shutdown()`` hooks).

It returns after a clean stop. Otherwise it raises :class:`SystemExit` so that the program's
exit status tells a service manager what happened: 1 when a component was given up, or crashed
and was not restarted (``restart="temporary"``), 128 + the signal number when a second signal
forced the stop. Definition errors (a cycle, a missing
dependency, invalid config) are raised before anything starts.

While it runs, the system answers the ``minions`` command on its control socket
(``minions.ops.control``; ``minions stop`` is a graceful stop like the first signal) and, when a
metrics port is configured, serves Prometheus metrics on ``127.0.0.1`` (``minions.ops.metrics``).
The port comes from ``$MINIONS_METRICS_PORT`` (what ``minions run --metrics-port`` sets), else
``run(metrics_port=...)``, else ``metrics_port`` in the ``[minions]`` table of the config;
``0`` picks a free port. Without one, metrics are off.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import structlog

from ..core.component import Component
from ..core.config import ConfigSource
from ..core.errors import ConfigError
from ..core.logs import configure_logging
from ..core.runtime import Extension, OptionsMapping, Runtime, default_project_dir
from ..isolated.code import reexecuting
from .control import ControlServer
from .metrics import MetricsEndpoint

log = structlog.get_logger("minions")

EXIT_GIVEN_UP = 1
METRICS_PORT_ENV = "MINIONS_METRICS_PORT"
CONFIG_TABLE = "minions"


def run(
    *components: type[Component],
    config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    options: OptionsMapping | None = None,
    project_dir: str | os.PathLike[str] | None = None,
    log_level: str = "info",
    stop_after: float | None = None,
    metrics_port: int | None = None,
) -> None:
    """Run ``components`` (and their dependencies) until they finish or a signal stops them.

    ``options`` sets per-component options (restart policy, timeouts, ``isolated``), keyed by
    class or component name, e.g. ``options={ThirdPartyStrategy: {"isolated": True}}``.
    ``stop_after`` stops gracefully after that many seconds. ``metrics_port`` serves Prometheus
    metrics on ``127.0.0.1:<port>`` (see the module docstring for where else it may be set).
    """
    if reexecuting():
        # An isolated child is executing a redeployed module's code again: a run(...) at the
        # top level of that module must not start a second system inside the child.
        return
    if not components:
        raise TypeError("run() needs at least one component class, e.g. run(MyMinion)")
    directory = Path(project_dir).resolve() if project_dir else default_project_dir()
    port = resolve_metrics_port(metrics_port, config, directory, os.environ)
    configure_logging(project_dir=directory, level=log_level)
    code = _run_to_the_end(
        _main(
            components,
            config=config,
            options=options,
            project_dir=directory,
            stop_after=stop_after,
            metrics_port=port,
        )
    )
    if code:
        raise SystemExit(code)


async def _main(
    components: tuple[type[Component], ...],
    *,
    config: str | os.PathLike[str] | Mapping[str, Any] | None,
    options: OptionsMapping | None,
    project_dir: str | os.PathLike[str],
    stop_after: float | None,
    metrics_port: int | None = None,
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
        config=config,
        options=options,
        project_dir=project_dir,
        extensions=_extensions(metrics_port, on_stop_request),
    )
    try:
        log.info(
            "runtime.starting", components=[getattr(c, "__name__", repr(c)) for c in components]
        )
        try:
            await _until_first(runtime.start(*components), stop.wait())
        except BaseException:
            await runtime.stop()
            raise
        if not stop.is_set():
            log.info("runtime.started")
            waits = [runtime.wait(), stop.wait()]
            if stop_after is not None:
                waits.append(asyncio.sleep(stop_after))
            await _until_first(*waits)
        if not stop_reason:
            log.info("runtime.stopping", reason="signal" if received else "done")
        forced = await _until_first(runtime.stop(), force.wait()) == 1
        if forced:
            runtime.kill()
            return 128 + received[-1]
        given_up, crashed = runtime.given_up, runtime.ended_by_crash
        if given_up or crashed:
            reasons = [f"given up: {', '.join(given_up)}"] if given_up else []
            reasons += [f"crashed, not restarted: {', '.join(crashed)}"] if crashed else []
            log.error("runtime.stopped", reason="; ".join(reasons))
            return EXIT_GIVEN_UP
        log.info("runtime.stopped", reason="clean stop")
        return 0
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def _extensions(metrics_port: int | None, on_stop: Callable[[], None]) -> list[Extension]:
    extensions: list[Extension] = []
    metrics = None
    if metrics_port is not None:
        metrics = MetricsEndpoint(metrics_port)
        extensions.append(metrics)  # attached first: it measures the first components too
    extensions.append(ControlServer(on_stop=on_stop, metrics=metrics))
    return extensions


def resolve_metrics_port(
    explicit: int | None,
    config: str | os.PathLike[str] | Mapping[str, Any] | None,
    project_dir: Path,
    environ: Mapping[str, str],
) -> int | None:
    """The metrics port, from the environment, ``run()``'s argument or the config; or None."""
    value: object
    if environ.get(METRICS_PORT_ENV):
        value, origin = environ[METRICS_PORT_ENV], f"${METRICS_PORT_ENV}"
    elif explicit is not None:
        value, origin = explicit, "run(metrics_port=...)"
    else:
        source = ConfigSource.load(config, project_dir)
        table = source.tables.get(CONFIG_TABLE, {})
        if "metrics_port" not in table:
            return None
        value, origin = table["metrics_port"], f"metrics_port in [minions] of {source.origin}"
    try:
        port = int(value) if isinstance(value, int | str) and not isinstance(value, bool) else -1
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ConfigError(
            f"{origin} must be a port number from 0 to 65535 (0 picks a free port), got {value!r}"
        )
    return port


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
