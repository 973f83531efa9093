"""``run(...)``: the blocking front door for a program's components.

It configures logging, starts the components with a :class:`~minions.Runtime`, and waits until
every minion has finished, the optional ``stop_after`` delay has passed, or SIGINT/SIGTERM
arrives. The first signal stops everything gracefully in reverse dependency order; a second one
forces the stop (no more waiting for stop timeouts or ``shutdown()`` hooks).

It returns after a clean stop. Otherwise it raises :class:`SystemExit` so that the program's
exit status tells a service manager what happened: 1 when a component was given up, 128 + the
signal number when a second signal forced the stop. Definition errors (a cycle, a missing
dependency, invalid config) are raised before anything starts.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any

import structlog

from ._component import Component
from ._logging import configure_logging
from ._runtime import OptionsMapping, Runtime, default_project_dir

log = structlog.get_logger("minions")

EXIT_GIVEN_UP = 1


def run(
    *components: type[Component],
    config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    options: OptionsMapping | None = None,
    project_dir: str | os.PathLike[str] | None = None,
    log_level: str = "info",
    stop_after: float | None = None,
) -> None:
    """Run ``components`` (and their dependencies) until they finish or a signal stops them.

    ``options`` sets per-component options (restart policy, timeouts, ``isolated``), keyed by
    class or component name, e.g. ``options={ThirdPartyStrategy: {"isolated": True}}``.
    ``stop_after`` stops gracefully after that many seconds.
    """
    if not components:
        raise TypeError("run() needs at least one component class, e.g. run(MyMinion)")
    directory = Path(project_dir).resolve() if project_dir else default_project_dir()
    configure_logging(project_dir=directory, level=log_level)
    code = _run_to_the_end(
        _main(
            components, config=config, options=options, project_dir=directory, stop_after=stop_after
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
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    force = asyncio.Event()
    received: list[int] = []

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
    runtime = Runtime(config=config, options=options, project_dir=project_dir)
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
        log.info("runtime.stopping", reason="signal" if received else "done")
        forced = await _until_first(runtime.stop(), force.wait()) == 1
        if forced:
            runtime.kill()
            return 128 + received[-1]
        given_up = runtime.given_up
        if given_up:
            log.error("runtime.stopped", reason=f"given up: {', '.join(given_up)}")
            return EXIT_GIVEN_UP
        log.info("runtime.stopped", reason="clean stop")
        return 0
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


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
