"""Eager tasks: run a new task's first step at once instead of on the next loop pass.

Serving a call creates a task for the served method (so anyio cancel scopes, ``current_task()``
and cancellation work inside it exactly as in any task), but most methods answer without ever
suspending. Running the first step immediately lets such a call complete, and its reply be
queued, inside the receive callback that read the request: no extra loop pass per call.

Python 3.12 has this built in (``eager_start=True``). On 3.11 the task's first step is the
handle ``create_task`` has just appended to the loop's ready queue: it is taken back and run
now, which is exactly what the scheduler would have done one pass later. Whenever that handle
cannot be identified with certainty (another loop implementation, a task already running), the
task is left to start normally.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["start_task"]

T = TypeVar("T")


def start_task(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
    """Create a task for ``coro`` and, when possible, run its first step before returning."""
    if sys.version_info >= (3, 12):  # pragma: no cover - exercised on newer Pythons only
        return asyncio.Task(coro, loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
    # asyncio.Task directly, not loop.create_task: same task, without the wrapper's overhead
    # (no task factory is consulted; the Peer does not need one).
    task = asyncio.Task(coro, loop=loop)
    if asyncio.current_task(loop) is not None:
        return task  # a step cannot run inside another task's step
    ready = getattr(loop, "_ready", None)
    if ready:
        handle = ready[-1]
        callback = getattr(handle, "_callback", None)
        if getattr(callback, "__self__", None) is task and isinstance(handle, asyncio.Handle):
            ready.pop()
            handle._run()
    return task
