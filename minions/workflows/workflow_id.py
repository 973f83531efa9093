"""Workflow ids: 128 bits, 32 hex digits, ordered by the time the workflow was created.

The layout is UUID version 7's (RFC 9562): 48 bits of Unix time in milliseconds, the version
``7``, 74 random bits and the variant bits. The time gives a workflow's age wherever its id is
seen — in the state store of a stopped system too — without a column or a field for it, and
sorting ids sorts workflows by creation. The random bits come from a generator the caller seeds
once (from the OS), so an id costs no system call.

Ids of workflows saved by earlier versions of Minions are 128 random bits; ``created`` tells
them apart by the version and variant bits and a plausible time (a random id passes all three
about once in a hundred thousand), and returns ``None`` for them.
"""

from __future__ import annotations

import random
import time

__all__ = ["created", "new_workflow_id"]

_RANDOM_HIGH = (1 << 12) - 1
_RANDOM_LOW = (1 << 62) - 1
#: Times before this (2020-01-01) are not from a time-ordered id.
_EARLIEST_MS = 1_577_836_800_000


def new_workflow_id(rng: random.Random, now_ns: int | None = None) -> str:
    """A new id for a workflow created now (``now_ns``: Unix time in nanoseconds)."""
    ms = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    bits = rng.getrandbits(74)
    value = (
        (ms & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76
        | (bits >> 62 & _RANDOM_HIGH) << 64
        | 0b10 << 62
        | bits & _RANDOM_LOW
    )
    return f"{value:032x}"


def created(workflow_id: str, now: float | None = None) -> float | None:
    """When the workflow ``workflow_id`` was created (Unix seconds), or ``None`` if its id does
    not record it."""
    if len(workflow_id) != 32:
        return None
    try:
        value = int(workflow_id, 16)
    except ValueError:
        return None
    if value >> 76 & 0xF != 0x7 or value >> 62 & 0b11 != 0b10:
        return None
    ms = value >> 80
    latest = ((time.time() if now is None else now) + 86_400) * 1000
    if not _EARLIEST_MS <= ms <= latest:
        return None
    return ms / 1000
