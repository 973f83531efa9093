"""A child's log events as the parent takes them: bounded in size and count, the level read
from a fixed set, the logger name only ever data."""

from __future__ import annotations

from isolation._logs import (
    LEVELS,
    MAX_FIELDS,
    MAX_ITEMS,
    MAX_TEXT_CHARS,
    LogLimiter,
    bounded_event,
    level_of,
)


def test_levels_come_from_a_fixed_set() -> None:
    assert [level_of(name) for name in ("DEBUG", "warn", "Exception", "fatal")] == [
        "debug",
        "warning",
        "error",
        "critical",
    ]
    for hostile in ("__class__", "msg", "log", "x" * 10_000, 40, None, ["error"]):
        assert level_of(hostile) == "info"
    assert set(LEVELS) == {"debug", "info", "warning", "error", "critical"}


def test_an_event_is_cut_to_bounded_fields_and_sizes() -> None:
    body = {f"field{i}": i for i in range(MAX_FIELDS * 3)}
    body.update(event="x" * 100_000, level="hostile", nested=[[[[[["deep"]]]]]])
    body["many"] = list(range(MAX_ITEMS * 10))
    event = bounded_event(body)
    assert len(event) <= MAX_FIELDS + 3
    assert event["dropped_fields"] > 0
    assert len(event["event"]) < MAX_TEXT_CHARS + 100
    assert event["level"] == "hostile"  # kept as data: whoever logs it reads it from LEVELS


def test_nesting_and_long_lists_are_cut() -> None:
    event = bounded_event({"event": "e", "nested": [[[[[["deep"]]]]]], "many": list(range(1000))})
    assert event["nested"] == [[[["<list nested too deeply>"]]]]
    assert len(event["many"]) == MAX_ITEMS + 1
    assert event["many"][-1] == f"... [{1000 - MAX_ITEMS} more items]"


def test_the_limiter_allows_a_burst_then_the_rate() -> None:
    limiter = LogLimiter(rate=10, burst=5)
    assert [limiter.admit(0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert limiter.take_dropped() == 2
    assert limiter.admit(0.05) is False  # half a token back
    assert limiter.admit(0.2) is True
    assert limiter.take_dropped() == 1
