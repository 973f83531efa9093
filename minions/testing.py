"""Helpers for testing programs built on Minions.

:class:`FakeClock` drives the runtime's backoff delays and restart-intensity windows without real
sleeps::

    clock = FakeClock()
    async with Runtime(clock=clock) as rt:
        await rt.start(Flaky)
        await clock.wait_for_sleepers(1)   # the supervisor is waiting out a backoff delay
        clock.advance(clock.next_deadline() - clock.now())
"""

from .core.clock import FakeClock as FakeClock

__all__ = ["FakeClock"]
