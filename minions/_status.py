"""Frozen snapshots of what the runtime is doing, for people and programs to read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ._component import ComponentState


@dataclass(frozen=True)
class ComponentStatus:
    """One component at one moment: returned by :meth:`minions.Runtime.status`."""

    name: str
    kind: str  # "resource" or "minion"
    state: ComponentState
    restarts: int
    crashes: int
    last_error: str | None
    started_at: datetime | None  # when the current incarnation started (UTC); None unless running
    isolated: bool
    pid: int | None  # the child process of an isolated component

    def __str__(self) -> str:
        text = f"{self.name} ({self.kind}) {self.state.value}, {self.restarts} restarts"
        return f"{text}, last error: {self.last_error}" if self.last_error else text
