"""The isolator: what runs one runtime's isolated components (``IsolatedHosts`` of the core).

``minions/__init__.py`` plugs :class:`Isolator` into the core
(:func:`minions.core.host.provide_isolated_hosts`); each runtime that starts an isolated
component gets one. It owns the runtime's warm zygote — forked in :meth:`Isolator.prepare`,
before the new components' dependencies run ``startup()`` and may create threads or connections
that a fork would copy half-made — and builds the host of each isolated incarnation: an
:class:`~minions.isolated.workflow.IsolatedWorkflowHost` for a workflow minion (the steps run in
the child, the store stays here), an :class:`~minions.isolated.component.IsolatedHost` for
everything else — or, for a component with replicas, their replicated counterparts
(:mod:`minions.isolated.replicated`, :mod:`minions.isolated.replicated_workflow`).
"""

from __future__ import annotations

import importlib
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any

from isolation import Isolation, check_route_by

from ..core.errors import ComponentOptionsError
from ..core.graph import Node
from ..core.host import Host
from ..core.observer import CallObserver
from ..core.policy import Policy
from ..core.status import LifecycleListener
from ..workflows.steps import step_names
from .children import Zygotes, check_isolatable, check_new_code, isolation_of
from .component import IsolatedHost
from .measured import LIFECYCLE
from .replicas import ReplicaLauncher
from .replicated import LocalLauncher, ReplicatedHost
from .replicated_workflow import ReplicatedWorkflowHost
from .workflow import IsolatedWorkflowHost, remote_dependencies, user_class

__all__ = ["Isolator"]


#: Where replicas with ``backend="ray"`` run: this environment variable wins over settings.
RAY_ADDRESS_ENV = "MINIONS_RAY_ADDRESS"
#: The module of the Ray backend, imported only when a component asks for it (Ray is an extra).
RAY_BACKEND = "minions.isolated.ray_replicas"
_SETTINGS = frozenset({"ray_address"})


class Isolator:
    """Hosts a runtime's isolated components in children of its zygote (or Ray actors)."""

    def __init__(
        self,
        project_dir: Path,
        settings: Mapping[str, Any] = MappingProxyType({}),
        environ: Mapping[str, str] = MappingProxyType({}),
    ) -> None:
        unknown = sorted(set(settings) - _SETTINGS)
        if unknown:
            raise ComponentOptionsError(
                f"unknown isolation setting(s) {', '.join(unknown)}; the settings are: "
                f"{', '.join(sorted(_SETTINGS))}"
            )
        self._zygotes = Zygotes(project_dir)
        self._local = LocalLauncher(self._zygotes)
        address = environ.get(RAY_ADDRESS_ENV) or settings.get("ray_address") or None
        self._ray_address = str(address) if address is not None else None
        self._ray: Any = None  # the RayBackend, once a component runs on Ray

    def __repr__(self) -> str:
        return f"<Isolator {self._zygotes!r}>"

    def check(
        self, node: Node, isolated: object, replicas: object = None, *, sandbox: object = None
    ) -> None:
        if step_names(node.cls):
            # The steps run in the child, called by the workflow loop here; the store and the
            # pipeline stay here too, so only the other dependencies cross.
            proxied = [bound for _, bound in remote_dependencies(node)]
            check_isolatable(node, isolated, proxied=proxied, served=None, sandbox=sandbox)
        else:
            check_isolatable(
                node, isolated, proxied=node.dependency_classes, served=node.cls, sandbox=sandbox
            )
        isolation = isolation_of(node, isolated, replicas, sandbox)
        if isolation.backend == "ray":
            self._check_ray(node)
        if isolation.route_by is not None:
            if node.kind != "resource" or step_names(node.cls):
                raise ComponentOptionsError(
                    f"{node.name}: route_by routes the calls of a resource's dependents to its "
                    f"replicas; {node.name} is a minion, which nothing calls. Remove route_by"
                )
            try:
                check_route_by(node.cls, isolation.route_by, LIFECYCLE)
            except ValueError as exc:
                raise ComponentOptionsError(f"{node.name}: {exc}") from None

    def _check_ray(self, node: Node) -> None:
        for cls in (user_class(node.cls), *node.dependency_classes):
            if cls.__module__ == "__main__":
                raise ComponentOptionsError(
                    f"{node.name} cannot run on Ray: Ray workers import {cls.__qualname__} from "
                    f"its module, and the program file (__main__) is not importable there. Move "
                    f"{cls.__qualname__} into a module of its own and import it"
                )
        self._ray_module()

    def _ray_module(self) -> ModuleType:
        if "ray" not in sys.modules and self._ray_address is None:
            # A local Ray will be started: its token authentication is chosen at import.
            os.environ.setdefault("RAY_AUTH_MODE", "token")
            os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
        try:
            return importlib.import_module(RAY_BACKEND)
        except ImportError as exc:
            raise ComponentOptionsError(
                f'Isolation(backend="ray") needs Ray: pip install "minions[ray]" ({exc})'
            ) from exc

    def _launcher(self, isolation: Isolation) -> ReplicaLauncher:
        if isolation.backend != "ray":
            return self._local
        if self._ray is None:
            module = self._ray_module()
            self._ray = module.RayBackend(module.RayCluster(self._ray_address))
        launcher: ReplicaLauncher = self._ray
        return launcher

    def prepare(self) -> None:
        self._zygotes.get()

    async def check_redeploy(self, node: Node, isolated: object, *, sandbox: object = None) -> None:
        await check_new_code(self._zygotes, node, isolated, user_class(node.cls), sandbox=sandbox)

    def host(
        self,
        node: Node,
        policy: Policy,
        isolated: object,
        *,
        fresh_code: bool,
        observer: CallObserver | None,
        replicas: object = None,
        announce: LifecycleListener | None = None,
        sandbox: object = None,
    ) -> Host:
        isolation = isolation_of(node, isolated, replicas, sandbox)
        if step_names(node.cls):
            if isolation.replicated:
                return ReplicatedWorkflowHost(
                    node,
                    policy,
                    isolation,
                    self._zygotes,
                    self._launcher(isolation),
                    fresh_code=fresh_code,
                    announce=announce,
                )
            return IsolatedWorkflowHost(
                node, policy, isolation, self._zygotes, fresh_code=fresh_code
            )
        if isolation.replicated:
            return ReplicatedHost(
                node,
                policy,
                isolation,
                self._launcher(isolation),
                fresh_code=fresh_code,
                observer=observer,
                announce=announce,
            )
        return IsolatedHost(
            node, policy, isolation, self._zygotes, fresh_code=fresh_code, observer=observer
        )

    def process_roots(self) -> frozenset[int]:
        return self._zygotes.pids()

    async def aclose(self) -> None:
        try:
            if self._ray is not None:
                await self._ray.aclose()
        finally:
            await self._zygotes.aclose()
