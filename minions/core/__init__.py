"""The core: components, their dependency graph, supervision and the runtime.

It owns what a component is (:mod:`.component`: ``Resource``, ``Minion``, the lifecycle), how
dependencies are declared and resolved (:mod:`.graph`, :mod:`.identity`, :mod:`.config`), how
one incarnation runs (:mod:`.host`, with the component's background tasks: :mod:`.tasks`),
what happens when it ends (:mod:`.policy`, :mod:`.supervisor`), and the async API over all of it
(:mod:`.runtime`); plus the small shared pieces the layers above use: errors, clock, histogram,
log set-up, the call observer, and the program's value types as plain data (:mod:`.values`).

It imports nothing else of Minions. The layers above plug into it: the workflow layer through
:data:`.component.minion_class_hooks`, the isolation layer through
:func:`.host.provide_isolated_hosts`, the operator's tools through
:class:`.runtime.Extension` and :class:`.observer.CallObserver`. Users import its public names
from :mod:`minions`.
"""
