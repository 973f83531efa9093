"""The log reader on real files: formatting, filtering, and following through truncation and
rotation. The follower runs in a thread; the test waits for each line it writes."""

from __future__ import annotations

import io
import json
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from minions.ops.log_reader import LogReader, format_event

LIMIT = 30.0


def event(component: str | None, name: str, **fields: object) -> str:
    data: dict[str, object] = {"event": name, "level": "info", "timestamp": "T", **fields}
    if component is not None:
        data["component"] = component
    return json.dumps(data) + "\n"


def test_format_event_puts_the_fixed_fields_first() -> None:
    """Time, level, component, event, then the other fields; strings with spaces quoted."""
    line = format_event(
        {
            "timestamp": "2026-01-01T00:00:00Z",
            "level": "warning",
            "component": "Feed",
            "event": "component.restarting",
            "reason": "run() raised",
            "attempt": 2,
            "logger": "minions",
        }
    )
    assert line.split()[:4] == [
        "2026-01-01T00:00:00Z",
        "warning",
        "Feed",
        "component.restarting",
    ]
    assert line.endswith('reason="run() raised" attempt=2')


def test_tail_filters_by_component_and_keeps_other_lines(tmp_path: Path) -> None:
    """Only the named component's events; without a name, every line, even non-JSON ones."""
    path = tmp_path / "minions.log"
    path.write_text(
        event("A", "one") + event("B", "two") + "a traceback line\n" + event("A", "three")
    )
    lines, end = LogReader(path, "A").tail(None)
    assert [line.split()[3] for line in lines] == ["one", "three"]
    assert (end.inode, end.offset) == (path.stat().st_ino, path.stat().st_size)
    everything, _ = LogReader(path).tail(None)
    assert len(everything) == 4 and "a traceback line" in everything
    last, _ = LogReader(path, "A", raw=True).tail(1)
    assert [json.loads(line)["event"] for line in last] == ["three"]
    assert LogReader(path).components() == {"A", "B"}


class Lines(io.StringIO):
    """A text stream whose complete lines can be awaited from another thread."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: queue.Queue[str] = queue.Queue()

    def write(self, text: str) -> int:
        for line in text.splitlines():
            self.queue.put(line)
        return len(text)

    def next(self) -> str:
        try:
            return self.queue.get(timeout=LIMIT)
        except queue.Empty:
            pytest.fail("the follower wrote nothing")


@pytest.fixture
def follower(tmp_path: Path) -> Iterator[tuple[Path, Lines]]:
    path = tmp_path / "minions.log"
    path.write_text(event("A", "old"))
    _, end = LogReader(path, "A").tail(None)
    out, done = Lines(), threading.Event()
    thread = threading.Thread(
        target=LogReader(path, "A").follow, args=(end, out), kwargs={"until": done.is_set}
    )
    thread.start()
    try:
        yield path, out
    finally:
        done.set()
        thread.join(timeout=LIMIT)
        assert not thread.is_alive()


def test_follow_prints_appended_events_even_when_split_across_writes(
    follower: tuple[Path, Lines],
) -> None:
    """New matching events appear once complete; half a line waits for its end."""
    path, out = follower
    with path.open("a") as f:
        f.write(event("B", "other") + event("A", "new"))
    assert out.next().split()[3] == "new"
    line = event("A", "split")
    with path.open("a") as f:
        f.write(line[:10])
        f.flush()
        f.write(line[10:])
    assert out.next().split()[3] == "split"


def test_follow_survives_truncation_and_rotation(follower: tuple[Path, Lines]) -> None:
    """A file cut short is read again from its start; so is a new file under the same name."""
    path, out = follower
    with path.open("a") as f:
        f.write(event("A", "before"))
    assert out.next().split()[3] == "before"
    path.write_text(event("A", "truncated"))  # shorter than what was read
    assert out.next().split()[3] == "truncated"
    rotated = path.with_suffix(".1")
    path.rename(rotated)
    path.write_text(event("A", "rotated") * 3)
    assert [out.next().split()[3] for _ in range(3)] == ["rotated"] * 3


def test_reading_goes_across_rotated_files_oldest_first(tmp_path: Path) -> None:
    """``minions.log.2`` (oldest), ``.1``, then ``minions.log``: tail, ``-n`` and the list of
    components read them all, in the order they were written."""
    path = tmp_path / "minions.log"
    (tmp_path / "minions.log.2").write_text(event("A", "first") + event("Old", "x"))
    (tmp_path / "minions.log.1").write_text(event("A", "second"))
    path.write_text(event("A", "third"))
    (tmp_path / "minions.log.bak").write_text(event("Other", "not a rotated file"))
    lines, _ = LogReader(path, "A").tail(None)
    assert [line.split()[3] for line in lines] == ["first", "second", "third"]
    last, _ = LogReader(path, "A").tail(2)
    assert [line.split()[3] for line in last] == ["second", "third"]
    assert LogReader(path).components() == {"A", "Old"}


def test_follow_misses_nothing_written_just_before_a_rotation(tmp_path: Path) -> None:
    """Lines appended to the file after the reader's last look and before it was rotated are
    read from the rotated file, then the new file from its start; nothing is lost or doubled."""
    path = tmp_path / "minions.log"
    path.write_text(event("A", "old"))
    _, end = LogReader(path, "A").tail(None)
    with path.open("a") as f:  # all of this happens before the follower looks again
        f.write(event("A", "late"))
    path.rename(tmp_path / "minions.log.1")
    path.write_text(event("A", "fresh"))
    out, done = Lines(), threading.Event()
    thread = threading.Thread(
        target=LogReader(path, "A").follow, args=(end, out), kwargs={"until": done.is_set}
    )
    thread.start()
    try:
        assert [out.next().split()[3] for _ in range(2)] == ["late", "fresh"]
        with path.open("a") as f:
            f.write(event("A", "after"))
        assert out.next().split()[3] == "after"
    finally:
        done.set()
        thread.join(timeout=LIMIT)
    assert not thread.is_alive()
    assert out.queue.empty()
