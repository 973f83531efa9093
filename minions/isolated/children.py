"""What every isolated host shares: the runtime's zygote, and forking one component's child.

A child is forked from the runtime's warm zygote (:mod:`isolation`) by :func:`spawn_child`, in a
context tagged with the component's name, so that the calls its child makes into this process
(served by tasks of its channel) and the log events and output it forwards carry that name.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from isolation import ChildProcess, ChildSpec, ChildStartError, Isolation, Zygote, reference, spawn

from ..core.errors import ComponentOptionsError, StartupError
from ..core.graph import Node

log = structlog.get_logger("minions")


def isolation_of(node: Node, isolated: object) -> Isolation:
    """The :class:`Isolation` settings for ``isolated=...``, or a clear error."""
    if isolated is True:
        return Isolation()
    if isinstance(isolated, Isolation):
        return isolated
    raise ComponentOptionsError(
        f"{node.name}: isolated must be True or an isolation.Isolation(...), got {isolated!r}"
    )


def check_isolatable(node: Node, isolated: object) -> None:
    """Raise a DefinitionError now if ``node`` cannot run in a child process."""
    isolation_of(node, isolated)
    for cls in (node.cls, *node.dependency_classes):
        try:
            reference(cls)
        except ValueError as exc:
            raise ComponentOptionsError(f"{node.name} cannot be isolated: {exc}") from None


class Zygotes:
    """Starts the runtime's zygote when first needed and closes it with the runtime."""

    def __init__(self, run_dir: Path) -> None:
        self._run_dir = run_dir
        self._zygote: Zygote | None = None

    def __repr__(self) -> str:
        return f"<Zygotes {self._zygote!r}>" if self._zygote is not None else "<Zygotes none yet>"

    def get(self) -> Zygote:
        if self._zygote is None or self._zygote.gone:
            self._run_dir.mkdir(parents=True, exist_ok=True)
            self._zygote = Zygote.start(run_dir=self._run_dir)
        return self._zygote

    async def aclose(self) -> None:
        zygote, self._zygote = self._zygote, None
        if zygote is not None:
            await zygote.aclose()


def component_context(name: str) -> contextvars.Context:
    """A copy of the current context whose log events carry ``component=name``."""
    context = contextvars.copy_context()
    context.run(structlog.contextvars.bind_contextvars, component=name)
    return context


async def spawn_child(
    zygotes: Zygotes, name: str, spec: ChildSpec, services: Mapping[str, object]
) -> ChildProcess:
    """Fork the child of component ``name``; a failure to start is a :class:`StartupError`.

    The spawn runs in a context tagged with the component, so that the calls its child makes
    into this process (served by tasks of that channel) log under the component's name.
    """
    starting = spawn(zygotes.get(), spec, services, on_log=_forward_log, on_output=_forward_output)
    try:
        return await asyncio.get_running_loop().create_task(
            starting, context=component_context(name)
        )
    except ChildStartError as exc:
        raise StartupError(name, f"{name} failed to start in its child: {exc}") from exc


def _forward_log(component: str, event: dict[str, Any]) -> None:
    fields = dict(event)
    name = str(fields.pop("event", "child.log"))
    level = str(fields.pop("level", "info"))
    logger = structlog.get_logger(str(fields.pop("logger", "minions")))
    fields.pop("timestamp", None)
    fields["component"] = component
    method: Callable[..., Any] = getattr(logger, level, logger.info)
    method(name, **fields)


def _forward_output(component: str, stream: str, line: str) -> None:
    log.info("component.output", component=component, stream=stream, line=line)
