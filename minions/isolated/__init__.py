"""The glue between the runtime and :mod:`isolation`: components that run in child processes.

It owns the :class:`~.isolator.Isolator` that the core asks for the host of every isolated
incarnation (plugged in by ``minions/__init__.py``), the host of an isolated component
(:mod:`.component`) and of an isolated workflow minion (:mod:`.workflow`), what they share
(:mod:`.children`: the zygote, spawning a child, forwarding its logs), loading a redeployed
component's code anew (:mod:`.code`), and measuring the calls that cross the boundary
(:mod:`.measured`).

It may import :mod:`minions.core`, :mod:`minions.workflows` and :mod:`isolation`.
"""
