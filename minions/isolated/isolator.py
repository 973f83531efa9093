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

from pathlib import Path

from isolation import check_route_by

from ..core.errors import ComponentOptionsError
from ..core.graph import Node
from ..core.host import Host
from ..core.observer import CallObserver
from ..core.policy import Policy
from ..workflows.steps import step_names
from .children import Zygotes, check_isolatable, check_new_code, isolation_of
from .component import IsolatedHost
from .measured import LIFECYCLE
from .replicated import ReplicatedHost
from .replicated_workflow import ReplicatedWorkflowHost
from .workflow import IsolatedWorkflowHost, remote_dependencies, user_class

__all__ = ["Isolator"]


class Isolator:
    """Hosts a runtime's isolated components in children of its zygote."""

    def __init__(self, project_dir: Path) -> None:
        self._zygotes = Zygotes(project_dir / ".minions" / "run")

    def __repr__(self) -> str:
        return f"<Isolator {self._zygotes!r}>"

    def check(self, node: Node, isolated: object, replicas: object = None) -> None:
        if step_names(node.cls):
            # The steps run in the child, called by the workflow loop here; the store and the
            # pipeline stay here too, so only the other dependencies cross.
            proxied = [bound for _, bound in remote_dependencies(node)]
            check_isolatable(node, isolated, proxied=proxied, served=None)
        else:
            check_isolatable(node, isolated, proxied=node.dependency_classes, served=node.cls)
        isolation = isolation_of(node, isolated, replicas)
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

    def prepare(self) -> None:
        self._zygotes.get()

    async def check_redeploy(self, node: Node, isolated: object) -> None:
        await check_new_code(self._zygotes, node, isolated, user_class(node.cls))

    def host(
        self,
        node: Node,
        policy: Policy,
        isolated: object,
        *,
        fresh_code: bool,
        observer: CallObserver | None,
        replicas: object = None,
    ) -> Host:
        isolation = isolation_of(node, isolated, replicas)
        if step_names(node.cls):
            workflow_host = ReplicatedWorkflowHost if isolation.replicated else IsolatedWorkflowHost
            return workflow_host(node, policy, isolation, self._zygotes, fresh_code=fresh_code)
        if isolation.replicated:
            return ReplicatedHost(
                node, policy, isolation, self._zygotes, fresh_code=fresh_code, observer=observer
            )
        return IsolatedHost(
            node, policy, isolation, self._zygotes, fresh_code=fresh_code, observer=observer
        )

    async def aclose(self) -> None:
        await self._zygotes.aclose()
