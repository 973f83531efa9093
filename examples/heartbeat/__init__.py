"""Heartbeats: services and durable workflows in one runtime, started with ``run(...)``.

A pipeline emits a heartbeat every ``interval`` seconds; a workflow minion checks and records
each one in a shared resource, which a plain service minion reports on. ``python -m
examples.heartbeat``.
"""
