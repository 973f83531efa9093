"""Durable workflows: pipelines, ``@minion_step`` minions, checkpoints, state stores and Gru.

It owns the shape of a workflow minion (:mod:`.steps`, :mod:`.definition`, plugged into the
core's ``Minion`` class), the driver that turns events into checkpointed workflows
(:mod:`.runner`), event sources (:mod:`.pipeline`), the checkpoint codec (:mod:`.checkpoint`),
the stores (:mod:`.state_store`, :mod:`.store`, :mod:`.sqlite`), the original project's
orchestration API (:mod:`.gru`, :mod:`.results`) and its reporting protocols
(:mod:`.telemetry`).

It may import :mod:`minions.core` and nothing else of Minions. Users import its public names
from :mod:`minions` and its public modules.
"""
