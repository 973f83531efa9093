"""Workflow ids: 32 hex digits, ordered by creation time, which they record."""

from __future__ import annotations

import random
import time

from minions.workflows.workflow_id import created, new_workflow_id


def test_an_id_records_when_its_workflow_was_created() -> None:
    """The id's first 48 bits are the creation time in milliseconds; created() reads it back."""
    rng = random.Random(1)
    now = time.time_ns()
    workflow_id = new_workflow_id(rng, now)
    assert len(workflow_id) == 32 and int(workflow_id, 16) >= 0
    assert created(workflow_id) == (now // 1_000_000) / 1000
    assert workflow_id[12] == "7" and workflow_id[16] in "89ab"  # UUID version 7 layout


def test_ids_sort_by_creation_and_do_not_repeat() -> None:
    """Later ids sort after earlier ones; ids made in the same millisecond differ."""
    rng = random.Random(2)
    base = 1_700_000_000_000_000_000
    early = [new_workflow_id(rng, base) for _ in range(1000)]
    late = new_workflow_id(rng, base + 1_000_000)
    assert len(set(early)) == 1000
    assert all(e < late for e in early)


def test_random_ids_of_earlier_versions_have_no_creation_time() -> None:
    """Ids that are 128 random bits (what earlier versions made), or not ids at all, give None;
    so does a time in the future."""
    rng = random.Random(3)
    randoms = [f"{rng.getrandbits(128):032x}" for _ in range(2000)]
    assert sum(created(w) is not None for w in randoms) <= 2
    assert created("wf-1") is None and created("z" * 32) is None
    future = new_workflow_id(rng, time.time_ns() + 10 * 86_400 * 10**9)
    assert created(future) is None
