"""Where the runtime reports the calls that cross isolation boundaries: :class:`CallObserver`.

The metrics endpoint (``minions.ops.metrics``) plugs in here: when a runtime has an observer,
the calls and streams that cross an isolation boundary are timed and counted per method
(``minions.isolated.measured``); without one nothing is wrapped and nothing is measured. Both
protocols are synchronous, so measuring never adds an ``await`` to a call.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["CallMeter", "CallObserver"]


class CallMeter(Protocol):
    """Receives the measurements of one remote method, as seen from this process."""

    def call(self, seconds: float, outcome: str) -> None:
        """A call ended: ``outcome`` is ``ok``, ``error`` or ``cancelled``."""
        ...

    def stream(self, outcome: str) -> None:
        """A stream ended (``ok``: exhausted or closed by its consumer)."""
        ...

    def item(self) -> None:
        """A stream delivered one item."""
        ...


class CallObserver(Protocol):
    """Hands out a meter per remote method; asked once per method when a channel is set up."""

    def meter(self, channel: str, target: str, method: str) -> CallMeter:
        """The meter for ``target.method`` reached over the channel of the isolated component
        ``channel`` (``channel == target`` for calls into the isolated component itself)."""
        ...
