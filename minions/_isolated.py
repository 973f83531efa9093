"""Isolated components: the host that runs a component in a child process.

A component marked ``isolated=True`` (or ``isolated=Isolation(...)``, by class keyword or in
``run(..., options=...)``) is built and run by a child forked from the runtime's warm zygote
(:mod:`isolation`). Its dependencies stay in this process and the child reaches them through
proxies; an isolated resource is reached by its in-process dependents through a proxy too.

The supervisor sees an :class:`IsolatedHost` exactly like a local one: the child's death — an
exception in ``run()``, ``os._exit``, a signal, a memory or CPU limit, a hang, a garbled
channel — is an :class:`~minions._host.Outcome` with the cause in words, and the component's
restart policy applies as for any crash.

In the child, :func:`build_in_child` constructs the component from the same annotations the
parent resolved, with proxies in place of the dependencies and the validated config.

Redeploying (``Runtime.redeploy``) starts the next incarnations with *fresh code*. A child is a
fork of the warm zygote, which holds the code as it was imported when the system started, so
the payload carries a ``fresh`` entry: the component's module and source file. The child
executes that file anew before it builds the component — into the module's own namespace for
an importable module (like ``importlib.reload``, but always from the source: a byte-code cache
can be stale when a file is edited twice within its timestamp's resolution), or into a new
module for a component defined in the program file (``__main__``), named so that its
``if __name__ == "__main__":`` block does not run. Only that module is executed again; the
modules it imports, and the types the rest of the system shares with it, stay as they are.

With a :class:`~minions._telemetry.CallObserver` (metrics on), the proxy dependents receive and
the services the child reaches are measured stand-ins (:mod:`minions._measured`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import importlib.util
import os
import signal
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import structlog

from isolation import ChildProcess, ChildSpec, ChildStartError, Isolation, Zygote, reference

from ._component import Component, Resource, component_name, has_own_run
from ._errors import ComponentOptionsError, RuntimeStateError, StartupError
from ._graph import Node, declared_config, declared_dependencies
from ._host import Outcome, construct_with
from ._policy import Policy
from ._telemetry import CallObserver

log = structlog.get_logger("minions")

FACTORY = "minions._isolated:build_in_child"
#: The module name a program file's code is executed under when it is redeployed.
REDEPLOYED_MAIN = "__minions_main__"


@dataclass(frozen=True)
class ChildOutcome(Outcome):
    """An isolated incarnation's end; ``reason`` is how its child ended (``ChildExit.reason``)."""

    reason: str = "died"


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

    def get(self) -> Zygote:
        if self._zygote is None or self._zygote.gone:
            self._run_dir.mkdir(parents=True, exist_ok=True)
            self._zygote = Zygote.start(run_dir=self._run_dir)
        return self._zygote

    async def aclose(self) -> None:
        zygote, self._zygote = self._zygote, None
        if zygote is not None:
            await zygote.aclose()


def fresh_source(cls: type) -> dict[str, str]:
    """Where a redeployed child finds ``cls``'s code again; a clear error if it cannot."""
    module = sys.modules.get(cls.__module__)
    path = getattr(module, "__file__", None)
    if not isinstance(path, str) or not path.endswith(".py") or not os.path.isfile(path):
        raise RuntimeStateError(
            f"cannot redeploy {cls.__qualname__}: its module {cls.__module__!r} was not loaded "
            f"from a .py file ({path or 'no file'}); restart it instead"
        )
    return {"module": cls.__module__, "file": os.path.abspath(path)}


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
    spawn = zygotes.get().spawn(spec, services, on_log=_forward_log, on_output=_forward_output)
    try:
        return await asyncio.get_running_loop().create_task(spawn, context=component_context(name))
    except ChildStartError as exc:
        raise StartupError(name, f"{name} failed to start in its child: {exc}") from exc


class IsolatedHost:
    """Runs one incarnation of a component in a child process.

    ``fresh_code`` makes the child execute the component's module anew (a redeploy);
    ``observer`` measures the calls that cross the boundary.
    """

    def __init__(
        self,
        node: Node,
        policy: Policy,
        isolated: object,
        zygotes: Zygotes,
        *,
        fresh_code: bool = False,
        observer: CallObserver | None = None,
    ) -> None:
        self._node = node
        self._policy = policy
        self._isolation = isolation_of(node, isolated)
        self._zygotes = zygotes
        self._fresh_code = fresh_code
        self._observer = observer
        self._child: ChildProcess | None = None
        self._proxy: object | None = None

    @property
    def instance(self) -> object:
        if self._proxy is None:
            if self._child is None:
                raise RuntimeError(f"{self._node.name} has not been started")
            proxy = self._child.proxy(self._node.cls)
            if self._observer is not None:
                from ._measured import measured_proxy

                proxy = measured_proxy(proxy, self._node.cls, self._node.name, self._observer)
            self._proxy = proxy
        return self._proxy

    @property
    def pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    async def start(self, provided: Mapping[type[Any], object], config: object | None) -> None:
        node = self._node
        payload: dict[str, Any] = {
            "component": reference(node.cls),
            "config": _dump_config(node, config),
        }
        if self._fresh_code:
            try:
                payload["fresh"] = fresh_source(node.cls)
            except RuntimeStateError as exc:
                raise StartupError(node.name, str(exc)) from None
        spec = ChildSpec(
            component=node.name,
            factory=FACTORY,
            services={dep.name: reference(bound) for dep, bound in node.dependencies},
            payload=payload,
            isolation=self._isolation,
        )
        services = {dep.name: provided[bound] for dep, bound in node.dependencies}
        if self._observer is not None:
            from ._measured import measured_service

            services = {
                dep.name: measured_service(
                    provided[bound], bound, node.name, component_name(bound), self._observer
                )
                for dep, bound in node.dependencies
            }
        self._child = await spawn_child(self._zygotes, node.name, spec, services)

    async def wait(self) -> Outcome:
        assert self._child is not None
        end = await self._child.wait()
        if end.reason == "returned":
            return ChildOutcome(False, "run() returned", reason=end.reason)
        return ChildOutcome(
            True,
            f"child {end.cause}" if end.reason != "raised" else end.cause,
            end.error,
            reason=end.reason,
        )

    async def stop(self) -> None:
        if self._child is not None:
            await self._child.stop(self._isolation.stop_timeout)

    def kill(self) -> None:
        if self._child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._child.pid, signal.SIGKILL)


def build_in_child(proxies: Mapping[str, Any], payload: Mapping[str, Any]) -> Component:
    """The child's factory: construct the component with proxies for its dependencies."""
    from isolation import resolve

    fresh = payload.get("fresh")
    if fresh:
        cls = _fresh_class(payload["component"], fresh)
    else:
        cls = resolve(payload["component"], what="component")
    dependencies = {dep.name: proxies[dep.name] for dep in declared_dependencies(cls)}
    config_type, config_via = declared_config(cls)
    config = None
    if config_type is not None:
        config = pydantic.TypeAdapter(config_type).validate_python(payload["config"])
    structlog.contextvars.bind_contextvars(component=cls.__minions_options__.name or cls.__name__)
    instance = construct_with(cls, dependencies, config, config_via)
    if issubclass(cls, Resource) and not has_own_run(cls):
        # The child runs run() for the component's life; a resource without one lives until
        # it is stopped, as it does in-process.
        instance.run = _until_stopped  # type: ignore[method-assign]
    return instance


def _fresh_class(component: str, fresh: Mapping[str, str]) -> Any:
    """Execute the component's module from its source file again; return the new class."""
    module_name, qualname = component.split(":")
    path = fresh["file"]
    if module_name == "__main__":
        old_main = sys.modules.get("__main__")
        module = types.ModuleType(REDEPLOYED_MAIN)
        module.__file__ = path
        module.__package__ = getattr(old_main, "__package__", None)
        # Registered so that the new classes' string annotations resolve in their module.
        sys.modules[REDEPLOYED_MAIN] = module
    else:
        module = sys.modules.get(module_name) or importlib.import_module(module_name)
    try:
        with open(path, "rb") as f:
            source = importlib.util.decode_source(f.read())
        code = compile(source, path, "exec", dont_inherit=True)
    except (OSError, SyntaxError, UnicodeDecodeError) as exc:
        raise ImportError(
            f"cannot load the new code of {qualname} from {path}: {type(exc).__name__}: {exc}"
        ) from exc
    with _run_suppressed():
        exec(code, module.__dict__)
    target: Any = module
    for part in qualname.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ImportError(
                f"{qualname} is no longer defined in {path}; it cannot be redeployed"
            ) from None
    return target


@contextlib.contextmanager
def _run_suppressed() -> Iterator[None]:
    """While a module's code runs again in a child, a top-level ``run(...)`` call does nothing."""
    from . import _run

    _run.REDEPLOYING = True
    try:
        yield
    finally:
        _run.REDEPLOYING = False


async def _until_stopped() -> None:
    await asyncio.Event().wait()


def _dump_config(node: Node, config: object | None) -> Any:
    if node.config_type is None or config is None:
        return None
    return pydantic.TypeAdapter(node.config_type).dump_python(config, mode="json")


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
