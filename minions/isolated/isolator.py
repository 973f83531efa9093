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

from ..core.component import Component
from ..core.graph import Node
from ..core.host import Host
from ..core.observer import CallObserver
from ..core.policy import Policy
from ..workflows.steps import step_names
from .children import Zygotes, check_isolatable
from .code import fresh_source
from .component import IsolatedHost
from .workflow import IsolatedWorkflowHost

__all__ = ["Isolator"]


class Isolator:
    """Hosts a runtime's isolated components in children of its zygote."""

    def __init__(self, project_dir: Path) -> None:
        self._zygotes = Zygotes(project_dir / ".minions" / "run")

    def __repr__(self) -> str:
        return f"<Isolator {self._zygotes!r}>"

    def check(self, node: Node, isolated: object) -> None:
        check_isolatable(node, isolated)

    def prepare(self) -> None:
        self._zygotes.get()

    def check_redeploy(self, cls: type[Component]) -> None:
        fresh_source(cls)

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
