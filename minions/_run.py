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
from collections.abc import Mapping
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
    code = asyncio.run(
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
        log.info("runtime.starting", components=[c.__name__ for c in components])
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
