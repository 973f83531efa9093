"""Running and operating a system: ``run()``, the ``minions`` command and what it talks to.

It owns the front door (:mod:`.run`, with its settings in :mod:`.settings`, the project lock in
:mod:`.lock` and the exit statuses in :mod:`.exits`), the control socket and its client
(:mod:`.control`, :mod:`.client`, with what it answers about lifecycle events in
:mod:`.lifecycle` and raw readings in :mod:`.telemetry`), the command line (:mod:`.cli`,
:mod:`.top`, :mod:`.log_reader`), the live dashboard (:mod:`.dashboard`), Prometheus metrics
(:mod:`.metrics`) and sampling children's CPU and memory (:mod:`.usage`).

It may import every other layer of Minions; nothing imports it but the public modules.
"""
