"""Background tasks: the work a component starts with ``self.safe_create_task(coro)``.

The tasks belong to one incarnation of the component, and live and die with it:

* **supervised**: the first task that raises ends the incarnation as a crash with that
  exception, exactly as if ``run()`` had raised it, and the restart policy applies. A task
  that returns, or is cancelled by the component itself, is simply forgotten;
* **stopped with it**: when the incarnation stops, the tasks are cancelled together with
  ``run()`` and drained — each gets ``grace`` seconds to end — before ``shutdown()`` runs; the
  tasks ``shutdown()`` starts are drained after it. A task still running after its grace is
  left behind and reported as :class:`~minions.core.errors.TaskCancellationTimeoutError`.

Both kinds of host drive a component through the same two wrappers, so the rules above hold
in this process and in a child alike: :func:`run_supervised` stands for ``run()`` and
:func:`shutdown_supervised` for ``shutdown()``. ``LocalHost`` calls them; in a child, the
factory of isolated components installs them as the instance's ``run`` and ``shutdown``, which
the child's entry point (it knows nothing of Minions) calls as the hooks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import structlog

from .errors import RuntimeStateError, TaskCancellationTimeoutError

__all__ = ["CANCEL_GRACE", "BackgroundTasks", "run_supervised", "shutdown_supervised"]

T = TypeVar("T")

log = structlog.get_logger("minions")

#: Seconds a cancelled background task gets to end before it is left behind.
CANCEL_GRACE = 1.0


class BackgroundTasks:
    """The background tasks of one component incarnation (see the module docstring)."""

    __slots__ = ("_closed", "_ending", "_failed", "_tasks", "_waiter", "left_behind", "owner")

    def __init__(self, owner: str) -> None:
        self.owner = owner
        #: Tasks that did not end within their grace when drained.
        self.left_behind: list[asyncio.Task[Any]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._failed: tuple[str, BaseException] | None = None
        self._waiter: asyncio.Future[None] | None = None
        #: run() has ended (or is being cancelled): a failure now can only be reported.
        self._ending = False
        self._closed = False

    def __repr__(self) -> str:
        return f"<BackgroundTasks of {self.owner}: {len(self._tasks)} running>"

    @property
    def running(self) -> frozenset[asyncio.Task[Any]]:
        return frozenset(self._tasks)

    @property
    def failure(self) -> tuple[str, BaseException] | None:
        """The name and exception of the first task that raised, if any did."""
        return self._failed

    def create(self, coro: Coroutine[Any, Any, T], name: str | None = None) -> asyncio.Task[T]:
        """Start ``coro`` as a background task of the component."""
        if not asyncio.iscoroutine(coro):
            raise TypeError(
                f"{self.owner}.safe_create_task() takes a coroutine, got "
                f"{type(coro).__name__}; call the async function: "
                "self.safe_create_task(self.poll())"
            )
        if name is not None and not isinstance(name, str):
            coro.close()
            raise TypeError(
                f"{self.owner}.safe_create_task(name=...) takes a str, got {type(name).__name__}"
            )
        if self._closed:
            coro.close()
            raise RuntimeStateError(
                f"{self.owner} has stopped, so it cannot start the background task "
                f"{name or _coro_name(coro)!r}; start background work while it runs"
            )
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            coro.close()
            raise RuntimeStateError(
                f"{self.owner}.safe_create_task() needs the running event loop: call it from "
                "startup(), run() or another async method, not from outside the runtime"
            ) from None
        task = loop.create_task(coro, name=name or _coro_name(coro))
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            return
        if self._failed is not None or self._ending:
            # The component is already ending (crashed, stopping, or its run() returned):
            # report, nothing more.
            log.error(
                "component.task_failed",
                component=self.owner,
                task=task.get_name(),
                reason=_describe(exc),
                exc_info=exc,
            )
            return
        self._failed = (task.get_name(), exc)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def failed(self) -> asyncio.Future[None]:
        """A future that is done once a task has raised (at once if one already did)."""
        if self._waiter is None:
            self._waiter = asyncio.get_running_loop().create_future()
            if self._failed is not None:
                self._waiter.set_result(None)
        return self._waiter

    def end(self) -> None:
        """The component's run() has ended: a task failing from now on is only reported."""
        self._ending = True

    def cancel(self) -> None:
        """Cancel every running task, without waiting for them."""
        self._ending = True
        for task in self._tasks:
            task.cancel()

    async def drain(self, grace: float) -> list[asyncio.Task[Any]]:
        """Cancel every running task and wait up to ``grace`` seconds for them to end;
        return the ones still running then (left behind)."""
        self.cancel()
        running = set(self._tasks)
        if running:
            await asyncio.wait(running, timeout=grace)
        stalled = [task for task in running if not task.done()]
        self._tasks.difference_update(stalled)  # not waited for again
        self.left_behind += stalled
        return stalled

    def close(self) -> None:
        """No more tasks: the component has stopped."""
        self._closed = True


async def run_supervised(tasks: BackgroundTasks, run: Callable[[], Awaitable[None]] | None) -> None:
    """``run()`` (``None``: a resource without one, which lives until stopped) supervised with
    the component's background tasks: the first task to raise ends it with that exception.

    ``run()`` runs in the caller's task, as it would unwrapped: a failing background task
    cancels it, and the failure is raised in place of that cancellation — unless the component
    is being stopped meanwhile, in which case the stop's cancellation goes on.
    """
    me = asyncio.current_task()
    assert me is not None, "run_supervised runs in a task"
    crashed = False

    def crash(_: asyncio.Future[None]) -> None:
        nonlocal crashed
        if not me.done():
            crashed = True
            me.cancel()

    failed = tasks.failed()
    failed.add_done_callback(crash)
    try:
        if run is None:
            await asyncio.Event().wait()
        else:
            await run()
    except asyncio.CancelledError:
        if not crashed or me.cancelling() > 1:
            raise  # a stop (or run()'s own cancellation): not the background task's doing
    finally:
        failed.remove_done_callback(crash)
        tasks.end()
    if crashed:
        me.uncancel()  # the cancellation was ours, and is answered by raising the failure
        tasks.cancel()
        failure = tasks.failure
        assert failure is not None
        name, exc = failure
        # Seen in its traceback, here and across a process boundary.
        exc.add_note(f"(raised by the background task {name!r} of {tasks.owner})")
        raise exc


async def shutdown_supervised(
    tasks: BackgroundTasks, shutdown: Callable[[], Awaitable[None]], grace: float = CANCEL_GRACE
) -> None:
    """Drain the background tasks, run ``shutdown()``, then drain those it started.

    Raises :class:`TaskCancellationTimeoutError` (after ``shutdown()`` has run) for a task that
    did not end within ``grace`` seconds of its cancellation; an exception of ``shutdown()``
    itself takes precedence.
    """
    stalled = await tasks.drain(grace)
    try:
        await shutdown()
    finally:
        tasks.close()
        stalled += await tasks.drain(grace)
    if stalled:
        names = [task.get_name() for task in stalled]
        if len(names) > 1:
            log.warning(
                "component.tasks_left_behind",
                component=tasks.owner,
                tasks=names,
                reason=f"{len(names)} background tasks did not end within {grace:g} s",
            )
        raise TaskCancellationTimeoutError(names[0], grace)


def _coro_name(coro: Coroutine[Any, Any, Any]) -> str:
    return str(getattr(coro, "__name__", None) or type(coro).__name__)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
