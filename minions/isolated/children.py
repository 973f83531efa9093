"""What every isolated host shares: the runtime's zygotes, and forking one component's child.

A child is forked from the runtime's warm zygote (:mod:`isolation`) by :func:`spawn_child`, in a
context tagged with the component's name, so that the calls its child makes into this process
(served by tasks of its channel) and the log events and output it forwards carry that name. A
sandboxed component's children are forked from a sandbox zygote of its own instead
(:mod:`minions.isolated.sandboxes`), started when it first starts.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import functools
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import structlog

from isolation import (
    ChildProcess,
    ChildSpec,
    ChildStartError,
    Isolation,
    SandboxUnavailable,
    SerializationError,
    Zygote,
    check_remote_interface,
    reference,
    spawn,
    unsupported_reason,
)
from isolation._sandbox.kernel import KernelSupport

from ..core.component import Component
from ..core.errors import ComponentOptionsError, StartupError
from ..core.graph import Node
from ..core.logs import LOG_LEVELS, level_number
from ..core.private import PRIVATE_DIR_NAME, private_dir
from .code import CHECK_FACTORY, check_payload
from .sandboxes import isolation_with_sandbox, start_sandbox

log = structlog.get_logger("minions")


def isolation_of(
    node: Node, isolated: object, replicas: object = None, sandbox: object = None
) -> Isolation:
    """The :class:`Isolation` settings for ``isolated=...`` (with ``replicas`` and ``sandbox``
    set outside the class, when they are), or a clear error. A sandbox alone means the default
    isolation with that sandbox."""
    if isolated is True or (isolated is None and sandbox is not None):
        isolation = Isolation()
    elif isinstance(isolated, Isolation):
        isolation = isolated
    else:
        raise ComponentOptionsError(
            f"{node.name}: isolated must be True or an isolation.Isolation(...), got {isolated!r}"
        )
    isolation = isolation_with_sandbox(node, isolation, sandbox)
    if replicas is None:
        return isolation
    try:
        return dataclasses.replace(isolation, replicas=replicas)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ComponentOptionsError(f"{node.name}: {exc}") from None


def check_isolatable(
    node: Node,
    isolated: object,
    *,
    proxied: Collection[type],
    served: type | None,
    sandbox: object = None,
) -> None:
    """Raise a DefinitionError now if ``node`` cannot run in a child process: on this platform,
    with these options, or because a value of an interface that would cross the boundary cannot
    — that of ``served`` (the component's own class, which its dependents call through a proxy)
    or of a dependency in ``proxied`` (which the child calls through a proxy) — naming the
    method and the type."""
    isolation_of(node, isolated, None, sandbox)
    problem = unsupported_reason()
    if problem is not None:
        raise ComponentOptionsError(f"{node.name} cannot be isolated: {problem}")
    for cls in (node.cls, *node.dependency_classes):
        try:
            reference(cls)
        except ValueError as exc:
            raise ComponentOptionsError(f"{node.name} cannot be isolated: {exc}") from None
    crossing = [*([served] if served is not None else []), *proxied]
    for cls in crossing:
        try:
            check_remote_interface(cls)
        except SerializationError as exc:
            if cls is served:
                role = "its own methods are called through a proxy"
            else:
                role = f"it calls its dependency {cls.__qualname__} through a proxy"
            raise ComponentOptionsError(
                f"{node.name} cannot be isolated: {role}, and {exc}"
            ) from None


class Zygotes:
    """Starts the runtime's zygote when first needed, and each sandboxed component's own, and
    closes them with the runtime."""

    def __init__(self, project_dir: Path) -> None:
        self._project_dir = project_dir
        self._run_dir = project_dir / PRIVATE_DIR_NAME / "run"
        self._zygote: Zygote | None = None
        self._sandboxes: dict[str, Zygote] = {}
        self._starting: dict[str, asyncio.Lock] = {}
        #: The kernel sandboxes are planned for (None: this one); a seam for tests.
        self.kernel: KernelSupport | None = None

    def __repr__(self) -> str:
        return f"<Zygotes {self._zygote!r}>" if self._zygote is not None else "<Zygotes none yet>"

    def get(self) -> Zygote:
        if self._zygote is None or self._zygote.gone:
            private_dir(self._run_dir, root=self._project_dir)
            self._zygote = Zygote.start(run_dir=self._run_dir)
        return self._zygote

    async def for_child(self, spec: ChildSpec) -> Zygote:
        """The zygote that forks ``spec``'s child: its sandbox's, or the runtime's."""
        if spec.isolation.sandbox is None:
            return self.get()
        lock = self._starting.setdefault(spec.component, asyncio.Lock())
        async with lock:
            zygote = self._sandboxes.get(spec.component)
            if zygote is None or zygote.gone:
                if zygote is not None:
                    await zygote.aclose()
                private_dir(self._run_dir, root=self._project_dir)
                zygote = await start_sandbox(
                    spec,
                    project_dir=self._project_dir,
                    run_dir=self._run_dir,
                    on_output=_forward_output,
                    kernel=self.kernel,
                )
                self._sandboxes[spec.component] = zygote
            return zygote

    def pids(self) -> frozenset[int]:
        """The zygotes' pids (every isolated child descends from one)."""
        zygotes = [self._zygote, *self._sandboxes.values()]
        return frozenset(z.pid for z in zygotes if z is not None and not z.gone)

    async def aclose(self) -> None:
        zygotes = [self._zygote, *self._sandboxes.values()]
        self._zygote = None
        self._sandboxes.clear()
        await asyncio.gather(*(z.aclose() for z in zygotes if z is not None))


def component_context(name: str) -> contextvars.Context:
    """A copy of the current context whose log events carry ``component=name``."""
    context = contextvars.copy_context()
    context.run(structlog.contextvars.bind_contextvars, component=name)
    return context


async def spawn_child(
    zygotes: Zygotes,
    name: str,
    spec: ChildSpec,
    services: Mapping[str, object],
    *,
    replica: int | None = None,
    hold_run: bool = False,
) -> ChildProcess:
    """Fork the child of component ``name``; a failure to start is a :class:`StartupError`.

    The spawn runs in a context tagged with the component, so that the calls its child makes
    into this process (served by tasks of that channel) log under the component's name. The
    events and output of a replica's child carry its ``replica`` index too. With ``hold_run``
    the child calls ``run()`` only once told to (``ChildProcess.start_run``): hosts do, once the
    supervisor counts the component running.
    """
    on_log, on_output = _forward_log, _forward_output
    if replica is not None:
        on_log = functools.partial(_forward_log, replica=replica)
        on_output = functools.partial(_forward_output, replica=replica)
    try:
        zygote = await zygotes.for_child(spec)
        starting = spawn(
            zygote, spec, services, on_log=on_log, on_output=on_output, hold_run=hold_run
        )
        return await asyncio.get_running_loop().create_task(
            starting, context=component_context(name)
        )
    except SandboxUnavailable as exc:
        raise StartupError(name, str(exc)) from exc
    except ChildStartError as exc:
        raise StartupError(name, f"{name} failed to start in its child: {exc}") from exc


async def check_new_code(
    zygotes: Zygotes,
    node: Node,
    isolated: object,
    code_of: type[Component],
    *,
    sandbox: object = None,
) -> None:
    """Load the new code of ``code_of`` (``node``'s class, or the user's class behind it) in a
    throwaway child (:func:`~minions.isolated.code.check_in_child`) and raise a
    :class:`StartupError` saying why, if it does not load; nothing else is touched. A sandboxed
    component's new code is loaded in its sandbox, as the real child will load it."""
    isolation = isolation_of(node, isolated, None, sandbox)
    spec = ChildSpec(
        component=node.name,
        factory=CHECK_FACTORY,
        payload=check_payload(code_of, reference(code_of)),
        isolation=isolation,
    )
    try:
        child = await spawn_child(zygotes, node.name, spec, {})
    except StartupError as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, ChildStartError) else exc
        raise StartupError(
            node.name,
            f"cannot redeploy {node.name}: its new code does not load ({cause}); the running "
            f"{node.name} was left as it is. Fix the code and redeploy again",
        ) from None
    try:
        async with asyncio.timeout(isolation.start_timeout):
            await child.wait()  # its run() returns at once
    except TimeoutError:
        pass  # loaded fine; it is only slow to go: stopped below
    finally:
        await child.stop(isolation.stop_timeout)


def log_forwarder(*, replica: int | None = None) -> Callable[[str, dict[str, Any]], None]:
    """What logs a child's events here (with its ``replica`` index, for a replica's)."""
    return _forward_log if replica is None else functools.partial(_forward_log, replica=replica)


#: The logger every child's events are logged with here: never one named by the child.
child_log = structlog.get_logger("minions.child")
_LEVELS = {name: level_number(name) for name in LOG_LEVELS}
#: Bounds on what a child's event may make this process log (the frame size bounds the rest).
_MAX_NAME = 200
_MAX_FIELDS = 64
#: Keys the logging machinery here would act on rather than print.
_RESERVED = frozenset(
    {"exc_info", "stack_info", "positional_args", "component", "replica", "child_logger"}
)


def _forward_log(component: str, event: dict[str, Any], *, replica: int | None = None) -> None:
    """Log a child's event here, under the component's name, at the level it claims if that is
    one of :data:`~minions.core.logs.LOG_LEVELS` (else at warning, saying so). The child's
    logger name, an untrusted string, goes into the ``child_logger`` field, cut to length; a
    replica's events carry its ``replica`` index."""
    fields = dict(event)
    name = _bounded(fields.pop("event", "child.log"))
    claimed = fields.pop("level", "info")
    level = _LEVELS.get(claimed) if isinstance(claimed, str) else None
    if level is None:
        level = _LEVELS["warning"]
        fields["bad_level"] = _bounded(repr(claimed))
    logger_name = fields.pop("logger", None)
    fields.pop("timestamp", None)
    kept: dict[str, Any] = {}
    for key, value in fields.items():
        if len(kept) >= _MAX_FIELDS:
            kept["fields_dropped"] = len(fields) - _MAX_FIELDS
            break
        key = _bounded(str(key))
        if key.startswith("_") or key in _RESERVED:
            key = f"child_{key.lstrip('_')}"
        kept[key] = value
    if logger_name is not None:
        kept["child_logger"] = _bounded(str(logger_name))
    if replica is not None:
        kept["replica"] = replica
    child_log.log(level, name, component=component, **kept)


def _bounded(text: object) -> str:
    shown = text if isinstance(text, str) else repr(text)
    return shown if len(shown) <= _MAX_NAME else shown[:_MAX_NAME] + "..."


def _forward_output(component: str, stream: str, line: str, *, replica: int | None = None) -> None:
    if replica is None:
        log.info("component.output", component=component, stream=stream, line=line)
    else:
        log.info("component.output", component=component, replica=replica, stream=stream, line=line)
