"""The runtime: the async API that builds the graph, configures and supervises components.

::

    async with Runtime(config="minions.toml") as rt:
        await rt.start(OnChainStrategy, ThirdPartyStrategy)
        await rt.wait()                     # until every minion has finished (or been given up)
    # leaving the block stops everything in reverse dependency order

:func:`minions.run` is the blocking front door built on it.

Operating a running system plugs in through three small hooks, so that the core imports
neither the control socket nor prometheus-client: *extensions* (:class:`Extension`) are attached
just before the first components start and detached once everything has stopped —
:func:`minions.run` attaches the control socket (``minions.ops.control``) and, when configured,
the metrics endpoint (``minions.ops.metrics``) and the dashboard (``minions.ops.dashboard``); a
:class:`~minions.core.observer.CallObserver` set as :attr:`Runtime.call_observer` measures the
calls that cross isolation boundaries; and *lifecycle listeners*
(:meth:`Runtime.add_lifecycle_listener`) receive each step of each component's life as a
:class:`~minions.core.status.LifecycleEvent`. Isolated
components are hosted by the :class:`~minions.core.host.IsolatedHosts` that ``minions.isolated``
provides.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Protocol

import structlog

from .clock import Clock, MonotonicClock
from .component import Component, ComponentState
from .config import ConfigSource
from .errors import (
    ComponentOptionsError,
    ConfigError,
    DefinitionError,
    RuntimeStateError,
    StartupError,
    UnknownComponentError,
)
from .graph import Graph, Node, build_graph
from .host import Host, IsolatedHosts, LocalHost, ReplicatedHost, isolated_hosts
from .observer import CallObserver
from .policy import ComponentOptions, Policy, RestartHistory, check_replica_count
from .status import ComponentStatus, LifecycleEvent, LifecycleListener
from .supervisor import Cell, Supervisor

log = structlog.get_logger("minions")

ComponentRef = type[Component] | str
OptionsMapping = Mapping[ComponentRef, ComponentOptions | Mapping[str, Any]]

_AT_REST = frozenset({ComponentState.COMPLETED, ComponentState.STOPPED, ComponentState.FAILED})
#: The table of minions.toml with the runtime's own settings, its table of replica counts, and
#: its table of sandboxes.
SETTINGS_TABLE = "minions"
REPLICAS_KEY = "replicas"
SANDBOX_KEY = "sandbox"


class Extension(Protocol):
    """Something that lives as long as a runtime: the control socket, the metrics endpoint.

    ``attach`` runs once, just before the runtime's first components start (after its zygote
    is forked: an extension may start threads); ``detach`` runs once everything has stopped.
    Neither should raise for an operational problem (a port in use): log it and carry on.
    """

    async def attach(self, runtime: Runtime) -> None: ...

    async def detach(self) -> None: ...


def _usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - Linux has sched_getaffinity
        return max(1, os.cpu_count() or 1)


def default_project_dir() -> Path:
    """``$MINIONS_PROJECT_DIR`` if set, else the current directory."""
    return Path(os.environ.get("MINIONS_PROJECT_DIR") or Path.cwd()).resolve()


class Runtime:
    """Runs components: see the module docstring.

    Parameters:
        config: a path to a TOML file, a mapping of tables per component name, or ``None`` for
            ``<project_dir>/minions.toml`` when it exists.
        options: per-component options (restart policy, timeouts, ``isolated``, ``replicas``)
            keyed by class or component name; they override the class keywords and the
            ``[minions.replicas]`` table of ``minions.toml``.
        project_dir: the project folder (state, logs, sockets live in its ``.minions/``).
        clock, rng: injectable time and randomness, for deterministic tests.
        environ: where environment overrides of config values are read (``os.environ``).
        extensions: see :class:`Extension`.
        isolation_settings: where isolated components run, for the isolation layer: its one
            setting is ``ray_address``, the Ray cluster that ``backend="ray"`` replicas join
            (``$MINIONS_RAY_ADDRESS`` wins; without either, a local Ray is started).
    """

    def __init__(
        self,
        *,
        config: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        options: OptionsMapping | None = None,
        project_dir: str | os.PathLike[str] | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        environ: Mapping[str, str] | None = None,
        extensions: Sequence[Extension] = (),
        isolation_settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.project_dir = Path(project_dir).resolve() if project_dir else default_project_dir()
        self._isolation_settings = dict(isolation_settings or {})
        self._config_arg = config
        self._config: ConfigSource | None = None
        self._options = dict(options or {})
        self._environ = environ if environ is not None else os.environ
        self._clock = clock or MonotonicClock()
        self._roots: list[type[Component]] = []
        self._configs: dict[type[Any], object | None] = {}
        self._abandoned: set[asyncio.Task[Any]] = set()
        self._isolated: IsolatedHosts | None = None
        self._extensions = list(extensions)
        self._attached: list[Extension] | None = None
        self._redeployed: set[type[Any]] = set()
        self._scaled: dict[type[Any], int] = {}  # replica counts set by scale()
        #: Measures the calls crossing isolation boundaries when set (before start()).
        self.call_observer: CallObserver | None = None
        self._changed = asyncio.Event()
        self._listeners: list[LifecycleListener] = []
        self._supervisor = Supervisor(
            clock=self._clock,
            rng=rng or random.Random(),
            host_factory=self._make_host,
            config_factory=lambda node: self._configs.get(node.cls),
            on_change=self._changed.set,
            on_event=self._announce,
        )

    async def __aenter__(self) -> Runtime:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def __repr__(self) -> str:
        return f"<Runtime {self._supervisor!r}>"

    # -- operations ----------------------------------------------------------------------------

    async def start(self, *components: type[Component]) -> None:
        """Start ``components`` and everything they depend on, dependencies first.

        Raises a :class:`~minions.DefinitionError` (bad graph, options or config) before anything
        starts, or a :class:`~minions.StartupError` after stopping what this call started.
        Components already running are left as they are, so ``start`` can add to a system.
        """
        roots, graph, configs, new_cells = self._plan(components)
        self._configs.update(configs)
        if any(cell.isolated for cell in new_cells.values()):
            self._isolated_hosts().prepare()
        await self._attach_extensions()
        try:
            await self._supervisor.start(graph, new_cells, graph.closure(components))
        except StartupError:
            for cls in configs:  # the supervisor forgot these components; so does the runtime
                del self._configs[cls]
            raise
        self._roots = roots

    def check(self, *components: type[Component]) -> None:
        """Raise the :class:`~minions.DefinitionError` that :meth:`start` would raise for
        ``components`` (a bad graph, options, config, or isolation), without starting anything.
        """
        self._plan(components)

    def _plan(
        self, components: Sequence[type[Component]]
    ) -> tuple[list[type[Component]], Graph, dict[type[Any], object | None], dict[type[Any], Cell]]:
        """The roots, graph, new configs and new cells of a start of ``components``."""
        roots = list(self._roots)
        roots.extend(c for c in components if c not in roots)
        graph = build_graph(roots)
        self._check_compatible(graph)
        self._check_option_keys(graph)
        self._check_sandbox_keys(graph)
        config = self._load_config()
        new_cells: dict[type[Any], Cell] = {}
        configs: dict[type[Any], object | None] = {}
        for node in graph.nodes:
            if node.cls in self._configs:
                continue
            configs[node.cls] = (
                config.build(node.name, node.config_type, self._environ)
                if node.config_type
                else None
            )
            new_cells[node.cls] = self._new_cell(node)
        return roots, graph, configs, new_cells

    async def restart(self, component: ComponentRef) -> None:
        """Restart one component, stopping its dependents first and starting them after it."""
        await self._supervisor.restart(self._resolve(component))

    async def redeploy(self, component: ComponentRef) -> None:
        """Restart an isolated component in a fresh child that executes its module anew.

        The new code is loaded once first, in a throwaway child: if it fails to load (a syntax
        error, an exception at import, a class that is gone), that is a
        :class:`~minions.StartupError` and nothing was stopped. Otherwise the new code runs from
        then on, restarts after crashes included; dependents restart as with :meth:`restart`,
        and everything else keeps running. An in-process component cannot be redeployed (its
        code is this process's): that is a :class:`~minions.RuntimeStateError`.
        """
        cls = self._resolve(component)
        cell = next(c for c in self._supervisor.cells if c.node.cls is cls)
        if not cell.isolated:
            raise RuntimeStateError(
                f"cannot redeploy {cell.name}: it runs in-process, and only isolated components "
                f"can be redeployed (their child imports the new code). Mark it isolated=True, "
                f"or restart the program to load new code"
            )
        # Refused, or the new code failed to load, before anything stops: the running
        # incarnation is left as it is.
        options = self._options_for(cell.node)
        await self._isolated_hosts().check_redeploy(
            cell.node, options.isolated, sandbox=options.sandbox
        )
        self._redeployed.add(cls)
        log.info("component.redeploying", component=cell.name)
        self._announce(LifecycleEvent(cell.name, "redeploying", datetime.now(UTC)))
        await self._supervisor.restart(cls)

    async def stop(self, component: ComponentRef | None = None) -> None:
        """Stop one component (and its dependents), or with no argument everything, in reverse
        dependency order. Stopping everything is final: the runtime cannot start again."""
        if component is None:
            try:
                await self._supervisor.close()
            finally:
                try:
                    if self._isolated is not None:
                        await self._isolated.aclose()
                finally:
                    await self._detach_extensions()
        else:
            await self._supervisor.stop(self._resolve(component))

    async def scale(self, component: ComponentRef, replicas: int | str) -> None:
        """Run ``replicas`` replicas of a replicated isolated component from now on.

        New replicas start while the others serve; removed ones (the highest indexes) drain
        first: they take no new calls, and their calls and workflows in flight finish, within
        the component's stop timeout. The count holds for later incarnations too (after a
        restart). ``"cores"`` means one per usable CPU. A component that runs in-process, or as
        a single child without replicas, cannot be scaled: :class:`~minions.RuntimeStateError`.
        """
        check_replica_count(replicas, f"scale({component!r}, ...)")
        count = _usable_cpus() if replicas == "cores" else int(replicas)
        cls = self._resolve(component)
        cell = next(c for c in self._supervisor.cells if c.node.cls is cls)
        if not cell.isolated:
            raise RuntimeStateError(
                f"cannot scale {cell.name}: it runs in-process. Only isolated components have "
                f"replicas: declare it isolated=Isolation(replicas=N)"
            )
        host = cell.host
        if host is not None and not isinstance(host, ReplicatedHost):
            raise RuntimeStateError(
                f"cannot scale {cell.name}: it runs as a single child (isolated without "
                f"replicas). Give it replicas to scale it at run time: Isolation(replicas=1), "
                f"the replicas option, or {cell.name} = 1 in [minions.replicas] of minions.toml"
            )
        self._scaled[cls] = count
        log.info("component.scaling", component=cell.name, replicas=count)
        if isinstance(host, ReplicatedHost) and cell.state is ComponentState.RUNNING:
            try:
                await host.scale(count)
            finally:
                self._changed.set()

    def kill(self) -> None:
        """Stop everything at once, without stop timeouts or ``shutdown()`` hooks."""
        self._supervisor.kill()

    def isolated_process_roots(self) -> frozenset[int]:
        """Pids of the processes every isolated child of this runtime descends from."""
        return self._isolated.process_roots() if self._isolated is not None else frozenset()

    def status(self) -> Mapping[str, ComponentStatus]:
        """A frozen snapshot of every component, by name, in start order."""
        return MappingProxyType({cell.name: cell.snapshot() for cell in self._supervisor.cells})

    def add_lifecycle_listener(self, listener: LifecycleListener) -> None:
        """Call ``listener`` with each :class:`~minions.LifecycleEvent` from now on: every
        step of every component's life (started, crashed, restarting, given up...), on the
        event loop, at the moment the runtime takes it.

        A listener must return quickly and must not block: record the event, or hand it to a
        task. An exception it raises is logged (``lifecycle.listener_failed``) and ignored.
        """
        self._listeners.append(listener)

    def remove_lifecycle_listener(self, listener: LifecycleListener) -> None:
        """Stop calling ``listener`` (added by :meth:`add_lifecycle_listener`); no error if it
        was not added."""
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def instances(self) -> Mapping[str, object]:
        """What dependents receive from each running component, by name: the component
        itself, or for an isolated one a proxy to it."""
        return MappingProxyType(
            {
                cell.name: cell.host.instance
                for cell in self._supervisor.cells
                if cell.host is not None and cell.state is ComponentState.RUNNING
            }
        )

    @property
    def given_up(self) -> list[str]:
        """Names of the components given up after too many restarts."""
        return [c.name for c in self._supervisor.cells if c.state is ComponentState.FAILED]

    @property
    def ended_by_crash(self) -> list[str]:
        """Names of the components whose last run crashed and were not restarted (their
        policy is ``temporary``)."""
        return [
            c.name
            for c in self._supervisor.cells
            if c.ended_by_crash and c.state is ComponentState.STOPPED
        ]

    async def wait(self) -> None:
        """Return once every minion is at rest: completed, stopped, or given up.

        With no minions (only resources) this waits until the runtime is stopped.
        """
        while True:
            self._changed.clear()
            minions = [c for c in self._supervisor.cells if c.node.kind == "minion"]
            if minions and all(c.state in _AT_REST for c in minions):
                return
            if self._supervisor.closed and not any(c.state.is_active for c in minions):
                return
            await self._changed.wait()

    # -- internals -----------------------------------------------------------------------------

    def _announce(self, event: LifecycleEvent) -> None:
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception as exc:
                log.error("lifecycle.listener_failed", listener=repr(listener), exc_info=exc)

    async def _attach_extensions(self) -> None:
        if self._attached is not None:
            return
        self._attached = []
        for extension in self._extensions:
            await extension.attach(self)
            self._attached.append(extension)

    async def _detach_extensions(self) -> None:
        attached, self._attached = self._attached or [], []
        for extension in reversed(attached):
            try:
                await extension.detach()
            except Exception as exc:
                log.error("extension.detach_failed", extension=repr(extension), exc_info=exc)

    def _resolve(self, component: ComponentRef) -> type[Any]:
        for cell in self._supervisor.cells:
            if cell.node.cls is component or cell.name == component:
                return cell.node.cls
        shown = (
            component
            if isinstance(component, str)
            else getattr(component, "__qualname__", component)
        )
        known = ", ".join(c.name for c in self._supervisor.cells) or "none"
        raise UnknownComponentError(f"no component {shown!r} in this runtime; it runs: {known}")

    def _check_compatible(self, graph: Graph) -> None:
        for cell in self._supervisor.cells:
            try:
                node = graph.node(cell.node.cls)
            except KeyError:
                raise DefinitionError(
                    f"starting these components would replace {cell.name}, which this runtime "
                    f"already has; start them in a new runtime"
                ) from None
            if node.dependencies != cell.node.dependencies:
                raise DefinitionError(
                    f"starting these components would change the dependencies of the running "
                    f"component {cell.name}; start them in a new runtime"
                )

    def _check_option_keys(self, graph: Graph) -> None:
        components = {n.name for n in graph.nodes}
        unknown = sorted(set(self._configured_replicas()) - components)
        if unknown:
            raise ConfigError(
                f"[{SETTINGS_TABLE}.{REPLICAS_KEY}] of {self._load_config().origin} names "
                f"{', '.join(unknown)}, which is not one of the components: "
                f"{', '.join(sorted(components))}"
            )
        known = {n.cls for n in graph.nodes} | {n.name for n in graph.nodes}
        for key in self._options:
            if key not in known:
                shown = key if isinstance(key, str) else getattr(key, "__qualname__", key)
                names = ", ".join(n.name for n in graph.nodes)
                raise ComponentOptionsError(
                    f"options are given for {shown!r}, which is not one of the components: {names}"
                )

    def _load_config(self) -> ConfigSource:
        if self._config is None:
            self._config = ConfigSource.load(self._config_arg, self.project_dir)
        return self._config

    def _sandbox_table(self) -> Mapping[str, Any]:
        """The ``[minions.sandbox]`` table of the config: component name -> sandbox setting."""
        source = self._load_config()
        table = source.tables.get(SETTINGS_TABLE, {}).get(SANDBOX_KEY, {})
        if not isinstance(table, Mapping):
            raise ComponentOptionsError(
                f"sandbox in [{SETTINGS_TABLE}] of {source.origin} must be a table of component "
                f"names, e.g. [{SETTINGS_TABLE}.sandbox] VendorStrategy = true"
            )
        return table

    def _check_sandbox_keys(self, graph: Graph) -> None:
        names = {n.name for n in graph.nodes}
        unknown = sorted(str(key) for key in self._sandbox_table() if key not in names)
        if unknown:
            raise ComponentOptionsError(
                f"[{SETTINGS_TABLE}.sandbox] of {self._load_config().origin} names "
                f"{', '.join(unknown)}, which {'is' if len(unknown) == 1 else 'are'} not among "
                f"the components ({', '.join(sorted(names))}); a sandbox must not be missed "
                "because of a misspelt name"
            )

    def _options_for(self, node: Node) -> ComponentOptions:
        options = node.cls.__minions_options__
        configured = self._configured_replicas().get(node.name)
        if configured is not None:
            options = options.merged(ComponentOptions(replicas=configured))
        sandboxed = self._sandbox_table().get(node.name)
        if sandboxed is not None:
            options = options.merged(ComponentOptions(sandbox=sandboxed))
        for key in (node.cls, node.name):
            extra = self._options.get(key)
            if extra is None:
                continue
            if not isinstance(extra, ComponentOptions):
                extra = ComponentOptions.from_keywords(node.name, dict(extra))
            options = options.merged(extra)
        scaled = self._scaled.get(node.cls)
        if scaled is not None:
            options = options.merged(ComponentOptions(replicas=scaled))
        return options

    def _configured_replicas(self) -> Mapping[str, int | str]:
        """The ``[minions.replicas]`` table of the config: replica counts by component name."""
        config = self._load_config()
        table = config.tables.get(SETTINGS_TABLE, {}).get(REPLICAS_KEY, {})
        if not isinstance(table, Mapping):
            raise ConfigError(
                f"[{SETTINGS_TABLE}.{REPLICAS_KEY}] of {config.origin} must be a table of "
                f'component names and replica counts, e.g. Pricer = 4 or Pricer = "cores"'
            )
        for name, value in table.items():
            try:
                check_replica_count(value, f"{name} in [{SETTINGS_TABLE}.{REPLICAS_KEY}]")
            except ComponentOptionsError as exc:
                raise ConfigError(f"{exc} (in {config.origin})") from None
        return table

    def _new_cell(self, node: Node) -> Cell:
        options = self._options_for(node)
        policy = Policy.resolve(options, node.cls.__minions_default_restart__)
        isolated = _isolated(node, options)
        if options.replicas is not None and not isolated:
            raise ComponentOptionsError(
                f"{node.name}: replicas={options.replicas!r} needs an isolated component; "
                f"declare it isolated=Isolation(...) (each replica is a child process)"
            )
        if isolated:
            self._isolated_hosts().check(
                node, options.isolated, options.replicas, sandbox=options.sandbox
            )
        return Cell(
            node=node, policy=policy, isolated=isolated, history=RestartHistory(policy.intensity)
        )

    def _isolated_hosts(self) -> IsolatedHosts:
        if self._isolated is None:
            self._isolated = isolated_hosts(
                self.project_dir, self._isolation_settings, self._environ
            )
        return self._isolated

    def _make_host(self, node: Node, policy: Policy) -> Host:
        options = self._options_for(node)
        if _isolated(node, options):
            return self._isolated_hosts().host(
                node,
                policy,
                options.isolated,
                fresh_code=node.cls in self._redeployed,
                observer=self.call_observer,
                replicas=options.replicas,
                announce=self._announce,
                sandbox=options.sandbox,
            )
        return LocalHost(node, policy, on_abandon=self._abandoned.add)


def _isolated(node: Node, options: ComponentOptions) -> bool:
    """Whether ``node`` runs in a child: ``isolated=`` set, or a sandbox (which implies it)."""
    sandboxed = options.sandbox not in (None, False)
    if sandboxed and options.isolated is False:
        raise ComponentOptionsError(
            f"{node.name} has a sandbox but isolated=False: a sandbox runs in a child process; "
            "drop isolated=False (or the sandbox)"
        )
    return sandboxed or options.isolated not in (None, False)
