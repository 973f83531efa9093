"""The isolator: what runs one runtime's isolated components (``IsolatedHosts`` of the core).

``minions/__init__.py`` plugs :class:`Isolator` into the core
(:func:`minions.core.host.provide_isolated_hosts`); each runtime that starts an isolated
component gets one. It owns the runtime's warm zygote — forked in :meth:`Isolator.prepare`,
before the new components' dependencies run ``startup()`` and may create threads or connections
that a fork would copy half-made — and builds the host of each isolated incarnation: an
:class:`~minions.isolated.workflow.IsolatedWorkflowHost` for a workflow minion (the steps run in
the child, the store stays here), an :class:`~minions.isolated.component.IsolatedHost` for
everything else.
"""

from __future__ import annotations

from pathlib import Path

from ..core.graph import Node
from ..core.host import Host
from ..core.observer import CallObserver
from ..core.policy import Policy
from ..workflows.steps import step_names
from .children import Zygotes, check_isolatable, check_new_code
from .component import IsolatedHost
from .workflow import IsolatedWorkflowHost, remote_dependencies, user_class

__all__ = ["Isolator"]


class Isolator:
    """Hosts a runtime's isolated components in children of its zygote."""

    def __init__(self, project_dir: Path) -> None:
        self._zygotes = Zygotes(project_dir / ".minions" / "run")

    def __repr__(self) -> str:
        return f"<Isolator {self._zygotes!r}>"

    def check(self, node: Node, isolated: object) -> None:
        if step_names(node.cls):
            # The steps run in the child, called by the workflow loop here; the store and the
            # pipeline stay here too, so only the other dependencies cross.
            proxied = [bound for _, bound in remote_dependencies(node)]
            check_isolatable(node, isolated, proxied=proxied, served=None)
        else:
            check_isolatable(node, isolated, proxied=node.dependency_classes, served=node.cls)

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
    ) -> Host:
        if step_names(node.cls):
            return IsolatedWorkflowHost(
                node, policy, isolated, self._zygotes, fresh_code=fresh_code
            )
        return IsolatedHost(
            node, policy, isolated, self._zygotes, fresh_code=fresh_code, observer=observer
        )

    async def aclose(self) -> None:
        await self._zygotes.aclose()
